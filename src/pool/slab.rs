//! Device pool: aligned sub-allocation of big slabs plus dedicated blocks for
//! large requests.
//!
//! Small requests are carved from slabs by an O(1) offset allocator
//! (`offset-allocator`), working in units of the offset alignment so every
//! offset it returns is aligned. In front of it sits a per-size free-list cache
//! (rounded size -> LIFO stack of freed ranges): an alloc/free loop of one size
//! is a hash lookup plus a `Vec` push/pop, which is the path measured against
//! `create_buffer`. Large requests get whole blocks rounded to a size class,
//! which are cached whole when freed and reused by later requests of the same
//! class.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use offset_allocator::{Allocation, Allocator};

use super::{round_up, size_class, BlockId};

/// Most nodes one slab allocator keeps; the crate's own default, so a slab's
/// bookkeeping stays a few MiB at most.
const MAX_NODES_PER_SLAB: u32 = 128 * 1024;

/// Configuration of a [`DevicePool`]; the zone fills it from adapter limits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct DevicePoolConfig {
    /// Offset alignment of every range (the adapter's min_storage_buffer_offset_alignment, a power of two >= 4; use max(align, 4)).
    pub alignment: u64,
    /// Size of one slab (e.g. 32 MiB); requests larger than slab_size / 4 get a dedicated block.
    pub slab_size: u64,
}

/// A range handed out by the pool. `offset` is aligned; `size` is the bytes reserved (request rounded up).
///
/// Not `Clone`/`Copy`: [`DevicePool::free`] consumes it, so a range cannot be
/// freed twice.
#[derive(Debug)]
pub(crate) struct PoolAlloc {
    /// Block the range lies in.
    pub(crate) block: BlockId,
    /// Byte offset of the range in the block; a multiple of the pool's alignment.
    pub(crate) offset: u64,
    /// Bytes reserved for the range (the request rounded up).
    pub(crate) size: u64,
    /// What `free` needs to give the range back.
    handle: Handle,
}

impl PoolAlloc {
    /// Whether the range is part of a slab (not a whole dedicated block).
    #[inline]
    pub(crate) fn is_slab(&self) -> bool {
        matches!(self.handle, Handle::Slab(_))
    }

    /// A stand-in that is no range at all: it holds a key the caller
    /// chose (the zone marks tensors whose range it keeps elsewhere). Its
    /// block id is one no pool hands out, and the pool refuses to free it.
    ///
    /// It reuses the `Dedicated` handle rather than adding a variant: a
    /// third variant changed the niche of `Option<DeviceRange>`, and with
    /// it the layout of the tensor handle the allocation fast path was
    /// tuned on.
    pub(crate) fn ticket(key: u32) -> PoolAlloc {
        PoolAlloc {
            block: TICKET_BLOCK,
            offset: u64::from(key),
            size: 0,
            handle: Handle::Dedicated,
        }
    }

    /// A [`PoolAlloc::ticket`] that also says its entry still lacks the
    /// tensor's shape (a bit above the key).
    pub(crate) fn ticket_to_describe(key: u32) -> PoolAlloc {
        let mut t = PoolAlloc::ticket(key);
        t.offset |= UNDESCRIBED;
        t
    }

    /// Whether this is a [`PoolAlloc::ticket_to_describe`] not yet
    /// described.
    #[inline]
    pub(crate) fn ticket_undescribed(&self) -> bool {
        self.block == TICKET_BLOCK && self.offset & UNDESCRIBED != 0
    }

    /// Marks a ticket's entry as described.
    pub(crate) fn ticket_described(&mut self) {
        self.offset &= !UNDESCRIBED;
    }

    /// The key of a [`PoolAlloc::ticket`].
    #[inline]
    pub(crate) fn ticket_key(&self) -> Option<u32> {
        (self.block == TICKET_BLOCK).then_some(self.offset as u32)
    }
}

/// The smallest slab [`DevicePool::plan_within`] shrinks one to.
const MIN_SHRUNK_SLAB: u64 = 64 << 10;

/// The block id of a [`PoolAlloc::ticket`].
const TICKET_BLOCK: BlockId = BlockId(u32::MAX);
/// The bit of a ticket's offset, above its key, that marks its entry as
/// still lacking the tensor's shape.
const UNDESCRIBED: u64 = 1 << 32;

/// How a [`PoolAlloc`] is returned to the pool.
#[derive(Debug)]
enum Handle {
    /// A range of a slab, owned by that slab's offset allocator.
    Slab(SlabRange),
    /// A whole dedicated block.
    Dedicated,
}

/// An offset-allocator allocation, wrapped because the crate's type has no `Debug`.
#[derive(Copy, Clone)]
struct SlabRange(Allocation);

impl fmt::Debug for SlabRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabRange")
            .field("offset_units", &self.0.offset)
            .finish()
    }
}

/// Size and kind of the block the zone must create when `try_alloc` says `None`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockPlan {
    /// Bytes the new block must have.
    pub(crate) size: u64,
    /// True for a block that holds a single large request; false for a slab.
    pub(crate) dedicated: bool,
}

/// Snapshot of a [`DevicePool`]'s accounting, for the zone's stats.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DevicePoolStats {
    /// Sum of all registered blocks' sizes.
    pub(crate) reserved_bytes: u64,
    /// Sum of reserved sizes of handed-out [`PoolAlloc`]s.
    pub(crate) live_bytes: u64,
    /// `reserved_bytes - live_bytes`: free slab space, cached ranges and cached dedicated blocks.
    pub(crate) cached_bytes: u64,
    /// Registered slabs.
    pub(crate) slabs: u64,
    /// Registered dedicated blocks (live or cached).
    pub(crate) dedicated_blocks: u64,
    /// Ranges handed out (by `try_alloc` or `add_block`).
    pub(crate) allocations: u64,
    /// Ranges given back with `free`.
    pub(crate) frees: u64,
    /// `try_alloc` calls served from existing blocks.
    pub(crate) hits: u64,
    /// `try_alloc` calls that returned `None`.
    pub(crate) misses: u64,
    /// Highest `live_bytes` since the pool started or `reset_peaks`.
    pub(crate) peak_live_bytes: u64,
    /// Highest `reserved_bytes` since the pool started or `reset_peaks`.
    pub(crate) peak_reserved_bytes: u64,
}

/// One entry of the zone's block table as the pool sees it.
enum Block {
    /// A slab shared by many small ranges (boxed: the allocator's bin tables are ~1 KiB).
    Slab(Box<Slab>),
    /// A block holding one large request.
    Dedicated {
        /// Bytes of the block.
        size: u64,
        /// True while a [`PoolAlloc`] for it is handed out; false while cached.
        live: bool,
    },
}

/// A slab and the allocator that carves it.
struct Slab {
    /// Offset allocator over the slab, in units of the pool alignment.
    alloc: Allocator,
    /// Capacity of the allocator in units.
    units: u32,
    /// Units held in the allocator (live ranges and ranges in the size cache).
    used_units: u32,
    /// Bytes of the block, as registered (what trimming it gives back).
    size: u64,
}

/// A freed slab range waiting in the per-size cache; still held in its slab's allocator.
#[derive(Copy, Clone)]
struct CachedRange {
    /// Index of the slab.
    block: u32,
    /// The allocator's handle for the range.
    range: SlabRange,
}

/// Cheap hasher for the size cache: keys are unit counts chosen by the pool,
/// not by an attacker, so SipHash's cost buys nothing on the hot path.
#[derive(Default)]
struct UnitHasher(u64);

impl Hasher for UnitHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the well-mixed high bits into the low bits the table indexes by.
        self.0 ^ (self.0 >> 32)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Per-size free lists: rounded size in units -> LIFO stack of freed ranges.
type SizeCache = HashMap<u32, Vec<CachedRange>, BuildHasherDefault<UnitHasher>>;

/// Policy for device memory: slabs for small requests, dedicated blocks for
/// large ones, caching of freed memory, and trim. Never calls the device.
pub(crate) struct DevicePool {
    /// Offset alignment of every range (power of two >= 4).
    align: u64,
    /// log2 of `align`, to convert bytes to units with a shift.
    shift: u32,
    /// Bytes of a slab this pool plans (a multiple of `align`).
    slab_bytes: u64,
    /// Largest request served from slabs; larger ones get a dedicated block.
    max_slab_request: u64,
    /// Block table indexed by `BlockId`; `None` for ids free for reuse.
    blocks: Vec<Option<Block>>,
    /// Free ids, lowest first, so the table stays dense.
    free_ids: BinaryHeap<Reverse<u32>>,
    /// Ids of slabs in ascending order: lower slabs are tried first to keep memory compact.
    slab_order: Vec<u32>,
    /// Freed slab ranges by rounded size in units.
    cache: SizeCache,
    /// Ranges in `cache`, so a miss knows cheaply whether flushing can help.
    cached_ranges: usize,
    /// Cached (free) dedicated blocks as (size, id), smallest first.
    cached_dedicated: BTreeSet<(u64, u32)>,
    /// Running counters reported by `stats`.
    stats: DevicePoolStats,
}

impl DevicePool {
    /// Build a pool; the alignment is raised to a power of two >= 4 and the
    /// slab size clamped to between one alignment unit and `u32::MAX - 1` units,
    /// because the offset allocator counts in `u32` units.
    pub(crate) fn new(cfg: DevicePoolConfig) -> Self {
        debug_assert!(
            cfg.alignment.is_power_of_two(),
            "alignment {} is not a power of two",
            cfg.alignment
        );
        let align = cfg
            .alignment
            .max(4)
            .checked_next_power_of_two()
            .unwrap_or(1 << 63);
        let shift = align.trailing_zeros();
        let units = cfg.slab_size >> shift;
        debug_assert!(
            units >= 1 && units < u64::from(u32::MAX),
            "slab_size {} / alignment {} = {} units does not fit the offset allocator",
            cfg.slab_size,
            align,
            units
        );
        let units = units.clamp(1, u64::from(u32::MAX - 1));
        let slab_bytes = units << shift;
        Self {
            align,
            shift,
            slab_bytes,
            max_slab_request: slab_bytes / 4,
            blocks: Vec::new(),
            free_ids: BinaryHeap::new(),
            slab_order: Vec::new(),
            cache: SizeCache::default(),
            cached_ranges: 0,
            cached_dedicated: BTreeSet::new(),
            stats: DevicePoolStats::default(),
        }
    }

    /// Offset alignment every range honours, after rounding the configured one.
    #[cfg(test)]
    pub(crate) fn alignment(&self) -> u64 {
        self.align
    }

    /// Serve `bytes` (> 0; the zone guarantees it) from existing free memory; None when a new block is needed.
    pub(crate) fn try_alloc(&mut self, bytes: u64) -> Option<PoolAlloc> {
        let served = if bytes <= self.max_slab_request {
            self.try_alloc_slab(bytes)
        } else {
            self.try_alloc_dedicated(bytes)
        };
        match served {
            Some(a) => {
                self.stats.hits += 1;
                self.stats.allocations += 1;
                self.stats.live_bytes += a.size;
                self.stats.peak_live_bytes = self.stats.peak_live_bytes.max(self.stats.live_bytes);
                Some(a)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Slab path: exact-size cache, then slab allocators (lowest slab first),
    /// then the same after merging cached ranges back into their slabs.
    #[inline]
    fn try_alloc_slab(&mut self, bytes: u64) -> Option<PoolAlloc> {
        let units = self.units_for(bytes)?;
        if let Some(r) = self.cache.get_mut(&units).and_then(Vec::pop) {
            self.cached_ranges -= 1;
            return Some(self.slab_alloc(r.block, r.range, units));
        }
        if let Some((block, range)) = self.alloc_from_slabs(units) {
            return Some(self.slab_alloc(block, range, units));
        }
        if self.cached_ranges > 0 {
            self.flush_cache();
            if let Some((block, range)) = self.alloc_from_slabs(units) {
                return Some(self.slab_alloc(block, range, units));
            }
        }
        None
    }

    /// Dedicated path: the smallest cached block with `bytes <= size <= class * 5/4`.
    fn try_alloc_dedicated(&mut self, bytes: u64) -> Option<PoolAlloc> {
        let class = self.dedicated_class(bytes);
        let max = class.saturating_add(class / 4);
        let &(size, id) = self
            .cached_dedicated
            .range((bytes, 0)..=(max, u32::MAX))
            .next()?;
        self.cached_dedicated.remove(&(size, id));
        if let Some(Some(Block::Dedicated { live, .. })) = self.blocks.get_mut(id as usize) {
            *live = true;
        } else {
            debug_assert!(false, "cached dedicated block {id} missing from the table");
            return None;
        }
        Some(PoolAlloc {
            block: BlockId(id),
            offset: 0,
            size,
            handle: Handle::Dedicated,
        })
    }

    /// Takes back the miss `try_alloc` just counted, for a caller that
    /// retries the same request (after merging caches or trimming), so one
    /// request counts once: as a hit if a retry succeeds, else as a miss.
    pub(crate) fn retract_miss(&mut self) {
        self.stats.misses = self.stats.misses.saturating_sub(1);
    }

    /// Size and kind of the block the zone must create for `bytes` when try_alloc said None.
    pub(crate) fn plan(&self, bytes: u64) -> BlockPlan {
        if bytes <= self.max_slab_request {
            BlockPlan {
                size: self.slab_bytes,
                dedicated: false,
            }
        } else {
            BlockPlan {
                size: self.dedicated_class(bytes),
                dedicated: true,
            }
        }
    }

    /// The bytes a new range for `bytes` reserves when no cached block is
    /// reused: whole alignment units from a slab, or a dedicated block's
    /// size class (a reused cached block may be up to a quarter larger).
    pub(crate) fn reserved_for(&self, bytes: u64) -> u64 {
        if bytes <= self.max_slab_request {
            self.units_for(bytes)
                .map_or(u64::MAX, |u| u64::from(u) << self.shift)
        } else {
            self.dedicated_class(bytes)
        }
    }

    /// [`DevicePool::plan`] for a zone with `room` bytes left under its
    /// limit: a slab that would not fit is halved until it does, as long
    /// as it still holds `bytes`, so a small request near the limit (or
    /// under a limit below the slab size) gets a smaller slab rather than
    /// failing. Dedicated plans are left as they are.
    pub(crate) fn plan_within(&self, bytes: u64, room: u64) -> BlockPlan {
        let mut plan = self.plan(bytes);
        if plan.dedicated {
            return plan;
        }
        // Not below 64 KiB: near a budget, spilling beats a buffer per
        // tensor.
        let floor = self
            .reserved_for(bytes)
            .max(MIN_SHRUNK_SLAB.min(self.slab_bytes));
        while plan.size > room {
            let half = plan.size / 2;
            // Whole units only: a slab counts in them.
            if half < floor || half & (self.align - 1) != 0 {
                break;
            }
            plan.size = half;
        }
        plan
    }

    /// Register a block the zone just created from `plan` and carve `bytes` from it (cannot fail for a plan made for `bytes`).
    /// Returns the new block's id (ids of removed blocks may be reused) and the allocation.
    ///
    /// Should the plan not fit `bytes` after all (a zone bug; debug builds
    /// assert), the block is registered as a dedicated block handed out whole,
    /// so the pool's accounting stays consistent.
    pub(crate) fn add_block(&mut self, plan: BlockPlan, bytes: u64) -> (BlockId, PoolAlloc) {
        let id = self.next_id();
        let slab_range = if plan.dedicated {
            None
        } else {
            self.new_slab(plan.size, bytes)
        };
        let alloc = match slab_range {
            Some((slab, range, units)) => {
                self.put(id, Block::Slab(slab));
                let pos = self.slab_order.partition_point(|&s| s < id);
                self.slab_order.insert(pos, id);
                self.stats.slabs += 1;
                self.slab_alloc(id, range, units)
            }
            None => {
                debug_assert!(
                    plan.size >= bytes,
                    "plan {plan:?} cannot hold {bytes} bytes"
                );
                self.put(
                    id,
                    Block::Dedicated {
                        size: plan.size,
                        live: true,
                    },
                );
                self.stats.dedicated_blocks += 1;
                PoolAlloc {
                    block: BlockId(id),
                    offset: 0,
                    size: plan.size,
                    handle: Handle::Dedicated,
                }
            }
        };
        self.stats.reserved_bytes += plan.size;
        self.stats.allocations += 1;
        self.stats.live_bytes += alloc.size;
        self.stats.peak_live_bytes = self.stats.peak_live_bytes.max(self.stats.live_bytes);
        self.stats.peak_reserved_bytes = self
            .stats
            .peak_reserved_bytes
            .max(self.stats.reserved_bytes);
        (BlockId(id), alloc)
    }

    /// A fresh slab of `size` bytes with `bytes` carved from it; `None` when
    /// the slab cannot hold the request (a plan not made for `bytes`).
    fn new_slab(&self, size: u64, bytes: u64) -> Option<(Box<Slab>, SlabRange, u32)> {
        let units = u32::try_from(size >> self.shift).ok()?;
        if units == 0 || units == u32::MAX {
            debug_assert!(false, "slab of {size} bytes has {units} units");
            return None;
        }
        let need = self.units_for(bytes)?;
        // Nodes never outnumber units (each holds at least one), so this never
        // limits a slab below its capacity, while small slabs stay cheap.
        let max_nodes = units.saturating_add(2).min(MAX_NODES_PER_SLAB);
        let mut alloc = Allocator::with_max_allocs(units, max_nodes);
        let Some(range) = alloc.allocate(need) else {
            debug_assert!(false, "fresh slab of {units} units cannot hold {need}");
            return None;
        };
        let slab = Box::new(Slab {
            alloc,
            units,
            used_units: need,
            size,
        });
        Some((slab, SlabRange(range), need))
    }

    /// Give a range back. Slab ranges go to the per-size cache; dedicated
    /// blocks are cached whole.
    pub(crate) fn free(&mut self, alloc: PoolAlloc) {
        let id = alloc.block.0;
        match (&alloc.handle, self.blocks.get_mut(id as usize)) {
            (&Handle::Slab(range), Some(Some(Block::Slab(_)))) => {
                let units = u32::try_from(alloc.size >> self.shift).unwrap_or(u32::MAX);
                self.cache
                    .entry(units)
                    .or_default()
                    .push(CachedRange { block: id, range });
                self.cached_ranges += 1;
            }
            (&Handle::Dedicated, Some(Some(Block::Dedicated { size, live }))) if *live => {
                *live = false;
                self.cached_dedicated.insert((*size, id));
            }
            _ => {
                debug_assert!(false, "freeing {alloc:?}: not a live range of this pool");
                return;
            }
        }
        self.stats.frees += 1;
        self.stats.live_bytes -= alloc.size;
    }

    /// Forget every block that holds no live range (empty slabs, cached dedicated blocks) and return their ids so the zone can destroy them.
    ///
    /// Cached slab ranges are first merged back into their slabs, so a slab
    /// whose ranges were all freed is released too. Ids come back ascending.
    pub(crate) fn trim(&mut self) -> Vec<BlockId> {
        self.flush_cache();
        // Drop the emptied stacks too: their capacity is memory held for sizes
        // that may never come back.
        self.cache = SizeCache::default();
        self.cached_dedicated.clear();
        let mut released = Vec::new();
        for (i, slot) in self.blocks.iter_mut().enumerate() {
            let size = match slot {
                Some(Block::Slab(s)) if s.used_units == 0 => {
                    self.stats.slabs -= 1;
                    s.size
                }
                Some(Block::Dedicated { size, live: false }) => {
                    self.stats.dedicated_blocks -= 1;
                    *size
                }
                _ => continue,
            };
            self.stats.reserved_bytes -= size;
            *slot = None;
            // The table never holds more than u32::MAX + 1 entries (ids are u32).
            released.push(BlockId(u32::try_from(i).unwrap_or(u32::MAX)));
        }
        if !released.is_empty() {
            let blocks = &self.blocks;
            self.slab_order
                .retain(|&s| matches!(blocks.get(s as usize), Some(Some(Block::Slab(_)))));
            while matches!(self.blocks.last(), Some(None)) {
                self.blocks.pop();
            }
            self.free_ids = self
                .blocks
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_none())
                .filter_map(|(i, _)| u32::try_from(i).ok())
                .map(Reverse)
                .collect();
        }
        released
    }

    /// Largest request that try_alloc could serve right now without a new block.
    ///
    /// Exact except while freed slab ranges wait in the per-size cache: those
    /// merge with their neighbours only when flushed, so the answer is then a
    /// lower bound.
    pub(crate) fn largest_free(&self) -> u64 {
        let slab_max = self
            .slab_order
            .iter()
            .filter_map(|&id| match self.blocks.get(id as usize) {
                Some(Some(Block::Slab(s))) => {
                    Some(u64::from(s.alloc.storage_report().largest_free_region) << self.shift)
                }
                _ => None,
            })
            .chain(
                self.cache
                    .iter()
                    .filter(|(_, stack)| !stack.is_empty())
                    .map(|(&units, _)| u64::from(units) << self.shift),
            )
            .max()
            .unwrap_or(0)
            // Any request up to an aligned free region rounds up into it; past
            // the slab limit requests go to dedicated blocks instead.
            .min(self.max_slab_request);
        let dedicated_max = self.cached_dedicated.last().map_or(0, |&(size, _)| size);
        slab_max.max(dedicated_max)
    }

    /// Whether `try_alloc(bytes)` would find room in the blocks held now,
    /// without changing anything. It may answer no where `try_alloc` would
    /// first merge freed ranges waiting in the size cache and then succeed.
    pub(crate) fn can_serve(&self, bytes: u64) -> bool {
        if bytes <= self.max_slab_request {
            let Some(units) = self.units_for(bytes) else {
                return false;
            };
            if self.cache.get(&units).is_some_and(|s| !s.is_empty()) {
                return true;
            }
            self.slab_order
                .iter()
                .any(|&id| match self.blocks.get(id as usize) {
                    Some(Some(Block::Slab(s))) => {
                        s.alloc.storage_report().largest_free_region >= units
                    }
                    _ => false,
                })
        } else {
            let class = self.dedicated_class(bytes);
            let max = class.saturating_add(class / 4);
            self.cached_dedicated
                .range((bytes, 0)..=(max, u32::MAX))
                .next()
                .is_some()
        }
    }

    /// The largest request served from slabs; larger ones get dedicated
    /// blocks.
    pub(crate) fn max_slab_request(&self) -> u64 {
        self.max_slab_request
    }

    /// Bytes `trim` would give back now: empty slabs (ranges waiting in
    /// the size cache count as free) and cached dedicated blocks.
    pub(crate) fn releasable_bytes(&self) -> u64 {
        let mut cached = vec![0u32; self.blocks.len()];
        for (&units, stack) in self.cache.iter() {
            for r in stack {
                if let Some(c) = cached.get_mut(r.block as usize) {
                    *c += units;
                }
            }
        }
        self.blocks
            .iter()
            .zip(&cached)
            .map(|(slot, &c)| match slot {
                Some(Block::Slab(s)) if s.used_units == c => s.size,
                Some(Block::Dedicated { size, live: false }) => *size,
                _ => 0,
            })
            .sum()
    }

    /// Restarts the peaks from the current figures.
    pub(crate) fn reset_peaks(&mut self) {
        self.stats.peak_live_bytes = self.stats.live_bytes;
        self.stats.peak_reserved_bytes = self.stats.reserved_bytes;
    }

    /// Snapshot of the pool's accounting.
    pub(crate) fn stats(&self) -> DevicePoolStats {
        DevicePoolStats {
            cached_bytes: self.stats.reserved_bytes - self.stats.live_bytes,
            ..self.stats
        }
    }

    /// Units of `align` a slab request of `bytes` takes; `None` if it cannot be a slab request.
    #[inline]
    fn units_for(&self, bytes: u64) -> Option<u32> {
        let rounded = round_up(bytes, self.align)?;
        u32::try_from(rounded >> self.shift).ok()
    }

    /// Block size for a dedicated request: its size class, kept a multiple of
    /// the alignment (copies need multiples of 4 bytes).
    fn dedicated_class(&self, bytes: u64) -> u64 {
        let class = size_class(bytes, self.align);
        round_up(class, self.align).unwrap_or(class)
    }

    /// Build the [`PoolAlloc`] for `units` at `range` of slab `block`.
    #[inline]
    fn slab_alloc(&self, block: u32, range: SlabRange, units: u32) -> PoolAlloc {
        PoolAlloc {
            block: BlockId(block),
            offset: u64::from(range.0.offset) << self.shift,
            size: u64::from(units) << self.shift,
            handle: Handle::Slab(range),
        }
    }

    /// Allocate `units` from the lowest slab that has room.
    fn alloc_from_slabs(&mut self, units: u32) -> Option<(u32, SlabRange)> {
        for &id in &self.slab_order {
            if let Some(Some(Block::Slab(s))) = self.blocks.get_mut(id as usize) {
                if s.units - s.used_units < units {
                    continue;
                }
                if let Some(range) = s.alloc.allocate(units) {
                    s.used_units += units;
                    return Some((id, SlabRange(range)));
                }
            }
        }
        None
    }

    /// Return every cached slab range to its slab allocator so neighbours merge.
    fn flush_cache(&mut self) {
        for (&units, stack) in self.cache.iter_mut() {
            for r in stack.drain(..) {
                if let Some(Some(Block::Slab(s))) = self.blocks.get_mut(r.block as usize) {
                    s.alloc.free(r.range.0);
                    s.used_units -= units;
                } else {
                    debug_assert!(false, "cached range of missing slab {}", r.block);
                }
            }
        }
        self.cached_ranges = 0;
    }

    /// Lowest free id, or the next one past the table.
    fn next_id(&mut self) -> u32 {
        match self.free_ids.pop() {
            Some(Reverse(id)) => id,
            None => {
                // 2^32 blocks cannot exist in memory; saturate rather than panic.
                let id = u32::try_from(self.blocks.len()).unwrap_or(u32::MAX);
                debug_assert!(id < u32::MAX, "block table full");
                id
            }
        }
    }

    /// Store `block` under `id`, growing the table if `id` is past its end.
    fn put(&mut self, id: u32, block: Block) {
        let i = id as usize;
        if i >= self.blocks.len() {
            self.blocks.resize_with(i + 1, || None);
        }
        self.blocks[i] = Some(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn pool(alignment: u64, slab_size: u64) -> DevicePool {
        DevicePool::new(DevicePoolConfig {
            alignment,
            slab_size,
        })
    }

    #[test]
    fn plan_within_halves_a_slab_to_the_room_but_not_below_the_request() {
        let p = pool(256, 32 * MIB);
        let plan = |bytes, room| {
            let b = p.plan_within(bytes, room);
            (b.size, b.dedicated)
        };
        assert_eq!(plan(16, u64::MAX), (32 * MIB, false));
        assert_eq!(plan(16, 32 * MIB), (32 * MIB, false));
        assert_eq!(plan(16, 20 * MIB), (16 * MIB, false));
        assert_eq!(plan(16, 100 << 10), (64 << 10, false));
        // Less room than the smallest slab: the smallest, for the caller
        // to refuse (or spill for).
        assert_eq!(plan(16, 300), (64 << 10, false));
        assert_eq!(plan(16, 0), (64 << 10, false));
        assert_eq!(plan(3 * MIB, 5 * MIB), (4 * MIB, false));
        // Never below the request: 8 MiB holds 5 MiB, 4 MiB would not
        // (the caller refuses it, 6 MiB being left).
        assert_eq!(plan(5 * MIB, 6 * MIB), (8 * MIB, false));
        // A dedicated plan is the request's class, room or not.
        assert_eq!(plan(20 * MIB, MIB), (p.plan(20 * MIB).size, true));
    }

    /// Allocate through the pool as the zone does; record block sizes.
    fn alloc(p: &mut DevicePool, sizes: &mut Vec<u64>, bytes: u64) -> PoolAlloc {
        if let Some(a) = p.try_alloc(bytes) {
            return a;
        }
        let plan = p.plan(bytes);
        let (id, a) = p.add_block(plan, bytes);
        assert_eq!(id, a.block);
        let i = id.0 as usize;
        if sizes.len() <= i {
            sizes.resize(i + 1, 0);
        }
        sizes[i] = plan.size;
        a
    }

    /// Every range aligned, inside its block, at least the request, no overlaps.
    fn check_ranges(p: &DevicePool, sizes: &[u64], live: &[(u64, PoolAlloc)]) {
        let mut v: Vec<(u32, u64, u64)> = Vec::new();
        for (bytes, a) in live {
            assert_eq!(a.offset % p.alignment(), 0, "{a:?}");
            assert!(a.size >= *bytes, "{a:?} < {bytes}");
            assert!(a.offset + a.size <= sizes[a.block.0 as usize], "{a:?}");
            v.push((a.block.0, a.offset, a.size));
        }
        v.sort_unstable();
        for w in v.windows(2) {
            if w[0].0 == w[1].0 {
                assert!(w[0].1 + w[0].2 <= w[1].1, "overlap {:?} {:?}", w[0], w[1]);
            }
        }
        let live_bytes: u64 = live.iter().map(|(_, a)| a.size).sum();
        let s = p.stats();
        assert_eq!(s.live_bytes, live_bytes);
        assert_eq!(s.cached_bytes, s.reserved_bytes - live_bytes);
    }

    #[test]
    fn config_is_normalised() {
        let p = pool(1, 1000);
        assert_eq!(p.alignment(), 4);
        assert_eq!(p.plan(1).size, 1000);
        let p = pool(256, 32 * MIB);
        assert_eq!(p.alignment(), 256);
        assert_eq!(
            p.plan(8 * MIB),
            BlockPlan {
                size: 32 * MIB,
                dedicated: false
            }
        );
        assert_eq!(
            p.plan(8 * MIB + 1),
            BlockPlan {
                size: 10 * MIB,
                dedicated: true
            }
        );
    }

    #[test]
    fn slab_alloc_is_aligned_and_rounded() {
        let mut p = pool(256, 32 * MIB);
        assert!(p.try_alloc(100).is_none());
        let plan = p.plan(100);
        assert_eq!(
            plan,
            BlockPlan {
                size: 32 * MIB,
                dedicated: false
            }
        );
        let (id, a) = p.add_block(plan, 100);
        assert_eq!(id, BlockId(0));
        assert_eq!((a.block, a.offset, a.size), (BlockId(0), 0, 256));
        let b = p.try_alloc(257).expect("room in slab");
        assert_eq!((b.block, b.size), (BlockId(0), 512));
        assert_eq!(b.offset % 256, 0);
        assert!(b.offset >= 256);
        p.free(a);
        p.free(b);
    }

    #[test]
    fn freed_range_is_reused_without_new_block() {
        let mut p = pool(256, MIB);
        let (_, a) = p.add_block(p.plan(1000), 1000);
        let (block, offset) = (a.block, a.offset);
        p.free(a);
        let b = p.try_alloc(1000).expect("cached range");
        assert_eq!((b.block, b.offset, b.size), (block, offset, 1024));
        // A different size that rounds the same also takes it.
        p.free(b);
        let c = p.try_alloc(800).expect("cached range");
        assert_eq!((c.block, c.offset, c.size), (block, offset, 1024));
        p.free(c);
        assert_eq!(p.stats().slabs, 1);
    }

    #[test]
    fn alloc_free_loop_never_needs_a_block_after_first() {
        let mut p = pool(256, 32 * MIB);
        let (_, first) = p.add_block(p.plan(4096), 4096);
        p.free(first);
        for _ in 0..10_000 {
            let a = p.try_alloc(4096).expect("hit");
            p.free(a);
        }
        let s = p.stats();
        assert_eq!(s.hits, 10_000);
        assert_eq!(s.misses, 0);
        assert_eq!(s.slabs, 1);
        assert_eq!(s.allocations, 10_001);
        assert_eq!(s.frees, 10_001);
        assert_eq!(s.live_bytes, 0);
    }

    #[test]
    fn cached_ranges_merge_on_miss() {
        // 16 KiB slab, 4 KiB max slab request, 256 B alignment.
        let mut p = pool(256, 16 * 1024);
        let mut sizes = Vec::new();
        let small: Vec<PoolAlloc> = (0..64).map(|_| alloc(&mut p, &mut sizes, 256)).collect();
        assert_eq!(p.stats().slabs, 1);
        assert!(p.try_alloc(256).is_none());
        for a in small {
            p.free(a);
        }
        // All of the slab sits in the 256 B cache; a 4 KiB request merges it.
        let big = p.try_alloc(4096).expect("served after merging the cache");
        assert_eq!(big.block, BlockId(0));
        assert_eq!(p.stats().slabs, 1);
        p.free(big);
    }

    #[test]
    fn lowest_slab_is_preferred() {
        let mut p = pool(256, 4096); // 1 KiB max slab request, 4 ranges of 1 KiB per slab
        let mut sizes = Vec::new();
        let mut v: Vec<PoolAlloc> = (0..8).map(|_| alloc(&mut p, &mut sizes, 1024)).collect();
        assert_eq!(p.stats().slabs, 2);
        // Free one range in each slab; flush via trim so they sit in the allocators.
        let in1 = v.remove(7);
        let in0 = v.remove(0);
        assert_eq!((in0.block, in1.block), (BlockId(0), BlockId(1)));
        p.free(in1);
        p.free(in0);
        assert!(p.trim().is_empty());
        let a = p.try_alloc(512).expect("room");
        assert_eq!(a.block, BlockId(0));
        v.push(a);
        for a in v {
            p.free(a);
        }
    }

    #[test]
    fn dedicated_blocks_are_cached_and_reused() {
        let mut p = pool(256, 32 * MIB);
        let bytes = 9 * MIB;
        assert!(p.try_alloc(bytes).is_none());
        let plan = p.plan(bytes);
        assert_eq!(
            plan,
            BlockPlan {
                size: 10 * MIB,
                dedicated: true
            }
        );
        let (id, a) = p.add_block(plan, bytes);
        assert_eq!((a.block, a.offset, a.size), (id, 0, 10 * MIB));
        p.free(a);
        assert_eq!(p.largest_free(), 10 * MIB);
        // Same class reuses it.
        let b = p.try_alloc(10 * MIB).expect("same class");
        assert_eq!((b.block, b.offset, b.size), (id, 0, 10 * MIB));
        p.free(b);
        // A smaller class within 25% reuses it: class(8.5 MiB) = 10 MiB.
        let c = p.try_alloc(8 * MIB + 1).expect("within 25%");
        assert_eq!(c.block, id);
        p.free(c);
        // Bigger than the block: never.
        assert!(p.try_alloc(10 * MIB + 1).is_none());
        // Much larger block than the class: not reused.
        let (id2, d) = p.add_block(p.plan(40 * MIB), 40 * MIB);
        p.free(d);
        assert!(p.try_alloc(24 * MIB).is_none(), "40 MiB > 24 MiB * 5/4");
        let e = p.try_alloc(33 * MIB).expect("class 40 MiB");
        assert_eq!(e.block, id2);
        p.free(e);
        let s = p.stats();
        assert_eq!(s.dedicated_blocks, 2);
        assert_eq!(s.reserved_bytes, 50 * MIB);
        assert_eq!(s.live_bytes, 0);
        assert_eq!(p.trim(), vec![id, id2]);
        assert_eq!(p.stats().reserved_bytes, 0);
    }

    #[test]
    fn trim_returns_exactly_empty_blocks_and_reuses_ids() {
        let mut p = pool(256, 4096);
        let mut sizes = Vec::new();
        let a: Vec<PoolAlloc> = (0..4).map(|_| alloc(&mut p, &mut sizes, 1024)).collect();
        let b: Vec<PoolAlloc> = (0..4).map(|_| alloc(&mut p, &mut sizes, 1024)).collect();
        let big = alloc(&mut p, &mut sizes, 5000);
        let big2 = alloc(&mut p, &mut sizes, 6000);
        assert_eq!(
            (a[0].block, b[0].block, big.block, big2.block),
            (BlockId(0), BlockId(1), BlockId(2), BlockId(3))
        );
        for x in a {
            p.free(x);
        }
        p.free(big);
        // Slab 0 is empty (its ranges are only cached), dedicated 2 is cached.
        assert_eq!(p.trim(), vec![BlockId(0), BlockId(2)]);
        let s = p.stats();
        assert_eq!((s.slabs, s.dedicated_blocks), (1, 1));
        assert_eq!(s.reserved_bytes, 4096 + size_class(6000, 256));
        assert!(p.trim().is_empty());
        // Trimmed ids are reused lowest first.
        let (id, c) = p.add_block(p.plan(2000), 2000);
        assert_eq!(id, BlockId(0));
        let (id, d) = p.add_block(p.plan(100), 100);
        assert_eq!(id, BlockId(2));
        for x in b {
            p.free(x);
        }
        p.free(big2);
        p.free(c);
        p.free(d);
        let mut all = p.trim();
        all.sort();
        assert_eq!(all, vec![BlockId(0), BlockId(1), BlockId(2), BlockId(3)]);
        assert_eq!(
            p.stats(),
            DevicePoolStats {
                allocations: 12,
                frees: 12,
                hits: 6,
                misses: 4,
                peak_live_bytes: 19456,
                peak_reserved_bytes: 19456,
                ..DevicePoolStats::default()
            }
        );
        // Empty table: ids start from 0 again.
        let (id, e) = p.add_block(p.plan(1), 1);
        assert_eq!(id, BlockId(0));
        p.free(e);
    }

    #[test]
    fn stats_exact_after_known_sequence() {
        let mut p = pool(256, MIB); // max slab request 256 KiB
        assert!(p.try_alloc(1).is_none());
        let (_, a) = p.add_block(p.plan(1), 1); // 256 B
        let b = p.try_alloc(300).expect("hit"); // 512 B
        assert!(p.try_alloc(300 * 1024).is_none());
        let (_, c) = p.add_block(p.plan(300 * 1024), 300 * 1024); // 320 KiB dedicated
        assert_eq!(
            p.stats(),
            DevicePoolStats {
                reserved_bytes: MIB + 320 * 1024,
                live_bytes: 256 + 512 + 320 * 1024,
                cached_bytes: MIB - 768,
                slabs: 1,
                dedicated_blocks: 1,
                allocations: 3,
                frees: 0,
                hits: 1,
                misses: 2,
                peak_live_bytes: 256 + 512 + 320 * 1024,
                peak_reserved_bytes: MIB + 320 * 1024,
            }
        );
        p.free(b);
        p.free(c);
        let s = p.stats();
        assert_eq!(s.live_bytes, 256);
        assert_eq!(s.peak_live_bytes, 256 + 512 + 320 * 1024, "peaks stay");
        p.reset_peaks();
        assert_eq!(p.stats().peak_live_bytes, 256);
        assert_eq!(p.stats().peak_reserved_bytes, MIB + 320 * 1024);
        assert_eq!(s.cached_bytes, MIB + 320 * 1024 - 256);
        assert_eq!(s.frees, 2);
        assert_eq!(p.largest_free(), 320 * 1024);
        assert_eq!(p.trim(), vec![BlockId(1)]);
        p.free(a);
        assert_eq!(p.trim(), vec![BlockId(0)]);
        let s = p.stats();
        assert_eq!((s.reserved_bytes, s.live_bytes, s.cached_bytes), (0, 0, 0));
        assert_eq!((s.slabs, s.dedicated_blocks), (0, 0));
    }

    #[test]
    fn releasable_bytes_is_what_trim_gives_back() {
        let mut p = pool(256, MIB);
        let (_, a) = p.add_block(p.plan(1000), 1000); // slab 0
        let b = p.try_alloc(1000).expect("hit");
        let (_, big) = p.add_block(p.plan(600 * 1024), 600 * 1024); // dedicated
        assert_eq!(p.releasable_bytes(), 0);
        p.free(big);
        let dedicated = p.stats().reserved_bytes - MIB;
        assert_eq!(p.releasable_bytes(), dedicated);
        p.free(a); // waits in the size cache: still counts as free
        assert_eq!(p.releasable_bytes(), dedicated);
        p.free(b);
        let want = p.releasable_bytes();
        assert_eq!(want, dedicated + MIB);
        let before = p.stats().reserved_bytes;
        p.trim();
        assert_eq!(before - p.stats().reserved_bytes, want);
    }

    #[test]
    fn largest_free_matches_try_alloc() {
        let mut p = pool(256, MIB);
        assert_eq!(p.largest_free(), 0);
        let (_, a) = p.add_block(p.plan(1), 1);
        // A nearly empty slab serves anything up to the slab limit.
        assert_eq!(p.largest_free(), 256 * 1024);
        let mut held = vec![a];
        while p.largest_free() > 0 {
            let l = p.largest_free();
            let x = p.try_alloc(l).expect("largest_free is served");
            held.push(x);
        }
        assert!(p.try_alloc(1).is_none());
        for x in held {
            p.free(x);
        }
        assert_eq!(p.trim(), vec![BlockId(0)]);
    }

    #[test]
    fn random_allocs_aligned_and_disjoint() {
        let mut p = pool(256, 256 * 1024);
        let mut sizes = Vec::new();
        let mut live: Vec<(u64, PoolAlloc)> = Vec::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..5000 {
            let r = next();
            if r % 3 != 0 || live.is_empty() {
                let bytes = match r % 7 {
                    0 => 1 + (r >> 8) % (200 * 1024),
                    _ => 1 + (r >> 8) % 5000,
                };
                let a = alloc(&mut p, &mut sizes, bytes);
                live.push((bytes, a));
            } else {
                let i = (r >> 8) as usize % live.len();
                let (_, a) = live.swap_remove(i);
                p.free(a);
            }
            if step % 500 == 0 {
                p.trim();
            }
            if step % 50 == 0 {
                check_ranges(&p, &sizes, &live);
            }
        }
        check_ranges(&p, &sizes, &live);
        for (_, a) in live {
            p.free(a);
        }
        p.trim();
        let s = p.stats();
        assert_eq!((s.reserved_bytes, s.slabs, s.dedicated_blocks), (0, 0, 0));
        assert_eq!(s.allocations, s.frees);
    }

    /// Operations of the model-based property test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Allocate this many bytes (through try_alloc, then add_block).
        Alloc(u64),
        /// Free the live range at this index (modulo the count).
        Free(usize),
        /// Trim the pool.
        Trim,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u64..3000).prop_map(Op::Alloc),
            1 => (3000u64..40_000).prop_map(Op::Alloc),
            5 => any::<usize>().prop_map(Op::Free),
            1 => Just(Op::Trim),
        ]
    }

    proptest! {
        #[test]
        fn model_random_ops(align_log in 2u32..9, ops in prop::collection::vec(op(), 1..200)) {
            let align = 1u64 << align_log;
            let mut p = pool(align, 64 * 1024);
            let mut sizes = Vec::new();
            let mut live: Vec<(u64, PoolAlloc)> = Vec::new();
            let mut frees = 0u64;
            for op in ops {
                match op {
                    Op::Alloc(bytes) => {
                        let before = p.stats();
                        let a = alloc(&mut p, &mut sizes, bytes);
                        let after = p.stats();
                        // A hit never adds a block; a miss adds exactly one.
                        if after.hits > before.hits {
                            prop_assert_eq!(after.reserved_bytes, before.reserved_bytes);
                        } else {
                            prop_assert_eq!(after.misses, before.misses + 1);
                            prop_assert_eq!(
                                after.slabs + after.dedicated_blocks,
                                before.slabs + before.dedicated_blocks + 1
                            );
                        }
                        prop_assert_eq!(a.offset % align, 0);
                        if bytes <= 16 * 1024 {
                            prop_assert_eq!(a.size, round_up(bytes, align).unwrap_or(0));
                        } else {
                            prop_assert_eq!(a.offset, 0);
                        }
                        live.push((bytes, a));
                    }
                    Op::Free(i) => {
                        if !live.is_empty() {
                            let (_, a) = live.swap_remove(i % live.len());
                            p.free(a);
                            frees += 1;
                        }
                    }
                    Op::Trim => {
                        let before = p.stats();
                        let ids = p.trim();
                        let after = p.stats();
                        prop_assert_eq!(after.live_bytes, before.live_bytes);
                        let freed: u64 = ids.iter().map(|id| sizes[id.0 as usize]).sum();
                        prop_assert_eq!(after.reserved_bytes + freed, before.reserved_bytes);
                        for id in &ids {
                            prop_assert!(live.iter().all(|(_, a)| a.block != *id));
                        }
                        // Every remaining block holds a live range.
                        let blocks = (after.slabs + after.dedicated_blocks) as usize;
                        let mut used: Vec<u32> = live.iter().map(|(_, a)| a.block.0).collect();
                        used.sort_unstable();
                        used.dedup();
                        prop_assert_eq!(used.len(), blocks);
                    }
                }
                check_ranges(&p, &sizes, &live);
                prop_assert_eq!(p.stats().frees, frees);
            }
            for (_, a) in live {
                p.free(a);
            }
            p.trim();
            let s = p.stats();
            prop_assert_eq!((s.reserved_bytes, s.live_bytes, s.slabs, s.dedicated_blocks), (0, 0, 0, 0));
        }
    }
}
