//! Tensors and arenas a zone tracks one by one.
//!
//! A zone with a device budget or with tracking turned on
//! ([`crate::ZoneBuilder::device_budget`], [`crate::ZoneBuilder::track_tensors`])
//! gives each owned or shared tensor a [`Cell`] and each arena an entry
//! here. The cell holds the tensor's device range, so the zone can spill
//! it to the host under memory pressure and the tensor reloads it on its
//! next device use; the entries feed [`crate::Zone::leaks`].
//!
//! Zones without either keep no entries: their tensors hold their ranges
//! themselves and their allocations stay on the per-thread fast path.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::dtype::DType;
use crate::stats::HostDevice;
use std::collections::{HashMap, HashSet};

use crate::zone::{DevicePlace, DeviceRange};

/// What a tracked entry stands for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LeakKind {
    /// An owned [`crate::Tensor`].
    Tensor,
    /// An [`crate::Arena`] (its tensors borrow it, so it stands for them).
    Arena,
}

/// One tensor or arena still alive, from [`crate::Zone::leaks`] or the
/// report made when a tracked zone's last handle is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// Tensor or arena.
    pub kind: LeakKind,
    /// Its label, if it has one.
    pub label: Option<String>,
    /// The element type (`None` for an arena).
    pub dtype: Option<DType>,
    /// The shape (empty for an arena).
    pub dims: Vec<usize>,
    /// Bytes: a tensor's element bytes, an arena's capacity.
    pub bytes: u64,
}

/// What the registry keeps for a leak report.
pub(crate) struct Meta {
    pub(crate) kind: LeakKind,
    /// Element type and dims (`None` and empty for an arena; also for a
    /// device tensor made with `empty` until its first use, see
    /// `Registry::add_pending`).
    pub(crate) shape: Mutex<(Option<DType>, Vec<usize>)>,
    /// A tensor's element bytes; an arena's chunks, growing with it.
    pub(crate) bytes: AtomicU64,
    /// Label id in the zone's table, changed by `set_label`.
    pub(crate) label: AtomicU8,
}

/// A tracked entry: its metadata, and for a tensor the device copy the
/// zone may spill.
pub(crate) struct Cell {
    /// The registry key (never 0).
    pub(crate) id: u32,
    /// Creation order, for reports.
    pub(crate) seq: u64,
    pub(crate) meta: Meta,
    pub(crate) dev: Mutex<DevState>,
    /// Operations under way that use the device range (see [`Pin`]).
    busy: AtomicU32,
}

/// Where a tracked tensor's device copy is.
#[derive(Default)]
pub(crate) struct DevState {
    /// The range, while resident.
    pub(crate) range: Option<DeviceRange>,
    /// The device copy's bytes, while spilled to the host.
    pub(crate) saved: Option<Vec<u8>>,
    /// The registry clock at the last device use (least recent spills first).
    pub(crate) last_use: u64,
    /// The registry's wait count when a kernel of the crate's last bound
    /// the range: until the zone has waited for the device since, the
    /// kernel may use it.
    pub(crate) bound_at: Option<u64>,
    /// The same for a binding taken for work of the caller's own
    /// (`binding()`), which the caller may not have submitted yet: only a
    /// wait the caller's calls make (a read back, `synchronize`) ends it,
    /// not the one an allocation makes for the crate's kernels
    /// ([`Registry::kernel_wait_done`]).
    pub(crate) user_bound_at: Option<u64>,
    /// Whether a shared handle counts this copy in its zone's shared tier:
    /// a spill or reload then moves that count between device and host.
    pub(crate) in_shared: bool,
    /// What spills and reloads moved in the shared tier's count since the
    /// shared handle last recounted the tensor (it takes them then).
    pub(crate) shared_moved: SharedMoved,
}

/// Bytes a spill or reload moved in the shared tier's count, host and
/// device, signed (a reload undoes a spill).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SharedMoved {
    pub(crate) host: i64,
    pub(crate) device: i64,
}

impl SharedMoved {
    /// `counted` with these moves made.
    pub(crate) fn apply(self, counted: HostDevice) -> HostDevice {
        HostDevice {
            host: counted.host.wrapping_add_signed(self.host),
            device: counted.device.wrapping_add_signed(self.device),
        }
    }
}

impl DevState {
    /// Whether the tensor has a device copy, resident or spilled.
    pub(crate) fn exists(&self) -> bool {
        self.range.is_some() || self.saved.is_some()
    }
}

impl Cell {
    /// The device state, whatever a panicking holder left (every change to
    /// it is one assignment).
    pub(crate) fn dev(&self) -> MutexGuard<'_, DevState> {
        self.dev.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device state if nobody holds it now.
    fn try_dev(&self) -> Option<MutexGuard<'_, DevState>> {
        match self.dev.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// Keeps a tracked tensor's device range from being spilled while an
/// operation uses it.
pub(crate) struct Pin {
    cell: Arc<Cell>,
}

impl Pin {
    /// Counts an operation; the caller holds the cell's device lock.
    pub(crate) fn new(cell: &Arc<Cell>) -> Pin {
        cell.busy.fetch_add(1, Ordering::Acquire);
        Pin {
            cell: Arc::clone(cell),
        }
    }
}

impl Pin {
    /// Keeps the copy from spilling until [`Pin::release_hold`], past this
    /// pin's life: a kernel holds its operands from binding to submit.
    pub(crate) fn hold(&self) {
        self.cell.busy.fetch_add(1, Ordering::Acquire);
    }

    /// Ends a [`Pin::hold`], with the kernel submitted at `mark`: the copy
    /// may spill once the zone has next waited for the device.
    pub(crate) fn release_hold(&self, mark: u64) {
        self.mark_bound(mark);
        self.cancel_hold();
    }

    /// Ends a [`Pin::hold`] whose kernel was never recorded: the copy may
    /// spill at once.
    pub(crate) fn cancel_hold(&self) {
        self.cell.busy.fetch_sub(1, Ordering::Release);
    }

    /// Records a binding taken at `mark` ([`Registry::binding_mark`]).
    pub(crate) fn mark_bound(&self, mark: u64) {
        let mut dev = self.cell.dev();
        dev.bound_at = dev.bound_at.max(Some(mark));
    }

    /// Records a binding taken at `mark` for the caller's own work (see
    /// [`DevState::user_bound_at`]).
    pub(crate) fn mark_user_bound(&self, mark: u64) {
        let mut dev = self.cell.dev();
        dev.user_bound_at = dev.user_bound_at.max(Some(mark));
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.cell.busy.fetch_sub(1, Ordering::Release);
    }
}

/// A spill candidate, taken out of its tensor.
pub(crate) struct Victim {
    pub(crate) cell: Arc<Cell>,
}

/// The registry's slots. Strong: an entry lives until its tensor or arena
/// removes it, so a forgotten tensor stays in the leak report.
#[derive(Default)]
struct Entries {
    slots: Vec<Option<Arc<Cell>>>,
    free: Vec<usize>,
    live: usize,
    /// Entries the pool made for new device tensors, by their range, until
    /// each tensor takes its entry over on first use (see `add_pending`).
    pending: HashMap<DevicePlace, u32>,
    /// Entries registered with their tensor's range at allocation, whose
    /// tensor may not have its zone handle yet: counted as pending until
    /// its first use (see [`Registry::adopt_awaiting`]).
    awaiting: HashSet<u32>,
}

/// The zone's tracked entries.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<Entries>,
    next: AtomicU64,
    /// Waits for the device that have started / the newest start whose
    /// wait has ended.
    waits_started: AtomicU64,
    waits_done: AtomicU64,
    /// The waits of `waits_done` that end the caller's own bindings too.
    user_waits_done: AtomicU64,
}

impl Registry {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new entry; [`Registry::remove`] with its id forgets it.
    /// `None` only past `u32::MAX - 1` live entries.
    pub(crate) fn add(&self, meta: Meta) -> Option<Arc<Cell>> {
        self.insert(meta, None)
    }

    /// `add`, listing the entry as pending for the range at `place` in the
    /// same step (the leak check reads both counts together).
    fn insert(&self, meta: Meta, place: Option<DevicePlace>) -> Option<Arc<Cell>> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let mut e = self.entries();
        let index = match e.free.pop() {
            Some(i) => i,
            None => {
                e.slots.push(None);
                e.slots.len() - 1
            }
        };
        let Ok(id) = u32::try_from(index + 1) else {
            e.free.push(index);
            return None;
        };
        let cell = Arc::new(Cell {
            id,
            seq,
            meta,
            dev: Mutex::new(DevState::default()),
            busy: AtomicU32::new(0),
        });
        e.slots[index] = Some(Arc::clone(&cell));
        e.live += 1;
        if let Some(place) = place {
            e.pending.insert(place, id);
        }
        Some(cell)
    }

    /// An entry for a tensor the pool has just given the range at `place`
    /// (the allocation fast path builds the handle with no registry work;
    /// the tensor takes the entry over, with its range, on first use).
    ///
    /// It knows the range's reserved bytes only: passing the shape or the
    /// dtype down costs the fast path instructions of its own. The tensor
    /// fills them in when it takes the entry over.
    pub(crate) fn add_pending(&self, reserved: u64, place: DevicePlace) {
        let meta = Meta {
            kind: LeakKind::Tensor,
            shape: Default::default(),
            bytes: reserved.into(),
            label: Default::default(),
        };
        self.insert(meta, Some(place));
    }

    /// Runs `f` with the live and pending entry counts, under the lock
    /// that every change to them takes.
    pub(crate) fn with_counts<R>(&self, f: impl FnOnce(usize, usize) -> R) -> R {
        let e = self.entries();
        f(e.live, e.pending.len() + e.awaiting.len())
    }

    /// The pending entry of the tensor whose range is at `place`.
    pub(crate) fn adopt(&self, place: DevicePlace) -> Option<Arc<Cell>> {
        let mut e = self.entries();
        let id = e.pending.remove(&place)?;
        e.slots.get(id as usize - 1)?.clone()
    }

    /// [`Registry::adopt`] for a tensor that does not hold its zone handle
    /// yet: the entry still counts as pending, so a leak check meanwhile
    /// waits, until [`Registry::handle_taken`].
    pub(crate) fn adopt_awaiting(&self, place: DevicePlace) -> Option<Arc<Cell>> {
        let mut e = self.entries();
        let id = e.pending.remove(&place)?;
        let cell = e.slots.get(id as usize - 1)?.clone()?;
        e.awaiting.insert(id);
        Some(cell)
    }

    /// Ends an [`Registry::adopt_awaiting`] wait: entry `id`'s tensor
    /// holds its zone handle.
    pub(crate) fn handle_taken(&self, id: u32) {
        self.entries().awaiting.remove(&id);
    }

    /// Removes the pending entry of a tensor dropped before its first use.
    pub(crate) fn drop_pending(&self, place: DevicePlace) {
        let id = self.entries().pending.remove(&place);
        if let Some(id) = id {
            self.remove(id);
        }
    }

    /// The entry `id`, while its tensor or arena lives.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<Cell>> {
        let e = self.entries();
        e.slots.get(id as usize - 1)?.clone()
    }

    /// Forgets an entry (its tensor or arena is gone), handing it back.
    pub(crate) fn remove(&self, id: u32) -> Option<Arc<Cell>> {
        let mut e = self.entries();
        let index = id as usize - 1;
        let cell = e.slots.get_mut(index)?.take()?;
        e.free.push(index);
        e.live -= 1;
        if !e.awaiting.is_empty() {
            e.awaiting.remove(&id);
        }
        Some(cell)
    }

    /// Live entries, oldest first.
    pub(crate) fn live(&self) -> Vec<Arc<Cell>> {
        let mut v: Vec<Arc<Cell>> = self.entries().slots.iter().flatten().cloned().collect();
        v.sort_by_key(|c| c.seq);
        v
    }

    /// Live tensors and their element bytes by dtype, most bytes first.
    pub(crate) fn by_dtype(&self) -> Vec<crate::DTypeUsage> {
        let mut out: Vec<crate::DTypeUsage> = Vec::new();
        for cell in self.live() {
            let Some(dtype) = cell.meta.shape.lock().unwrap_or_else(|p| p.into_inner()).0 else {
                continue;
            };
            let bytes = cell.meta.bytes.load(Ordering::Relaxed);
            match out.iter_mut().find(|d| d.dtype == dtype) {
                Some(d) => {
                    d.tensors += 1;
                    d.bytes += bytes;
                }
                None => out.push(crate::DTypeUsage {
                    dtype,
                    tensors: 1,
                    bytes,
                }),
            }
        }
        out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.tensors.cmp(&b.tensors)));
        out
    }

    /// Marks the start of a wait for the device; pass the value to
    /// [`Registry::wait_done`] when it ends.
    pub(crate) fn wait_start(&self) -> u64 {
        self.waits_started.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Every kernel submitted before wait `n` started has finished.
    pub(crate) fn wait_done(&self, n: u64) {
        self.waits_done.fetch_max(n, Ordering::AcqRel);
        self.user_waits_done.fetch_max(n, Ordering::AcqRel);
    }

    /// [`Registry::wait_done`] for a wait the zone made on its own (an
    /// allocation with nothing else to spill): the crate's kernels
    /// submitted before it have finished, but a binding the caller took
    /// may still be waiting for the caller's own submit.
    pub(crate) fn kernel_wait_done(&self, n: u64) {
        self.waits_done.fetch_max(n, Ordering::AcqRel);
    }

    /// Whether no kernel that may still run, nor the caller's own work,
    /// uses `d`'s range.
    fn unbound(&self, d: &DevState) -> bool {
        let done = self.waits_done.load(Ordering::Acquire);
        let user_done = self.user_waits_done.load(Ordering::Acquire);
        d.bound_at.is_none_or(|b| b < done) && d.user_bound_at.is_none_or(|b| b < user_done)
    }

    /// Whether a resident copy may be in use by a kernel of the crate's
    /// recorded since the last wait (a copy locked now counts).
    pub(crate) fn kernel_bound(&self) -> bool {
        let done = self.waits_done.load(Ordering::Acquire);
        self.live().iter().any(|cell| match cell.try_dev() {
            Some(d) => d.range.is_some() && d.bound_at.is_some_and(|b| b >= done),
            None => true,
        })
    }

    /// The value a binding records (see [`DevState::bound_at`]).
    pub(crate) fn binding_mark(&self) -> u64 {
        self.waits_started.load(Ordering::Acquire)
    }

    /// Resident device copies no operation, and no kernel that may still
    /// run, uses, with their last use (least recent spills first).
    pub(crate) fn spill_candidates(&self) -> Vec<(u64, Victim)> {
        self.live()
            .into_iter()
            .filter_map(|cell| {
                let last = {
                    let d = cell.try_dev()?;
                    let spillable = d.range.is_some()
                        && cell.busy.load(Ordering::Acquire) == 0
                        && self.unbound(&d);
                    spillable.then_some(d.last_use)?
                };
                Some((last, Victim { cell }))
            })
            .collect()
    }
}

impl Victim {
    /// The device state, if the candidate can still be spilled (no
    /// operation has started on it since it was chosen).
    pub(crate) fn lock_if_idle(&self, registry: &Registry) -> Option<MutexGuard<'_, DevState>> {
        let d = self.cell.try_dev()?;
        let ok = d.range.is_some()
            && self.cell.busy.load(Ordering::Acquire) == 0
            && registry.unbound(&d);
        ok.then_some(d)
    }
}
