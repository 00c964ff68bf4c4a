//! Single-flight: concurrent requests for the same key share one load or computation.
//!
//! The first caller becomes the leader and gets a [`FlightHandle`]; everyone (leader
//! included) waits on a `watch` receiver for the published result. The flight stays
//! registered until the handle drops, so late callers still get the published value while the
//! leader finishes follow-up work (the disk write). A handle dropped without publishing (a
//! panic) wakes waiters with a closed channel; they retry.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

/// Registry of in-flight operations keyed by `K`, each producing a clonable `V`.
#[derive(Debug)]
pub(crate) struct SingleFlight<K, V> {
    flights: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
    idle: Notify,
}

/// The leader's side of one flight: publish the result, then drop to unregister.
#[derive(Debug)]
pub(crate) struct FlightHandle<K: Hash + Eq + Clone, V> {
    owner: Arc<SingleFlight<K, V>>,
    key: K,
    tx: watch::Sender<Option<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
            idle: Notify::new(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, watch::Receiver<Option<V>>>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the flight for `key`, starting one (and returning its handle) if none exists.
    pub(crate) fn join(
        self: &Arc<Self>,
        key: K,
    ) -> (watch::Receiver<Option<V>>, Option<FlightHandle<K, V>>) {
        let mut map = self.map();
        if let Some(rx) = map.get(&key) {
            return (rx.clone(), None);
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx.clone());
        let handle = FlightHandle {
            owner: self.clone(),
            key,
            tx,
        };
        (rx, Some(handle))
    }

    /// Number of flights in progress.
    pub(crate) fn in_flight(&self) -> usize {
        self.map().len()
    }

    /// Waits until no flight is in progress.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Waits for a flight's value; `None` when the leader vanished without publishing.
pub(crate) async fn wait_for<V: Clone>(rx: &mut watch::Receiver<Option<V>>) -> Option<V> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

impl<K: Hash + Eq + Clone, V> FlightHandle<K, V> {
    /// Publishes the result to every waiter (current and later joiners).
    pub(crate) fn publish(&self, value: V) {
        self.tx.send_replace(Some(value));
    }
}

impl<K: Hash + Eq + Clone, V> Drop for FlightHandle<K, V> {
    fn drop(&mut self) {
        let mut map = self.owner.flights.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
        drop(map);
        self.owner.idle.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_leader_many_waiters() {
        let sf: Arc<SingleFlight<u32, u64>> = Arc::new(SingleFlight::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (sf, runs, gate) = (sf.clone(), runs.clone(), gate.clone());
                tokio::spawn(async move {
                    gate.wait().await;
                    let (mut rx, leader) = sf.join(7);
                    if let Some(h) = leader {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        h.publish(42);
                    }
                    wait_for(&mut rx).await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(42));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        sf.wait_idle().await;
        assert_eq!(sf.in_flight(), 0);
    }

    #[tokio::test]
    async fn abandoned_flight_wakes_waiters_with_none() {
        let sf: Arc<SingleFlight<u32, u64>> = Arc::new(SingleFlight::new());
        let (_rx, leader) = sf.join(1);
        let (mut rx2, none) = sf.join(1);
        assert!(none.is_none());
        drop(leader);
        assert_eq!(wait_for(&mut rx2).await, None);
        let (_rx3, again) = sf.join(1);
        assert!(again.is_some(), "a new flight starts after abandonment");
    }
}
