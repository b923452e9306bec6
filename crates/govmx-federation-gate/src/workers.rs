//! The threads that serve inbound connections: one single-threaded tokio runtime per core, or
//! `inbound.workers` of them.
//!
//! The accept loop hands each accepted connection to the next worker (round robin); the
//! connection then lives on that worker's thread for good, together with its own upstream
//! connection ([`crate::upstream`]). Nothing of a request moves between threads, as in nginx's
//! worker processes. On tokio's work-stealing runtime the same gate spent ~15 % more CPU per
//! forwarded request, much of it waking idle workers (`docs/benchmarks.md`).
//!
//! Everything else (admin listener, list reloads, the CONNECT proxy) stays on the main runtime.
//! Dropping the [`Workers`] stops the threads; connections still on them are dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The inbound worker threads; see the module docs.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    // Dropped with the pool: each worker's `block_on` returns and its runtime shuts down.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` (at least one) worker threads.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::new();
        let mut stop = Vec::new();
        for index in 0..count.max(1) {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("govmx-inbound-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = handle_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    // Runs the connections spawned onto this runtime until the pool is dropped.
                    let _ = runtime.block_on(stop_rx);
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other("inbound worker thread ended at start"))??;
            handles.push(handle);
            stop.push(stop_tx);
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// The worker for the next connection.
    pub fn next(&self) -> &Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }
}

/// One worker per core this process may use (cgroup quota and affinity included).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_round_robin_to_threads_that_stop_with_the_pool() {
        let workers = Workers::start(2).expect("workers");
        let names: Vec<String> = (0..4)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                workers.next().spawn(async move {
                    let _ = tx.send(std::thread::current().name().map(str::to_owned));
                });
                rx.recv().expect("task ran").expect("named thread")
            })
            .collect();
        assert_eq!(
            names,
            [
                "govmx-inbound-0",
                "govmx-inbound-1",
                "govmx-inbound-0",
                "govmx-inbound-1"
            ]
        );
        let handle = workers.next().clone();
        drop(workers);
        // Once the pool is gone its runtimes shut down: a task spawned afterwards never runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            drop(handle.spawn(async move {
                let _ = tx.send(());
            }));
            if rx
                .recv_timeout(std::time::Duration::from_millis(50))
                .is_err()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker still running after the pool was dropped"
            );
        }
    }
}
