//! Backends: the mechanism under the pools. `gpu` drives wgpu, `cpu` keeps
//! "device" memory in host blocks so that the CPU fallback runs the same
//! pools, residency rules and counters as the GPU path.
//!
//! The set of backends is closed, so it is an enum rather than a trait
//! object: calls dispatch with a match and blocks of one backend can never
//! reach the other.

pub(crate) mod cpu;
pub(crate) mod gpu;

use crate::error::Result;

/// Storage for tensors' device copies: a wgpu buffer or a host block.
#[derive(Clone, Debug)]
pub(crate) enum DeviceBlock {
    Gpu(wgpu::Buffer),
    Cpu(std::sync::Arc<cpu::CpuBlock>),
}

/// A staging ("pinned host") buffer: a mappable wgpu buffer or host bytes.
#[derive(Debug)]
pub(crate) enum StagingBlock {
    Gpu(wgpu::Buffer),
    Cpu(Box<[u8]>),
}

impl DeviceBlock {
    /// The wgpu buffer of a GPU block, for a binding; `None` on the CPU.
    pub(crate) fn into_gpu_buffer(self) -> Option<wgpu::Buffer> {
        match self {
            DeviceBlock::Gpu(buffer) => Some(buffer),
            DeviceBlock::Cpu(_) => None,
        }
    }
}

impl StagingBlock {
    /// Writes `bytes` at byte `at` of the mapped buffer.
    pub(crate) fn write(&mut self, at: u64, bytes: &[u8]) -> Result<()> {
        match self {
            StagingBlock::Gpu(buf) => gpu::GpuBackend::write_mapped(buf, at, bytes),
            StagingBlock::Cpu(host) => {
                host[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Zero-fills `range` of the mapped buffer.
    pub(crate) fn zero(&mut self, range: std::ops::Range<u64>) -> Result<()> {
        match self {
            StagingBlock::Gpu(buf) => gpu::GpuBackend::zero_mapped(buf, range),
            StagingBlock::Cpu(host) => {
                host[range.start as usize..range.end as usize].fill(0);
                Ok(())
            }
        }
    }

    /// Hands `f` the first `len` bytes of the mapped buffer, write-only.
    pub(crate) fn with_bytes<R>(
        &mut self,
        len: usize,
        f: impl FnOnce(wgpu::WriteOnly<'_, [u8]>) -> R,
    ) -> Result<R> {
        match self {
            StagingBlock::Gpu(buf) => gpu::GpuBackend::with_mapped(buf, len as u64, f),
            StagingBlock::Cpu(host) => Ok(f(wgpu::WriteOnly::from_mut(&mut host[..len]))),
        }
    }
}

/// The backend a zone runs on.
// One per zone, inside the zone's Arc: the size gap between variants costs
// nothing, while boxing would add a pointer chase to every device call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    Gpu(gpu::GpuBackend),
    Cpu(cpu::CpuBackend),
}

impl Backend {
    /// Fails with `DeviceLost` once the device is gone; CPU never is.
    #[inline]
    pub(crate) fn check_alive(&self) -> Result<()> {
        match self {
            Backend::Gpu(g) => g.check_alive(),
            Backend::Cpu(_) => Ok(()),
        }
    }

    /// `check_alive` after polling the device, for paths that are not hot.
    pub(crate) fn check_alive_polled(&self) -> Result<()> {
        match self {
            Backend::Gpu(g) => g.check_alive_polled(),
            Backend::Cpu(_) => Ok(()),
        }
    }

    /// A new device block of `size` bytes, zero-filled on first use. A
    /// `dedicated` block (one tensor's) is mappable on UMA adapters, so its
    /// transfers skip staging; slabs never are, since mapping one would
    /// stall every tensor in it.
    pub(crate) fn create_block(
        &self,
        size: u64,
        label: &str,
        dedicated: bool,
    ) -> Result<DeviceBlock, CreateError> {
        match self {
            Backend::Gpu(g) => {
                let usage = if dedicated && g.uma {
                    gpu::DEVICE_USAGE | wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE
                } else {
                    gpu::DEVICE_USAGE
                };
                g.create_buffer(size, usage, label, false)
                    .map(DeviceBlock::Gpu)
            }
            Backend::Cpu(_) => cpu::CpuBlock::new(size).map(DeviceBlock::Cpu),
        }
    }

    /// A new upload staging buffer, mapped for writing.
    pub(crate) fn create_upload(
        &self,
        size: u64,
        label: &str,
    ) -> Result<StagingBlock, CreateError> {
        match self {
            Backend::Gpu(g) => g
                .create_buffer(size, gpu::UPLOAD_USAGE, label, true)
                .map(StagingBlock::Gpu),
            Backend::Cpu(_) => cpu::host_bytes(size).map(StagingBlock::Cpu),
        }
    }

    /// A new readback staging buffer (unmapped until a readback maps it).
    pub(crate) fn create_readback(
        &self,
        size: u64,
        label: &str,
    ) -> Result<StagingBlock, CreateError> {
        match self {
            Backend::Gpu(g) => g
                .create_buffer(size, gpu::READBACK_USAGE, label, false)
                .map(StagingBlock::Gpu),
            Backend::Cpu(_) => cpu::host_bytes(size).map(StagingBlock::Cpu),
        }
    }

    /// Copies `len` bytes between device ranges (`len` a multiple of 4 on GPU).
    pub(crate) fn copy_device(
        &self,
        src: &DeviceBlock,
        src_offset: u64,
        dst: &DeviceBlock,
        dst_offset: u64,
        len: u64,
    ) -> Result<()> {
        match (self, src, dst) {
            (Backend::Gpu(g), DeviceBlock::Gpu(s), DeviceBlock::Gpu(d)) => {
                g.copy(s, src_offset, d, dst_offset, len)
            }
            (Backend::Cpu(_), DeviceBlock::Cpu(s), DeviceBlock::Cpu(d)) => {
                cpu::CpuBlock::copy(s, src_offset, d, dst_offset, len);
                Ok(())
            }
            _ => Err(crate::Error::ZoneMismatch),
        }
    }

    /// Fills a device range with zeros (`len` a multiple of 4 on GPU).
    pub(crate) fn clear(&self, block: &DeviceBlock, offset: u64, len: u64) -> Result<()> {
        match (self, block) {
            (Backend::Gpu(g), DeviceBlock::Gpu(b)) => g.clear(b, offset, len),
            (_, DeviceBlock::Cpu(b)) => {
                b.fill_zero(offset, len);
                Ok(())
            }
            _ => Err(crate::Error::ZoneMismatch),
        }
    }
}

/// Why a backend could not create a block; the zone turns it into a full
/// [`crate::Error`] with its own accounting.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// The driver or the host allocator is out of memory.
    OutOfMemory(String),
    /// Anything else (device lost, validation).
    Other(crate::Error),
}

/// Rounds a byte count up to wgpu's copy granularity (4 bytes); saturates
/// at `u64::MAX`, which no buffer can hold (`check_fits` rejects it).
pub(crate) fn copy_len(bytes: u64) -> u64 {
    bytes
        .checked_next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)
        .unwrap_or(u64::MAX)
}
