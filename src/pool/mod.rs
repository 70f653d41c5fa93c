//! Pool policy: where a request goes (which block, which offset), which freed
//! memory is cached for reuse and when it is given back.
//!
//! Pools never call the device. The zone asks a pool for a range; when the pool
//! answers that a new block is needed, the zone creates the backend buffer
//! itself and registers it, so all device calls (and their errors) stay in one
//! place and the policy here can be unit-tested without a GPU.
//!
//! - [`DevicePool`] carves aligned ranges out of big slabs (offset allocator
//!   plus a per-size free-list cache) and gives large requests dedicated,
//!   size-classed blocks that are cached whole when freed.
//! - [`StagingPool`] keeps host-visible mapped buffers for one transfer
//!   direction, reusing them by size class and evicting idle ones beyond a
//!   limit.

pub(crate) mod bump;
pub(crate) mod magazine;
pub(crate) mod slab;
pub(crate) mod staging;

pub(crate) use magazine::Magazine;
pub(crate) use slab::{BlockPlan, DevicePool, DevicePoolConfig, PoolAlloc};
pub(crate) use staging::StagingPool;

/// Index of a backend block (a wgpu buffer or a CPU block) in the zone's block table.
///
/// Each pool has its own id space; ids of blocks a pool has dropped may be
/// handed out again by that pool so the zone's table stays dense.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BlockId(pub(crate) u32);

/// The size-class rounding shared by dedicated blocks and staging buffers:
/// round `bytes` up so that each power of two is split into 4 classes
/// (at most 25% waste), and never below `min`.
///
/// Classes keep the number of distinct block sizes small, so a freed block is
/// likely to fit a later request. Inputs so large that rounding would overflow
/// are returned unrounded (no backend can allocate them anyway).
pub(crate) fn size_class(bytes: u64, min: u64) -> u64 {
    let x = bytes.max(min);
    if x < 4 {
        return x;
    }
    // x >= 4, so the highest set bit is >= 2 and the step is >= 1.
    let step = (1u64 << (63 - x.leading_zeros())) >> 2;
    round_up(x, step).unwrap_or(x)
}

/// Round `x` up to a multiple of `step` (a power of two); `None` on overflow.
///
/// Shared by both pools so the overflow handling lives in one place.
#[inline]
pub(crate) fn round_up(x: u64, step: u64) -> Option<u64> {
    debug_assert!(
        step.is_power_of_two(),
        "round_up step {step} is not a power of two"
    );
    let mask = step - 1;
    x.checked_add(mask).map(|v| v & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_class_values() {
        assert_eq!(size_class(100, 256), 256);
        assert_eq!(size_class(256, 256), 256);
        assert_eq!(size_class(257, 256), 320);
        assert_eq!(size_class(1000, 4), 1024);
        assert_eq!(size_class(1024, 4), 1024);
        assert_eq!(size_class(1025, 4), 1280);
        assert_eq!(size_class(1280, 4), 1280);
        assert_eq!(size_class(1281, 4), 1536);
        assert_eq!(size_class(1537, 4), 1792);
        assert_eq!(size_class(1793, 4), 2048);
        assert_eq!(size_class(5 << 20, 4), 5 << 20);
        assert_eq!(size_class((5 << 20) + 1, 4), 6 << 20);
        assert_eq!(size_class(0, 0), 0);
        assert_eq!(size_class(3, 0), 3);
        assert_eq!(size_class(5, 4), 5);
        assert_eq!(size_class(0, 65536), 65536);
        assert_eq!(size_class(u64::MAX, 4), u64::MAX);
    }

    #[test]
    fn size_class_waste_at_most_a_quarter() {
        let mut x = 1u64;
        for _ in 0..2000 {
            let c = size_class(x, 1);
            assert!(c >= x);
            assert!(c - x <= x / 4, "x={x} c={c}");
            // Idempotent: a class value is its own class.
            assert_eq!(size_class(c, 1), c);
            x = x * 9 / 8 + 1;
            if x > (1 << 60) {
                break;
            }
        }
    }

    #[test]
    fn round_up_values() {
        assert_eq!(round_up(0, 256), Some(0));
        assert_eq!(round_up(1, 256), Some(256));
        assert_eq!(round_up(256, 256), Some(256));
        assert_eq!(round_up(u64::MAX, 4), None);
    }
}
