//! What kernels take: any tier's tensor as an input, owned and arena
//! tensors as outputs. The traits are sealed; their methods are the
//! residency steps a kernel needs on each backend.

use crate::dtype::Element;
use crate::error::Result;
use crate::shape::Shape;
use crate::tier::arena::ArenaTensor;
use crate::tier::owned::Tensor;
use crate::tier::shared::SharedTensor;
use crate::tier::sync::{self, Storage};
use crate::zone::Zone;

/// A tensor a kernel reads: a [`Tensor`], an [`ArenaTensor`] or a
/// [`SharedTensor`]. Its device copy is made current first on the GPU
/// backend, its host copy on the CPU backend.
pub trait Input<T: Element>: sealed::In<T> {}

/// A tensor a kernel writes: a [`Tensor`] or an [`ArenaTensor`]. The
/// kernel overwrites every element; afterwards the copy it wrote (device on
/// the GPU backend, host on the CPU backend) is the current one.
pub trait Output<T: Element>: Input<T> + sealed::Out<T> {}

pub(crate) mod sealed {
    use super::*;

    /// The steps a kernel takes on an input.
    pub trait In<T: Element> {
        /// The tensor's zone.
        fn operand_zone(&self) -> Result<Zone>;
        /// The tensor's shape.
        fn operand_shape(&self) -> &Shape;
        /// A binding of the device copy, made current first; the copy is
        /// held from spilling until [`In::operand_device_done`].
        fn operand_device_in(&mut self) -> Result<wgpu::BufferBinding<'_>>;
        /// Ends the hold of `operand_device_in`. Once the kernel is
        /// `recorded`, the binding's mark then keeps the copy from spilling
        /// until the zone next waits for the device; a kernel that failed
        /// before it was recorded leaves the copy free to spill at once.
        fn operand_device_done(&mut self, recorded: bool) -> Result<()>;
        /// Runs `f` on the host copy, made current first.
        fn operand_host_in<R>(&mut self, f: impl FnOnce(&[T]) -> R) -> Result<R>;
    }

    /// The steps a kernel takes on an output.
    pub trait Out<T: Element>: In<T> {
        /// A binding of device storage for the kernel to overwrite: nothing
        /// is uploaded first.
        fn operand_device_out(&mut self) -> Result<wgpu::BufferBinding<'_>>;
        /// Records that the kernel wrote the device copy, and ends the hold
        /// of `operand_device_out`.
        fn operand_device_written(&mut self) -> Result<()>;
        /// Runs `f` on host storage to overwrite (nothing is downloaded
        /// first). If `f` succeeds the host copy is current and the device
        /// copy stale; if it fails, what it wrote is not read as the
        /// tensor's unless the host copy was its only current one (see
        /// `sync::overwrite_host`).
        fn operand_host_write<R>(&mut self, f: impl FnOnce(&mut [T]) -> Result<R>) -> Result<R>;
    }
}

/// `In` for a tier with a [`Storage`] impl.
macro_rules! storage_operand {
    ($ty:ty) => {
        impl<T: Element> sealed::In<T> for $ty {
            fn operand_zone(&self) -> Result<Zone> {
                Ok(Storage::zone(self).clone())
            }
            fn operand_shape(&self) -> &Shape {
                Storage::shape(self)
            }
            fn operand_device_in(&mut self) -> Result<wgpu::BufferBinding<'_>> {
                sync::binding_held(self)
            }
            fn operand_device_done(&mut self, recorded: bool) -> Result<()> {
                sync::release_hold(self, recorded)
            }
            fn operand_host_in<R>(&mut self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
                Ok(f(sync::as_slice(self)?))
            }
        }

        impl<T: Element> sealed::Out<T> for $ty {
            fn operand_device_out(&mut self) -> Result<wgpu::BufferBinding<'_>> {
                sync::binding_for_write(self)
            }
            fn operand_device_written(&mut self) -> Result<()> {
                sync::kernel_wrote_device(self)
            }
            fn operand_host_write<R>(
                &mut self,
                f: impl FnOnce(&mut [T]) -> Result<R>,
            ) -> Result<R> {
                sync::overwrite_host(self, f)
            }
        }

        impl<T: Element> Input<T> for $ty {}
        impl<T: Element> Output<T> for $ty {}
    };
}

storage_operand!(Tensor<T>);
storage_operand!(ArenaTensor<'_, T>);

impl<T: Element> sealed::In<T> for SharedTensor<T> {
    fn operand_zone(&self) -> Result<Zone> {
        self.with(|t| Ok(t.zone().clone()))
    }
    fn operand_shape(&self) -> &Shape {
        self.shape()
    }
    fn operand_device_in(&mut self) -> Result<wgpu::BufferBinding<'_>> {
        self.kernel_binding()
    }
    fn operand_device_done(&mut self, recorded: bool) -> Result<()> {
        self.kernel_done(recorded)
    }
    fn operand_host_in<R>(&mut self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        // A copy, not the lock: two clones of one shared tensor may be
        // inputs of the same kernel, and the lock is not reentrant.
        Ok(f(&self.to_vec()?))
    }
}

impl<T: Element> Input<T> for SharedTensor<T> {}
