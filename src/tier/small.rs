//! Tier 1: small fixed-size tensors held inline, with no allocation.

use std::ops::{Index, IndexMut};

use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::residency::Location;
use crate::shape::IntoShape;
use crate::tier::owned::Tensor;
use crate::zone::Zone;

/// `N` elements held inline: no allocation, `Copy`, nothing to free. Use it
/// for parameters, small vectors and matrices, and kernel uniforms.
///
/// ```
/// use tensorzone::{Location, SmallTensor, Zone};
/// let params = SmallTensor::new([0.5f32, 2.0, 0.0, 0.0]); // a vec4<f32> uniform
/// assert_eq!(params.as_bytes().len(), 16);                  // e.g. for queue.write_buffer
/// let zone = Zone::cpu();
/// let mut t = params.to_tensor(&zone, Location::Device).unwrap();
/// assert_eq!(t.to_vec().unwrap(), [0.5, 2.0, 0.0, 0.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SmallTensor<T: Element, const N: usize> {
    data: [T; N],
}

impl<T: Element, const N: usize> SmallTensor<T, N> {
    /// A small tensor holding `data`.
    pub const fn new(data: [T; N]) -> Self {
        SmallTensor { data }
    }

    /// Every element `value`.
    pub fn splat(value: T) -> Self {
        SmallTensor { data: [value; N] }
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// The elements, for writing.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The elements as an array.
    pub fn into_array(self) -> [T; N] {
        self.data
    }

    /// The elements' bytes, e.g. the contents of a uniform buffer
    /// (`queue.write_buffer(&buf, 0, t.as_bytes())`). WGSL uniform layouts
    /// round vectors up to 16 bytes: a `vec3<f32>` takes a 4-element tensor.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    /// Number of elements.
    pub const fn len(&self) -> usize {
        N
    }

    /// Whether `N` is zero.
    pub const fn is_empty(&self) -> bool {
        N == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// An owned one-dimensional tensor of these `N` elements at `loc`.
    ///
    /// Errors: [`crate::Error::EmptyShape`] when `N` is zero.
    pub fn to_tensor(&self, zone: &Zone, loc: Location) -> Result<Tensor<T>> {
        Tensor::from_slice(zone, [N], &self.data, loc)
    }

    /// An owned tensor of these elements with `shape` (its element count
    /// must be `N`) at `loc`.
    ///
    /// Errors: [`crate::Error::LengthMismatch`] when the counts differ.
    pub fn to_tensor_shaped(
        &self,
        zone: &Zone,
        shape: impl IntoShape,
        loc: Location,
    ) -> Result<Tensor<T>> {
        Tensor::from_slice(zone, shape, &self.data, loc)
    }
}

impl<T: Element, const N: usize> Default for SmallTensor<T, N> {
    fn default() -> Self {
        SmallTensor::splat(T::zeroed())
    }
}

impl<T: Element, const N: usize> From<[T; N]> for SmallTensor<T, N> {
    fn from(data: [T; N]) -> Self {
        SmallTensor { data }
    }
}

impl<T: Element, const N: usize> Index<usize> for SmallTensor<T, N> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.data[i]
    }
}

impl<T: Element, const N: usize> IndexMut<usize> for SmallTensor<T, N> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.data[i]
    }
}
