//! The gRPC client to the control plane, shared by config sync and usage shipping.

use anyhow::Context;
use shared::proto::cluster_service_client::ClusterServiceClient;
use std::path::Path;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Snapshots of a million keys are large; the cap only guards against nonsense.
const MAX_MESSAGE_BYTES: usize = 1 << 30;

#[derive(Clone)]
pub struct BearerInterceptor(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type ClusterClient = ClusterServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// How this data plane checks the control plane, and proves who it is (mTLS).
pub struct ClusterTls<'a> {
    pub ca: Option<&'a Path>,
    pub client_cert: Option<(&'a Path, &'a Path)>,
}

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    shared::tls::read_pem(flag, path).map_err(anyhow::Error::msg)
}

impl ClusterTls<'_> {
    fn config(&self) -> anyhow::Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new();
        config = match self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read("control_plane_ca", ca)?)),
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = self.client_cert {
            let identity = Identity::from_pem(
                read("cluster_client_cert", cert)?,
                read("cluster_client_key", key)?,
            );
            config = config.identity(identity);
        }
        Ok(config)
    }
}

/// Connects lazily and reconnects by itself, so callers only see per-call errors.
pub fn connect(url: &str, token: &str, tls: &ClusterTls<'_>) -> anyhow::Result<ClusterClient> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| anyhow::anyhow!("control_plane: {url:?} is not a valid URL"))?;
    if url.starts_with("https://") {
        shared::tls::install_crypto_provider();
        endpoint = endpoint
            .tls_config(tls.config()?)
            .context("control_plane_ca, cluster_client_cert: cannot set up TLS")?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let mut bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow::anyhow!("cluster_token: must be printable ASCII"))?;
    bearer.set_sensitive(true);
    Ok(
        ClusterServiceClient::with_interceptor(endpoint.connect_lazy(), BearerInterceptor(bearer))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}
