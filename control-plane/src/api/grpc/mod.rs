//! The gRPC server: admin service, cluster service, and server reflection.

mod admin;
mod cluster;
mod convert;

use crate::api::auth::BearerToken;
use crate::service::Admin;
use crate::snapshot::SharedSnapshot;
use futures_util::StreamExt;
use shared::proto::{
    admin_service_server::AdminServiceServer, cluster_service_server::ClusterServiceServer,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Snapshots of a million keys are large; the cap only guards against nonsense.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

#[derive(Clone)]
pub struct GrpcState {
    pub admin: Admin,
    pub admin_token: BearerToken,
    pub cluster_token: BearerToken,
    pub snapshots: watch::Receiver<SharedSnapshot>,
    pub shutdown: CancellationToken,
}

/// The cluster token check of the cluster service.
fn interceptor(
    token: BearerToken,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request: tonic::Request<()>| {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if token.accepts(header) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "missing or invalid bearer token",
            ))
        }
    }
}

/// Authenticates each admin call (the bootstrap token or an admin
/// principal's) and runs it in its context (principal, request id), as the
/// REST layer does; the admin service checks each role's reach.
#[derive(Clone)]
struct Authenticated<S> {
    inner: S,
    admin: Admin,
    bootstrap: BearerToken,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<axum::http::Request<B>> for Authenticated<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (admin, bootstrap) = (self.admin.clone(), self.bootstrap.clone());
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (authorization, request_id) = (header("authorization"), header("x-request-id"));
        Box::pin(async move {
            let principal = match admin
                .authenticate(&bootstrap, authorization.as_deref())
                .await
            {
                Ok(principal) => principal,
                Err(error) => return Ok(tonic::Status::from(error).into_http()),
            };
            let context = crate::audit::AuditContext::new(principal, request_id.as_deref());
            crate::audit::scope(context, inner.call(request)).await
        })
    }
}

pub async fn serve(listener: tokio::net::TcpListener, state: GrpcState) -> anyhow::Result<()> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shared::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shared::proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let admin = Authenticated {
        inner: AdminServiceServer::new(admin::AdminGrpc::new(state.admin.clone())),
        admin: state.admin.clone(),
        bootstrap: state.admin_token.clone(),
    };
    let cluster = ClusterServiceServer::new(cluster::ClusterGrpc::new(
        state.admin.clone(),
        state.snapshots.clone(),
        state.shutdown.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let cluster = tonic::service::interceptor::InterceptedService::new(
        cluster,
        interceptor(state.cluster_token.clone()),
    );
    let shutdown = state.shutdown.clone();
    // Snapshots are pushed as they are published: with Nagle on, each push
    // waited for the data plane's delayed ACK (measured: 44 ms per write).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set");
            }
        })
    });
    tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(admin)
        .add_service(cluster)
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
