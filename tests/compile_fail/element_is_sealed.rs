// Element is sealed: the pools size and align storage by its DTYPE, so a
// user type with another size or alignment could not be stored soundly.
use tensorzone::{DType, Element};

#[derive(Clone, Copy, Debug, PartialEq)]
struct Wide([u8; 16]);
unsafe impl bytemuck::Zeroable for Wide {}
unsafe impl bytemuck::Pod for Wide {}

impl Element for Wide {
    const DTYPE: DType = DType::U8;
}

fn main() {}
