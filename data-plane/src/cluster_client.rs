//! The gRPC client to the control plane, shared by config sync and usage shipping.

use shared::proto::cluster_service_client::ClusterServiceClient;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

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

/// Connects lazily and reconnects by itself, so callers only see per-call errors.
pub fn connect(url: &str, token: &str) -> anyhow::Result<ClusterClient> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| anyhow::anyhow!("control_plane: {url:?} is not a valid URL"))?
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
