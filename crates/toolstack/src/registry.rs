//! The VMs this daemon knows, and the count of those that run.
//!
//! The running count is what `--max-vms` bounds, so it must never drift: it is not
//! kept by hand on each path but owned by guards. A create takes a [`Slot`] before
//! it touches anything; the slot moves into the VM's entry when the VM runs and is
//! dropped when its end is recorded. A create that fails, or whose task is dropped
//! half-way (its client went away), drops its slot with everything else it held,
//! and the count is given back by that drop alone.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::api::{CreateTimings, VmView};
use crate::state::{ExitRecord, VmRecord};

/// One place in the running count, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    running: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A known VM.
#[derive(Debug)]
pub struct VmEntry {
    /// What was asked for, and which process runs it.
    pub record: VmRecord,
    /// How it ended, once it has.
    pub exit: Option<ExitRecord>,
    /// Its creation's timings, when this daemon created it.
    pub timings: Option<CreateTimings>,
    /// Present while the process runs: to stop it.
    pub pidfd: Option<Arc<AsyncFd<OwnedFd>>>,
    /// Whether its end was asked for through the API.
    pub stop_requested: bool,
    /// Its place in the running count while it runs: present exactly when `exit`
    /// is not.
    slot: Option<Slot>,
}

impl VmEntry {
    /// A VM whose guest runs, holding its place in the count.
    pub fn running(
        record: VmRecord,
        pidfd: Arc<AsyncFd<OwnedFd>>,
        slot: Slot,
        timings: Option<CreateTimings>,
    ) -> Self {
        Self {
            record,
            exit: None,
            timings,
            pidfd: Some(pidfd),
            stop_requested: false,
            slot: Some(slot),
        }
    }

    /// A VM that has ended (or never started).
    pub fn ended(record: VmRecord, exit: ExitRecord, timings: Option<CreateTimings>) -> Self {
        Self {
            record,
            exit: Some(exit),
            timings,
            pidfd: None,
            stop_requested: false,
            slot: None,
        }
    }

    /// How the API shows it.
    pub fn view(&self) -> VmView {
        VmView::new(&self.record, self.exit.as_ref(), self.timings)
    }
}

/// The VMs, by id, and the running count.
#[derive(Debug)]
pub struct Registry {
    vms: RwLock<HashMap<String, VmEntry>>,
    running: Arc<AtomicUsize>,
    max: usize,
    /// Woken whenever a VM's end is recorded.
    ended: Notify,
}

impl Registry {
    /// An empty registry that admits at most `max` running VMs.
    pub fn new(max: usize) -> Self {
        Self {
            vms: RwLock::new(HashMap::new()),
            running: Arc::new(AtomicUsize::new(0)),
            max,
            ended: Notify::new(),
        }
    }

    /// A place for one more running VM, or `None` at the limit.
    pub fn reserve(&self) -> Option<Slot> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                running: self.running.clone(),
            })
    }

    /// A place for a VM found running after a restart: it runs whatever the limit
    /// says, so it is counted even beyond it.
    pub fn reserve_adopted(&self) -> Slot {
        self.running.fetch_add(1, Ordering::AcqRel);
        Slot {
            running: self.running.clone(),
        }
    }

    /// VMs counted as running (creates under way included).
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// The most VMs that may run.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Enters a VM.
    pub fn insert(&self, entry: VmEntry) {
        let id = entry.record.id.clone();
        write_lock(&self.vms).insert(id, entry);
    }

    /// Records a VM's end (the first one wins) and gives back its place.
    pub fn finish(&self, id: &str, exit: ExitRecord) {
        if let Some(entry) = write_lock(&self.vms).get_mut(id) {
            if entry.exit.is_none() {
                entry.exit = Some(exit);
            }
            entry.pidfd = None;
            entry.slot = None;
        }
        self.ended.notify_waiters();
    }

    /// Runs `f` on a VM's entry.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&VmEntry) -> T) -> Option<T> {
        read_lock(&self.vms).get(id).map(f)
    }

    /// Runs `f` on a VM's entry, to change it.
    pub fn with_mut<T>(&self, id: &str, f: impl FnOnce(&mut VmEntry) -> T) -> Option<T> {
        write_lock(&self.vms).get_mut(id).map(f)
    }

    /// Every VM, oldest first.
    pub fn list(&self) -> Vec<VmView> {
        let mut list: Vec<VmView> = read_lock(&self.vms).values().map(VmEntry::view).collect();
        list.sort_by_key(|v| (v.created_unix_ms, v.id.clone()));
        list
    }

    /// (running, ended) VMs in the registry.
    pub fn counts(&self) -> (usize, usize) {
        let vms = read_lock(&self.vms);
        let ended = vms.values().filter(|e| e.exit.is_some()).count();
        (vms.len() - ended, ended)
    }

    /// Waits until VM `id` has ended or is unknown.
    pub async fn wait_ended(&self, id: &str) {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            // Registered before the check, so an end recorded in between wakes it.
            notified.as_mut().enable();
            if self.with(id, |e| e.exit.is_some()).unwrap_or(true) {
                return;
            }
            notified.await;
        }
    }

    /// Forgets a VM that has ended; `false` if it still runs (or is unknown).
    pub fn forget_ended(&self, id: &str) -> bool {
        let mut vms = write_lock(&self.vms);
        if vms.get(id).is_some_and(|e| e.exit.is_some()) {
            vms.remove(id);
            return true;
        }
        false
    }
}

/// Locks for reading; a panic while holding the lock is a bug that must not take
/// the whole daemon down with a poisoned lock, so the data is used as it is.
fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks for writing; see [`read_lock`].
fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Outcome;

    fn record(id: &str) -> VmRecord {
        VmRecord {
            id: id.into(),
            image: "/img".into(),
            linux: None,
            mem_size: 2 << 20,
            cmdline: String::new(),
            net: None,
            pid: 1,
            pid_start_time: 2,
            created_unix_ms: 3,
            owner_uid: 0,
            jail: None,
        }
    }

    #[test]
    fn slots_are_bounded_and_given_back_by_drop() {
        let registry = Registry::new(2);
        let first = registry.reserve().expect("one");
        let second = registry.reserve().expect("two");
        assert!(registry.reserve().is_none(), "the limit");
        drop(first);
        assert_eq!(registry.running(), 1);
        let third = registry.reserve().expect("a place again");
        let adopted = registry.reserve_adopted();
        assert_eq!(registry.running(), 3, "adopted VMs count beyond the limit");
        drop((second, third, adopted));
        assert_eq!(registry.running(), 0);
    }

    #[test]
    fn an_entrys_place_is_given_back_once_when_it_ends() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let registry = Registry::new(1);
            let slot = registry.reserve().unwrap();
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let fd = Arc::new(crate::process::watchable(OwnedFd::from(a)).unwrap());
            registry.insert(VmEntry::running(record("a"), fd, slot, None));
            assert!(registry.reserve().is_none());
            assert!(!registry.forget_ended("a"), "it runs");
            registry.finish("a", ExitRecord::new(Outcome::Exited, "first"));
            registry.finish("a", ExitRecord::new(Outcome::Killed, "second"));
            assert_eq!(registry.running(), 0, "given back once");
            assert_eq!(
                registry.with("a", |e| e.exit.clone().unwrap().detail),
                Some("first".to_owned())
            );
            registry.wait_ended("a").await;
            registry.wait_ended("unknown").await;
            assert!(registry.forget_ended("a"));
            assert_eq!(registry.counts(), (0, 0));
        });
    }
}
