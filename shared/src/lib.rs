//! Code shared by the control plane and the data plane.
#![forbid(unsafe_code)]

pub mod cache;
pub mod crypto;
pub mod guardrails;
pub mod ids;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod money;
pub mod net;
pub mod provider_kind;
pub mod routing;
pub mod tasks;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod tokens;
pub mod usage;

/// Generated protobuf and gRPC code. Proto types stay at the edges: each crate
/// converts them to its own domain types at its boundary.
pub mod proto {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("switchboard.v1");

    /// For gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("switchboard_descriptor");
}

/// Version of this build, exchanged between data planes and control planes.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
