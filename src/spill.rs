//! Spilling tracked device copies to the host under a device budget, and
//! bringing them back on their next device use.
//!
//! The registry ([`crate::track`]) knows every tracked tensor's device
//! range; this module moves bytes and keeps the counters straight. It runs
//! with no pool lock held: a spill downloads, and a reload allocates.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::stats::HostDevice;
use crate::trace::{Event, Tier};
use crate::track::{Cell, DevState, Pin};
use crate::zone::{DevicePlace, DeviceRange, Use, Zone};

impl Zone {
    /// Spills the least recently used spillable device copy: `false` when
    /// there is none.
    pub(crate) fn spill_one(&self) -> Result<bool> {
        let registry = &self.inner.tracking.registry;
        for victim in registry.spill_candidates() {
            let Some(mut dev) = victim.lock_if_idle(registry) else {
                continue;
            };
            let Some(range) = dev.range.take() else {
                continue;
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
            if let Err(e) = self.download(range.place(), &mut saved) {
                dev.range = Some(range);
                return Err(e);
            }
            let size = range.size();
            self.free_device(range, Use::owned(false));
            dev.saved = Some(saved);
            drop(dev);
            let c = self.counters();
            c.spills.add(len);
            c.spilled_held.fetch_add(len, Relaxed);
            c.add_host(len);
            self.label_move(&victim.cell, size, len, true);
            self.trace(|| Event::Spill { bytes: len });
            return Ok(true);
        }
        Ok(false)
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

    /// Pins a tracked tensor's device copy for one operation, reloading it
    /// first if it was spilled: its place, or `None` if it has no device
    /// copy.
    pub(crate) fn pin_device(&self, cell: &Arc<Cell>) -> Result<(Pin, Option<DevicePlace>)> {
        let mut dev = cell.dev();
        if dev.saved.is_some() {
            self.reload(cell, &mut dev)?;
        }
        dev.last_use = self.inner.tracking.registry.tick();
        let place = dev.range.as_ref().map(DeviceRange::place);
        Ok((Pin::new(cell), place))
    }

    /// Gives a spilled copy a device range again and uploads its bytes.
    fn reload(&self, cell: &Cell, dev: &mut DevState) -> Result<()> {
        let len = cell.meta.bytes.load(Relaxed);
        // This cell's lock is held, so the allocation cannot spill it.
        let range = self.alloc_device(len, Use::owned(false))?;
        let Some(saved) = dev.saved.as_ref() else {
            self.free_device(range, Use::owned(false));
            return Ok(());
        };
        if let Err(e) = self.upload(range.place(), saved) {
            self.free_device(range, Use::owned(false));
            return Err(e);
        }
        let size = range.size();
        dev.range = Some(range);
        dev.saved = None;
        let c = self.counters();
        c.reloads.add(len);
        c.spilled_held.fetch_sub(len, Relaxed);
        c.sub_host(len);
        self.label_move(cell, size, len, false);
        self.trace(|| Event::Reload { bytes: len });
        Ok(())
    }

    /// Releases a tracked tensor's device copy, resident or spilled (its
    /// label counts are the caller's). `dropped` counts the tensor as
    /// dropped with it.
    pub(crate) fn release_tracked(&self, cell: &Cell, dropped: bool) {
        let mut dev = cell.dev();
        let range = dev.range.take();
        let saved = dev.saved.take();
        drop(dev);
        if let Some(saved) = saved {
            let len = saved.len() as u64;
            let c = self.counters();
            c.spilled_held.fetch_sub(len, Relaxed);
            c.sub_host(len);
            self.trace(|| Event::Free {
                tier: Tier::Owned,
                location: crate::residency::Location::Host,
                bytes: len,
            });
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
