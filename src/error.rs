//! The crate's one error type.

use crate::dtype::DType;

/// Everything that can go wrong in tensorzone.
///
/// The variants keep apart the cases a caller handles differently: a request
/// that can never fit ([`Error::TooLarge`]) against one that does not fit now
/// ([`Error::OutOfMemory`]), bad shapes and lengths, a missing adapter and a
/// lost device. Every error leaves the zone usable.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A shape has a zero dimension or no dimensions' product to store.
    #[error("shape {dims:?} has no elements; tensors hold at least one element")]
    EmptyShape {
        /// The dimensions given.
        dims: Vec<usize>,
    },
    /// The element or byte count of a shape overflows `u64`/`usize`.
    #[error("shape {dims:?} of {dtype} overflows the addressable byte count")]
    ShapeOverflow {
        /// The dimensions given.
        dims: Vec<usize>,
        /// The element type.
        dtype: DType,
    },
    /// Data given for a tensor has a different number of elements than its shape.
    #[error("length mismatch: the shape needs {expected} elements, {actual} were given")]
    LengthMismatch {
        /// Elements the shape holds.
        expected: usize,
        /// Elements that were given.
        actual: usize,
    },
    /// Two tensors in one call have different shapes.
    #[error("shape mismatch: {left:?} against {right:?}")]
    ShapeMismatch {
        /// The first tensor's dimensions.
        left: Vec<usize>,
        /// The second tensor's dimensions.
        right: Vec<usize>,
    },
    /// The request is bigger than the device can ever hold in one buffer.
    #[error("a {bytes}-byte buffer can never fit: the adapter's max_buffer_size is {max}")]
    TooLarge {
        /// Bytes requested.
        bytes: u64,
        /// The adapter's `max_buffer_size`.
        max: u64,
    },
    /// The allocation could fit in principle, but the device (or the zone's
    /// device memory limit) has no room for it now, even after releasing
    /// cached blocks.
    #[error(
        "out of device memory: {requested} bytes requested, {reserved} reserved, {live} live, {cached} cached, largest free range {largest_free}{}; {detail}",
        limit.map(|l| format!(", limit {l}")).unwrap_or_default()
    )]
    OutOfMemory {
        /// Bytes requested (the new block's size).
        requested: u64,
        /// Device bytes reserved by the zone when it failed.
        reserved: u64,
        /// Device bytes held by live tensors.
        live: u64,
        /// Reserved bytes no tensor holds (free slab space, cached ranges).
        cached: u64,
        /// The largest range an existing block could still hand out.
        largest_free: u64,
        /// The zone's device memory limit, if one is set.
        limit: Option<u64>,
        /// What the driver or the zone said.
        detail: String,
    },
    /// The host allocator could not provide memory for a tensor's host copy.
    #[error("out of host memory: {bytes} bytes requested ({detail})")]
    HostOutOfMemory {
        /// Bytes requested.
        bytes: u64,
        /// What the allocator said.
        detail: String,
    },
    /// `gpu` was required and no adapter could be used.
    #[error("no GPU adapter: {reason}")]
    NoAdapter {
        /// Why no adapter was found or opened.
        reason: String,
    },
    /// The device was lost (driver reset, `destroy`, removal); the zone can
    /// still free memory, but no new device work is possible.
    #[error("device lost: {reason}")]
    DeviceLost {
        /// What wgpu reported.
        reason: String,
    },
    /// `TENSORZONE_BACKEND` holds a value other than `cpu`, `gpu` or `auto`.
    #[error("TENSORZONE_BACKEND={value:?}: expected cpu, gpu or auto")]
    InvalidBackendEnv {
        /// The value found.
        value: String,
    },
    /// `TENSORZONE_TRACK` holds a value other than `1`/`on`/`true` or
    /// `0`/`off`/`false`.
    #[error("TENSORZONE_TRACK={value:?}: expected 1, on, true, 0, off or false")]
    InvalidTrackEnv {
        /// The value found.
        value: String,
    },
    /// A kernel argument it cannot take: a tensor rank it does not work
    /// on, a size past its indexing, a parameter out of its range.
    #[error("{op}: {detail}")]
    InvalidArgument {
        /// The kernel.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The call needs a GPU backend (e.g. a wgpu binding) and the zone runs on the CPU.
    #[error("{op} needs the GPU backend; this zone runs on the CPU")]
    NeedsGpu {
        /// The call that was made.
        op: &'static str,
    },
    /// A write does not fit in the buffer it targets.
    #[error("out of range: {len} elements at offset {offset} do not fit in {capacity}")]
    OutOfRange {
        /// First element written.
        offset: usize,
        /// Elements written.
        len: usize,
        /// Elements the buffer holds.
        capacity: usize,
    },
    /// A device-side call was made on a tensor that has no device copy.
    #[error("{op}: the tensor has no device copy; call to_device or binding first")]
    NoDeviceCopy {
        /// The call that was made.
        op: &'static str,
    },
    /// Two tensors of different zones were used together.
    #[error("tensors belong to different zones")]
    ZoneMismatch,
    /// Mapping a staging buffer failed.
    #[error("mapping a staging buffer failed: {detail}")]
    MapFailed {
        /// What wgpu reported.
        detail: String,
    },
    /// A child zone (or one of its parents) would hold more than its byte
    /// quota; nothing was allocated.
    #[error("zone {zone:?} is over its quota: {requested} bytes asked, {used} of {quota} in use")]
    QuotaExceeded {
        /// The zone whose quota it is.
        zone: String,
        /// Its quota.
        quota: u64,
        /// Bytes it and its children held (host and device).
        used: u64,
        /// Bytes asked for.
        requested: u64,
    },
    /// A zone names at most `max` distinct labels.
    #[error("a zone holds at most {max} distinct labels")]
    TooManyLabels {
        /// The limit.
        max: usize,
    },
    /// wgpu reported an error that is none of the above (a validation error
    /// is a bug in tensorzone or in a caller's use of a raw binding).
    #[error("wgpu error: {detail}")]
    Backend {
        /// What wgpu reported.
        detail: String,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
