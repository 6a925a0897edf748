//! Singleton jobs: each runs on the leader only, started when this replica
//! becomes leader and cancelled when it stops being one.

use super::election::{Leadership, State};
use crate::store::Fence;
use shared::tasks::Tasks;
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// Runs `job` whenever this replica leads. The job writes under the fence it
/// is given and stops when its token is cancelled; `switchboard_leader{job}`
/// is 1 while it may run here.
pub fn spawn<F, Fut>(tasks: &Tasks, job: &'static str, leadership: &Leadership, run: F)
where
    F: Fn(Fence, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut state = leadership.subscribe();
    let shutdown = tasks.token();
    tasks.spawn(job, async move {
        loop {
            let current = *state.borrow_and_update();
            let leading = matches!(current, State::Leader(_));
            metrics::gauge!("switchboard_leader", "job" => job).set(if leading {
                1.0
            } else {
                0.0
            });
            match current {
                State::Leader(fence) => {
                    let stop = shutdown.child_token();
                    let running = run(fence, stop.clone());
                    tokio::pin!(running);
                    tokio::select! {
                        _ = &mut running => {
                            // Ended by itself (it lost its fence): wait for the next change.
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                changed = state.changed() => if changed.is_err() { return },
                            }
                        }
                        changed = state.changed() => {
                            stop.cancel();
                            running.await;
                            if changed.is_err() {
                                return;
                            }
                        }
                        _ = shutdown.cancelled() => {
                            stop.cancel();
                            running.await;
                            return;
                        }
                    }
                }
                State::Follower => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = state.changed() => if changed.is_err() { return },
                },
            }
        }
    });
}
