//! CPU backend: "device" blocks are zero-initialised host allocations, and
//! transfers are `memcpy`s that the zone counts exactly as it counts GPU ones.

use std::sync::{Arc, Mutex, MutexGuard};

use super::CreateError;

/// The CPU backend has no state of its own; it exists to name the choice.
#[derive(Debug, Default)]
pub(crate) struct CpuBackend;

/// A host block standing in for a device buffer. Tensors own disjoint
/// ranges of it, so the lock is uncontended except between those tensors'
/// transfers, and it is never held across a call into user code.
#[derive(Debug)]
pub(crate) struct CpuBlock {
    bytes: Mutex<Box<[u8]>>,
}

/// Zeroed host bytes, or an out-of-memory error instead of an abort.
pub(crate) fn host_bytes(size: u64) -> Result<Box<[u8]>, CreateError> {
    let len = usize::try_from(size)
        .map_err(|_| CreateError::OutOfMemory(format!("{size} bytes exceed the address space")))?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|e| CreateError::OutOfMemory(format!("host allocation of {size} bytes: {e}")))?;
    v.resize(len, 0);
    Ok(v.into_boxed_slice())
}

impl CpuBlock {
    pub(crate) fn new(size: u64) -> Result<Arc<CpuBlock>, CreateError> {
        Ok(Arc::new(CpuBlock {
            bytes: Mutex::new(host_bytes(size)?),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Box<[u8]>> {
        // A panic while holding this lock cannot leave the bytes in a state
        // worse than "partly copied", which the residency layer already
        // treats as unwritten; so a poisoned lock is still usable.
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn range(offset: u64, len: usize) -> std::ops::Range<usize> {
        let start = offset as usize;
        start..start + len
    }

    pub(crate) fn write(&self, offset: u64, data: &[u8]) {
        self.lock()[Self::range(offset, data.len())].copy_from_slice(data);
    }

    pub(crate) fn read(&self, offset: u64, out: &mut [u8]) {
        out.copy_from_slice(&self.lock()[Self::range(offset, out.len())]);
    }

    pub(crate) fn fill_zero(&self, offset: u64, len: u64) {
        self.lock()[Self::range(offset, len as usize)].fill(0);
    }

    pub(crate) fn copy(
        src: &Arc<CpuBlock>,
        src_offset: u64,
        dst: &Arc<CpuBlock>,
        dst_offset: u64,
        len: u64,
    ) {
        let len = len as usize;
        if Arc::ptr_eq(src, dst) {
            let start = src_offset as usize;
            src.lock()
                .copy_within(start..start + len, dst_offset as usize);
            return;
        }
        // Lock in address order so two opposite copies cannot deadlock.
        let (first, second) = if Arc::as_ptr(src) < Arc::as_ptr(dst) {
            (src, dst)
        } else {
            (dst, src)
        };
        let a = first.lock();
        let b = second.lock();
        let (s, mut d) = if Arc::ptr_eq(first, src) {
            (a, b)
        } else {
            (b, a)
        };
        d[Self::range(dst_offset, len)].copy_from_slice(&s[Self::range(src_offset, len)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_start_zeroed_and_copy_both_ways() {
        let a = CpuBlock::new(64).unwrap();
        let b = CpuBlock::new(64).unwrap();
        let mut out = [9u8; 8];
        a.read(8, &mut out);
        assert_eq!(out, [0; 8]);
        a.write(8, &[1, 2, 3, 4, 5, 6, 7, 8]);
        CpuBlock::copy(&a, 8, &b, 16, 8);
        CpuBlock::copy(&b, 16, &a, 32, 8);
        CpuBlock::copy(&a, 32, &a, 40, 4);
        b.read(16, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        a.read(40, &mut out[..4]);
        assert_eq!(&out[..4], &[1, 2, 3, 4]);
        a.fill_zero(8, 8);
        a.read(8, &mut out);
        assert_eq!(out, [0; 8]);
    }

    #[test]
    fn impossible_host_allocation_is_an_error() {
        assert!(matches!(
            host_bytes(u64::MAX / 2),
            Err(CreateError::OutOfMemory(_))
        ));
    }
}
