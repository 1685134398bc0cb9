//! The node's background tasks, owned: one [`JoinSet`] and one cancellation signal, so that
//! [`crate::Node::shutdown`] can stop every loop it started and wait for them (bounded).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// The receiving side of the cancellation signal; cheap to clone into every task.
#[derive(Clone, Debug)]
pub struct Cancel(watch::Receiver<bool>);

impl Cancel {
    /// Resolves once the owner cancels (or is dropped).
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone: nobody can cancel any more, treat it as done.
        let _ = rx.wait_for(|cancelled| *cancelled).await;
    }

    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
}

/// Background tasks of one node.
pub struct Tasks {
    set: Mutex<Option<JoinSet<()>>>,
    cancel: watch::Sender<bool>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new()
    }
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks {
            set: Mutex::new(Some(JoinSet::new())),
            cancel: watch::channel(false).0,
        }
    }

    /// A handle on the cancellation signal, for tasks that stop on their own terms.
    pub fn cancel_signal(&self) -> Cancel {
        Cancel(self.cancel.subscribe())
    }

    /// Runs `task` until it ends or the tasks are cancelled, whichever comes first (the task
    /// is then dropped at its next await point).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel_signal();
        self.spawn_owned(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Runs `task`, which watches [`Tasks::cancel_signal`] itself (to finish what it is
    /// doing before it returns).
    pub fn spawn_owned(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        match set.as_mut() {
            Some(set) => {
                // Reap finished tasks so a long-lived node does not accumulate them.
                while set.try_join_next().is_some() {}
                set.spawn(task);
            }
            // Already shut down: a task started now would never be joined.
            None => tracing::debug!("node is shutting down: background task not started"),
        }
    }

    /// Cancels every task and waits up to `timeout` for them to end; the rest are aborted.
    pub async fn shutdown(&self, timeout: Duration) {
        // Take the set first, so no task can start after the signal without being joined;
        // `send_replace` stores the signal even when no task is listening any more.
        let set = self.set.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.cancel.send_replace(true);
        let Some(mut set) = set else { return };
        let joined = tokio::time::timeout(timeout, async {
            while let Some(result) = set.join_next().await {
                if let Err(e) = result {
                    if e.is_panic() {
                        tracing::warn!("background task panicked: {e}");
                    }
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                left = set.len(),
                "background tasks did not stop within {timeout:?}: aborting them"
            );
            set.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Sets its flag when dropped: shows a task was cancelled, not left running.
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[tokio::test]
    async fn shutdown_cancels_and_joins() {
        let tasks = Tasks::new();
        // A task that never ends on its own: `spawn` must drop it at the signal, well
        // before the bound (which would abort it instead).
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = DropFlag(dropped.clone());
        tasks.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        let finished = Arc::new(AtomicBool::new(false));
        let cancel = tasks.cancel_signal();
        let done = finished.clone();
        tasks.spawn_owned(async move {
            cancel.cancelled().await;
            done.store(true, Ordering::Release);
        });
        tokio::task::yield_now().await;
        assert!(!dropped.load(Ordering::Acquire), "running until cancelled");
        let started = std::time::Instant::now();
        tasks.shutdown(Duration::from_secs(30)).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "joined at the signal, not at the bound"
        );
        assert!(dropped.load(Ordering::Acquire), "spawned task dropped");
        assert!(
            finished.load(Ordering::Acquire),
            "owned task saw the signal"
        );
        assert!(tasks.cancel_signal().is_cancelled());
        // Nothing starts after shutdown.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        tasks.spawn(async move { flag.store(true, Ordering::Release) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !ran.load(Ordering::Acquire),
            "a task spawned after shutdown ran"
        );
    }

    #[tokio::test]
    async fn the_signal_holds_when_every_task_already_ended() {
        let tasks = Tasks::new();
        tasks.shutdown(Duration::from_millis(50)).await;
        assert!(tasks.cancel_signal().is_cancelled());
    }

    #[tokio::test]
    async fn a_stuck_task_is_aborted_after_the_bound() {
        let tasks = Tasks::new();
        tasks.spawn_owned(std::future::pending());
        let started = std::time::Instant::now();
        tasks.shutdown(Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
