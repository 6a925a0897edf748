//! What data planes receive: full snapshots and deltas of the configuration,
//! built from the database and encoded once for every stream, and the
//! counters of budgets and quotas beside them.

pub mod counters;
pub mod delta;
pub mod feed;
pub mod full;
pub mod history;
mod rows;

pub use counters::CounterFeed;
pub use feed::{ConfigFeed, Refresher, Update};
