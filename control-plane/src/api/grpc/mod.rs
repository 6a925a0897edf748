//! The gRPC server: admin service, cluster service, and server reflection.

mod admin;
mod cluster;
mod convert;

pub use cluster::ClusterGrpc;

use crate::api::auth::BearerToken;
use crate::service::Admin;
use futures_util::StreamExt;
use shared::proto::{
    admin_service_server::AdminServiceServer, cluster_service_server::ClusterServiceServer,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::Instrument;

/// Snapshots of a million keys are large; the cap only guards against nonsense.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

#[derive(Clone)]
pub struct GrpcState {
    pub admin: Admin,
    pub admin_token: BearerToken,
    pub cluster_token: BearerToken,
    pub cluster: cluster::ClusterGrpc,
    pub shutdown: CancellationToken,
    pub tls: Option<GrpcTls>,
}

/// The gRPC listener's certificate and key, and the CA of data planes' certificates (PEM).
#[derive(Clone)]
pub struct GrpcTls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

/// A data plane's name, from the certificate it presented (mTLS).
#[derive(Clone, Debug)]
pub struct DataPlaneIdentity(pub String);

/// How data planes prove who they are: a certificate signed by the cluster
/// CA (required once one is configured), else the cluster token.
fn cluster_interceptor(
    token: BearerToken,
    certificate_required: bool,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut request: tonic::Request<()>| {
        // Verified against the cluster CA during the handshake, if presented.
        let identity = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|der| certificate_name(der)));
        if let Some(identity) = identity {
            request.extensions_mut().insert(DataPlaneIdentity(identity));
            return Ok(request);
        }
        if certificate_required {
            return Err(tonic::Status::unauthenticated(
                "a data-plane certificate signed by the cluster CA is required",
            ));
        }
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

/// The certificate's first DNS name, else its subject's common name.
fn certificate_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let dns = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
        });
    dns.or_else(|| {
        certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    })
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
        let method = request.uri().path().trim_start_matches('/');
        let span = shared::telemetry::admin_span(method, request.headers());
        let traced = span.clone();
        let call = async move {
            let principal = match admin
                .authenticate(&bootstrap, authorization.as_deref())
                .await
            {
                Ok(principal) => principal,
                Err(error) => return Ok(tonic::Status::from(error).into_http()),
            };
            let context = crate::audit::AuditContext::new(principal, request_id.as_deref());
            crate::audit::scope(context, inner.call(request)).await
        };
        Box::pin(
            async move {
                let response = call.await;
                // An error answers at once (trailers-only): its status is a header.
                let status = response.as_ref().ok().and_then(|r| {
                    r.headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
                });
                traced.record("status", status.unwrap_or(0));
                if status.is_some_and(|s| s != 0) {
                    traced.record("otel.status_code", "error");
                }
                response
            }
            .instrument(span),
        )
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
    let cluster = ClusterServiceServer::new(state.cluster.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let cluster = tonic::service::interceptor::InterceptedService::new(
        cluster,
        cluster_interceptor(
            state.cluster_token.clone(),
            state.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        ),
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
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &state.tls {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key));
        if let Some(ca) = &tls.client_ca {
            // Optional at the handshake: admin clients use tokens; the
            // cluster service requires a certificate itself.
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        server = server.tls_config(config)?;
    }
    server
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(admin)
        .add_service(cluster)
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
