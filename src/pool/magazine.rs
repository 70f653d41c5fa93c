//! A small per-thread stash of freed slab ranges ("magazine"), so that a
//! thread that frees and allocates the same sizes, as per-frame and
//! per-batch code does, takes no lock for either.
//!
//! Policy only: which ranges to keep and for how long. The zone owns one
//! magazine per (thread, zone) and returns its ranges to the shared pool
//! when it is full, on `trim`, and when the thread exits.

use super::PoolAlloc;

/// Distinct sizes a magazine keeps stacks for.
const MAX_SIZES: usize = 16;
/// Ranges kept per size.
const MAX_DEPTH: usize = 8;

/// Freed slab ranges by reserved size, each a LIFO stack.
#[derive(Debug)]
pub(crate) struct Magazine {
    stacks: Vec<(u64, Vec<PoolAlloc>)>,
    bytes: u64,
    max_bytes: u64,
}

impl Magazine {
    /// An empty magazine that holds at most `max_bytes` of ranges.
    pub(crate) fn new(max_bytes: u64) -> Magazine {
        Magazine {
            stacks: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Bytes of the ranges held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A held range of exactly `size` reserved bytes.
    #[inline(always)]
    pub(crate) fn pop(&mut self, size: u64) -> Option<PoolAlloc> {
        // Linear search: a thread uses few sizes, and the most recently
        // added size sits last, where loops keep finding it.
        let (_, stack) = self.stacks.iter_mut().rev().find(|(s, _)| *s == size)?;
        let a = stack.pop()?;
        self.bytes -= a.size;
        Some(a)
    }

    /// Keeps a freed range when a stack of its size exists with room and the
    /// bytes fit without evicting anything: the common case, kept short.
    #[inline(always)]
    pub(crate) fn push_fast(&mut self, a: PoolAlloc) -> Result<(), PoolAlloc> {
        let size = a.size;
        if self.bytes + size > self.max_bytes {
            return Err(a);
        }
        match self.stacks.iter_mut().rev().find(|(s, _)| *s == size) {
            Some((_, stack)) if stack.len() < MAX_DEPTH => {
                stack.push(a);
                self.bytes += size;
                Ok(())
            }
            _ => Err(a),
        }
    }

    /// Keeps a freed slab range. To make room it gives up ranges of other
    /// sizes, oldest size first, so the sizes in use now stay cached; those
    /// come back in `evicted` for the pool. Hands the range itself back
    /// when it cannot be kept (not a slab range, larger than the magazine,
    /// or its size's stack is full).
    #[inline]
    pub(crate) fn push(
        &mut self,
        a: PoolAlloc,
        evicted: &mut Vec<PoolAlloc>,
    ) -> Result<(), PoolAlloc> {
        let size = a.size;
        if !a.is_slab() || size > self.max_bytes {
            return Err(a);
        }
        let i = match self.stacks.iter().rposition(|(s, _)| *s == size) {
            Some(i) if self.stacks[i].1.len() >= MAX_DEPTH => return Err(a),
            Some(i) => i,
            None => {
                if self.stacks.len() >= MAX_SIZES {
                    // Retire the oldest size entirely.
                    let (_, old) = self.stacks.remove(0);
                    self.bytes -= old.iter().map(|r| r.size).sum::<u64>();
                    evicted.extend(old);
                }
                self.stacks.push((size, Vec::with_capacity(MAX_DEPTH)));
                self.stacks.len() - 1
            }
        };
        // Make room from other sizes, oldest first.
        let mut j = 0;
        while self.bytes + size > self.max_bytes && j < self.stacks.len() {
            if j != i {
                if let Some(r) = self.stacks[j].1.pop() {
                    self.bytes -= r.size;
                    evicted.push(r);
                    continue;
                }
            }
            j += 1;
        }
        if self.bytes + size > self.max_bytes {
            return Err(a);
        }
        self.stacks[i].1.push(a);
        self.bytes += size;
        Ok(())
    }

    /// Takes every held range out.
    pub(crate) fn drain(&mut self) -> Vec<PoolAlloc> {
        self.bytes = 0;
        self.stacks.drain(..).flat_map(|(_, stack)| stack).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{DevicePool, DevicePoolConfig};

    fn pool() -> DevicePool {
        DevicePool::new(DevicePoolConfig {
            alignment: 256,
            slab_size: 1 << 20,
        })
    }

    fn take(p: &mut DevicePool, bytes: u64) -> PoolAlloc {
        match p.try_alloc(bytes) {
            Some(a) => a,
            None => p.add_block(p.plan(bytes), bytes).1,
        }
    }

    #[test]
    fn keeps_ranges_by_size_lifo() {
        let mut p = pool();
        let mut m = Magazine::new(1 << 20);
        let mut ev = Vec::new();
        let a = take(&mut p, 256);
        let b = take(&mut p, 256);
        let c = take(&mut p, 1024);
        let (ao, bo, co) = (a.offset, b.offset, c.offset);
        m.push(a, &mut ev).unwrap();
        m.push(b, &mut ev).unwrap();
        m.push(c, &mut ev).unwrap();
        assert!(ev.is_empty());
        assert_eq!(m.bytes(), 256 + 256 + 1024);
        assert_eq!(m.pop(256).map(|r| r.offset), Some(bo));
        assert_eq!(m.pop(1024).map(|r| r.offset), Some(co));
        assert!(m.pop(512).is_none());
        assert_eq!(m.pop(256).map(|r| r.offset), Some(ao));
        assert!(m.pop(256).is_none());
        assert_eq!(m.bytes(), 0);
    }

    #[test]
    fn makes_room_from_other_sizes_and_drains_everything() {
        let mut p = pool();
        let mut m = Magazine::new(1024);
        let mut ev = Vec::new();
        let big = take(&mut p, 2048);
        let big = m.push(big, &mut ev).expect_err("larger than the magazine");
        p.free(big);
        for _ in 0..3 {
            let a = take(&mut p, 256);
            m.push(a, &mut ev).unwrap();
        }
        assert_eq!(m.bytes(), 768);
        // 768 + 512 > 1024: one 256 B range makes room.
        let mid = take(&mut p, 512);
        m.push(mid, &mut ev).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(m.bytes(), 2 * 256 + 512);
        let drained = m.drain();
        assert_eq!(drained.len(), 3);
        assert_eq!(m.bytes(), 0);
        for a in ev.into_iter().chain(drained) {
            p.free(a);
        }
        assert_eq!(p.stats().live_bytes, 0);
    }

    #[test]
    fn depth_and_size_count_are_bounded() {
        let mut p = pool();
        let mut m = Magazine::new(u64::MAX);
        let mut ev = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..MAX_DEPTH + 2 {
            let a = take(&mut p, 256);
            if let Err(a) = m.push(a, &mut ev) {
                refused.push(a);
            }
        }
        assert_eq!(refused.len(), 2, "a size's stack holds MAX_DEPTH");
        for i in 0..MAX_SIZES as u64 {
            let a = take(&mut p, 512 + 256 * i);
            m.push(a, &mut ev).unwrap();
        }
        // 256 B plus 16 new sizes: the oldest size (256 B) was retired whole.
        assert_eq!(ev.len(), MAX_DEPTH);
        assert!(m.pop(256).is_none());
        let a = m.pop(512).expect("512 B kept");
        p.free(a);
        for a in refused.into_iter().chain(ev).chain(m.drain()) {
            p.free(a);
        }
        assert_eq!(p.stats().live_bytes, 0);
    }

    #[test]
    fn dedicated_blocks_are_not_kept() {
        let mut p = pool();
        let mut m = Magazine::new(u64::MAX);
        let d = take(&mut p, 512 << 10);
        assert!(!d.is_slab());
        let d = m.push(d, &mut Vec::new()).expect_err("dedicated");
        p.free(d);
    }
}
