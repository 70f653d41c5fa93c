//! Tensor shapes with checked element and byte counts.

use std::fmt;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Most tensors have few dimensions; keeping them inline means creating a
/// tensor makes no heap allocation for its shape.
const INLINE_DIMS: usize = 4;

/// The dimensions of a tensor, row-major. Every dimension is at least 1 and
/// the element count fits in `usize`; [`Shape::new`] checks both.
///
/// ```
/// use tensorzone::Shape;
/// let s = Shape::new(&[2, 3, 4]).unwrap();
/// assert_eq!(s.numel(), 24);
/// assert!(Shape::new(&[2, 0]).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    numel: usize,
    /// Up to 4 dimensions, zero-padded: dimensions are never zero, so the
    /// rank is the count of leading nonzero entries. Unused when `heap`
    /// holds the dimensions. Whole words with no enum tag or padding, so a
    /// just-built shape is copied without partial-store stalls.
    inline: [usize; INLINE_DIMS],
    /// More than 4 dimensions (a thin pointer keeps the shape at 48 bytes).
    #[allow(clippy::box_collection)]
    heap: Option<Box<Vec<usize>>>,
}

impl Shape {
    /// Checks and stores `dims`: no zero dimension, at least one dimension,
    /// an element count that fits in `usize`.
    #[inline]
    pub fn new(dims: &[usize]) -> Result<Shape> {
        if dims.is_empty() || dims.contains(&0) {
            return Err(Error::EmptyShape {
                dims: dims.to_vec(),
            });
        }
        let numel = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::ShapeOverflow {
                dims: dims.to_vec(),
                dtype: DType::U8,
            })?;
        if dims.len() <= INLINE_DIMS {
            let mut inline = [0usize; INLINE_DIMS];
            inline[..dims.len()].copy_from_slice(dims);
            Ok(Shape {
                numel,
                inline,
                heap: None,
            })
        } else {
            Ok(Shape {
                numel,
                inline: [0; INLINE_DIMS],
                heap: Some(Box::new(dims.to_vec())),
            })
        }
    }

    /// A one-dimensional shape of `len` elements.
    pub fn vector(len: usize) -> Result<Shape> {
        Shape::new(&[len])
    }

    /// The dimensions.
    #[inline]
    pub fn dims(&self) -> &[usize] {
        match &self.heap {
            Some(d) => d,
            None => {
                let rank = self.inline.iter().take_while(|&&d| d != 0).count();
                &self.inline[..rank]
            }
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.dims().len()
    }

    /// Number of elements (never zero).
    #[inline]
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Bytes that `numel` elements of `dtype` take, checked against overflow
    /// of both `usize` and `u64`.
    #[inline]
    pub fn byte_len(&self, dtype: DType) -> Result<u64> {
        self.numel
            .checked_mul(dtype.size())
            .filter(|b| u64::try_from(*b).is_ok() && isize::try_from(*b).is_ok())
            .map(|b| b as u64)
            .ok_or_else(|| Error::ShapeOverflow {
                dims: self.dims().to_vec(),
                dtype,
            })
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dims().iter().map(|d| d.to_string()).collect();
        write!(f, "[{}]", dims.join(", "))
    }
}

/// Anything that names a shape: a [`Shape`], an array or slice of
/// dimensions, a `Vec`, or a single length for a vector.
pub trait IntoShape {
    /// The checked shape (see [`Shape::new`]).
    fn into_shape(self) -> Result<Shape>;
}

impl IntoShape for Shape {
    #[inline]
    fn into_shape(self) -> Result<Shape> {
        Ok(self)
    }
}

impl IntoShape for &Shape {
    #[inline]
    fn into_shape(self) -> Result<Shape> {
        Ok(self.clone())
    }
}

impl IntoShape for &[usize] {
    #[inline]
    fn into_shape(self) -> Result<Shape> {
        Shape::new(self)
    }
}

impl<const N: usize> IntoShape for [usize; N] {
    #[inline]
    fn into_shape(self) -> Result<Shape> {
        Shape::new(&self)
    }
}

impl<const N: usize> IntoShape for &[usize; N] {
    #[inline]
    fn into_shape(self) -> Result<Shape> {
        Shape::new(self)
    }
}

impl IntoShape for Vec<usize> {
    #[inline]
    fn into_shape(self) -> Result<Shape> {
        Shape::new(&self)
    }
}

impl IntoShape for &Vec<usize> {
    #[inline]
    fn into_shape(self) -> Result<Shape> {
        Shape::new(self)
    }
}

impl IntoShape for usize {
    #[inline]
    fn into_shape(self) -> Result<Shape> {
        Shape::vector(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let s = Shape::new(&[2, 3, 4]).unwrap();
        assert_eq!(s.dims(), &[2, 3, 4]);
        assert_eq!(s.numel(), 24);
        assert_eq!(s.byte_len(DType::F32).unwrap(), 96);
        assert_eq!(s.to_string(), "[2, 3, 4]");
    }

    #[test]
    fn many_dims_go_to_the_heap_and_compare_by_value() {
        let dims = [1, 2, 1, 2, 1, 2, 1, 2];
        let s = Shape::new(&dims).unwrap();
        assert_eq!(s.dims(), &dims);
        assert_eq!(s.numel(), 16);
        assert_eq!(s.rank(), 8);
        assert_eq!(s, Shape::new(&dims).unwrap());
        assert_ne!(s, Shape::new(&[16]).unwrap());
    }

    #[test]
    fn every_inline_rank_reads_back() {
        for dims in [&[7][..], &[7, 1], &[1, 2, 3], &[4, 3, 2, 1]] {
            let s = Shape::new(dims).unwrap();
            assert_eq!((s.dims(), s.rank()), (dims, dims.len()));
        }
        assert_ne!(
            Shape::new(&[2, 3]).unwrap(),
            Shape::new(&[2, 3, 1]).unwrap()
        );
    }

    #[test]
    fn zero_and_empty_are_rejected() {
        assert_eq!(
            Shape::new(&[3, 0]),
            Err(Error::EmptyShape { dims: vec![3, 0] })
        );
        assert_eq!(Shape::new(&[]), Err(Error::EmptyShape { dims: vec![] }));
    }

    #[test]
    fn overflow_is_rejected() {
        assert!(matches!(
            Shape::new(&[usize::MAX, 2]),
            Err(Error::ShapeOverflow { .. })
        ));
        let s = Shape::new(&[usize::MAX / 2]).unwrap();
        assert!(matches!(
            s.byte_len(DType::F64),
            Err(Error::ShapeOverflow {
                dtype: DType::F64,
                ..
            })
        ));
    }
}
