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

/// Runs each admin call in its audit context (actor, request id), as the
/// REST layer does; the interceptor has already checked the token.
#[derive(Clone)]
struct Audited<S>(S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for Audited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<axum::http::Request<B>> for Audited<S>
where
    S: tower::Service<axum::http::Request<B>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        let context = crate::audit::AuditContext::new("admin", request_id);
        let call = self.0.call(request);
        Box::pin(crate::audit::scope(context, call))
    }
}

pub async fn serve(listener: tokio::net::TcpListener, state: GrpcState) -> anyhow::Result<()> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shared::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shared::proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let admin = Audited(AdminServiceServer::with_interceptor(
        admin::AdminGrpc::new(state.admin.clone()),
        interceptor(state.admin_token.clone()),
    ));
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
