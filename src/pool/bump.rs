//! Bump allocation over a list of chunks: the policy of an arena.
//!
//! Where the next allocation goes, when the arena needs another chunk and
//! how big, and what a reset keeps. The arena owns the chunks' memory (host
//! blocks, or device ranges from the zone's pool); this type only does the
//! arithmetic, so it is unit-tested without either.

/// Where a bump allocation landed, or what the arena must add first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bumped {
    /// `offset` bytes into chunk `chunk`.
    At { chunk: usize, offset: u64 },
    /// No held chunk has room: add one of at least `size` bytes
    /// ([`Bump::add_chunk`]) and allocate again.
    NeedChunk { size: u64 },
}

/// Chunk sizes plus a cursor. Allocation is O(1) in the common case;
/// [`Bump::reset`] is O(1) whatever was allocated and keeps every chunk.
#[derive(Debug)]
pub(crate) struct Bump {
    chunks: Vec<u64>,
    /// Bytes of the chunks before each chunk (for `used`).
    before: Vec<u64>,
    /// The chunk being filled; `chunks.len()` once all are full.
    cur: usize,
    /// Bytes used in `chunks[cur]`.
    off: u64,
    /// Size of `chunks[cur]` (0 when there is none): the fast path's bound.
    limit: u64,
    /// Size of `chunks[0]`, so a reset reads no heap memory (after a frame
    /// of allocations the chunk list is likely out of cache).
    first: u64,
    capacity: u64,
    /// Smallest chunk to add.
    min_chunk: u64,
}

impl Bump {
    /// No chunks yet; new chunks hold at least `min_chunk` bytes.
    pub(crate) fn new(min_chunk: u64) -> Bump {
        Bump {
            chunks: Vec::new(),
            before: Vec::new(),
            cur: 0,
            off: 0,
            limit: 0,
            first: 0,
            capacity: 0,
            min_chunk: min_chunk.max(1),
        }
    }

    /// `bytes` at an offset that is a multiple of `align` (a power of two).
    #[inline(always)]
    pub(crate) fn alloc(&mut self, bytes: u64, align: u64) -> Bumped {
        debug_assert!(
            bytes < 1 << 63 && align.is_power_of_two() && align < 1 << 32,
            "bump request of {bytes} bytes at alignment {align}"
        );
        // No overflow: `off <= limit` (a chunk size, < 2^63), `align` and
        // `bytes` are below 2^63 (checked by the callers' shape and size
        // checks), so both sums stay below 2^64.
        let start = (self.off + (align - 1)) & !(align - 1);
        // At least one byte: an empty request must not "fit" when there is
        // no chunk at all (`limit` 0), or it would name a chunk that does
        // not exist.
        let end = start + bytes.max(1);
        if end <= self.limit {
            self.off = end;
            return Bumped::At {
                chunk: self.cur,
                offset: start,
            };
        }
        self.alloc_next(bytes)
    }

    /// The current chunk is full (or absent): try the following ones.
    #[cold]
    fn alloc_next(&mut self, bytes: u64) -> Bumped {
        while self.cur < self.chunks.len() {
            // Chunks kept from before a reset may be too small for this
            // request; the rest of this one stays unused until the reset.
            self.cur += 1;
            self.off = 0;
            self.limit = self.chunks.get(self.cur).copied().unwrap_or(0);
            // Offset 0 is aligned for any power of two.
            if bytes.max(1) <= self.limit {
                self.off = bytes.max(1);
                return Bumped::At {
                    chunk: self.cur,
                    offset: 0,
                };
            }
        }
        Bumped::NeedChunk {
            size: bytes.max(self.min_chunk),
        }
    }

    /// Registers a new chunk of `size` bytes after the held ones; returns
    /// its index. The next [`Bump::alloc`] fills it (chunks are filled in
    /// order).
    pub(crate) fn add_chunk(&mut self, size: u64) -> usize {
        self.before.push(self.capacity);
        if self.chunks.is_empty() {
            self.first = size;
        }
        self.chunks.push(size);
        self.capacity += size;
        if self.cur == self.chunks.len() - 1 {
            // The cursor was past the last chunk: it now points at this one.
            self.off = 0;
            self.limit = size;
        }
        self.chunks.len() - 1
    }

    /// Forgets every allocation and keeps every chunk: O(1).
    pub(crate) fn reset(&mut self) {
        self.cur = 0;
        self.off = 0;
        self.limit = self.first;
    }

    /// Bytes handed out since the last reset, alignment padding and
    /// skipped chunk tails included.
    pub(crate) fn used(&self) -> u64 {
        match self.before.get(self.cur) {
            Some(b) => b + self.off,
            None => self.capacity,
        }
    }

    /// Bytes of all chunks held.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Number of chunks held.
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(b: &mut Bump, bytes: u64, align: u64) -> (usize, u64) {
        match b.alloc(bytes, align) {
            Bumped::At { chunk, offset } => (chunk, offset),
            Bumped::NeedChunk { size } => {
                b.add_chunk(size);
                match b.alloc(bytes, align) {
                    Bumped::At { chunk, offset } => (chunk, offset),
                    other => panic!("a fresh chunk of {size} bytes did not fit {bytes}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bumps_aligned_offsets_within_one_chunk() {
        let mut b = Bump::new(1024);
        assert_eq!(b.alloc(10, 8), Bumped::NeedChunk { size: 1024 });
        assert_eq!(b.add_chunk(1024), 0);
        assert_eq!(
            b.alloc(10, 8),
            Bumped::At {
                chunk: 0,
                offset: 0
            }
        );
        assert_eq!(
            b.alloc(10, 8),
            Bumped::At {
                chunk: 0,
                offset: 16
            }
        );
        assert_eq!(
            b.alloc(1, 256),
            Bumped::At {
                chunk: 0,
                offset: 256
            }
        );
        assert_eq!(b.used(), 257);
        assert_eq!(b.capacity(), 1024);
    }

    #[test]
    fn grows_by_chunks_and_large_requests_get_their_own() {
        let mut b = Bump::new(100);
        assert_eq!(at(&mut b, 60, 4), (0, 0));
        assert_eq!(at(&mut b, 60, 4), (1, 0));
        assert_eq!(at(&mut b, 500, 4), (2, 0));
        assert_eq!(b.chunks(), 3);
        assert_eq!(b.capacity(), 100 + 100 + 500);
    }

    #[test]
    fn reset_keeps_chunks_and_reuses_them_in_order() {
        let mut b = Bump::new(100);
        for _ in 0..5 {
            at(&mut b, 100, 4);
        }
        assert_eq!(b.chunks(), 5);
        b.reset();
        assert_eq!(b.used(), 0);
        for i in 0..5 {
            assert_eq!(
                b.alloc(100, 4),
                Bumped::At {
                    chunk: i,
                    offset: 0
                }
            );
        }
        assert_eq!(b.chunks(), 5, "no new chunk after a reset");
        assert_eq!(b.alloc(1, 4), Bumped::NeedChunk { size: 100 });
    }

    #[test]
    fn skips_kept_chunks_too_small_for_a_request() {
        let mut b = Bump::new(100);
        at(&mut b, 100, 4);
        at(&mut b, 300, 4);
        b.reset();
        // Chunk 0 (100 bytes) cannot hold 200: the request lands in chunk 1.
        assert_eq!(
            b.alloc(200, 4),
            Bumped::At {
                chunk: 1,
                offset: 0
            }
        );
        assert_eq!(b.used(), 300);
    }

    #[test]
    fn an_empty_request_never_names_a_missing_chunk() {
        let mut b = Bump::new(64);
        assert_eq!(b.alloc(0, 8), Bumped::NeedChunk { size: 64 });
        b.add_chunk(64);
        assert_eq!(
            b.alloc(0, 8),
            Bumped::At {
                chunk: 0,
                offset: 0
            }
        );
    }

    #[test]
    fn requests_larger_than_any_chunk_ask_for_their_own() {
        let mut b = Bump::new(100);
        at(&mut b, 10, 4);
        assert_eq!(b.alloc(1 << 40, 4), Bumped::NeedChunk { size: 1 << 40 });
    }
}
