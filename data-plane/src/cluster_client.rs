//! gRPC clients to the control plane: one address behind a load balancer,
//! or several replicas' addresses, tried in turn.

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

/// The control plane as one caller (config sync, or the usage shipper) sees
/// it: the addresses it was given and a client on one of them. Each caller
/// has its own, so one's failover does not move the other's connection.
#[derive(Clone)]
pub struct ControlPlanes {
    endpoints: Vec<Endpoint>,
    bearer: BearerInterceptor,
    current: usize,
    client: ClusterClient,
}

impl ControlPlanes {
    /// Every address is checked now; connections open lazily.
    pub fn connect(urls: &[String], token: &str, tls: &ClusterTls<'_>) -> anyhow::Result<Self> {
        if urls.is_empty() {
            anyhow::bail!("control_plane: at least one address is required");
        }
        let tls = if urls.iter().any(|u| u.starts_with("https://")) {
            shared::tls::install_crypto_provider();
            Some(tls.config()?)
        } else {
            None
        };
        let endpoints = urls
            .iter()
            .map(|url| {
                let mut endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|_| anyhow::anyhow!("control_plane: {url:?} is not a valid URL"))?;
                if let (true, Some(tls)) = (url.starts_with("https://"), &tls) {
                    endpoint = endpoint
                        .tls_config(tls.clone())
                        .context("control_plane_ca, cluster_client_cert: cannot set up TLS")?;
                }
                Ok(endpoint
                    .connect_timeout(Duration::from_secs(5))
                    .http2_keep_alive_interval(Duration::from_secs(20))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .keep_alive_while_idle(true))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("cluster_token: must be printable ASCII"))?;
        bearer.set_sensitive(true);
        let bearer = BearerInterceptor(bearer);
        let client = client_on(&endpoints[0], &bearer);
        Ok(ControlPlanes {
            endpoints,
            bearer,
            current: 0,
            client,
        })
    }

    pub fn client(&self) -> ClusterClient {
        self.client.clone()
    }

    pub fn address(&self) -> String {
        self.endpoints[self.current].uri().to_string()
    }

    /// After a failure: a new connection to the next address (the same
    /// one, when there is only one).
    pub fn next(&mut self) {
        self.current = (self.current + 1) % self.endpoints.len();
        self.reconnect();
    }

    /// A new connection to the same address: behind a load balancer it may
    /// reach another replica, which is how streams spread after a restart.
    pub fn reconnect(&mut self) {
        self.client = client_on(&self.endpoints[self.current], &self.bearer);
    }
}

fn client_on(endpoint: &Endpoint, bearer: &BearerInterceptor) -> ClusterClient {
    ClusterServiceClient::with_interceptor(endpoint.connect_lazy(), bearer.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
