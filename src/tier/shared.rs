//! Tier 4: shared tensors, reference-counted, with weak handles.
//!
//! [`SharedTensor<T>`] is an `Arc` around an owned [`Tensor`]: `Clone` is one
//! atomic increment, the last strong handle's drop returns the storage to
//! the pool, and [`WeakTensor<T>`] never keeps memory alive. A shared tensor
//! is read-only; [`SharedTensor::make_mut`] gives a `&mut Tensor`, copying
//! first when another strong handle could see the change.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::residency::Residency;
use crate::shape::Shape;
use crate::tier::owned::Tensor;
use crate::tier::sync::{self, Storage};

struct Shared<T: Element> {
    /// Never `None` while a strong handle can reach it; `make_mut` moves
    /// the tensor out only from a value no other handle shares.
    tensor: Mutex<Option<Tensor<T>>>,
    shape: Shape,
    /// The device block's buffer, looked up on the first `binding`: the
    /// contents are immutable, so the device copy never moves while shared.
    bound: OnceLock<wgpu::Buffer>,
}

impl<T: Element> Shared<T> {
    fn new(t: Tensor<T>) -> Shared<T> {
        Shared {
            shape: t.shape().clone(),
            tensor: Mutex::new(Some(t)),
            bound: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Tensor<T>>> {
        // A panic while holding the lock cannot leave the tensor half
        // updated (each residency step completes or errors), so a poisoned
        // lock still guards consistent data.
        self.tensor.lock().unwrap_or_else(|p| p.into_inner())
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
        }
    }
}

fn gone() -> Error {
    Error::Backend {
        detail: "shared tensor moved out by make_mut".into(),
    }
}

impl<T: Element> SharedTensor<T> {
    /// Runs `f` on the tensor, under its lock.
    fn with<R>(&self, f: impl FnOnce(&mut Tensor<T>) -> Result<R>) -> Result<R> {
        let mut g = self.inner.lock();
        let t = g.as_mut().ok_or_else(gone)?;
        f(t)
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

    /// A mutable tensor with these contents: this one when no other strong
    /// handle exists (weak handles then stop upgrading), else a copy (one
    /// device→device or host copy) that this handle holds from now on.
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
    pub fn make_mut(&mut self) -> Result<&mut Tensor<T>> {
        if Arc::get_mut(&mut self.inner).is_none() {
            let placeholder = Arc::new(Shared {
                tensor: Mutex::new(None),
                shape: self.inner.shape.clone(),
                bound: OnceLock::new(),
            });
            let old = std::mem::replace(&mut self.inner, placeholder);
            // `try_unwrap` succeeds only for the last strong handle, and
            // atomically: a weak handle cannot upgrade after it.
            let tensor = match Arc::try_unwrap(old) {
                Ok(shared) => shared
                    .tensor
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner()),
                Err(still_shared) => {
                    let copy = {
                        let mut g = still_shared.lock();
                        let t = g.as_mut().ok_or_else(gone);
                        t.and_then(|t| Tensor::copy_of(t))
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
        let shared = Arc::get_mut(&mut self.inner).ok_or_else(gone)?;
        // The tensor may now change where its device copy lives.
        shared.bound = OnceLock::new();
        shared
            .tensor
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .ok_or_else(gone)
    }

    /// Makes the device copy current (one upload if only the host copy is).
    pub fn to_device(&self) -> Result<()> {
        self.with(|t| t.to_device())
    }

    /// Makes the host copy current (one download if only the device copy is).
    pub fn to_host(&self) -> Result<()> {
        self.with(|t| t.to_host())
    }

    /// Which copies exist and which are current.
    pub fn residency(&self) -> Residency {
        let g = self.inner.lock();
        g.as_ref()
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
        let mut g = self.inner.lock();
        g.as_mut().ok_or_else(gone)?.to_host()?;
        Ok(SharedRead { guard: g })
    }

    /// A wgpu binding of the device copy (made current first) for kernels
    /// that read it. A shared tensor is immutable: kernels must not write
    /// through it (use [`SharedTensor::make_mut`] and [`Tensor::binding`]).
    ///
    /// Errors: [`Error::NeedsGpu`] on the CPU backend.
    pub fn binding(&self) -> Result<wgpu::BufferBinding<'_>> {
        let (place, len) = self.with(|t| {
            if t.zone().wgpu_device().is_none() {
                return Err(Error::NeedsGpu { op: "binding" });
            }
            sync::sync_device(t)?;
            let place = Storage::device(t).ok_or(Error::NoDeviceCopy { op: "binding" })?;
            Ok((place, t.byte_len()))
        })?;
        let buffer = match self.inner.bound.get() {
            Some(b) => b,
            None => {
                let block = self.with(|t| t.zone().block_of(place))?;
                let crate::backend::DeviceBlock::Gpu(buffer) = block else {
                    return Err(Error::NeedsGpu { op: "binding" });
                };
                self.inner.bound.get_or_init(|| buffer)
            }
        };
        Ok(wgpu::BufferBinding {
            buffer,
            offset: place.offset(),
            size: std::num::NonZeroU64::new(crate::backend::copy_len(len)),
        })
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
        }
    }
}

impl<T: Element> WeakTensor<T> {
    /// A strong handle, if the tensor is still alive.
    pub fn upgrade(&self) -> Option<SharedTensor<T>> {
        let inner = self.inner.upgrade()?;
        let alive = inner.lock().is_some();
        alive.then_some(SharedTensor { inner })
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

/// The host elements of a [`SharedTensor`], read under its lock.
pub struct SharedRead<'s, T: Element> {
    guard: MutexGuard<'s, Option<Tensor<T>>>,
}

impl<T: Element> std::ops::Deref for SharedRead<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // `read` made the host copy current before building the guard.
        self.guard
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
