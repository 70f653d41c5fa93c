//! Staging ("pinned host") pool: policy for the host-visible mapped buffers of
//! one transfer direction (one instance for uploads, one for readbacks).
//!
//! Buffers are sized by [`size_class`] so a few sizes serve every transfer;
//! a released buffer stays idle for reuse, but idle memory is capped
//! (`idle_limit`, least recently used evicted first) and can be trimmed
//! entirely or by age, so the pool shrinks after a burst, unlike wgpu's
//! `StagingBelt`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::{size_class, BlockId};

/// Snapshot of a [`StagingPool`]'s accounting, for the zone's stats.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StagingStats {
    /// Bytes of all registered buffers (in use + idle).
    pub(crate) reserved_bytes: u64,
    /// Bytes of buffers handed out and not yet released.
    pub(crate) in_use_bytes: u64,
    /// Bytes of buffers kept for reuse.
    pub(crate) idle_bytes: u64,
    /// Registered buffers.
    pub(crate) buffers: u64,
    /// Peak of `in_use_bytes` since creation or the last `trim`.
    pub(crate) high_water_bytes: u64,
    /// `acquire` calls served by an idle buffer.
    pub(crate) hits: u64,
    /// `acquire` calls that returned `None`.
    pub(crate) misses: u64,
}

/// Whether a staging buffer is handed out or waiting for reuse.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// Handed out by `acquire` or just registered by `add`.
    InUse,
    /// Idle; `stamp` orders idle buffers by release time (lower = older).
    Idle {
        /// Release order, unique per release.
        stamp: u64,
    },
}

/// One registered staging buffer.
#[derive(Copy, Clone, Debug)]
struct Buffer {
    /// Bytes of the buffer.
    size: u64,
    /// In use or idle.
    state: State,
    /// Acquire epoch at which it was last handed out or released, for `trim_unused`.
    last_used: u64,
}

/// Policy for one direction's staging buffers: reuse by size class, an idle
/// cap with LRU eviction, and trims. Never calls the device.
pub(crate) struct StagingPool {
    /// Smallest buffer planned.
    min_size: u64,
    /// Idle bytes kept at most.
    idle_limit: u64,
    /// Buffers indexed by `BlockId`; `None` for ids free for reuse.
    buffers: Vec<Option<Buffer>>,
    /// Free ids, lowest first, so the zone's table stays dense.
    free_ids: BinaryHeap<Reverse<u32>>,
    /// Idle buffers as (size, id), for smallest-fit lookup.
    idle_by_size: BTreeSet<(u64, BlockId)>,
    /// Idle buffers by release stamp, oldest first, for LRU eviction.
    idle_by_age: BTreeMap<u64, BlockId>,
    /// Next release stamp.
    next_stamp: u64,
    /// Number of `acquire` calls so far: the clock of `trim_unused`.
    epoch: u64,
    /// Running counters reported by `stats`.
    stats: StagingStats,
}

impl StagingPool {
    /// `min_size`: smallest buffer (e.g. 64 KiB); `idle_limit`: idle bytes kept at most (older idle buffers beyond it are returned by `release`).
    pub(crate) fn new(min_size: u64, idle_limit: u64) -> Self {
        Self {
            min_size,
            idle_limit,
            buffers: Vec::new(),
            free_ids: BinaryHeap::new(),
            idle_by_size: BTreeSet::new(),
            idle_by_age: BTreeMap::new(),
            next_stamp: 0,
            epoch: 0,
            stats: StagingStats::default(),
        }
    }

    /// Reuse an idle buffer with size >= bytes and <= size_class(bytes)*5/4 (smallest fitting); marks it in use. None = create one of plan(bytes).
    ///
    /// Returns the buffer's id and size. Each call advances the clock that
    /// `trim_unused` counts in.
    pub(crate) fn acquire(&mut self, bytes: u64) -> Option<(BlockId, u64)> {
        self.epoch += 1;
        let class = self.plan(bytes);
        let max = class.saturating_add(class / 4);
        let found = self
            .idle_by_size
            .range((bytes, BlockId(0))..=(max, BlockId(u32::MAX)))
            .next()
            .copied();
        let Some((size, id)) = found else {
            self.stats.misses += 1;
            return None;
        };
        self.idle_by_size.remove(&(size, id));
        if let Some(Some(b)) = self.buffers.get_mut(id.0 as usize) {
            if let State::Idle { stamp } = b.state {
                self.idle_by_age.remove(&stamp);
            }
            b.state = State::InUse;
            b.last_used = self.epoch;
        } else {
            debug_assert!(false, "idle staging buffer {id:?} missing from the table");
            self.stats.misses += 1;
            return None;
        }
        self.stats.idle_bytes -= size;
        self.stats.in_use_bytes += size;
        self.stats.high_water_bytes = self.stats.high_water_bytes.max(self.stats.in_use_bytes);
        self.stats.hits += 1;
        Some((id, size))
    }

    /// Size of the buffer to create when `acquire(bytes)` said `None`: `size_class(bytes, min_size)`.
    pub(crate) fn plan(&self, bytes: u64) -> u64 {
        size_class(bytes, self.min_size)
    }

    /// Register a buffer the zone just created (in use).
    ///
    /// Ids of removed buffers are reused, lowest first.
    pub(crate) fn add(&mut self, size: u64) -> BlockId {
        let buffer = Buffer {
            size,
            state: State::InUse,
            last_used: self.epoch,
        };
        let id = match self.free_ids.pop() {
            Some(Reverse(id)) => {
                if let Some(slot) = self.buffers.get_mut(id as usize) {
                    *slot = Some(buffer);
                }
                id
            }
            None => {
                // 2^32 mapped buffers cannot exist; saturate rather than panic.
                let id = u32::try_from(self.buffers.len()).unwrap_or(u32::MAX);
                debug_assert!(id < u32::MAX, "staging table full");
                self.buffers.push(Some(buffer));
                id
            }
        };
        self.stats.buffers += 1;
        self.stats.reserved_bytes += size;
        self.stats.in_use_bytes += size;
        self.stats.high_water_bytes = self.stats.high_water_bytes.max(self.stats.in_use_bytes);
        BlockId(id)
    }

    /// Return an in-use buffer to idle. Returns ids of idle buffers the zone must destroy because idle bytes exceed idle_limit (least recently used first; never the one just released unless it alone exceeds the limit).
    ///
    /// Releasing an id that is not in use is a zone bug: debug builds assert,
    /// release builds ignore it.
    pub(crate) fn release(&mut self, id: BlockId) -> Vec<BlockId> {
        let stamp = self.next_stamp;
        let size = match self.buffers.get_mut(id.0 as usize) {
            Some(Some(b)) if b.state == State::InUse => {
                b.state = State::Idle { stamp };
                b.last_used = self.epoch;
                b.size
            }
            _ => {
                debug_assert!(false, "releasing staging buffer {id:?} that is not in use");
                return Vec::new();
            }
        };
        self.next_stamp += 1;
        self.idle_by_size.insert((size, id));
        self.idle_by_age.insert(stamp, id);
        self.stats.in_use_bytes -= size;
        self.stats.idle_bytes += size;

        if size > self.idle_limit {
            // It alone exceeds the limit: keeping the others is the better deal.
            self.drop_idle(id);
            return vec![id];
        }
        // Idle bytes were within the limit before and `size` fits it, so the
        // loop stops before reaching the buffer just released (the newest).
        let mut evicted = Vec::new();
        while self.stats.idle_bytes > self.idle_limit {
            let Some((_, &oldest)) = self.idle_by_age.iter().next() else {
                break;
            };
            self.drop_idle(oldest);
            evicted.push(oldest);
        }
        evicted
    }

    /// Forget a buffer entirely (e.g. the zone failed to re-map it).
    ///
    /// Works for in-use and idle buffers; unknown ids are ignored.
    pub(crate) fn remove(&mut self, id: BlockId) {
        let Some(b) = self.buffers.get(id.0 as usize).copied().flatten() else {
            return;
        };
        match b.state {
            State::InUse => {
                self.stats.in_use_bytes -= b.size;
                self.forget(id, b.size);
            }
            State::Idle { .. } => self.drop_idle(id),
        }
    }

    /// Drop every idle buffer; returns their ids. Also resets high_water to in_use_bytes.
    ///
    /// Ids come back least recently used first.
    pub(crate) fn trim(&mut self) -> Vec<BlockId> {
        let ids: Vec<BlockId> = self.idle_by_age.values().copied().collect();
        for &id in &ids {
            self.drop_idle(id);
        }
        self.stats.high_water_bytes = self.stats.in_use_bytes;
        ids
    }

    /// Drop idle buffers not used within the last `epochs` acquire calls; returns their ids. ("trimmed when idle")
    ///
    /// A buffer counts as used when acquired, added or released; with `epochs`
    /// = 0 every idle buffer goes. Ids come back least recently used first.
    pub(crate) fn trim_unused(&mut self, epochs: u64) -> Vec<BlockId> {
        let ids: Vec<BlockId> = self
            .idle_by_age
            .values()
            .copied()
            .filter(|id| {
                self.buffers
                    .get(id.0 as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|b| self.epoch - b.last_used >= epochs)
            })
            .collect();
        for &id in &ids {
            self.drop_idle(id);
        }
        ids
    }

    /// Snapshot of the pool's accounting.
    pub(crate) fn stats(&self) -> StagingStats {
        self.stats
    }

    #[cfg(test)]
    /// Size of a registered buffer, in use or idle.
    pub(crate) fn size_of(&self, id: BlockId) -> Option<u64> {
        self.buffers
            .get(id.0 as usize)
            .copied()
            .flatten()
            .map(|b| b.size)
    }

    /// Remove an idle buffer from the idle indexes and the table.
    fn drop_idle(&mut self, id: BlockId) {
        let Some(b) = self.buffers.get(id.0 as usize).copied().flatten() else {
            return;
        };
        if let State::Idle { stamp } = b.state {
            self.idle_by_age.remove(&stamp);
            self.idle_by_size.remove(&(b.size, id));
            self.stats.idle_bytes -= b.size;
            self.forget(id, b.size);
        } else {
            debug_assert!(false, "dropping staging buffer {id:?} that is in use");
        }
    }

    /// Free the table slot of `id` and take its `size` off the reserved bytes.
    fn forget(&mut self, id: BlockId, size: u64) {
        if let Some(slot) = self.buffers.get_mut(id.0 as usize) {
            *slot = None;
        }
        self.free_ids.push(Reverse(id.0));
        self.stats.buffers -= 1;
        self.stats.reserved_bytes -= size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    /// Acquire as the zone does: reuse or create.
    fn get(p: &mut StagingPool, bytes: u64) -> (BlockId, u64) {
        match p.acquire(bytes) {
            Some(x) => x,
            None => {
                let size = p.plan(bytes);
                (p.add(size), size)
            }
        }
    }

    #[test]
    fn plan_uses_size_classes_with_min() {
        let p = StagingPool::new(64 * KIB, 1 << 30);
        assert_eq!(p.plan(1), 64 * KIB);
        assert_eq!(p.plan(64 * KIB), 64 * KIB);
        assert_eq!(p.plan(64 * KIB + 1), 80 * KIB);
        assert_eq!(p.plan(1000 * KIB), 1024 * KIB);
    }

    #[test]
    fn released_buffer_is_reused() {
        let mut p = StagingPool::new(64 * KIB, 1 << 30);
        assert_eq!(p.acquire(100 * KIB), None);
        let id = p.add(p.plan(100 * KIB));
        assert_eq!(p.size_of(id), Some(112 * KIB));
        assert!(p.release(id).is_empty());
        assert_eq!(p.acquire(100 * KIB), Some((id, 112 * KIB)));
        // In use: not handed out twice.
        assert_eq!(p.acquire(100 * KIB), None);
        assert!(p.release(id).is_empty());
        // Smaller request within 25% of its class takes it (class(90K)=96K, 96*5/4=120K).
        assert_eq!(p.acquire(90 * KIB), Some((id, 112 * KIB)));
        p.release(id);
        // Far smaller request does not (class 64K, max 80K).
        assert_eq!(p.acquire(10 * KIB), None);
        // Bigger than the buffer: never.
        assert_eq!(p.acquire(113 * KIB), None);
        let s = p.stats();
        assert_eq!((s.hits, s.misses), (2, 4));
        assert_eq!(
            (s.reserved_bytes, s.idle_bytes, s.in_use_bytes),
            (112 * KIB, 112 * KIB, 0)
        );
        assert_eq!((s.buffers, s.high_water_bytes), (1, 112 * KIB));
    }

    #[test]
    fn smallest_fitting_idle_buffer_wins() {
        let mut p = StagingPool::new(64 * KIB, 1 << 30);
        let a = p.add(80 * KIB);
        let b = p.add(64 * KIB);
        let c = p.add(72 * KIB);
        p.release(a);
        p.release(b);
        p.release(c);
        assert_eq!(p.acquire(64 * KIB), Some((b, 64 * KIB)));
        assert_eq!(p.acquire(64 * KIB), Some((c, 72 * KIB)));
        assert_eq!(p.acquire(64 * KIB), Some((a, 80 * KIB)));
        assert_eq!(p.acquire(64 * KIB), None);
    }

    #[test]
    fn idle_limit_evicts_least_recently_used() {
        let mut p = StagingPool::new(64 * KIB, 200 * KIB);
        let a = p.add(64 * KIB);
        let b = p.add(64 * KIB);
        let c = p.add(64 * KIB);
        let d = p.add(64 * KIB);
        assert!(p.release(b).is_empty());
        assert!(p.release(a).is_empty());
        assert!(p.release(d).is_empty());
        // 256 KiB idle > 200 KiB: the oldest release (b) goes, not c.
        assert_eq!(p.release(c), vec![b]);
        let s = p.stats();
        assert_eq!(
            (s.idle_bytes, s.buffers, s.reserved_bytes),
            (192 * KIB, 3, 192 * KIB)
        );
        assert_eq!(p.size_of(b), None);
        // Reusing a refreshes it: a is now in use, then released newest.
        assert_eq!(p.acquire(64 * KIB).map(|x| x.0), Some(a));
        // Freed ids are reused lowest first.
        let e = p.add(128 * KIB);
        assert_eq!(e, b);
        assert!(p.release(a).is_empty()); // idle: d, c, a = 192 KiB
        assert_eq!(p.release(e), vec![d, c]); // 320 -> 256 -> 192
        assert_eq!(p.stats().idle_bytes, 192 * KIB);
        assert_eq!(p.add(64 * KIB), c);
    }

    #[test]
    fn buffer_alone_over_limit_is_dropped_itself() {
        let mut p = StagingPool::new(64 * KIB, 100 * KIB);
        let a = p.add(64 * KIB);
        let big = p.add(256 * KIB);
        assert!(p.release(a).is_empty());
        assert_eq!(p.release(big), vec![big]);
        assert_eq!(p.size_of(a), Some(64 * KIB));
        let s = p.stats();
        assert_eq!(
            (s.idle_bytes, s.buffers, s.reserved_bytes),
            (64 * KIB, 1, 64 * KIB)
        );
    }

    #[test]
    fn trim_drops_idle_and_resets_high_water() {
        let mut p = StagingPool::new(64 * KIB, 1 << 30);
        let ids: Vec<(BlockId, u64)> = (0..4).map(|_| get(&mut p, 64 * KIB)).collect();
        assert_eq!(p.stats().high_water_bytes, 256 * KIB);
        p.release(ids[2].0);
        p.release(ids[0].0);
        p.release(ids[3].0);
        assert_eq!(p.trim(), vec![ids[2].0, ids[0].0, ids[3].0]);
        assert_eq!(
            p.stats(),
            StagingStats {
                reserved_bytes: 64 * KIB,
                in_use_bytes: 64 * KIB,
                idle_bytes: 0,
                buffers: 1,
                high_water_bytes: 64 * KIB,
                hits: 0,
                misses: 4,
            }
        );
        assert!(p.trim().is_empty());
        p.release(ids[1].0);
        assert_eq!(p.trim(), vec![ids[1].0]);
        assert_eq!(
            p.stats(),
            StagingStats {
                misses: 4,
                ..StagingStats::default()
            }
        );
    }

    #[test]
    fn trim_unused_drops_by_age() {
        let mut p = StagingPool::new(64 * KIB, 1 << 30);
        let (a, _) = get(&mut p, 64 * KIB); // epoch 1
        let (b, _) = get(&mut p, 128 * KIB); // epoch 2
        p.release(a); // last used at epoch 2
        p.release(b);
        for _ in 0..3 {
            let (c, _) = get(&mut p, 1024 * KIB); // epochs 3, 4, 5: c reused
            p.release(c);
        }
        // a and b: last used at epoch 2, now epoch 5 -> 3 acquires ago.
        assert!(p.trim_unused(4).is_empty());
        assert_eq!(p.trim_unused(3), vec![a, b]);
        assert_eq!(p.stats().buffers, 1);
        // c was used at epoch 5: 0 acquires ago.
        assert!(p.trim_unused(1).is_empty());
        let c = p.trim_unused(0);
        assert_eq!(c.len(), 1);
        assert_eq!(p.stats().reserved_bytes, 0);
    }

    #[test]
    fn remove_forgets_in_use_and_idle() {
        let mut p = StagingPool::new(64 * KIB, 1 << 30);
        let a = p.add(64 * KIB);
        let b = p.add(80 * KIB);
        p.release(b);
        p.remove(a);
        p.remove(b);
        p.remove(b); // unknown: ignored
        assert_eq!(p.size_of(a), None);
        assert_eq!(p.acquire(64 * KIB), None);
        let s = p.stats();
        assert_eq!(
            (s.reserved_bytes, s.in_use_bytes, s.idle_bytes, s.buffers),
            (0, 0, 0, 0)
        );
        assert_eq!(p.add(64 * KIB), a);
    }

    #[test]
    fn random_ops_keep_accounting_consistent() {
        let mut p = StagingPool::new(4 * KIB, 64 * KIB);
        let mut in_use: Vec<BlockId> = Vec::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 5 {
                0 | 1 => {
                    let (id, size) = get(&mut p, 1 + (x >> 8) % (40 * KIB));
                    assert!(!in_use.contains(&id));
                    assert_eq!(p.size_of(id), Some(size));
                    in_use.push(id);
                }
                2 | 3 if !in_use.is_empty() => {
                    let id = in_use.swap_remove((x >> 8) as usize % in_use.len());
                    let evicted = p.release(id);
                    for e in evicted {
                        assert!(!in_use.contains(&e));
                        assert_eq!(p.size_of(e), None);
                    }
                }
                _ => {
                    p.trim_unused((x >> 8) % 20);
                }
            }
            let s = p.stats();
            let used: u64 = in_use.iter().filter_map(|&id| p.size_of(id)).sum();
            assert_eq!(s.in_use_bytes, used);
            assert!(s.idle_bytes <= 64 * KIB);
            assert_eq!(s.reserved_bytes, s.in_use_bytes + s.idle_bytes);
            assert!(s.high_water_bytes >= s.in_use_bytes);
        }
    }
}
