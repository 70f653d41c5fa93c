//! Element types a tensor can hold.

use std::fmt;

/// The runtime tag of an [`Element`] type, used in errors and statistics.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DType {
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// [`half::f16`]
    F16,
    /// [`half::bf16`]
    BF16,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// The short name (`"f32"`, `"bf16"` …).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A type a tensor can hold: plain old data (any bit pattern is valid, so
/// bytes can move between host and device without conversion).
///
/// Implemented for the twelve types [`DType`] names, and sealed: the
/// pools size and align storage by `DTYPE`, so another type could not be
/// stored soundly.
///
/// ```
/// use tensorzone::{DType, Element};
/// assert_eq!(<half::bf16 as Element>::DTYPE, DType::BF16);
/// assert_eq!(DType::BF16.size(), 2);
/// ```
pub trait Element:
    sealed::Sealed + bytemuck::Pod + Send + Sync + fmt::Debug + PartialEq + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;
}

mod sealed {
    /// Keeps [`super::Element`] to the crate's own types.
    pub trait Sealed {}
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(
            impl sealed::Sealed for $t {}
            impl Element for $t { const DTYPE: DType = DType::$d; }
        )*
    };
}

element! {
    f32 => F32, f64 => F64, half::f16 => F16, half::bf16 => BF16,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_matches<T: Element>() {
        assert_eq!(T::DTYPE.size(), std::mem::size_of::<T>(), "{}", T::DTYPE);
    }

    #[test]
    fn sizes_match_rust_types() {
        size_matches::<f32>();
        size_matches::<f64>();
        size_matches::<half::f16>();
        size_matches::<half::bf16>();
        size_matches::<i8>();
        size_matches::<i16>();
        size_matches::<i32>();
        size_matches::<i64>();
        size_matches::<u8>();
        size_matches::<u16>();
        size_matches::<u32>();
        size_matches::<u64>();
    }

    #[test]
    fn names() {
        assert_eq!(DType::F16.to_string(), "f16");
        assert_eq!(DType::U32.name(), "u32");
    }
}
