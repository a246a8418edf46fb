//! The node's exclusive section: what lets `EXEC` run a transaction with no other client's
//! command in between on a single node, as Redis's one thread does.
//!
//! Every connection holds the gate *shared* while it runs a batch of commands (the requests
//! parsed from one read): one atomic add and one subtract per batch, never a lock. A transaction
//! takes it *exclusive*: it waits until the batches running now are done, and batches that
//! start meanwhile wait until it is over. Nothing waits while holding the gate shared (a batch
//! runs without awaiting anything on a single node), so a writer always gets in.
//!
//! In a cluster the gate is not used: a command there waits on the network, and a transaction's
//! isolation is a matter for the slot's coordinator (`docs/cluster.md`).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Set while a writer holds the gate or waits for the readers to leave.
const HELD: usize = 1;
/// One reader in the count (the bits above [`HELD`]).
const READER: usize = 2;

/// The gate (see the module docs).
#[derive(Debug, Default)]
pub struct Exclusive {
    /// Readers × [`READER`], plus [`HELD`].
    state: AtomicUsize,
    /// Writers take turns.
    writer: tokio::sync::Mutex<()>,
    /// Wakes the waiting writer when the last reader leaves, and the waiting readers when the
    /// writer leaves.
    changed: Notify,
}

/// The gate held shared.
#[derive(Debug)]
pub struct SharedGuard<'a>(&'a Exclusive);

/// The gate held exclusive.
#[derive(Debug)]
pub struct ExclusiveGuard<'a> {
    gate: &'a Exclusive,
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl Exclusive {
    /// Holds the gate shared if no writer holds it or waits for it.
    pub fn try_shared(&self) -> Option<SharedGuard<'_>> {
        if self.state.fetch_add(READER, Ordering::Acquire) & HELD == 0 {
            return Some(SharedGuard(self));
        }
        self.leave_shared();
        None
    }

    /// Holds the gate shared: at once unless a writer holds it or waits for it.
    pub async fn shared(&self) -> SharedGuard<'_> {
        loop {
            if let Some(g) = self.try_shared() {
                return g;
            }
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.load(Ordering::Acquire) & HELD == 0 {
                continue;
            }
            notified.await;
        }
    }

    /// Holds the gate exclusive: waits for the writer before it, then for the batches running.
    pub async fn exclusive(&self) -> ExclusiveGuard<'_> {
        let turn = self.writer.lock().await;
        self.state.fetch_or(HELD, Ordering::AcqRel);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.load(Ordering::Acquire) < READER {
                break;
            }
            notified.await;
        }
        ExclusiveGuard {
            gate: self,
            _turn: turn,
        }
    }

    /// Whether a writer holds the gate or waits for it.
    pub fn contended(&self) -> bool {
        self.state.load(Ordering::Relaxed) & HELD != 0
    }

    fn leave_shared(&self) {
        let was = self.state.fetch_sub(READER, Ordering::Release);
        if was & HELD != 0 && was < 2 * READER {
            // The last reader out lets the waiting writer in.
            self.changed.notify_waiters();
        }
    }
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.0.leave_shared();
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.gate.state.fetch_and(!HELD, Ordering::Release);
        self.gate.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_waits_for_readers_and_readers_wait_for_the_writer() {
        let gate = Arc::new(Exclusive::default());
        let inside = Arc::new(AtomicBool::new(false));
        let reader = gate.shared().await;
        let (g, i) = (gate.clone(), inside.clone());
        let writer = tokio::spawn(async move {
            let _w = g.exclusive().await;
            i.store(true, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            i.store(false, Ordering::SeqCst);
        });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(
            !inside.load(Ordering::SeqCst),
            "the writer entered past a reader"
        );
        assert!(gate.contended());
        drop(reader);
        // A reader arriving while the writer is inside waits until it leaves.
        while !inside.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let _r = gate.shared().await;
        assert!(
            !inside.load(Ordering::SeqCst),
            "a reader entered while the writer was inside"
        );
        writer.await.unwrap();
        assert!(!gate.contended());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_readers_and_writers_never_overlap() {
        let gate = Arc::new(Exclusive::default());
        let readers = Arc::new(AtomicUsize::new(0));
        let writers = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (g, r, w) = (gate.clone(), readers.clone(), writers.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..300 {
                    if (i + t) % 7 == 0 {
                        let _x = g.exclusive().await;
                        assert_eq!(w.fetch_add(1, Ordering::SeqCst), 0);
                        assert_eq!(r.load(Ordering::SeqCst), 0);
                        tokio::task::yield_now().await;
                        w.fetch_sub(1, Ordering::SeqCst);
                    } else {
                        let _s = g.shared().await;
                        r.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(w.load(Ordering::SeqCst), 0);
                        r.fetch_sub(1, Ordering::SeqCst);
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}
