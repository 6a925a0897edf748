//! What tests and benchmarks run against: provider mocks speaking each
//! provider's wire format (`mocks`), served by the `mock-provider` binary.

pub mod mocks;
