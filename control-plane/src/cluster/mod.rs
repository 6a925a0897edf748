//! The control plane as one of several replicas: who leads the singleton
//! jobs, and the registry of replicas the cluster view lists.

pub mod election;
pub mod jobs;
pub mod registry;

pub use election::Leadership;
