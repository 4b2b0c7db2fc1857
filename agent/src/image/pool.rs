//! A small pool of worker threads that runs jobs in parallel and hands results back in the
//! order the jobs were submitted. At most `depth` jobs are in flight, so memory stays bounded.

use std::collections::VecDeque;
use std::fmt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A worker thread stopped before delivering a result (it panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerLost;

type Job<J, O> = (J, SyncSender<O>);

/// Ordered worker pool.
pub(crate) struct OrderedPool<J: Send + 'static, O: Send + 'static> {
    jobs: Option<SyncSender<Job<J, O>>>,
    pending: VecDeque<Receiver<O>>,
    threads: Vec<JoinHandle<()>>,
    depth: usize,
}

impl<J: Send + 'static, O: Send + 'static> fmt::Debug for OrderedPool<J, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedPool")
            .field("threads", &self.threads.len())
            .field("in_flight", &self.pending.len())
            .field("depth", &self.depth)
            .finish()
    }
}

/// Number of workers: one per available CPU (at least one, at most 16).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
}

impl<J: Send + 'static, O: Send + 'static> OrderedPool<J, O> {
    /// Starts `threads` workers named `name`; each calls `make` once, on its own thread, to get
    /// the function that runs its jobs (so per-thread state such as a compression context never
    /// crosses threads).
    pub(crate) fn new<F, W>(
        name: &str,
        threads: usize,
        depth: usize,
        make: F,
    ) -> std::io::Result<Self>
    where
        F: Fn() -> W + Send + Clone + 'static,
        W: FnMut(J) -> O,
    {
        let threads = threads.max(1);
        let depth = depth.max(threads);
        let (tx, rx) = sync_channel::<Job<J, O>>(depth);
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = OrderedPool {
            jobs: Some(tx),
            pending: VecDeque::with_capacity(depth),
            threads: Vec::with_capacity(threads),
            depth,
        };
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let make = make.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let mut work = make();
                    loop {
                        // Hold the lock only while taking a job.
                        let next = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok((job, reply)) = next else { return };
                        // The receiver is gone only when the pool's owner stopped caring.
                        let _ = reply.send(work(job));
                    }
                })?;
            // On a spawn error, dropping `pool` stops and joins the threads already started.
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// Whether `depth` jobs are in flight.
    pub(crate) fn is_full(&self) -> bool {
        self.pending.len() >= self.depth
    }

    /// Most jobs in flight.
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// Jobs submitted and not yet collected.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Queues a job. The caller keeps the pool below `depth` with [`Self::next`].
    pub(crate) fn submit(&mut self, job: J) -> Result<(), WorkerLost> {
        let (tx, rx) = sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or(WorkerLost)?;
        jobs.send((job, tx)).map_err(|_| WorkerLost)?;
        self.pending.push_back(rx);
        Ok(())
    }

    /// The result of the oldest job, waiting for it; `None` when nothing is in flight.
    pub(crate) fn next(&mut self) -> Option<Result<O, WorkerLost>> {
        let rx = self.pending.pop_front()?;
        Some(rx.recv().map_err(|_| WorkerLost))
    }
}

impl<J: Send + 'static, O: Send + 'static> Drop for OrderedPool<J, O> {
    fn drop(&mut self) {
        // Closing the job channel ends every worker once it finishes its current job.
        self.jobs = None;
        self.pending.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_submission_order() {
        let mut pool = OrderedPool::new("test", 3, 4, || {
            |n: u64| {
                // Later jobs finish first.
                std::thread::sleep(std::time::Duration::from_millis(20 - n * 2));
                n * 10
            }
        })
        .expect("spawn workers");
        let mut got = Vec::new();
        for n in 0..10 {
            if pool.is_full() {
                got.push(pool.next().expect("in flight").expect("worker alive"));
            }
            pool.submit(n).expect("submit");
        }
        while let Some(r) = pool.next() {
            got.push(r.expect("worker alive"));
        }
        assert_eq!(got, (0..10).map(|n| n * 10).collect::<Vec<_>>());
    }
}
