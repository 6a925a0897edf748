//! The control plane's surfaces: REST and gRPC over the same admin service.

pub mod auth;
pub mod grpc;
pub mod rest;
