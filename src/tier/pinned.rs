//! Pinned host buffers: pooled staging memory a caller writes in place and
//! uploads with no further host copy.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use crate::backend::StagingBlock;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::zone::{Staging, Zone};

/// A host-visible staging buffer of `len` elements of `T`, taken from the
/// zone's upload pool and mapped for writing. Write into it (a decoder can
/// write rows straight in), then hand it to [`crate::Tensor::from_pinned`]
/// or [`crate::Tensor::upload_pinned`]. Dropping it unused returns it to
/// the pool.
///
/// Mapped GPU memory may be write-combined, so the buffer is write-only:
/// reading it back would be slow or meaningless. It starts zeroed: bytes
/// left unwritten upload as zeros.
///
/// ```
/// use tensorzone::{Location, Tensor, Zone};
/// let zone = Zone::new().unwrap();
/// let mut frame = zone.pinned::<u8>(8).unwrap();
/// frame.with_bytes(|mut bytes| bytes.fill(7)).unwrap();
/// frame.write(6, &[1, 2]).unwrap();
/// let mut t = Tensor::<u8>::empty(&zone, [8], Location::Device).unwrap();
/// t.upload_pinned(frame).unwrap();
/// assert_eq!(t.to_vec().unwrap(), [7, 7, 7, 7, 7, 7, 1, 2]);
/// ```
pub struct PinnedBuffer<T: Element> {
    zone: Zone,
    staging: Option<Staging>,
    len: usize,
    /// Byte ranges written so far, sorted and merged; `None` once every
    /// byte is known to hold the caller's data or zeros (a fresh buffer,
    /// or after [`PinnedBuffer::zero_unwritten`]).
    written: Option<Vec<Range<u64>>>,
    _elem: PhantomData<fn() -> T>,
}

/// Past this many separate written ranges the rest is zeroed at once, so a
/// writer of many scattered rows costs no more than the full clear did.
const MAX_RANGES: usize = 64;

impl Zone {
    /// A pinned (mapped staging) buffer for `len` elements of `T`.
    ///
    /// Errors: [`Error::EmptyShape`] for `len == 0`,
    /// [`Error::ShapeOverflow`], [`Error::TooLarge`].
    pub fn pinned<T: Element>(&self, len: usize) -> Result<PinnedBuffer<T>> {
        let (_, bytes) = crate::tier::owned::checked::<T>(len)?;
        self.check_fits(bytes)?;
        let staging = self.acquire_upload(bytes)?;
        // A reused buffer still holds an earlier upload; bytes the caller
        // leaves unwritten must read as zeros, not as another tensor's data.
        // They are zeroed at upload, so a caller who writes the whole
        // buffer never pays for a clear.
        let written = (!staging.fresh).then(Vec::new);
        Ok(PinnedBuffer {
            zone: self.clone(),
            staging: Some(staging),
            len,
            written,
            _elem: PhantomData,
        })
    }
}

impl<T: Element> PinnedBuffer<T> {
    /// Capacity in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a pinned buffer holds at least one element.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The zone it came from.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Writes `data` starting at element `offset`.
    ///
    /// Errors: [`Error::OutOfRange`] when it does not fit.
    pub fn write(&mut self, offset: usize, data: &[T]) -> Result<()> {
        let end = offset.checked_add(data.len());
        if end.is_none_or(|e| e > self.len) {
            return Err(Error::OutOfRange {
                offset,
                len: data.len(),
                capacity: self.len,
            });
        }
        let at = (offset * std::mem::size_of::<T>()) as u64;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.block()?.write(at, bytes)?;
        self.note_written(at..at + bytes.len() as u64)
    }

    /// Adds `range` to the written ranges, merging neighbours.
    fn note_written(&mut self, range: Range<u64>) -> Result<()> {
        let Some(written) = self.written.as_mut() else {
            return Ok(());
        };
        if range.is_empty() {
            return Ok(());
        }
        // The first range that ends at or after the new start may touch it;
        // every range from there that starts at or before its end merges.
        let first = written.partition_point(|r| r.end < range.start);
        let mut merged = range;
        let mut last = first;
        while last < written.len() && written[last].start <= merged.end {
            merged.start = merged.start.min(written[last].start);
            merged.end = merged.end.max(written[last].end);
            last += 1;
        }
        written.splice(first..last, [merged]);
        if written.len() > MAX_RANGES {
            self.zero_unwritten()?;
        }
        Ok(())
    }

    /// Hands `f` the buffer's bytes (`len * size_of::<T>()` of them) as a
    /// write-only slice, for writers that fill memory in place.
    pub fn with_bytes<R>(&mut self, f: impl FnOnce(wgpu::WriteOnly<'_, [u8]>) -> R) -> Result<R> {
        // What the closure leaves unwritten cannot be known: clear it first.
        self.zero_unwritten()?;
        let bytes = self.len * std::mem::size_of::<T>();
        self.block()?.with_bytes(bytes, f)
    }

    /// The staging block, until an upload consumes it.
    fn block(&mut self) -> Result<&mut StagingBlock> {
        match self.staging.as_mut() {
            Some(s) => Ok(&mut s.block),
            None => Err(Error::MapFailed {
                detail: "pinned buffer already consumed".into(),
            }),
        }
    }

    /// Zero-fills what was not written, up to the padded length (what an
    /// upload copies), in a reused buffer; a fresh one is zeroed already.
    fn zero_unwritten(&mut self) -> Result<()> {
        let Some(written) = self.written.as_ref() else {
            return Ok(());
        };
        let padded = crate::backend::copy_len((self.len * std::mem::size_of::<T>()) as u64);
        let mut gaps = Vec::with_capacity(written.len() + 1);
        let mut at = 0;
        for r in written.iter().chain([&(padded..padded)]) {
            if r.start > at {
                gaps.push(at..r.start.min(padded));
            }
            at = at.max(r.end);
        }
        if let Some(s) = self.staging.as_mut() {
            for gap in gaps {
                s.block.zero(gap)?;
            }
        }
        // Only now: after a failure the ranges stay, and the next upload
        // tries again instead of sending an earlier upload's bytes.
        self.written = None;
        Ok(())
    }

    /// The staging buffer, its unwritten bytes zeroed, for an upload.
    pub(crate) fn into_staging(mut self) -> Result<Staging> {
        self.zero_unwritten()?;
        match self.staging.take() {
            Some(s) => Ok(s),
            // Only `into_staging` and `drop` take it, and both consume self.
            None => unreachable!("pinned buffer staging taken twice"),
        }
    }
}

impl<T: Element> Drop for PinnedBuffer<T> {
    fn drop(&mut self) {
        if let Some(s) = self.staging.take() {
            self.zone.release_upload(s);
        }
    }
}

impl<T: Element> fmt::Debug for PinnedBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedBuffer")
            .field("dtype", &T::DTYPE)
            .field("len", &self.len)
            .finish()
    }
}
