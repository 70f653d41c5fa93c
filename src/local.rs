//! Per-thread caches of freed device ranges, one magazine per (thread, zone).
//!
//! A thread that frees a slab range keeps it in its magazine; its next
//! allocation of that size takes it back without touching the zone's lock.
//! This is what makes pooled allocation cost tens of nanoseconds. Ranges
//! held here count as cached, never as live; they go back to the shared pool
//! when the magazine is full, when this thread calls `trim` or next
//! allocates after any thread's `trim`, and when the thread exits.

use std::cell::RefCell;
use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, SeqCst},
};
use std::sync::{Arc, Weak};

use crate::pool::{Magazine, PoolAlloc};
use crate::zone::ZoneInner;

/// Counters of one thread's magazine. Only the owning thread writes them,
/// with a plain load and store (no read-modify-write); `stats` reads them.
#[derive(Debug, Default)]
pub(crate) struct LocalCounters {
    pub(crate) cached_bytes: AtomicU64,
    pub(crate) allocations: AtomicU64,
    pub(crate) frees: AtomicU64,
    /// Allocations that created no tensor (arena chunks, a host tensor's
    /// first device copy): tensors created are `allocations` minus these,
    /// so the common case, a new tensor, writes one counter less.
    pub(crate) non_tensor_allocs: AtomicU64,
    /// Frees that dropped no tensor; tensors dropped are `frees` minus these.
    pub(crate) non_tensor_frees: AtomicU64,
}

#[inline]
fn add(c: &AtomicU64, d: u64) {
    c.store(c.load(Relaxed).wrapping_add(d), Relaxed);
}

struct Entry {
    zone_id: u64,
    zone: Weak<ZoneInner>,
    /// The zone's trim epoch this magazine has seen.
    epoch: u64,
    mag: Magazine,
    counters: Arc<LocalCounters>,
}

impl Entry {
    /// Publishes the bytes the magazine holds now.
    #[inline]
    fn sync_cached(&self) {
        self.counters.cached_bytes.store(self.mag.bytes(), Relaxed);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // A zone that is gone needs nothing back; checking first also keeps
        // this destructor from being the one that drops a live zone.
        if self.zone.strong_count() == 0 {
            return;
        }
        // Counted before the handle exists and after it is gone, so a leak
        // check that sees one handle too many knows to wait.
        RETURNING.fetch_add(1, SeqCst);
        let _ = RETURNING_HERE.try_with(|r| r.set(true));
        if let Some(zone) = self.zone.upgrade() {
            zone.absorb_local(self.mag.drain(), &self.counters);
        }
        let _ = RETURNING_HERE.try_with(|r| r.set(false));
        RETURNED.fetch_add(1, SeqCst);
        RETURNING.fetch_sub(1, SeqCst);
    }
}

/// Magazines of exiting threads being given back, each through a zone
/// handle of its own meanwhile (any zone: it is rare and short).
static RETURNING: AtomicUsize = AtomicUsize::new(0);
/// Magazines given back so far: a check that read a zone's handle count
/// while one was, and found none being given back after, sees this move.
static RETURNED: AtomicU64 = AtomicU64::new(0);

/// How many exiting threads' magazines have been given back so far.
pub(crate) fn returned() -> u64 {
    RETURNED.load(SeqCst)
}

/// Longest a leak check waits for exiting threads' magazines.
const RETURN_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether an exiting thread is giving its magazine back now.
pub(crate) fn returning() -> bool {
    RETURNING.load(SeqCst) > 0
}

thread_local! {
    /// Whether this thread is giving a magazine back: a zone dropped
    /// meanwhile (the magazine's handle was its last) must not wait for
    /// this very thread.
    static RETURNING_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Waits until no exiting thread is giving a magazine back (at most
/// `RETURN_WAIT`: the caller may hold a lock one needs; not at all on a
/// thread that is itself giving one back).
pub(crate) fn wait_returned() {
    if RETURNING_HERE.try_with(|r| r.get()).unwrap_or(true) {
        return;
    }
    let start = std::time::Instant::now();
    while returning() && start.elapsed() < RETURN_WAIT {
        std::thread::yield_now();
    }
}

thread_local! {
    static LOCAL: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// Takes a cached range of exactly `size` reserved bytes for `zone`, or
/// `None` (nothing cached, no magazine yet, a `trim` since this magazine
/// last looked, or the thread is exiting): the caller then takes the
/// pool's lock and calls [`take_stale`] first.
#[inline(always)]
pub(crate) fn pop(zone: &ZoneInner, size: u64, new_tensor: bool) -> Option<PoolAlloc> {
    LOCAL
        .try_with(|l| {
            let mut l = l.try_borrow_mut().ok()?;
            let e = l.iter_mut().find(|e| e.zone_id == zone.id)?;
            if e.epoch != zone.trim_epoch.load(Relaxed) {
                return None;
            }
            let a = e.mag.pop(size)?;
            e.sync_cached();
            add(&e.counters.allocations, 1);
            if !new_tensor {
                add(&e.counters.non_tensor_allocs, 1);
            }
            Some(a)
        })
        .ok()
        .flatten()
}

/// The ranges this thread's magazine for `zone` held from before the
/// latest `trim` (empty when there was none since it last looked): they
/// must go back to the pool.
pub(crate) fn take_stale(zone: &ZoneInner) -> Vec<PoolAlloc> {
    LOCAL
        .try_with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else {
                return Vec::new();
            };
            let Some(e) = l.iter_mut().find(|e| e.zone_id == zone.id) else {
                return Vec::new();
            };
            let epoch = zone.trim_epoch.load(Acquire);
            if e.epoch == epoch {
                return Vec::new();
            }
            // While a trace runs the cache stays stale (bypassed), so every
            // allocation reaches the pool's path, which records it.
            if !zone.recorder.on() {
                e.epoch = epoch;
            }
            let stale = e.mag.drain();
            e.sync_cached();
            stale
        })
        .unwrap_or_default()
}

/// What became of a range offered to this thread's magazine.
pub(crate) struct Pushed {
    /// The range, when the magazine did not keep it (full, not a slab
    /// range, or the thread is exiting): the caller frees it to the pool.
    pub(crate) back: Option<PoolAlloc>,
    /// Ranges the magazine gave up (held from before a `trim`, or evicted
    /// to make room): they go back to the pool too (their frees were
    /// counted already).
    pub(crate) stale: Vec<PoolAlloc>,
}

/// Offers a freed range to this thread's magazine for `zone`: `Ok` when
/// kept on the fast path (a stack of its size with room, no trim since),
/// else the range back for [`push_slow`].
#[inline(always)]
pub(crate) fn push(
    zone: &ZoneInner,
    a: PoolAlloc,
    tensor_dropped: bool,
) -> std::result::Result<(), PoolAlloc> {
    // The closure borrows the range rather than taking it, so that it is
    // handed back even when the thread-local is gone (thread exit).
    let mut a = Some(a);
    let kept = LOCAL.try_with(|l| {
        let Ok(mut l) = l.try_borrow_mut() else {
            return;
        };
        let Some(e) = l.iter_mut().find(|e| e.zone_id == zone.id) else {
            return;
        };
        if e.epoch != zone.trim_epoch.load(Relaxed) {
            return;
        }
        let Some(range) = a.take() else {
            return;
        };
        match e.mag.push_fast(range) {
            Ok(()) => {
                e.sync_cached();
                add(&e.counters.frees, 1);
                if !tensor_dropped {
                    add(&e.counters.non_tensor_frees, 1);
                }
            }
            Err(range) => a = Some(range),
        }
    });
    let _ = kept;
    match a {
        None => Ok(()),
        Some(range) => Err(range),
    }
}

/// The rest of `push`: a first range for this zone, a trim since, or a
/// magazine that must make room.
#[cold]
pub(crate) fn push_slow(zone: &Arc<ZoneInner>, a: PoolAlloc, tensor_dropped: bool) -> Pushed {
    let mut out = Pushed {
        back: Some(a),
        stale: Vec::new(),
    };
    // An Err here means the thread is exiting: the range stays in `back`.
    let _ = LOCAL.try_with(|l| {
        let Ok(mut l) = l.try_borrow_mut() else {
            return;
        };
        let i = match l.iter().position(|e| e.zone_id == zone.id) {
            Some(i) => i,
            None => {
                // Entries of zones that are gone hold nothing worth keeping.
                l.retain(|e| e.zone.strong_count() > 0);
                l.push(Entry {
                    zone_id: zone.id,
                    zone: Arc::downgrade(zone),
                    // Born stale while a trace runs (see `take_stale`).
                    epoch: zone
                        .trim_epoch
                        .load(Acquire)
                        .wrapping_sub(u64::from(zone.recorder.on())),
                    mag: Magazine::new(zone.local_max_bytes),
                    counters: zone.register_local(),
                });
                l.len() - 1
            }
        };
        let e = &mut l[i];
        let epoch = zone.trim_epoch.load(Acquire);
        if e.epoch != epoch {
            out.stale = e.mag.drain();
            if zone.recorder.on() {
                // Tracing: keep nothing, stay stale (see `take_stale`).
                e.sync_cached();
                return;
            }
            e.epoch = epoch;
        }
        let Some(range) = out.back.take() else {
            return;
        };
        match e.mag.push(range, &mut out.stale) {
            Ok(()) => {
                add(&e.counters.frees, 1);
                if !tensor_dropped {
                    add(&e.counters.non_tensor_frees, 1);
                }
            }
            Err(range) => out.back = Some(range),
        }
        // Drains and evictions change the held bytes too: copy the total.
        e.sync_cached();
    });
    out
}

/// Empties this thread's magazine for `zone` (for `trim`).
pub(crate) fn drain(zone: &ZoneInner) -> Vec<PoolAlloc> {
    LOCAL
        .try_with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else {
                return Vec::new();
            };
            match l.iter_mut().find(|e| e.zone_id == zone.id) {
                Some(e) => {
                    if !zone.recorder.on() {
                        e.epoch = zone.trim_epoch.load(Acquire);
                    }
                    let ranges = e.mag.drain();
                    e.sync_cached();
                    ranges
                }
                None => Vec::new(),
            }
        })
        .unwrap_or_default()
}
