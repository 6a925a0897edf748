//! The control plane's surfaces: REST and gRPC over the same admin service,
//! and the web console on top of REST.

pub mod auth;
pub mod console;
pub mod grpc;
pub mod oidc;
pub mod rest;
