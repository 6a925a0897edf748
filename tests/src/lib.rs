//! What tests and benchmarks run against: provider mocks speaking each
//! provider's wire format (`mocks`), served by the `mock-provider` binary,
//! plainly or over HTTPS (`serve`).

pub mod mocks;
pub mod serve;
