//! Spilling tracked device copies to the host under a device budget, and
//! bringing them back on their next device use.
//!
//! The registry ([`crate::track`]) knows every tracked tensor's device
//! range; this module moves bytes and keeps the counters straight. It runs
//! with no pool lock held: a spill downloads, and a reload allocates.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::stats::HostDevice;
use crate::trace::{Event, Tier};
use crate::track::{Cell, DevState, Pin, Victim};
use crate::zone::{DevicePlace, DeviceRange, Use, Zone};

/// One spill at a time per pool. A spill holds its victim's lock while it
/// downloads, and a search for victims try-locks every tensor it looks at:
/// two threads searching at once each saw the other's victims as busy, and
/// both failed with `OutOfMemory` while one could have spilled.
#[derive(Default)]
pub(crate) struct Gate {
    lock: Mutex<()>,
    /// Spills done on this pool: a thread that sees one done since its
    /// failed try at the pool tries the pool again before spilling more.
    spills: AtomicU64,
}

impl Zone {
    /// The pool's spill count, read before a try at the pool that
    /// [`Zone::spill_one`] may follow.
    pub(crate) fn spills_seen(&self) -> u64 {
        self.root().inner.tracking.spill_gate.spills.load(Acquire)
    }

    /// Spills the least recently used spillable device copy of any zone
    /// that shares this zone's pool (its root and every child): `false`
    /// when there is none. `true` also when another thread spilled since
    /// the caller read `seen` ([`Zone::spills_seen`], before its failed
    /// try at the pool): the caller tries the pool again.
    ///
    /// The gate is never held while waiting for a tensor's lock (victims
    /// are only try-locked), so a caller holding one tensor's lock (a
    /// reload) cannot deadlock with the thread at the gate.
    pub(crate) fn spill_one(&self, seen: u64) -> Result<bool> {
        let zones = self.pool_zones();
        let root = zones[0].clone();
        let gate = &root.inner.tracking.spill_gate;
        let _turn = gate.lock.lock().unwrap_or_else(|p| p.into_inner());
        if gate.spills.load(Acquire) != seen {
            return Ok(true);
        }
        let mut found: Vec<(u64, Victim, Zone)> = Vec::new();
        for zone in zones {
            for (last, v) in zone.inner.tracking.registry.spill_candidates() {
                found.push((last, v, zone.clone()));
            }
        }
        // One clock ticks for the whole pool (`Zone::lru_tick`).
        found.sort_by_key(|f| f.0);
        for (_, victim, owner) in found {
            if owner.spill(&victim)? {
                gate.spills.fetch_add(1, Release);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits for the device for an allocation that found nothing left to
    /// spill: the operands of kernels recorded since the last wait are
    /// bound (a kernel may still use them), and after a wait, which
    /// submits those kernels first, they may spill. Every zone on the pool
    /// counts the wait, since they share the device's queue. Bindings
    /// taken for the caller's own work stay: the caller may not have
    /// submitted it yet.
    ///
    /// `false` when no copy was bound by a kernel since the last wait:
    /// then there is nothing to wait for.
    pub(crate) fn wait_for_bound(&self) -> Result<bool> {
        let zones = self.pool_zones();
        if !zones
            .iter()
            .any(|z| z.inner.tracking.registry.kernel_bound())
        {
            return Ok(false);
        }
        let marks: Vec<u64> = zones
            .iter()
            .map(|z| z.inner.tracking.registry.wait_start())
            .collect();
        if let crate::backend::Backend::Gpu(g) = &*self.inner.backend {
            g.wait_idle()?;
        }
        for (z, mark) in zones.iter().zip(marks) {
            z.inner.tracking.registry.kernel_wait_done(mark);
        }
        Ok(true)
    }

    /// The zone whose pool this zone uses: itself, or its parents' root.
    fn root(&self) -> Zone {
        let mut root = self.clone();
        while let Some(p) = root.parent().cloned() {
            root = p;
        }
        root
    }

    /// The zones on this zone's pool: its root first, then all the root's
    /// children.
    fn pool_zones(&self) -> Vec<Zone> {
        let mut out = vec![self.root()];
        let mut i = 0;
        while i < out.len() {
            let kids = out[i].live_children();
            out.extend(kids);
            i += 1;
        }
        out
    }

    /// Spills `victim`, a tensor of this zone, if it is still idle.
    fn spill(&self, victim: &Victim) -> Result<bool> {
        let registry = &self.inner.tracking.registry;
        let Some(mut dev) = victim.lock_if_idle(registry) else {
            return Ok(false);
        };
        let Some(range) = dev.range.take() else {
            return Ok(false);
        };
        let len = victim.cell.meta.bytes.load(Relaxed);
        let mut saved = Vec::new();
        if let Err(e) = saved.try_reserve_exact(len as usize) {
            dev.range = Some(range);
            return Err(Error::HostOutOfMemory {
                bytes: len,
                detail: e.to_string(),
            });
        }
        saved.resize(len as usize, 0);
        // Not `download`: a spill's own wait must not count as the
        // device wait that frees bound tensors for spilling.
        if let Err(e) = self.download_now(range.place(), &mut saved) {
            dev.range = Some(range);
            return Err(e);
        }
        let size = range.size();
        self.free_device(range, Use::owned(false));
        dev.saved = Some(saved);
        // Counted before the cell's lock goes: a drop, relabel or
        // release of this tensor on another thread waits for it.
        let c = self.counters();
        c.spills.add(len);
        c.spilled_held.fetch_add(len, Relaxed);
        c.add_host(len);
        self.label_move(&victim.cell, size, len, true);
        self.shared_move(&mut dev, size, len, true);
        drop(dev);
        self.trace(|| Event::Spill { bytes: len });
        Ok(true)
    }

    /// Moves a spilled or reloaded tensor's label count between the device
    /// (`size` reserved bytes) and the host (`len` bytes).
    fn label_move(&self, cell: &Cell, size: u64, len: u64, to_host: bool) {
        let label = cell.meta.label.load(Relaxed);
        if label == 0 {
            return;
        }
        let labels = &self.inner.labels;
        let host = HostDevice {
            host: len,
            device: 0,
        };
        let device = HostDevice {
            host: 0,
            device: size,
        };
        labels.count(label, host, to_host);
        labels.count(label, device, !to_host);
    }

    /// Moves a spilled or reloaded copy's count in the shared tier, when a
    /// shared handle holds the tensor, and notes the move for the handle's
    /// next recount (see `Tensor::held_shared`).
    fn shared_move(&self, dev: &mut DevState, size: u64, len: u64, to_host: bool) {
        if !dev.in_shared {
            return;
        }
        let (host, device) = (len as i64, size as i64);
        let shared = &self.counters().shared;
        let (from, to, sign) = if to_host {
            (
                HostDevice {
                    host: 0,
                    device: size,
                },
                HostDevice {
                    host: len,
                    device: 0,
                },
                1,
            )
        } else {
            (
                HostDevice {
                    host: len,
                    device: 0,
                },
                HostDevice {
                    host: 0,
                    device: size,
                },
                -1,
            )
        };
        shared.sub(from);
        shared.add(to);
        dev.shared_moved.host += sign * host;
        dev.shared_moved.device -= sign * device;
    }

    /// Pins a tracked tensor's device copy for one operation, reloading it
    /// first if it was spilled: its place, or `None` if it has no device
    /// copy.
    pub(crate) fn pin_device(&self, cell: &Arc<Cell>) -> Result<(Pin, Option<DevicePlace>)> {
        let (pin, place, _) = self.pin_device_with(cell, true)?;
        Ok((pin, place))
    }

    /// [`Zone::pin_device`] for a write that replaces every byte: a spilled
    /// copy gets a device range back, and its saved bytes are dropped
    /// instead of uploaded. The flag says so: the range then holds nothing
    /// of this tensor's yet.
    pub(crate) fn pin_device_to_overwrite(
        &self,
        cell: &Arc<Cell>,
    ) -> Result<(Pin, Option<DevicePlace>, bool)> {
        self.pin_device_with(cell, false)
    }

    fn pin_device_with(
        &self,
        cell: &Arc<Cell>,
        keep_bytes: bool,
    ) -> Result<(Pin, Option<DevicePlace>, bool)> {
        let mut dev = cell.dev();
        let spilled = dev.saved.is_some();
        if spilled {
            self.reload(cell, &mut dev, keep_bytes)?;
        }
        dev.last_use = self.lru_tick();
        let place = dev.range.as_ref().map(DeviceRange::place);
        Ok((Pin::new(cell), place, spilled && !keep_bytes))
    }

    /// Gives a spilled copy a device range again and uploads its bytes, or
    /// with `keep_bytes` false drops them (the caller overwrites them all).
    fn reload(&self, cell: &Cell, dev: &mut DevState, keep_bytes: bool) -> Result<()> {
        let len = cell.meta.bytes.load(Relaxed);
        // The saved bytes count as host bytes until the upload is done; a
        // quota must not see them twice, so they leave the count first.
        let c = self.counters();
        c.sub_host(len);
        // This cell's lock is held, so the allocation cannot spill it.
        let range = match self.alloc_device(len, Use::owned(false)) {
            Ok(r) => r,
            Err(e) => {
                c.add_host(len);
                return Err(e);
            }
        };
        let Some(saved) = dev.saved.as_ref() else {
            c.add_host(len);
            self.free_device(range, Use::owned(false));
            return Ok(());
        };
        if keep_bytes {
            if let Err(e) = self.upload(range.place(), saved) {
                c.add_host(len);
                self.free_device(range, Use::owned(false));
                return Err(e);
            }
        }
        let size = range.size();
        dev.range = Some(range);
        dev.saved = None;
        c.spilled_held.fetch_sub(len, Relaxed);
        self.label_move(cell, size, len, false);
        self.shared_move(dev, size, len, false);
        if keep_bytes {
            c.reloads.add(len);
            self.trace(|| Event::Reload { bytes: len });
        } else {
            // Dropped, as when a spilled tensor is dropped.
            self.trace(|| Event::live(false, Tier::Owned, crate::residency::Location::Host, len));
        }
        Ok(())
    }

    /// Releases a tracked tensor's device copy, resident or spilled (its
    /// label counts are the caller's). `dropped` counts the tensor as
    /// dropped with it.
    pub(crate) fn release_tracked(&self, cell: &Cell, dropped: bool) {
        let mut dev = cell.dev();
        let (range, saved) = (dev.range.take(), dev.saved.take());
        drop(dev);
        self.release_device_copy(range, saved, dropped);
    }

    /// Gives back a tracked tensor's range or spilled bytes, taken out of
    /// its cell under the cell's lock.
    pub(crate) fn release_device_copy(
        &self,
        range: Option<DeviceRange>,
        saved: Option<Vec<u8>>,
        dropped: bool,
    ) {
        if let Some(saved) = saved {
            let len = saved.len() as u64;
            let c = self.counters();
            c.spilled_held.fetch_sub(len, Relaxed);
            c.sub_host(len);
            self.trace(|| Event::live(false, Tier::Owned, crate::residency::Location::Host, len));
        }
        match range {
            Some(range) => self.free_device(range, Use::owned(dropped)),
            None if dropped => {
                self.counters().tensors_dropped.fetch_add(1, Relaxed);
            }
            None => {}
        }
    }
}
