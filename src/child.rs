//! Child zones: their own accounting (and optional byte quota) over the
//! parent's pools, rolled up into the parent's figures.
//!
//! A child shares its parent's backend and pool state; everything it counts
//! (tensors, host bytes, transfers, labels, the registry of its tensors) is
//! its own. It tracks its tensors ([`crate::ZoneBuilder::track_tensors`]),
//! so its allocations take the pool's locked path, where its device bytes
//! are counted and its quota checked.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::stats::Totals;
use crate::zone::{Zone, ZoneInner, NEXT_ZONE_ID};

/// What a child zone keeps of its parent.
pub(crate) struct ChildOf {
    /// Kept alive by the child: its figures roll up there.
    pub(crate) parent: Zone,
    /// Most bytes (host and device) the child and its children may hold.
    pub(crate) quota: Option<u64>,
    /// Held from a quota check until the bytes it allowed are counted, so
    /// that two threads cannot both pass the check and together go past
    /// the quota.
    quota_lock: Mutex<()>,
}

/// The quota locks of a zone and its parents, held while an allocation
/// that passed [`Zone::check_quota`] is made and counted.
#[must_use = "the quota holds only while the guard is alive"]
pub(crate) struct QuotaGuard<'a> {
    _held: Vec<MutexGuard<'a, ()>>,
}

impl Zone {
    /// A child zone named `label` (its own label becomes
    /// `"parent/label"`): it allocates from this zone's pools and counts
    /// its own tensors, bytes and transfers, which also show in this zone's
    /// [`Zone::stats`]. Tensors of a zone and its children can be copied
    /// between each other.
    ///
    /// A child tracks its tensors ([`Zone::leaks`], `by_dtype`), so its
    /// allocations take the pool's lock. Its stats give its own tensors,
    /// live bytes, transfers and labels; the pool figures (reserved,
    /// cached, blocks) are those of the pool it shares.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::cpu();
    /// let io = zone.child("io");
    /// let t = Tensor::<f32>::zeros(&io, [256], Location::Device).unwrap();
    /// assert_eq!(io.stats().device_live_bytes, 1024);
    /// assert_eq!(zone.stats().device_live_bytes, 1024); // rolled up
    /// assert_eq!(zone.stats().tensors_live, 1);
    /// # drop(t);
    /// ```
    pub fn child(&self, label: &str) -> Zone {
        self.make_child(label, None)
    }

    /// A child zone (see [`Zone::child`]) that may hold at most `bytes`
    /// of host and device memory, its children's included. Past it an
    /// allocation fails with [`Error::QuotaExceeded`] and changes nothing.
    ///
    /// ```
    /// use tensorzone::{Error, Location, Tensor, Zone};
    /// let zone = Zone::cpu();
    /// let actor = zone.child_with_quota("actor", 4096);
    /// let a = Tensor::<u8>::zeros(&actor, [3000], Location::Host).unwrap();
    /// let err = Tensor::<u8>::zeros(&actor, [2000], Location::Device).unwrap_err();
    /// assert!(matches!(err, Error::QuotaExceeded { quota: 4096, used: 3000, .. }));
    /// # drop(a);
    /// ```
    pub fn child_with_quota(&self, label: &str, bytes: u64) -> Zone {
        self.make_child(label, Some(bytes))
    }

    fn make_child(&self, label: &str, quota: Option<u64>) -> Zone {
        let p = &self.inner;
        let inner = Arc::new(ZoneInner {
            backend: Arc::clone(&p.backend),
            info: p.info.clone(),
            label: format!("{}/{label}", p.label),
            limit: p.limit,
            counters: Default::default(),
            state: Arc::clone(&p.state),
            id: NEXT_ZONE_ID.fetch_add(1, Relaxed),
            trim_epoch: Default::default(),
            // Tracking: no per-thread cache (see `ZoneBuilder::track_tensors`).
            local_max_bytes: 0,
            local_max_range: 0,
            started: std::time::Instant::now(),
            recorder: Default::default(),
            labels: Default::default(),
            tracked: true,
            spill: p.spill,
            tracking: Default::default(),
            lru_clock: Arc::clone(&p.lru_clock),
            child: Some(Box::new(ChildOf {
                parent: self.clone(),
                quota,
                quota_lock: Mutex::new(()),
            })),
            children: Mutex::new(Vec::new()),
        });
        let mut children = p.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&inner));
        Zone { inner }
    }

    /// Whether tensors of the two zones may be copied between: the same
    /// device, a zone and its children.
    pub(crate) fn same_device(&self, other: &Zone) -> bool {
        Arc::ptr_eq(&self.inner.backend, &other.inner.backend)
    }

    /// The zone's parent, for a child zone.
    pub fn parent(&self) -> Option<&Zone> {
        self.inner.child.as_ref().map(|c| &c.parent)
    }

    /// This zone's counters and its children's, summed.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        self.add_totals(&mut t);
        t
    }

    /// This zone's child zones that are still alive.
    pub(crate) fn live_children(&self) -> Vec<Zone> {
        self.inner
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|w| w.upgrade().map(|inner| Zone { inner }))
            .collect()
    }

    fn add_totals(&self, t: &mut Totals) {
        self.inner.counters.add_to(t);
        for c in &self.live_children() {
            c.add_totals(t);
        }
    }

    /// Fails with [`Error::QuotaExceeded`] if `bytes` more would take this
    /// zone, or a parent of it, past its quota. Otherwise the guard keeps
    /// every quota on the way locked: the caller counts the bytes before
    /// dropping it. Locks are taken child first, parent after, everywhere,
    /// so two checks cannot wait on each other.
    pub(crate) fn check_quota(&self, bytes: u64) -> Result<QuotaGuard<'_>> {
        let mut held = Vec::new();
        for (zone, c, quota) in self.quotas() {
            held.push(c.quota_lock.lock().unwrap_or_else(|e| e.into_inner()));
            zone.within_quota(quota, bytes)?;
        }
        Ok(QuotaGuard { _held: held })
    }

    /// [`Zone::check_quota`] again for the `bytes` a range really took
    /// (the pool rounds a request up), under the guard it returned.
    pub(crate) fn recheck_quota(&self, bytes: u64, _guard: &QuotaGuard<'_>) -> Result<()> {
        self.quotas()
            .try_for_each(|(zone, _, quota)| zone.within_quota(quota, bytes))
    }

    /// This zone and its parents that have a quota, child first.
    fn quotas(&self) -> impl Iterator<Item = (&Zone, &ChildOf, u64)> {
        std::iter::successors(Some(self), |z| z.inner.child.as_ref().map(|c| &c.parent)).filter_map(
            |z| {
                let c: &ChildOf = z.inner.child.as_deref()?;
                Some((z, c, c.quota?))
            },
        )
    }

    /// The bytes more this zone may take under its quota and its
    /// parents' quotas; `None` when none has one.
    pub(crate) fn quota_room(&self) -> Option<u64> {
        self.quotas()
            .map(|(zone, _, quota)| quota.saturating_sub(zone.quota_used()))
            .min()
    }

    /// What a quota counts: live host and device bytes.
    fn quota_used(&self) -> u64 {
        let t = self.totals();
        t.host_live + t.device_live
    }

    fn within_quota(&self, quota: u64, bytes: u64) -> Result<()> {
        let used = self.quota_used();
        if used.saturating_add(bytes) > quota {
            return Err(Error::QuotaExceeded {
                zone: self.inner.label.clone(),
                quota,
                used,
                requested: bytes,
            });
        }
        Ok(())
    }

    /// Counts a child zone's device range (its pool's live bytes are the
    /// parent's figure).
    pub(crate) fn count_child_device(&self, bytes: u64, add: bool) {
        if self.inner.child.is_some() {
            let c = &self.inner.counters.device_live;
            if add {
                c.fetch_add(bytes, Relaxed);
            } else {
                c.fetch_sub(bytes, Relaxed);
            }
        }
    }
}
