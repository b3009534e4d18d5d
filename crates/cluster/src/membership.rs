//! The workers of a cluster, as the coordinator sees them: registration, heartbeats and
//! failure detection (Flink's ResourceManager and heartbeat services).
//!
//! A worker registers its address and slots and gets an id; it then heartbeats every
//! `interval`. A worker not heard from for `timeout` is declared lost: it stays listed
//! as lost, its later heartbeats are answered "unknown", and it must register again,
//! under a new id. A worker that registers from the address of a lost one replaces it.
//! The coordinator's own process is the embedded worker (what `sluice serve` runs jobs
//! on), listed first and never lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::checkpoints::now_ms;

/// The address the embedded worker is listed under.
pub const EMBEDDED: &str = "embedded";

/// One worker, for `GET /workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    pub id: u64,
    /// Where the worker serves its endpoints (`embedded` for the coordinator's own).
    pub address: String,
    pub slots: u32,
    /// `alive` or `lost`.
    pub state: &'static str,
    pub registered_at_ms: u64,
    /// Milliseconds since its last heartbeat (0 for the embedded worker).
    pub heartbeat_age_ms: u64,
    /// Its data plane, as of its last heartbeat.
    #[serde(flatten)]
    pub dataplane: DataPlaneCounters,
}

/// A process's data-plane counters (see [`crate::dataplane::DataPlane`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DataPlaneCounters {
    /// The most messages any edge it serves had sent without a credit back: bounded by
    /// the credits a receiver grants, which is what bounds memory between processes.
    pub max_in_flight: u64,
    /// Messages it sent to other processes.
    pub messages_sent: u64,
}

struct Worker {
    address: String,
    slots: u32,
    registered_at_ms: u64,
    last_heartbeat: Instant,
    lost: bool,
    embedded: bool,
    dataplane: DataPlaneCounters,
}

/// The registry of workers.
pub struct Membership {
    interval: Duration,
    timeout: Duration,
    workers: Mutex<BTreeMap<u64, Worker>>,
    /// Ids are never given out twice by one coordinator process.
    next_id: std::sync::atomic::AtomicU64,
}

impl Membership {
    /// A registry expecting heartbeats every `interval` and declaring a worker lost after
    /// `timeout` without one, holding the embedded worker with `embedded_slots` slots.
    pub fn new(interval: Duration, timeout: Duration, embedded_slots: u32) -> Membership {
        let embedded = Worker {
            address: EMBEDDED.to_string(),
            slots: embedded_slots,
            registered_at_ms: now_ms(),
            last_heartbeat: Instant::now(),
            lost: false,
            embedded: true,
            dataplane: DataPlaneCounters::default(),
        };
        Membership {
            interval,
            timeout,
            workers: Mutex::new(BTreeMap::from([(0, embedded)])),
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// How often workers are told to heartbeat.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Registers a worker and returns its id. A worker listed at the same address (lost,
    /// or restarted before it was noticed) is replaced.
    pub fn register(&self, address: &str, slots: u32) -> u64 {
        let mut workers = self.workers.lock();
        workers.retain(|_, w| w.embedded || w.address != address);
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        workers.insert(
            id,
            Worker {
                address: address.to_string(),
                slots,
                registered_at_ms: now_ms(),
                last_heartbeat: Instant::now(),
                lost: false,
                embedded: false,
                dataplane: DataPlaneCounters::default(),
            },
        );
        tracing::info!(worker = id, address, slots, "worker registered");
        id
    }

    /// Records a heartbeat of worker `id` registered from `address`, with its data-plane
    /// counters; false when no such worker is registered (another coordinator process
    /// gave out the id, or the worker was declared lost): it must register again.
    pub fn heartbeat(&self, id: u64, address: &str, dataplane: DataPlaneCounters) -> bool {
        match self.workers.lock().get_mut(&id) {
            Some(worker) if !worker.lost && !worker.embedded && worker.address == address => {
                worker.last_heartbeat = Instant::now();
                worker.dataplane = dataplane;
                true
            }
            _ => false,
        }
    }

    /// Declares worker `id` lost before its heartbeat timeout: it could not be reached
    /// (deploying to it failed to connect). Like a silent worker, it must register again.
    pub fn declare_lost(&self, id: u64, why: &str) {
        if let Some(worker) = self.workers.lock().get_mut(&id)
            && !worker.embedded
            && !worker.lost
        {
            worker.lost = true;
            tracing::warn!(worker = id, address = %worker.address, reason = why, "worker lost");
        }
    }

    /// Declares lost every worker silent for longer than the timeout; returns their ids.
    pub fn detect_lost(&self) -> Vec<u64> {
        self.detect_lost_at(Instant::now())
    }

    fn detect_lost_at(&self, now: Instant) -> Vec<u64> {
        let mut lost = Vec::new();
        for (&id, worker) in self.workers.lock().iter_mut() {
            let silent = now.saturating_duration_since(worker.last_heartbeat);
            if !worker.embedded && !worker.lost && silent > self.timeout {
                worker.lost = true;
                tracing::warn!(
                    worker = id,
                    address = %worker.address,
                    silent_ms = silent.as_millis() as u64,
                    "worker lost: no heartbeat within the timeout"
                );
                lost.push(id);
            }
        }
        lost
    }

    /// Every worker, by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.workers
            .lock()
            .iter()
            .map(|(&id, w)| WorkerInfo {
                id,
                address: w.address.clone(),
                slots: w.slots,
                state: if w.lost { "lost" } else { "alive" },
                registered_at_ms: w.registered_at_ms,
                heartbeat_age_ms: if w.embedded {
                    0
                } else {
                    w.last_heartbeat.elapsed().as_millis() as u64
                },
                dataplane: w.dataplane,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(membership: &Membership) -> Vec<(u64, String, &'static str)> {
        membership
            .workers()
            .into_iter()
            .map(|w| (w.id, w.address, w.state))
            .collect()
    }

    #[test]
    fn a_silent_worker_is_lost_and_must_register_again() {
        let timeout = Duration::from_secs(15);
        let membership = Membership::new(Duration::from_secs(5), timeout, 2);
        let a = membership.register("a:1", 4);
        let b = membership.register("b:1", 4);
        assert!(membership.heartbeat(a, "a:1", DataPlaneCounters::default()));
        assert!(
            !membership.heartbeat(a, "b:1", DataPlaneCounters::default()),
            "the id is a's"
        );
        assert!(membership.detect_lost().is_empty(), "within the timeout");
        let later = Instant::now() + timeout + Duration::from_secs(1);
        assert_eq!(membership.detect_lost_at(later), vec![a, b]);
        assert!(membership.detect_lost_at(later).is_empty(), "lost once");
        assert!(
            !membership.heartbeat(a, "a:1", DataPlaneCounters::default()),
            "a lost worker is told to register"
        );
        assert!(
            !membership.heartbeat(99, "a:1", DataPlaneCounters::default()),
            "an unknown one too"
        );
        assert!(
            !membership.heartbeat(0, "embedded", DataPlaneCounters::default()),
            "the embedded worker never heartbeats"
        );
        let again = membership.register("a:1", 4);
        assert!(again > b, "ids are not reused: {again}");
        assert!(
            !membership.heartbeat(a, "a:1", DataPlaneCounters::default()),
            "the replaced id stays unknown"
        );
        assert_eq!(
            states(&membership),
            vec![
                (0, EMBEDDED.to_string(), "alive"),
                (b, "b:1".to_string(), "lost"),
                (again, "a:1".to_string(), "alive"),
            ]
        );
    }
}
