//! Tier 4: shared tensors, reference-counted, with weak handles.
//!
//! [`SharedTensor<T>`] is an `Arc` around an owned [`Tensor`]: `Clone` is one
//! atomic increment, the last strong handle's drop returns the storage to
//! the pool, and [`WeakTensor<T>`] never keeps memory alive. A shared tensor
//! is read-only; [`SharedTensor::make_mut`] gives write access to the
//! tensor, copying first when another strong handle could see the change.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::residency::{Location, Residency};
use crate::shape::Shape;
use crate::stats::HostDevice;
use crate::tier::owned::Tensor;
use crate::tier::sync::{self, Storage};
use crate::trace::{Event, Tier};
use crate::zone::{WeakZone, Zone};

/// The tensor of a shared handle and the bytes the shared tier's counters
/// hold for it.
struct Slot<T: Element> {
    /// Never `None` while a strong handle can reach it; `make_mut` moves
    /// the tensor out only from a value no other handle shares.
    tensor: Option<Tensor<T>>,
    /// What the zone's shared-tier counter holds for this tensor now ...
    counted: HostDevice,
    /// ... in this zone (a tensor put in through `make_mut` may belong to
    /// another one). Weak: the tensor keeps its zone alive, and a tracking
    /// zone counts its tensors' handles to know when the user let go.
    zone: Option<WeakZone>,
}

impl<T: Element> Slot<T> {
    /// Brings the shared tier's counts in step with what the tensor holds.
    fn recount(&mut self) {
        if let Some(t) = &self.tensor {
            recount(t, &mut self.counted, &mut self.zone);
        }
    }

    /// Takes the tensor out of the shared tier.
    fn take(&mut self) -> Option<Tensor<T>> {
        let t = self.tensor.take()?;
        uncount(&t, &mut self.counted, &mut self.zone);
        Some(t)
    }
}

/// Takes what `counted` says (with the moves spills made since) out of the
/// shared tier's count: `t` leaves it, or may be swapped out of its
/// handle through `make_mut`.
fn uncount<T: Element>(t: &Tensor<T>, counted: &mut HostDevice, zone: &mut Option<WeakZone>) {
    let (_, moved) = t.held_shared(false);
    if let Some(z) = zone.take().and_then(|z| z.upgrade()) {
        account(&z, moved.apply(*counted), false);
    }
    *counted = HostDevice::default();
}

/// Moves the shared tier's count for `t` from what `counted` says (in
/// `zone`) to what `t` holds now, in `t`'s zone: residency calls, or writes
/// through `make_mut`, may have added or dropped copies, or replaced the
/// tensor, since.
fn recount<T: Element>(t: &Tensor<T>, counted: &mut HostDevice, zone: &mut Option<WeakZone>) {
    // A spill or reload of the tensor moved its count already.
    let (now, moved) = t.held_shared(true);
    *counted = moved.apply(*counted);
    let same_zone = zone.as_ref().is_some_and(|z| z.is(t.zone()));
    if same_zone && now == *counted {
        return;
    }
    if let Some(z) = zone.as_ref().and_then(WeakZone::upgrade) {
        account(&z, *counted, false);
    }
    account(t.zone(), now, true);
    *counted = now;
    if !same_zone {
        *zone = Some(t.zone().downgrade());
    }
}

/// Adds `held` to (`into` true) or takes it from the shared tier's counts.
/// In a trace, the bytes move between the owned and shared tiers.
fn account(zone: &Zone, held: HostDevice, into: bool) {
    let c = &zone.counters().shared;
    if into {
        c.add(held);
    } else {
        c.sub(held);
    }
    let (from, to) = if into {
        (Tier::Owned, Tier::Shared)
    } else {
        (Tier::Shared, Tier::Owned)
    };
    for (location, bytes) in [(Location::Host, held.host), (Location::Device, held.device)] {
        if bytes > 0 {
            zone.trace(|| Event::Free {
                tier: from,
                location,
                bytes,
            });
            zone.trace(|| Event::Alloc {
                tier: to,
                location,
                bytes,
            });
        }
    }
}

struct Shared<T: Element> {
    slot: Mutex<Slot<T>>,
    shape: Shape,
    /// The device block's buffer, looked up on the first `binding`: the
    /// contents are immutable, so the device copy never moves while shared
    /// (and a binding keeps it from being spilled).
    bound: OnceLock<wgpu::Buffer>,
}

impl<T: Element> Shared<T> {
    fn new(t: Tensor<T>) -> Shared<T> {
        let (counted, _) = t.held_shared(true);
        account(t.zone(), counted, true);
        Shared {
            shape: t.shape().clone(),
            slot: Mutex::new(Slot {
                zone: Some(t.zone().downgrade()),
                tensor: Some(t),
                counted,
            }),
            bound: OnceLock::new(),
        }
    }

    /// A handle's placeholder while `make_mut` swaps tensors.
    fn empty(shape: Shape) -> Shared<T> {
        Shared {
            slot: Mutex::new(Slot {
                tensor: None,
                counted: HostDevice::default(),
                zone: None,
            }),
            shape,
            bound: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding the lock cannot leave the tensor half
        // updated (each residency step completes or errors), so a poisoned
        // lock still guards consistent data.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Element> Drop for Shared<T> {
    fn drop(&mut self) {
        // The last strong handle: the tensor leaves the shared tier and
        // its storage goes back to the pool.
        let slot = self.slot.get_mut().unwrap_or_else(|p| p.into_inner());
        drop(slot.take());
    }
}

/// An immutable tensor with shared ownership: an `Arc` around an owned
/// [`Tensor`]. `Clone` is one atomic increment, the last strong handle's
/// drop returns the storage to the pool, and a [`WeakTensor`] never keeps
/// memory alive. Writes go through [`SharedTensor::make_mut`].
///
/// ```
/// use tensorzone::{Location, Tensor, Zone};
/// let zone = Zone::new().unwrap();
/// let weights = Tensor::from_slice(&zone, [3], &[1.0f32, 2.0, 3.0], Location::Device)
///     .unwrap()
///     .into_shared();
/// let for_worker = weights.clone();              // one atomic increment
/// let weak = weights.downgrade();
/// std::thread::spawn(move || assert_eq!(for_worker.to_vec().unwrap(), [1.0, 2.0, 3.0]))
///     .join()
///     .unwrap();
/// assert_eq!(weights.strong_count(), 1);
/// drop(weights);                                 // the last strong handle frees
/// assert!(weak.upgrade().is_none());
/// ```
pub struct SharedTensor<T: Element> {
    inner: Arc<Shared<T>>,
    /// This handle's buffer for the kernel it is an input of: a kernel's
    /// binding borrows it while the tensor is held, and the next kernel
    /// replaces it (the copy may have moved between them).
    kernel_buffer: Option<Box<wgpu::Buffer>>,
}

/// A weak handle to a [`SharedTensor`]: it does not keep the tensor's
/// memory alive; [`WeakTensor::upgrade`] gives a strong handle while one
/// exists.
pub struct WeakTensor<T: Element> {
    inner: Weak<Shared<T>>,
}

impl<T: Element> Tensor<T> {
    /// Makes this tensor shared and immutable (no copy).
    pub fn into_shared(self) -> SharedTensor<T> {
        SharedTensor {
            inner: Arc::new(Shared::new(self)),
            kernel_buffer: None,
        }
    }
}

fn gone() -> Error {
    Error::Backend {
        detail: "shared tensor moved out by make_mut".into(),
    }
}

impl<T: Element> SharedTensor<T> {
    /// Runs `f` on the tensor, under its lock, keeping the shared tier's
    /// byte counts in step with the copies it holds.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Tensor<T>) -> Result<R>) -> Result<R> {
        let mut slot = self.inner.lock();
        slot.recount();
        let r = f(slot.tensor.as_mut().ok_or_else(gone)?);
        slot.recount();
        r
    }

    /// A weak handle that does not keep the memory alive.
    pub fn downgrade(&self) -> WeakTensor<T> {
        WeakTensor {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Strong handles to this tensor.
    pub fn strong_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Weak handles to this tensor.
    pub fn weak_count(&self) -> usize {
        Arc::weak_count(&self.inner)
    }

    /// Whether two handles share one tensor.
    pub fn ptr_eq(&self, other: &SharedTensor<T>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Write access to a tensor with these contents: this one when no other
    /// strong handle exists (weak handles then stop upgrading), else a copy
    /// (one device→device or host copy) that this handle holds from now on.
    /// The guard derefs to `&mut Tensor`; even replacing the tensor is fine.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::cpu();
    /// let mut a = Tensor::from_slice(&zone, [2], &[1u32, 2], Location::Host).unwrap().into_shared();
    /// let b = a.clone();
    /// a.make_mut().unwrap().write_host(&[9, 9]).unwrap(); // copies: `b` still sees [1, 2]
    /// assert_eq!(b.to_vec().unwrap(), [1, 2]);
    /// assert_eq!(a.to_vec().unwrap(), [9, 9]);
    /// ```
    pub fn make_mut(&mut self) -> Result<SharedMut<'_, T>> {
        if Arc::get_mut(&mut self.inner).is_none() {
            let placeholder = Arc::new(Shared::empty(self.inner.shape.clone()));
            let old = std::mem::replace(&mut self.inner, placeholder);
            // `try_unwrap` succeeds only for the last strong handle, and
            // atomically: a weak handle cannot upgrade after it.
            let tensor = match Arc::try_unwrap(old) {
                Ok(mut shared) => shared
                    .slot
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
                Err(still_shared) => {
                    let copy = {
                        let mut slot = still_shared.lock();
                        let t = slot.tensor.as_mut().ok_or_else(gone);
                        // The writer's copy keeps the label: it is the same
                        // data to the label's count.
                        t.and_then(|t| t.try_clone())
                    };
                    match copy {
                        Ok(c) => Some(c),
                        Err(e) => {
                            self.inner = still_shared;
                            return Err(e);
                        }
                    }
                }
            };
            self.inner = Arc::new(Shared::new(tensor.ok_or_else(gone)?));
        }
        let Shared { slot, shape, bound } = Arc::get_mut(&mut self.inner).ok_or_else(gone)?;
        // The tensor may now change where its device copy lives.
        *bound = OnceLock::new();
        let Slot {
            tensor,
            counted,
            zone,
        } = slot.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tensor.as_ref() {
            t.unpin_shared_binding();
            // Out of the shared tier while writable, so that a tensor
            // swapped out of the handle takes no count along; the guard's
            // drop counts what the handle holds then.
            uncount(t, counted, zone);
        }
        Ok(SharedMut {
            tensor: tensor.as_mut().ok_or_else(gone)?,
            counted,
            zone,
            shape,
        })
    }

    /// Makes the device copy current and resident (one upload if only the
    /// host copy is current, or if the device copy was spilled).
    pub fn to_device(&self) -> Result<()> {
        self.with(|t| t.to_device())
    }

    /// Makes the host copy current (one download if only the device copy is).
    pub fn to_host(&self) -> Result<()> {
        self.with(|t| t.to_host())
    }

    /// Which copies exist and which are current.
    pub fn residency(&self) -> Residency {
        let slot = self.inner.lock();
        slot.tensor
            .as_ref()
            .map(|t| t.residency())
            .unwrap_or_else(|| Residency::of(false, false, false, false))
    }

    /// The elements, row-major, downloading first if needed.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.with(|t| t.to_vec())
    }

    /// A read guard on the host copy (downloaded first if needed). Other
    /// handles' calls wait while it is held.
    pub fn read(&self) -> Result<SharedRead<'_, T>> {
        self.to_host()?;
        Ok(SharedRead {
            guard: self.inner.lock(),
        })
    }

    /// A wgpu binding of the device copy (made current first) for kernels
    /// that read it. A shared tensor is immutable: kernels must not write
    /// through it (use [`SharedTensor::make_mut`] and [`Tensor::binding`]).
    ///
    /// The binding may be used for as long as any handle lives, so from
    /// then on the device copy stays where it is: it is never spilled
    /// (until [`SharedTensor::make_mut`]). The crate's kernels do not pin it
    /// so: they keep it in place only until the zone next waits for the
    /// device after they are recorded.
    ///
    /// Errors: [`Error::NeedsGpu`] on the CPU backend.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let w = Tensor::from_slice(&zone, [3], &[1.0f32, 2.0, 3.0], Location::Host).unwrap().into_shared();
    /// match w.binding() {
    ///     // Bind it read-only in a kernel of your own (see `Tensor::binding`).
    ///     Ok(b) => assert_eq!(b.size.map(|s| s.get()), Some(12)),
    ///     Err(e) => assert_eq!(e, tensorzone::Error::NeedsGpu { op: "binding" }),
    /// }
    /// ```
    pub fn binding(&self) -> Result<wgpu::BufferBinding<'_>> {
        let (place, len) = self.with(|t| {
            if t.zone().wgpu_device().is_none() {
                return Err(Error::NeedsGpu { op: "binding" });
            }
            // Work of one's own bound to this tensor runs after the
            // kernels asked for so far.
            t.zone().flush_kernels();
            sync::sync_device(t)?;
            let p = Storage::parts(t)?;
            let place = p.device.ok_or(Error::NoDeviceCopy { op: "binding" })?;
            if let Some(pin) = &p.pin {
                // The buffer is cached for the handle's lifetime: the copy
                // must stay in its block, so it is never spilled again.
                pin.mark_bound(u64::MAX);
            }
            Ok((place, t.byte_len()))
        })?;
        let buffer = match self.inner.bound.get() {
            Some(b) => b,
            None => {
                let block = self.with(|t| t.zone().block_of(place))?;
                let buffer = block
                    .into_gpu_buffer()
                    .ok_or(Error::NeedsGpu { op: "binding" })?;
                self.inner.bound.get_or_init(|| buffer)
            }
        };
        Ok(wgpu::BufferBinding {
            buffer,
            offset: place.offset(),
            size: std::num::NonZeroU64::new(crate::backend::copy_len(len)),
        })
    }

    /// A binding for one of the crate's kernels, which joins the open
    /// batch: the copy is held from spilling until
    /// [`SharedTensor::kernel_done`], once the kernel is recorded, and its
    /// binding mark keeps it in place until the zone next waits.
    pub(crate) fn kernel_binding(&mut self) -> Result<wgpu::BufferBinding<'_>> {
        let (buffer, offset, size) = self.with(|t| {
            let b = sync::binding_held(t)?;
            Ok((b.buffer.clone(), b.offset, b.size))
        })?;
        let buffer = self.kernel_buffer.insert(Box::new(buffer));
        Ok(wgpu::BufferBinding {
            buffer,
            offset,
            size,
        })
    }

    /// Ends the hold of [`SharedTensor::kernel_binding`].
    pub(crate) fn kernel_done(&mut self, recorded: bool) -> Result<()> {
        self.kernel_buffer = None;
        self.with(|t| sync::release_hold(t, recorded))
    }

    /// A new owned tensor with the same contents.
    pub fn to_owned_tensor(&self) -> Result<Tensor<T>> {
        self.with(|t| t.try_clone())
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.inner.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.inner.shape.dims()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.inner.shape.numel()
    }

    /// Always false: tensors hold at least one element.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// Bytes of the elements.
    pub fn byte_len(&self) -> u64 {
        (self.inner.shape.numel() * std::mem::size_of::<T>()) as u64
    }
}

impl<T: Element> Clone for SharedTensor<T> {
    /// One atomic increment; no copy of the data.
    #[inline]
    fn clone(&self) -> Self {
        SharedTensor {
            inner: Arc::clone(&self.inner),
            kernel_buffer: None,
        }
    }
}

impl<T: Element> WeakTensor<T> {
    /// A strong handle, if the tensor is still alive.
    pub fn upgrade(&self) -> Option<SharedTensor<T>> {
        let inner = self.inner.upgrade()?;
        let alive = inner.lock().tensor.is_some();
        alive.then_some(SharedTensor {
            inner,
            kernel_buffer: None,
        })
    }

    /// Strong handles to the tensor (0 once it is freed).
    pub fn strong_count(&self) -> usize {
        self.inner.strong_count()
    }
}

impl<T: Element> Clone for WeakTensor<T> {
    fn clone(&self) -> Self {
        WeakTensor {
            inner: Weak::clone(&self.inner),
        }
    }
}

/// Write access to a [`SharedTensor`]'s tensor, from
/// [`SharedTensor::make_mut`]: derefs to [`Tensor`]. When it goes out of
/// scope the shared handle takes up the tensor's new shape and bytes.
pub struct SharedMut<'s, T: Element> {
    tensor: &'s mut Tensor<T>,
    counted: &'s mut HostDevice,
    zone: &'s mut Option<WeakZone>,
    shape: &'s mut Shape,
}

impl<T: Element> std::ops::Deref for SharedMut<'_, T> {
    type Target = Tensor<T>;
    fn deref(&self) -> &Tensor<T> {
        self.tensor
    }
}

impl<T: Element> std::ops::DerefMut for SharedMut<'_, T> {
    fn deref_mut(&mut self) -> &mut Tensor<T> {
        self.tensor
    }
}

impl<T: Element> Drop for SharedMut<'_, T> {
    fn drop(&mut self) {
        recount(self.tensor, self.counted, self.zone);
        if self.shape != self.tensor.shape() {
            *self.shape = self.tensor.shape().clone();
        }
    }
}

/// The host elements of a [`SharedTensor`], read under its lock.
pub struct SharedRead<'s, T: Element> {
    guard: MutexGuard<'s, Slot<T>>,
}

impl<T: Element> std::ops::Deref for SharedRead<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // `read` made the host copy current before building the guard.
        self.guard
            .tensor
            .as_ref()
            .and_then(|t| Storage::host(t))
            .unwrap_or(&[])
    }
}

impl<T: Element> fmt::Debug for SharedTensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTensor")
            .field("dtype", &T::DTYPE)
            .field("shape", &self.inner.shape)
            .field("strong", &self.strong_count())
            .field("weak", &self.weak_count())
            .finish()
    }
}

impl<T: Element> fmt::Debug for WeakTensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakTensor")
            .field("dtype", &T::DTYPE)
            .field("strong", &self.strong_count())
            .finish()
    }
}
