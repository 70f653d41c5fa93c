//! The residency logic every tensor tier shares: which copy is current, and
//! the one transfer that a read or write on the other side needs.
//!
//! Owned and arena tensors keep their bytes in different places (a boxed
//! host copy and a pool range, or slices of an arena's blocks); they expose
//! them through [`Storage`], and the functions here do the rest once.

use std::num::NonZeroU64;

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::residency::Residency;
use crate::shape::Shape;
use crate::zone::{DevicePlace, Zone};

/// Which copies of a tensor are current.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SyncState {
    pub(crate) host_current: bool,
    pub(crate) device_current: bool,
    /// The device bytes are this tensor's own (it has been current there at
    /// least once since the storage was taken). Until then they may be a
    /// dropped tensor's bytes, which must never be exposed.
    pub(crate) device_init: bool,
}

impl SyncState {
    /// The device copy has just been written: the host copy is stale.
    pub(crate) fn device_written(&mut self) {
        self.device_current = true;
        self.device_init = true;
        self.host_current = false;
    }

    /// The host copy has just been written: the device copy is stale.
    pub(crate) fn host_written(&mut self) {
        self.host_current = true;
        self.device_current = false;
    }
}

/// A tensor's parts, borrowed together so a transfer can read one while
/// writing another.
pub(crate) struct Parts<'s, T> {
    pub(crate) zone: &'s Zone,
    pub(crate) host: Option<&'s mut [T]>,
    pub(crate) device: Option<DevicePlace>,
    pub(crate) state: &'s mut SyncState,
    /// The device block's buffer, looked up on the first `binding`.
    pub(crate) bound: &'s mut Option<Box<wgpu::Buffer>>,
    /// A tracked tensor's device copy, kept from spilling meanwhile.
    pub(crate) pin: Option<crate::track::Pin>,
}

/// Where a tier keeps a tensor's bytes.
pub(crate) trait Storage<T: Element> {
    fn zone(&self) -> &Zone;
    fn shape(&self) -> &Shape;
    fn state(&self) -> &SyncState;
    fn has_host(&self) -> bool;
    fn host(&self) -> Option<&[T]>;
    /// Whether a device copy exists (a spilled one counts).
    fn has_device(&self) -> bool;
    /// The parts, with a spilled device copy reloaded first.
    fn parts(&mut self) -> Result<Parts<'_, T>>;
    /// The parts for a write of every device byte: a spilled device copy
    /// may come back without its saved bytes (they would be overwritten).
    fn parts_to_overwrite(&mut self) -> Result<Parts<'_, T>> {
        self.parts()
    }
    /// The parts for host-only work: a spilled device copy stays where it
    /// is (`device` may then be `None`).
    fn host_parts(&mut self) -> Result<Parts<'_, T>> {
        self.parts()
    }
    /// Copies a spilled device copy into the host copy, which exists, and
    /// marks it current: `true` if there was one (a host read then needs
    /// no reload).
    fn host_from_spill(&mut self) -> bool {
        false
    }
    /// Gives the tensor host storage if it has none (zero-filled).
    fn ensure_host(&mut self) -> Result<()>;
    /// [`Storage::ensure_host`] for a caller that overwrites every
    /// element: new host storage need not be cleared.
    fn ensure_host_to_overwrite(&mut self) -> Result<()> {
        self.ensure_host()
    }
    /// Drops a spilled device copy that a host write has made stale: its
    /// saved bytes would only be reloaded to be overwritten. Tiers that
    /// never spill keep the default, which does nothing.
    fn drop_stale_spill(&mut self) {}
    /// Gives the tensor device storage if it has none (contents unspecified).
    fn ensure_device(&mut self) -> Result<()>;

    fn byte_len(&self) -> u64 {
        // Checked against overflow when the shape was accepted.
        (self.shape().numel() * std::mem::size_of::<T>()) as u64
    }
}

pub(crate) fn check_len(shape: &Shape, actual: usize) -> Result<()> {
    if shape.numel() != actual {
        return Err(Error::LengthMismatch {
            expected: shape.numel(),
            actual,
        });
    }
    Ok(())
}

pub(crate) fn residency<T: Element>(s: &impl Storage<T>) -> Residency {
    let st = s.state();
    Residency::of(
        s.has_host(),
        st.host_current,
        s.has_device(),
        st.device_current,
    )
}

/// `to_device`: [`sync_device`], and a current copy that was spilled is
/// reloaded too (`parts` does that; a resident one it only pins for the
/// moment, and marks used). Kernels and bindings reload through their own
/// `parts` call, so only this explicit call needs it.
pub(crate) fn to_device<T: Element>(s: &mut impl Storage<T>) -> Result<()> {
    if s.state().device_current {
        s.parts()?;
        return Ok(());
    }
    sync_device(s)
}

/// Makes the device copy current: one upload if the host copy is newer,
/// zeros if no copy was ever written.
pub(crate) fn sync_device<T: Element>(s: &mut impl Storage<T>) -> Result<()> {
    if s.state().device_current {
        return Ok(());
    }
    s.ensure_device()?;
    let len = s.byte_len();
    // Every byte is replaced (by the host copy or zeros): a spilled copy's
    // saved bytes are stale, not worth reloading.
    let p = s.parts_to_overwrite()?;
    let place = p.device.ok_or(Error::NoDeviceCopy { op: "to_device" })?;
    match (p.host, p.state.host_current) {
        (Some(h), true) => p.zone.upload(place, bytemuck::cast_slice(h))?,
        _ => p.zone.clear_device(place, len)?,
    }
    p.state.device_current = true;
    p.state.device_init = true;
    Ok(())
}

/// Makes the host copy current: one download if the device copy is newer,
/// zeros if no copy was ever written.
pub(crate) fn sync_host<T: Element>(s: &mut impl Storage<T>) -> Result<()> {
    if s.state().host_current {
        return Ok(());
    }
    let fresh = !s.has_host();
    s.ensure_host()?;
    if s.state().device_current && s.host_from_spill() {
        return Ok(());
    }
    let p = if s.state().device_current {
        s.parts()?
    } else {
        s.host_parts()?
    };
    match (p.host, p.device, p.state.device_current) {
        (Some(h), Some(place), true) => p.zone.download(place, bytemuck::cast_slice_mut(h))?,
        (Some(h), _, _) if !fresh => h.fill(T::zeroed()),
        (Some(_), _, _) => {}
        (None, _, _) => return Err(Error::NoDeviceCopy { op: "to_host" }),
    }
    p.state.host_current = true;
    Ok(())
}

/// The host elements, downloaded first if the device copy is newer.
pub(crate) fn as_slice<T: Element>(s: &mut impl Storage<T>) -> Result<&[T]> {
    sync_host(s)?;
    s.host().ok_or(Error::NoDeviceCopy { op: "as_slice" })
}

/// The host elements for writing; the device copy becomes stale.
pub(crate) fn as_mut_slice<T: Element>(s: &mut impl Storage<T>) -> Result<&mut [T]> {
    sync_host(s)?;
    s.host_parts()?.state.device_current = false;
    s.drop_stale_spill();
    let p = s.host_parts()?;
    p.host.ok_or(Error::NoDeviceCopy { op: "as_mut_slice" })
}

/// Overwrites the elements on the host; the device copy becomes stale.
pub(crate) fn write_host<T: Element>(s: &mut impl Storage<T>, data: &[T]) -> Result<()> {
    check_len(s.shape(), data.len())?;
    s.ensure_host()?;
    let p = s.host_parts()?;
    p.host
        .ok_or(Error::NoDeviceCopy { op: "write_host" })?
        .copy_from_slice(data);
    p.state.host_written();
    s.drop_stale_spill();
    Ok(())
}

/// Overwrites the device copy straight from `data` (one upload).
pub(crate) fn write_device<T: Element>(s: &mut impl Storage<T>, data: &[T]) -> Result<()> {
    check_len(s.shape(), data.len())?;
    s.ensure_device()?;
    let p = s.parts_to_overwrite()?;
    let place = p.device.ok_or(Error::NoDeviceCopy { op: "write_device" })?;
    p.zone.upload(place, bytemuck::cast_slice(data))?;
    p.state.device_written();
    Ok(())
}

/// Overwrites the device copy from a pinned buffer (one staging→device
/// copy); the host copy becomes stale.
pub(crate) fn upload_pinned<T: Element>(
    s: &mut impl Storage<T>,
    pinned: crate::PinnedBuffer<T>,
) -> Result<()> {
    check_len(s.shape(), pinned.len())?;
    if !pinned.zone().same_device(s.zone()) {
        return Err(Error::ZoneMismatch);
    }
    s.ensure_device()?;
    let len = s.byte_len();
    let p = s.parts_to_overwrite()?;
    let place = p.device.ok_or(Error::NoDeviceCopy {
        op: "upload_pinned",
    })?;
    p.zone.upload_staging(pinned.into_staging()?, place, len)?;
    p.state.device_written();
    Ok(())
}

/// Records a device-side write, clearing never-written device bytes first.
pub(crate) fn mark_device_written<T: Element>(s: &mut impl Storage<T>) -> Result<()> {
    let len = s.byte_len();
    let p = s.parts()?;
    let place = p.device.ok_or(Error::NoDeviceCopy {
        op: "mark_device_written",
    })?;
    if !p.state.device_init {
        // Nothing of this tensor's was ever on the device: without a
        // clear, the range would show a dropped tensor's bytes.
        p.zone.clear_device(place, len)?;
    }
    p.state.device_written();
    Ok(())
}

/// A wgpu binding of the device copy, made current first, for work of the
/// caller's own: the crate's kernels asked for so far are submitted first,
/// so that work runs after them.
pub(crate) fn binding<T: Element>(s: &mut impl Storage<T>) -> Result<wgpu::BufferBinding<'_>> {
    if s.zone().wgpu_device().is_none() {
        return Err(Error::NeedsGpu { op: "binding" });
    }
    sync_device(s)?;
    s.zone().flush_kernels();
    bind(s, false, false)
}

/// [`binding`] for a kernel of the crate's: the copy is held from spilling
/// until [`release_hold`], after the kernel is submitted.
pub(crate) fn binding_held<T: Element>(s: &mut impl Storage<T>) -> Result<wgpu::BufferBinding<'_>> {
    if s.zone().wgpu_device().is_none() {
        return Err(Error::NeedsGpu { op: "binding" });
    }
    sync_device(s)?;
    bind(s, true, false)
}

/// Ends the hold of [`binding_held`] or [`binding_for_write`]: with the
/// kernel `recorded`, the copy may spill once the zone next waits for the
/// device; a kernel never recorded does not keep it.
pub(crate) fn release_hold<T: Element>(s: &mut impl Storage<T>, recorded: bool) -> Result<()> {
    let p = s.parts()?;
    if let Some(pin) = &p.pin {
        if recorded {
            pin.release_hold(p.zone.inner.tracking.registry.binding_mark());
        } else {
            pin.cancel_hold();
        }
    }
    Ok(())
}

/// A wgpu binding of the device storage for a kernel that overwrites every
/// element: nothing is uploaded or cleared first. Held like
/// [`binding_held`].
pub(crate) fn binding_for_write<T: Element>(
    s: &mut impl Storage<T>,
) -> Result<wgpu::BufferBinding<'_>> {
    if s.zone().wgpu_device().is_none() {
        return Err(Error::NeedsGpu { op: "binding" });
    }
    s.ensure_device()?;
    bind(s, true, true)
}

/// Records that a kernel overwrote every element of the device copy, and
/// ends its hold.
pub(crate) fn kernel_wrote_device<T: Element>(s: &mut impl Storage<T>) -> Result<()> {
    s.parts()?.state.device_written();
    release_hold(s, true)
}

/// Runs `f` on host storage it overwrites whole: nothing is downloaded
/// first, and storage made for it is not cleared first. If `f` succeeds
/// the host copy is current and the device copy stale. If it fails, what
/// it wrote is never read as the tensor's: a host copy that was not
/// current is cleared before it is next read, and one that was current
/// gives way to a current device copy; only a host copy that was the
/// tensor's one current copy keeps what `f` left.
pub(crate) fn overwrite_host<T: Element, R>(
    s: &mut impl Storage<T>,
    f: impl FnOnce(&mut [T]) -> Result<R>,
) -> Result<R> {
    s.ensure_host_to_overwrite()?;
    let p = s.host_parts()?;
    let host = p.host.ok_or(Error::NoDeviceCopy {
        op: "overwrite_host",
    })?;
    match f(host) {
        Ok(r) => {
            p.state.host_written();
            s.drop_stale_spill();
            Ok(r)
        }
        Err(e) => {
            if p.state.device_current {
                p.state.host_current = false;
            }
            Err(e)
        }
    }
}

/// The binding of the device copy `s` has now; `hold` keeps the copy from
/// spilling until [`release_hold`].
fn bind<T: Element>(
    s: &mut impl Storage<T>,
    hold: bool,
    overwrite: bool,
) -> Result<wgpu::BufferBinding<'_>> {
    let bytes = crate::backend::copy_len(s.byte_len());
    if let Some(max) = s.zone().max_binding_size() {
        if bytes > max {
            return Err(Error::InvalidArgument {
                op: "binding",
                detail: format!(
                    "a {bytes}-byte tensor is over the adapter's max_storage_buffer_binding_size ({max})"
                ),
            });
        }
    }
    let size = NonZeroU64::new(bytes);
    let p = if overwrite {
        s.parts_to_overwrite()?
    } else {
        s.parts()?
    };
    let place = p.device.ok_or(Error::NoDeviceCopy { op: "binding" })?;
    if p.bound.is_none() {
        let buffer = p.zone.block_of(place)?.into_gpu_buffer();
        *p.bound = Some(Box::new(buffer.ok_or(Error::NeedsGpu { op: "binding" })?));
    }
    // Only once nothing can fail: a caller releases no hold of a binding
    // it did not get.
    if let Some(pin) = &p.pin {
        if hold {
            pin.hold();
        } else {
            // The caller's own work may use the copy until the zone next
            // waits for the device at the caller's call.
            pin.mark_user_bound(p.zone.inner.tracking.registry.binding_mark());
        }
    }
    match p.bound {
        Some(buffer) => Ok(wgpu::BufferBinding {
            buffer,
            offset: place.offset(),
            size,
        }),
        None => Err(Error::NeedsGpu { op: "binding" }),
    }
}

/// Copies `src` into `dst` on the device (one device→device copy; `src` is
/// uploaded first if its host copy is newer).
pub(crate) fn copy_device<T: Element>(
    dst: &mut impl Storage<T>,
    src: &mut impl Storage<T>,
) -> Result<()> {
    if !dst.zone().same_device(src.zone()) {
        return Err(Error::ZoneMismatch);
    }
    if dst.shape() != src.shape() {
        return Err(Error::ShapeMismatch {
            left: dst.shape().dims().to_vec(),
            right: src.shape().dims().to_vec(),
        });
    }
    sync_device(src)?;
    dst.ensure_device()?;
    let len = dst.byte_len();
    // Both copies stay pinned until the copy is queued.
    let ps = src.parts()?;
    let from = ps.device.ok_or(Error::NoDeviceCopy { op: "copy_from" })?;
    let p = dst.parts_to_overwrite()?;
    let to = p.device.ok_or(Error::NoDeviceCopy { op: "copy_from" })?;
    p.zone.copy_device(from, to, len)?;
    p.state.device_written();
    Ok(())
}

/// The residency and metadata calls every tensor tier with a `shape` field
/// and a [`Storage`] impl offers, written once. Expanded inside each tier's
/// `impl` block.
macro_rules! residency_api {
    () => {
        /// Makes the device copy current and resident: uploads once if the
        /// host copy is newer, or if the device copy was spilled under a
        /// budget (its saved bytes go back; `stats().reloads` counts it);
        /// does nothing if the device copy is already current on the
        /// device. Call it to bring a tensor back before its next kernel.
        pub fn to_device(&mut self) -> $crate::Result<()> {
            $crate::tier::sync::to_device(self)
        }

        /// Makes the host copy current: downloads once if the device copy is
        /// newer; does nothing if the host copy is already current.
        pub fn to_host(&mut self) -> $crate::Result<()> {
            $crate::tier::sync::sync_host(self)
        }

        /// Which copies exist and which are current.
        pub fn residency(&self) -> $crate::Residency {
            $crate::tier::sync::residency(self)
        }

        /// The elements on the host, downloading first if the device is newer.
        pub fn as_slice(&mut self) -> $crate::Result<&[T]> {
            $crate::tier::sync::as_slice(self)
        }

        /// The elements on the host for writing; the device copy becomes stale.
        pub fn as_mut_slice(&mut self) -> $crate::Result<&mut [T]> {
            $crate::tier::sync::as_mut_slice(self)
        }

        /// An ndarray view of the host copy, downloading first if needed.
        pub fn view(&mut self) -> $crate::Result<ndarray::ArrayViewD<'_, T>> {
            let dims = ndarray::IxDyn(self.shape.dims());
            $crate::tier::sync::view_of(dims, self.as_slice()?)
        }

        /// A mutable ndarray view of the host copy; the device copy becomes stale.
        pub fn view_mut(&mut self) -> $crate::Result<ndarray::ArrayViewMutD<'_, T>> {
            let dims = ndarray::IxDyn(self.shape.dims());
            $crate::tier::sync::view_mut_of(dims, self.as_mut_slice()?)
        }

        /// The elements, row-major, downloading first if needed.
        pub fn to_vec(&mut self) -> $crate::Result<Vec<T>> {
            Ok(self.as_slice()?.to_vec())
        }

        /// An owned ndarray of the elements.
        pub fn to_ndarray(&mut self) -> $crate::Result<ndarray::ArrayD<T>> {
            Ok(self.view()?.to_owned())
        }

        /// Overwrites the elements from the host; the device copy becomes stale.
        pub fn write_host(&mut self, data: &[T]) -> $crate::Result<()> {
            $crate::tier::sync::write_host(self, data)
        }

        /// Overwrites the device copy straight from `data` (one upload, no
        /// host copy kept current); the host copy becomes stale.
        pub fn write_device(&mut self, data: &[T]) -> $crate::Result<()> {
            $crate::tier::sync::write_device(self, data)
        }

        /// Overwrites the device copy from a pinned buffer written in place
        /// (one staging→device copy, no other host copy); the host copy
        /// becomes stale.
        ///
        /// Errors: [`Error::LengthMismatch`](crate::Error::LengthMismatch)
        /// when the buffer's length is not the tensor's,
        /// [`Error::ZoneMismatch`](crate::Error::ZoneMismatch) for a buffer
        /// of another device.
        pub fn upload_pinned(&mut self, pinned: $crate::PinnedBuffer<T>) -> $crate::Result<()> {
            $crate::tier::sync::upload_pinned(self, pinned)
        }

        /// Records that device work wrote the device copy: the host copy is
        /// stale from now on and the next host read downloads once.
        ///
        /// If none of this tensor's bytes ever reached its device storage
        /// (no binding, upload or copy), it is cleared first, so it reads as
        /// zeros and never as another tensor's bytes.
        pub fn mark_device_written(&mut self) -> $crate::Result<()> {
            $crate::tier::sync::mark_device_written(self)
        }

        /// The shape.
        pub fn shape(&self) -> &$crate::Shape {
            &self.shape
        }

        /// The dimensions.
        pub fn dims(&self) -> &[usize] {
            self.shape.dims()
        }

        /// Number of elements.
        pub fn len(&self) -> usize {
            self.shape.numel()
        }

        /// Always false: tensors hold at least one element.
        pub fn is_empty(&self) -> bool {
            false
        }

        /// The element type.
        pub fn dtype(&self) -> $crate::DType {
            T::DTYPE
        }

        /// Bytes of the elements.
        pub fn byte_len(&self) -> u64 {
            // Checked against overflow when the shape was accepted.
            (self.shape.numel() * std::mem::size_of::<T>()) as u64
        }
    };
}
pub(crate) use residency_api;

/// An ndarray view of `data` with `dims`.
pub(crate) fn view_of<T>(dims: ndarray::IxDyn, data: &[T]) -> Result<ndarray::ArrayViewD<'_, T>> {
    ndarray::ArrayViewD::from_shape(dims, data).map_err(|e| Error::Backend {
        detail: e.to_string(),
    })
}

/// A mutable ndarray view of `data` with `dims`.
pub(crate) fn view_mut_of<T>(
    dims: ndarray::IxDyn,
    data: &mut [T],
) -> Result<ndarray::ArrayViewMutD<'_, T>> {
    ndarray::ArrayViewMutD::from_shape(dims, data).map_err(|e| Error::Backend {
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Location;

    fn fail() -> Error {
        Error::Backend {
            detail: "the writer stopped".into(),
        }
    }

    #[test]
    fn an_overwrite_skips_the_clear_and_a_failed_one_leaves_zeros() {
        let zone = Zone::cpu();
        let mut arena = zone.arena();
        let mut t = arena.empty::<f32>([64], Location::Device).unwrap();
        overwrite_host(&mut t, |h| {
            h.fill(7.0);
            Ok(())
        })
        .unwrap();
        assert_eq!(t.to_vec().unwrap(), [7.0; 64]);
        drop(t);
        arena.reset();
        // The next frame's tensor gets the same arena bytes, not cleared
        // for a writer that overwrites them all...
        let mut t = arena.empty::<f32>([64], Location::Device).unwrap();
        let err = overwrite_host(&mut t, |h| {
            assert_eq!(h, [7.0; 64]);
            h[..10].fill(9.0);
            Err::<(), _>(fail())
        })
        .unwrap_err();
        assert_eq!(err, fail());
        // ...and one that fails leaves neither its bytes nor older ones.
        assert_eq!(t.to_vec().unwrap(), [0.0; 64]);
        // A host copy that already held the tensor keeps it.
        overwrite_host(&mut t, |h| {
            h.fill(1.0);
            Ok(())
        })
        .unwrap();
        overwrite_host(&mut t, |_| Err::<(), _>(fail())).unwrap_err();
        assert_eq!(t.to_vec().unwrap(), [1.0; 64]);
        // A writer that fails halfway over a host copy in step with the
        // device one leaves the device copy to speak for the tensor.
        t.to_device().unwrap();
        overwrite_host(&mut t, |h| {
            h[..10].fill(5.0);
            Err::<(), _>(fail())
        })
        .unwrap_err();
        assert_eq!(t.to_vec().unwrap(), [1.0; 64]);
    }
}
