//! Compute kernels over owned and arena tensors (and shared tensors as
//! inputs): WGSL on the GPU backend, the CPU versions in
//! [`reference`](mod@reference) on the CPU backend, one API for both.
//!
//! Each kernel reads its inputs where they are current (uploading once if
//! the host copy is newer), overwrites its output, and leaves the output's
//! written copy current: a device copy on the GPU (read it back with
//! `to_vec`, or feed it to the next kernel with no transfer), a host copy
//! on the CPU. Pipelines are compiled on a zone's first call of each kernel
//! and cached with its device (child zones share them). Kernels are
//! recorded into one command buffer and submitted together when anything
//! else needs the queue (a transfer, a read back, `zone.synchronize()`, a
//! `binding()` for work of your own), so a frame's kernels cost one
//! submission; nothing waits until a read back does. A kernel's call
//! returns once it is recorded: should wgpu refuse the batch when it is
//! submitted, the zone's next call that reaches the device (a transfer, a
//! read back, a wait; on any thread) returns that error as
//! `Error::Backend`, once. The refused kernels' outputs are then marked
//! written but hold whatever their storage held: write them again before
//! reading them.
//!
//! Sizes on the GPU: every tensor a kernel binds must fit the adapter's
//! `max_storage_buffer_binding_size` ([`crate::Zone::max_binding_size`]),
//! or the kernel returns [`Error::InvalidArgument`]. An image of more than 1,048,560 rows (or
//! columns) takes more workgroups than one dispatch dimension holds; the
//! kernels continue it along the dispatch's z, so the binding size is the
//! only limit. The CPU backend has neither.
//!
//! ```
//! use tensorzone::{Location, Tensor, Zone};
//! let zone = Zone::new().unwrap(); // GPU when there is one, else CPU
//! let k = zone.kernels();
//! let mut a = Tensor::from_slice(&zone, [4], &[1.0f32, 2.0, 3.0, 4.0], Location::Device).unwrap();
//! let mut b = Tensor::full(&zone, [4], 10.0f32, Location::Device).unwrap();
//! let mut sum = Tensor::<f32>::empty(&zone, [4], Location::Device).unwrap();
//! k.add(&mut a, &mut b, &mut sum).unwrap();
//! let mut half = Tensor::<f32>::empty(&zone, [4], Location::Device).unwrap();
//! k.scale(&mut sum, 0.5, &mut half).unwrap();
//! assert_eq!(half.to_vec().unwrap(), [5.5, 6.0, 6.5, 7.0]);
//! ```

mod operand;
pub mod reference;

use ndarray::ArrayView2;

pub use operand::{Input, Output};

use crate::backend::gpu::GpuBackend;
use crate::backend::Backend;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::residency::Location;
use crate::shape::Shape;
use crate::tier::owned::Tensor;
use crate::zone::Zone;
use operand::sealed::In;

/// Element types of the arithmetic kernels: `f32`, `i32` and `u32`
/// (integers wrap on overflow, as in WGSL).
pub trait Numeric: Element + Copy {
    /// The WGSL type name.
    const WGSL: &'static str;
    /// `self + o`.
    fn add(self, o: Self) -> Self;
    /// `self * o`.
    fn mul(self, o: Self) -> Self;
    /// `max(self, 0)`.
    fn relu(self) -> Self;
}

impl Numeric for f32 {
    const WGSL: &'static str = "f32";
    fn add(self, o: f32) -> f32 {
        self + o
    }
    fn mul(self, o: f32) -> f32 {
        self * o
    }
    fn relu(self) -> f32 {
        self.max(0.0)
    }
}

impl Numeric for i32 {
    const WGSL: &'static str = "i32";
    fn add(self, o: i32) -> i32 {
        self.wrapping_add(o)
    }
    fn mul(self, o: i32) -> i32 {
        self.wrapping_mul(o)
    }
    fn relu(self) -> i32 {
        self.max(0)
    }
}

impl Numeric for u32 {
    const WGSL: &'static str = "u32";
    fn add(self, o: u32) -> u32 {
        self.wrapping_add(o)
    }
    fn mul(self, o: u32) -> u32 {
        self.wrapping_mul(o)
    }
    fn relu(self) -> u32 {
        self
    }
}

/// The kernels of one zone, from [`Zone::kernels`].
#[derive(Clone, Copy)]
pub struct Kernels<'z> {
    zone: &'z Zone,
}

impl Zone {
    /// The compute kernels on this zone's backend (see [`crate::kernels`]).
    pub fn kernels(&self) -> Kernels<'_> {
        Kernels { zone: self }
    }

    /// Kernel pipelines compiled on this zone's device so far (0 on the
    /// CPU backend): each kernel and element type compiles once.
    pub fn pipelines_compiled(&self) -> u64 {
        match &*self.inner.backend {
            Backend::Gpu(g) => g
                .pipelines_compiled
                .load(std::sync::atomic::Ordering::Relaxed),
            Backend::Cpu(_) => 0,
        }
    }
}

const FILL: &str = include_str!("../../shaders/fill.wgsl");
const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
const CAST: &str = include_str!("../../shaders/cast.wgsl");
const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const GRAYSCALE: &str = include_str!("../../shaders/grayscale.wgsl");
const BLUR: &str = include_str!("../../shaders/blur.wgsl");
const SOBEL: &str = include_str!("../../shaders/sobel.wgsl");
const GRID: &str = include_str!("../../shaders/grid.wgsl");

/// A 2-D kernel's source after the `grid` function it calls.
fn with_grid(kernel: &str) -> String {
    format!("{GRID}\n{kernel}")
}

/// Each cast's (source type, destination type, body) in `cast.wgsl`.
const U8_TO_F32: (&str, &str, &str) = (
    "u32",
    "f32",
    "dst[i] = f32((src[i / 4u] >> ((i % 4u) * 8u)) & 0xffu) / 255.0;",
);
const F32_TO_U8: (&str, &str, &str) = (
    "f32",
    "u32",
    "var w = 0u;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let e = i * 4u + k;
        if (e < len) {
            let f = src[e];
            let v = select(u32(clamp(round(f * 255.0), 0.0, 255.0)), 0u, is_nan(f));
            w = w | (v << (k * 8u));
        }
    }
    dst[i] = w;",
);
const F32_TO_F16: (&str, &str, &str) = (
    "f32",
    "u32",
    "let e = i * 2u;
    var hi = 0u;
    if (e + 1u < len) {
        hi = half_bits(src[e + 1u]);
    }
    dst[i] = half_bits(src[e]) | (hi << 16u);",
);
const F16_TO_F32: (&str, &str, &str) = (
    "u32",
    "f32",
    "dst[i] = unpack2x16float(src[i / 2u])[i % 2u];",
);
const COPY_WORDS: (&str, &str, &str) = ("u32", "u32", "dst[i] = src[i];");
/// The elementwise kernels' expressions in `elementwise.wgsl`.
const ADD: &str = "a[i] + b[i]";
const MUL: &str = "a[i] * b[i]";
const SCALE: &str = "a[i] * s";
const BIAS_ADD: &str = "a[i] + b[i % n]";

/// `max(a[i], 0)` for `T`.
fn relu_expr<T: Numeric>() -> String {
    format!("max(a[i], {}(0))", T::WGSL)
}

/// Binds a kernel's operands in order (`binding = operand.method`), each
/// held from spilling until [`finish!`]; when one fails, the holds already
/// taken end before the error returns, so a failed kernel holds nothing
/// and marks nothing bound.
macro_rules! bind {
    (@held [$($held:ident)*]) => {};
    (@held [$($held:ident)*] $b:ident = $op:ident . $how:ident $(, $rb:ident = $rop:ident . $rhow:ident)*) => {
        let $b = match $op.$how() {
            Ok(b) => b,
            Err(e) => {
                $( let _ = $held.operand_device_done(false); )*
                return Err(e);
            }
        };
        bind!(@held [$($held)* $op] $($rb = $rop . $rhow),*);
    };
    ($($b:ident = $op:ident . $how:ident),+ $(,)?) => {
        bind!(@held [] $($b = $op . $how),+);
    };
}

/// After a kernel's dispatch `r`: ends the holds on its inputs' device
/// copies, then marks the output written, or ends its hold too if the
/// dispatch failed. A failed dispatch was never recorded, so it marks
/// nothing bound.
macro_rules! finish {
    ($r:expr; $($input:ident),* => $out:ident) => {{
        let r: Result<()> = $r;
        // Every hold ends, whatever fails; the first error is returned.
        #[allow(unused_mut)] // a fill has no inputs
        let mut done: Result<()> = Ok(());
        $( done = done.and($input.operand_device_done(r.is_ok())); )*
        let out = match r {
            Ok(()) => $out.operand_device_written(),
            Err(e) => {
                let _ = $out.operand_device_done(false);
                Err(e)
            }
        };
        out.and(done)
    }};
}

/// Workgroup width of the one-dimensional kernels.
const WG: u64 = 256;
/// Most workgroups per dispatch dimension (WebGPU's default limit).
const MAX_GROUPS: u64 = 65_535;
/// Widest blur the kernel takes: `ceil(3 sigma)` taps each side.
const MAX_BLUR_RADIUS: usize = 64;

/// Workgroups covering `n` invocations of a 256-wide kernel, spread over y
/// when x runs out (the kernels index `x + y · width`).
fn groups_1d(op: &'static str, n: u64) -> Result<[u32; 3]> {
    let g = n.div_ceil(WG).max(1);
    let (x, y) = if g <= MAX_GROUPS {
        (g, 1)
    } else {
        (MAX_GROUPS, g.div_ceil(MAX_GROUPS))
    };
    if y > MAX_GROUPS {
        return Err(too_big(op, n));
    }
    Ok([x as u32, y as u32, 1])
}

/// Workgroups covering `w` × `h` invocations with 16 × 16 workgroups, and
/// the kernel's `fold` parameter: past [`MAX_GROUPS`] along one dimension,
/// the dispatch's z continues it (`shaders/grid.wgsl`): y when `fold` is
/// 0, x when it is 1. `sides` names the tensor's dimensions behind `w` and
/// `h` with their sizes, for the error when both are past it.
fn groups_2d(
    op: &'static str,
    w: usize,
    h: usize,
    sides: [(&str, usize); 2],
) -> Result<([u32; 3], u32)> {
    let (x, y) = ((w as u64).div_ceil(16), (h as u64).div_ceil(16));
    let ([x, y, z], fold) = match (x <= MAX_GROUPS, y <= MAX_GROUPS) {
        (true, true) => ([x, y, 1], 0),
        (true, false) => ([x, MAX_GROUPS, y.div_ceil(MAX_GROUPS)], 0),
        (false, true) => ([MAX_GROUPS, y, x.div_ceil(MAX_GROUPS)], 1),
        (false, false) => ([x, y, MAX_GROUPS + 1], 0),
    };
    if z > MAX_GROUPS {
        let [(a, n), (b, m)] = sides;
        return Err(Error::InvalidArgument {
            op,
            detail: format!(
                "a {a} of {n} and a {b} of {m} are more than one GPU dispatch covers; \
                 split the tensor"
            ),
        });
    }
    Ok(([x as u32, y as u32, z as u32], fold))
}

fn too_big(op: &'static str, n: u64) -> Error {
    Error::InvalidArgument {
        op,
        detail: format!("{n} elements are more than one dispatch covers"),
    }
}

/// `n` as a kernel parameter.
fn param(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| too_big(op, n as u64))
}

fn mismatch(left: &Shape, right: &Shape) -> Error {
    Error::ShapeMismatch {
        left: left.dims().to_vec(),
        right: right.dims().to_vec(),
    }
}

fn same_shape(left: &Shape, right: &Shape) -> Result<()> {
    if left != right {
        return Err(mismatch(left, right));
    }
    Ok(())
}

/// The dims of a tensor that must have `rank` of them.
fn dims_of<'s>(op: &'static str, s: &'s Shape, rank: usize) -> Result<&'s [usize]> {
    if s.dims().len() != rank {
        return Err(Error::InvalidArgument {
            op,
            detail: format!("expects a tensor of rank {rank}, got shape {:?}", s.dims()),
        });
    }
    Ok(s.dims())
}

/// Writes a reference result into the host copy of `out` (CPU backend).
fn write_array(out: &mut impl Output<f32>, r: &ndarray::Array2<f32>) -> Result<()> {
    let src = r.as_slice().ok_or_else(|| nd("not contiguous"))?;
    out.operand_host_write(|o| {
        o.copy_from_slice(src);
        Ok(())
    })
}

/// Runs `f` on the host copy of `t` (for the CPU backend).
fn host<T: Element, R>(t: &mut impl In<T>, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    t.operand_host_in(f)
}

impl<'z> Kernels<'z> {
    /// The GPU backend, or `None` on the CPU; fails unless every operand
    /// is on this zone's device.
    fn backend(&self, zones: &[Result<Zone>]) -> Result<Option<&'z GpuBackend>> {
        for z in zones {
            match z {
                Ok(z) if z.same_device(self.zone) => {}
                Ok(_) => return Err(Error::ZoneMismatch),
                Err(e) => return Err(e.clone()),
            }
        }
        Ok(match &*self.zone.inner.backend {
            Backend::Gpu(g) => Some(g),
            Backend::Cpu(_) => None,
        })
    }

    /// Runs the cached pipeline `key` over `bindings` and the parameter
    /// buffer holding `params` (bound last).
    fn run(
        &self,
        g: &GpuBackend,
        key: &str,
        source: impl FnOnce() -> String,
        bindings: &[wgpu::BufferBinding<'_>],
        params: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        let pipeline = g.pipeline(key, bindings.len() as u32 + 1, source)?;
        g.dispatch(&pipeline, bindings, params, groups)
    }

    /// Fills `out` with `value` (any element type).
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone, f16};
    /// let zone = Zone::new().unwrap();
    /// let mut t = Tensor::<f16>::empty(&zone, [3], Location::Device).unwrap();
    /// zone.kernels().fill(&mut t, f16::from_f32(1.5)).unwrap();
    /// assert_eq!(t.to_vec().unwrap(), [f16::from_f32(1.5); 3]);
    /// ```
    pub fn fill<T: Element>(&self, out: &mut impl Output<T>, value: T) -> Result<()> {
        let op = "fill";
        match self.backend(&[out.operand_zone()])? {
            None => out.operand_host_write(|o| {
                o.fill(value);
                Ok(())
            }),
            Some(g) => {
                let bytes = out.operand_shape().numel() * std::mem::size_of::<T>();
                let (even, odd) = word_patterns(bytemuck::bytes_of(&value));
                let params = [param(op, bytes)?, even, odd];
                let groups = groups_1d(op, bytes.div_ceil(4) as u64)?;
                let o = out.operand_device_out()?;
                finish!(self.run(g, "fill", || FILL.into(), &[o], &params, groups); => out)
            }
        }
    }

    /// Copies `src` into `dst` (same shape), element for element.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let mut a = Tensor::from_slice(&zone, [3], &[7u8, 8, 9], Location::Device).unwrap();
    /// let mut b = Tensor::<u8>::empty(&zone, [3], Location::Device).unwrap();
    /// zone.kernels().copy(&mut a, &mut b).unwrap();
    /// assert_eq!(b.to_vec().unwrap(), [7, 8, 9]);
    /// ```
    pub fn copy<T: Element>(
        &self,
        src: &mut impl Input<T>,
        dst: &mut impl Output<T>,
    ) -> Result<()> {
        let op = "copy";
        same_shape(src.operand_shape(), dst.operand_shape())?;
        match self.backend(&[src.operand_zone(), dst.operand_zone()])? {
            None => dst.operand_host_write(|d| host(src, |s| d.copy_from_slice(s))),
            Some(g) => {
                let bytes = src.operand_shape().numel() * std::mem::size_of::<T>();
                let words = bytes.div_ceil(4);
                let groups = groups_1d(op, words as u64)?;
                let params = [param(op, words)?, param(op, words)?];
                bind!(s = src.operand_device_in, d = dst.operand_device_out);
                let source = || cast_source(COPY_WORDS);
                finish!(self.run(g, "copy", source, &[s, d], &params, groups); src => dst)
            }
        }
    }

    /// `out = a + b`, elementwise (same shapes).
    pub fn add<T: Numeric>(
        &self,
        a: &mut impl Input<T>,
        b: &mut impl Input<T>,
        out: &mut impl Output<T>,
    ) -> Result<()> {
        self.binary("add", ADD, a, b, out, reference::add)
    }

    /// `out = a * b`, elementwise (same shapes).
    pub fn mul<T: Numeric>(
        &self,
        a: &mut impl Input<T>,
        b: &mut impl Input<T>,
        out: &mut impl Output<T>,
    ) -> Result<()> {
        self.binary("mul", MUL, a, b, out, reference::mul)
    }

    /// `out = x + bias`, with `bias` (shape `[n]`) added to each row of `x`
    /// (last dimension `n`).
    pub fn bias_add<T: Numeric>(
        &self,
        x: &mut impl Input<T>,
        bias: &mut impl Input<T>,
        out: &mut impl Output<T>,
    ) -> Result<()> {
        let op = "bias_add";
        let n = *x.operand_shape().dims().last().unwrap_or(&0);
        if bias.operand_shape().dims() != [n] {
            return Err(mismatch(x.operand_shape(), bias.operand_shape()));
        }
        same_shape(x.operand_shape(), out.operand_shape())?;
        match self.backend(&[x.operand_zone(), bias.operand_zone(), out.operand_zone()])? {
            None => out
                .operand_host_write(|o| host(x, |x| host(bias, |b| reference::bias_add(x, b, o)))?),
            Some(g) => {
                let len = x.operand_shape().numel();
                let params = [param(op, len)?, 0, param(op, n)?];
                let groups = groups_1d(op, len as u64)?;
                bind!(
                    xb = x.operand_device_in,
                    bb = bias.operand_device_in,
                    ob = out.operand_device_out
                );
                let key = format!("{op}:{}", T::WGSL);
                let source = || elementwise_source::<T>(BIAS_ADD);
                finish!(self.run(
                    g,
                    &key,
                    source,
                    &[xb, bb, ob],
                    &params,
                    groups,
                ); x, bias => out)
            }
        }
    }

    /// `out = a * s`, elementwise.
    pub fn scale<T: Numeric>(
        &self,
        a: &mut impl Input<T>,
        s: T,
        out: &mut impl Output<T>,
    ) -> Result<()> {
        self.unary("scale", SCALE, a, bits(s), out, |a, o| {
            reference::scale(a, s, o)
        })
    }

    /// `out = max(x, 0)`, elementwise.
    pub fn relu<T: Numeric>(&self, x: &mut impl Input<T>, out: &mut impl Output<T>) -> Result<()> {
        self.unary("relu", &relu_expr::<T>(), x, 0, out, reference::relu)
    }

    fn binary<T: Numeric>(
        &self,
        op: &'static str,
        expr: &str,
        a: &mut impl Input<T>,
        b: &mut impl Input<T>,
        out: &mut impl Output<T>,
        cpu: fn(&[T], &[T], &mut [T]),
    ) -> Result<()> {
        same_shape(a.operand_shape(), b.operand_shape())?;
        same_shape(a.operand_shape(), out.operand_shape())?;
        match self.backend(&[a.operand_zone(), b.operand_zone(), out.operand_zone()])? {
            None => out.operand_host_write(|o| host(a, |a| host(b, |b| cpu(a, b, o)))?),
            Some(g) => {
                let len = a.operand_shape().numel();
                let params = [param(op, len)?, 0, 1];
                let groups = groups_1d(op, len as u64)?;
                bind!(
                    ab = a.operand_device_in,
                    bb = b.operand_device_in,
                    ob = out.operand_device_out
                );
                let key = format!("{op}:{}", T::WGSL);
                let source = || elementwise_source::<T>(expr);
                finish!(self.run(
                    g,
                    &key,
                    source,
                    &[ab, bb, ob],
                    &params,
                    groups,
                ); a, b => out)
            }
        }
    }

    fn unary<T: Numeric>(
        &self,
        op: &'static str,
        expr: &str,
        a: &mut impl Input<T>,
        scalar: u32,
        out: &mut impl Output<T>,
        cpu: impl FnOnce(&[T], &mut [T]),
    ) -> Result<()> {
        same_shape(a.operand_shape(), out.operand_shape())?;
        match self.backend(&[a.operand_zone(), out.operand_zone()])? {
            None => out.operand_host_write(|o| host(a, |a| cpu(a, o))),
            Some(g) => {
                let len = a.operand_shape().numel();
                let params = [param(op, len)?, scalar, 1];
                let groups = groups_1d(op, len as u64)?;
                bind!(ab = a.operand_device_in, ob = out.operand_device_out);
                // The kernel has two inputs; a unary one binds `a` twice.
                let bindings = [ab.clone(), ab, ob];
                let key = format!("{op}:{}", T::WGSL);
                let source = || elementwise_source::<T>(expr);
                finish!(self.run(
                    g,
                    &key,
                    source,
                    &bindings,
                    &params,
                    groups,
                ); a => out)
            }
        }
    }

    /// Bytes to floats in [0, 1] (`v / 255`), same shape.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let k = zone.kernels();
    /// let mut bytes = Tensor::from_slice(&zone, [3], &[0u8, 51, 255], Location::Device).unwrap();
    /// let mut floats = Tensor::<f32>::empty(&zone, [3], Location::Device).unwrap();
    /// k.u8_to_f32(&mut bytes, &mut floats).unwrap();
    /// let f = floats.to_vec().unwrap();
    /// assert!(f.iter().zip([0.0, 0.2, 1.0]).all(|(a, b)| (a - b).abs() < 1e-6));
    /// // And back (rounded, clamped): the same bytes.
    /// k.f32_to_u8(&mut floats, &mut bytes).unwrap();
    /// assert_eq!(bytes.to_vec().unwrap(), [0, 51, 255]);
    /// ```
    pub fn u8_to_f32(&self, src: &mut impl Input<u8>, dst: &mut impl Output<f32>) -> Result<()> {
        self.cast("u8_to_f32", U8_TO_F32, 1, src, dst, reference::u8_to_f32)
    }

    /// Floats in [0, 1] to bytes (`round(v · 255)`, ties to even, clamped
    /// to [0, 255]), same shape.
    pub fn f32_to_u8(&self, src: &mut impl Input<f32>, dst: &mut impl Output<u8>) -> Result<()> {
        self.cast("f32_to_u8", F32_TO_U8, 4, src, dst, reference::f32_to_u8)
    }

    /// `f32` to `f16` (rounded to nearest; from 65520 on, infinity), same
    /// shape. Runs on every adapter: it packs pairs with WGSL's
    /// `pack2x16float` and needs no `SHADER_F16`.
    ///
    /// ```
    /// use tensorzone::{f16, Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let mut x = Tensor::from_slice(&zone, [3], &[1.5f32, -2.0, 70000.0], Location::Device).unwrap();
    /// let mut h = Tensor::<f16>::empty(&zone, [3], Location::Device).unwrap();
    /// zone.kernels().f32_to_f16(&mut x, &mut h).unwrap();
    /// assert_eq!(h.to_vec().unwrap(), [f16::from_f32(1.5), f16::from_f32(-2.0), f16::INFINITY]);
    /// ```
    pub fn f32_to_f16(
        &self,
        src: &mut impl Input<f32>,
        dst: &mut impl Output<half::f16>,
    ) -> Result<()> {
        self.cast("f32_to_f16", F32_TO_F16, 2, src, dst, reference::f32_to_f16)
    }

    /// `f16` to `f32` (exact), same shape; needs no `SHADER_F16`.
    pub fn f16_to_f32(
        &self,
        src: &mut impl Input<half::f16>,
        dst: &mut impl Output<f32>,
    ) -> Result<()> {
        self.cast("f16_to_f32", F16_TO_F32, 1, src, dst, reference::f16_to_f32)
    }

    /// A cast whose invocations each write one output word holding `per`
    /// output elements (`per` 1 for `f32` outputs).
    fn cast<S: Element, D: Element>(
        &self,
        op: &'static str,
        types_and_body: (&str, &str, &str),
        per: usize,
        src: &mut impl Input<S>,
        dst: &mut impl Output<D>,
        cpu: fn(&[S], &mut [D]),
    ) -> Result<()> {
        if src.operand_shape() != dst.operand_shape() {
            return Err(mismatch(src.operand_shape(), dst.operand_shape()));
        }
        match self.backend(&[src.operand_zone(), dst.operand_zone()])? {
            None => dst.operand_host_write(|d| host(src, |s| cpu(s, d))),
            Some(g) => {
                let len = src.operand_shape().numel();
                let words = len.div_ceil(per);
                let params = [param(op, words)?, param(op, len)?];
                let groups = groups_1d(op, words as u64)?;
                bind!(s = src.operand_device_in, d = dst.operand_device_out);
                let source = || cast_source(types_and_body);
                finish!(self.run(
                    g,
                    op,
                    source,
                    &[s, d],
                    &params,
                    groups,
                ); src => dst)
            }
        }
    }

    /// `c = a · b` for `a` of shape `[m, k]`, `b` of `[k, n]` and `c` of
    /// `[m, n]`, in `f32` (16 × 16 tiles in workgroup memory on the GPU).
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let mut a = Tensor::from_slice(&zone, [2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], Location::Device).unwrap();
    /// let mut b = Tensor::from_slice(&zone, [3, 1], &[1.0f32, 0.0, -1.0], Location::Device).unwrap();
    /// let mut c = Tensor::<f32>::empty(&zone, [2, 1], Location::Device).unwrap();
    /// zone.kernels().matmul(&mut a, &mut b, &mut c).unwrap();
    /// assert_eq!(c.to_vec().unwrap(), [-2.0, -2.0]);
    /// ```
    pub fn matmul(
        &self,
        a: &mut impl Input<f32>,
        b: &mut impl Input<f32>,
        c: &mut impl Output<f32>,
    ) -> Result<()> {
        let op = "matmul";
        let (m, k) = match dims_of(op, a.operand_shape(), 2)? {
            &[m, k] => (m, k),
            _ => unreachable!("rank checked"),
        };
        let n = match dims_of(op, b.operand_shape(), 2)? {
            &[kb, n] if kb == k => n,
            _ => return Err(mismatch(a.operand_shape(), b.operand_shape())),
        };
        if c.operand_shape().dims() != [m, n] {
            return Err(mismatch(&Shape::new(&[m, n])?, c.operand_shape()));
        }
        match self.backend(&[a.operand_zone(), b.operand_zone(), c.operand_zone()])? {
            None => {
                let r = host(a, |a| {
                    host(b, |b| {
                        let a = ArrayView2::from_shape((m, k), a).map_err(nd)?;
                        let b = ArrayView2::from_shape((k, n), b).map_err(nd)?;
                        Ok::<_, Error>(reference::matmul(a, b))
                    })
                })???;
                write_array(c, &r)
            }
            Some(g) => {
                let sides = [("width of b", n), ("height of a", m)];
                let (groups, fold) = groups_2d(op, n, m, sides)?;
                let params = [param(op, m)?, param(op, k)?, param(op, n)?, fold];
                bind!(
                    ab = a.operand_device_in,
                    bb = b.operand_device_in,
                    cb = c.operand_device_out
                );
                finish!(self.run(g, op, || with_grid(MATMUL), &[ab, bb, cb], &params, groups); a, b => c)
            }
        }
    }

    /// RGBA bytes of shape `[height, width, 4]` to luma in [0, 1] of shape
    /// `[height, width]` (`0.299 R + 0.587 G + 0.114 B`).
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let px = [255u8, 255, 255, 255, 255, 0, 0, 255]; // white, red
    /// let mut rgba = Tensor::from_slice(&zone, [1, 2, 4], &px, Location::Device).unwrap();
    /// let mut gray = Tensor::<f32>::empty(&zone, [1, 2], Location::Device).unwrap();
    /// zone.kernels().grayscale(&mut rgba, &mut gray).unwrap();
    /// let g = gray.to_vec().unwrap();
    /// assert!((g[0] - 1.0).abs() < 1e-6 && (g[1] - 0.299).abs() < 1e-6);
    /// ```
    pub fn grayscale(&self, rgba: &mut impl Input<u8>, gray: &mut impl Output<f32>) -> Result<()> {
        let op = "grayscale";
        let (h, w) = match dims_of(op, rgba.operand_shape(), 3)? {
            &[h, w, 4] => (h, w),
            _ => {
                return Err(Error::InvalidArgument {
                    op,
                    detail: format!(
                        "expects RGBA of shape [height, width, 4], got {:?}",
                        rgba.operand_shape().dims()
                    ),
                })
            }
        };
        if gray.operand_shape().dims() != [h, w] {
            return Err(mismatch(rgba.operand_shape(), gray.operand_shape()));
        }
        match self.backend(&[rgba.operand_zone(), gray.operand_zone()])? {
            None => host(rgba, |p| {
                gray.operand_host_write(|o| {
                    reference::grayscale_into(p, o);
                    Ok(())
                })
            })?,
            Some(g) => {
                let pixels = h * w;
                let params = [param(op, pixels)?];
                let groups = groups_1d(op, pixels as u64)?;
                bind!(s = rgba.operand_device_in, d = gray.operand_device_out);
                finish!(self.run(
                    g,
                    op,
                    || GRAYSCALE.into(),
                    &[s, d],
                    &params,
                    groups,
                ); rgba => gray)
            }
        }
    }

    /// Separable Gaussian blur of an `f32` image `[height, width]` into
    /// `dst` (same shape): weights [`reference::gaussian_weights`]`(sigma)`,
    /// along rows then columns, edges clamped. `sigma` must be in
    /// [`BLUR_SIGMA`] (at most 64 taps each side). Each sigma compiles its
    /// own pipeline on the GPU (the weights are constants in the shader);
    /// the device keeps the 16 most recently compiled, so a sweep over many
    /// sigmas recompiles rather than growing without end. The pass between
    /// goes through a temporary tensor from the zone's pool;
    /// [`Kernels::gaussian_blur_via`] takes one of yours (an arena's, say).
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// // A flat image stays flat: the weights sum to 1.
    /// let mut img = Tensor::full(&zone, [4, 6], 0.5f32, Location::Device).unwrap();
    /// let mut out = Tensor::<f32>::empty(&zone, [4, 6], Location::Device).unwrap();
    /// zone.kernels().gaussian_blur(&mut img, &mut out, 2.0).unwrap();
    /// assert!(out.to_vec().unwrap().iter().all(|v| (v - 0.5).abs() < 1e-6));
    /// ```
    pub fn gaussian_blur(
        &self,
        src: &mut impl Input<f32>,
        dst: &mut impl Output<f32>,
        sigma: f32,
    ) -> Result<()> {
        let dims = src.operand_shape().dims().to_vec();
        // Refused before the temporary is allocated for nothing (under a
        // budget, it could spill a tensor).
        dims_of("gaussian_blur", src.operand_shape(), 2)?;
        same_shape(src.operand_shape(), dst.operand_shape())?;
        blur_weights(sigma)?;
        match self.backend(&[src.operand_zone(), dst.operand_zone()])? {
            None => self.blur(src, None::<&mut Tensor<f32>>, dst, sigma),
            Some(_) => {
                let mut tmp = Tensor::<f32>::empty(self.zone, dims, Location::Device)?;
                self.blur(src, Some(&mut tmp), dst, sigma)
            }
        }
    }

    /// [`Kernels::gaussian_blur`] with the pass between written to `tmp`
    /// (same shape; its contents afterwards are unspecified).
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let arena = zone.arena();
    /// let mut img = arena.from_slice([3, 3], &[0.0f32, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0], Location::Device).unwrap();
    /// let mut tmp = arena.empty::<f32>([3, 3], Location::Device).unwrap();
    /// let mut out = arena.empty::<f32>([3, 3], Location::Device).unwrap();
    /// zone.kernels().gaussian_blur_via(&mut img, &mut tmp, &mut out, 0.8).unwrap();
    /// let v = out.to_vec().unwrap();
    /// assert!(v[4] < 9.0 && v[4] > v[1] && v[1] > v[0] && v[0] > 0.0);
    /// ```
    pub fn gaussian_blur_via(
        &self,
        src: &mut impl Input<f32>,
        tmp: &mut impl Output<f32>,
        dst: &mut impl Output<f32>,
        sigma: f32,
    ) -> Result<()> {
        same_shape(src.operand_shape(), tmp.operand_shape())?;
        self.blur(src, Some(tmp), dst, sigma)
    }

    fn blur(
        &self,
        src: &mut impl Input<f32>,
        tmp: Option<&mut impl Output<f32>>,
        dst: &mut impl Output<f32>,
        sigma: f32,
    ) -> Result<()> {
        let op = "gaussian_blur";
        let (h, w) = match dims_of(op, src.operand_shape(), 2)? {
            &[h, w] => (h, w),
            _ => unreachable!("rank checked"),
        };
        same_shape(src.operand_shape(), dst.operand_shape())?;
        let weights = blur_weights(sigma)?;
        let tmp_zone = tmp.as_ref().map(|t| t.operand_zone());
        let mut zones = vec![src.operand_zone(), dst.operand_zone()];
        zones.extend(tmp_zone);
        match (self.backend(&zones)?, tmp) {
            (None, tmp) => host(src, |s| {
                let mut blur = |t: &mut [f32]| {
                    dst.operand_host_write(|d| {
                        reference::gaussian_blur_into(s, w, weights.view(), t, d);
                        Ok(())
                    })
                };
                match tmp {
                    Some(tmp) => tmp.operand_host_write(blur),
                    None => blur(&mut vec![0.0; s.len()]),
                }
            })?,
            (Some(_), None) => Err(Error::InvalidArgument {
                op,
                detail: "the GPU blur needs a temporary".into(),
            }),
            (Some(g), Some(tmp)) => {
                let n = BLUR_OUTPUTS;
                let sides = [("width", w), ("height", h)];
                let (row_groups, row_fold) = groups_2d(op, w.div_ceil(n), h, sides)?;
                let (column_groups, column_fold) = groups_2d(op, w, h.div_ceil(n), sides)?;
                let radius = (weights.len() / 2) as u32;
                let mut params = [param(op, w)?, param(op, h)?, radius, 0, row_fold];
                // The weights are compiled in: one pipeline per sigma.
                let key = format!("{op}:{:08x}", sigma.to_bits());
                let source = || blur_source(&weights);
                bind!(s = src.operand_device_in, t = tmp.operand_device_out);
                // Written by the first pass: the second reads it as is.
                finish!(self.run(g, &key, source, &[s, t], &params, row_groups); src => tmp)?;
                params[3..].copy_from_slice(&[1, column_fold]);
                bind!(t = tmp.operand_device_in, d = dst.operand_device_out);
                finish!(self.run(g, &key, source, &[t, d], &params, column_groups); tmp => dst)
            }
        }
    }

    /// Sobel gradient magnitude of an `f32` image `[height, width]` into
    /// `dst` (same shape), edges clamped.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// // A step from 0 to 1 between columns 1 and 2: |gx| = 4 beside it.
    /// let row = [0.0f32, 0.0, 1.0, 1.0];
    /// let img: Vec<f32> = row.iter().cycle().take(12).copied().collect();
    /// let mut img = Tensor::from_slice(&zone, [3, 4], &img, Location::Device).unwrap();
    /// let mut edges = Tensor::<f32>::empty(&zone, [3, 4], Location::Device).unwrap();
    /// zone.kernels().sobel(&mut img, &mut edges).unwrap();
    /// let middle = &edges.to_vec().unwrap()[4..8];
    /// assert!(middle.iter().zip([0.0, 4.0, 4.0, 0.0]).all(|(a, b)| (a - b).abs() < 1e-5));
    /// ```
    pub fn sobel(&self, src: &mut impl Input<f32>, dst: &mut impl Output<f32>) -> Result<()> {
        let op = "sobel";
        let (h, w) = match dims_of(op, src.operand_shape(), 2)? {
            &[h, w] => (h, w),
            _ => unreachable!("rank checked"),
        };
        same_shape(src.operand_shape(), dst.operand_shape())?;
        match self.backend(&[src.operand_zone(), dst.operand_zone()])? {
            None => host(src, |s| {
                dst.operand_host_write(|d| {
                    reference::sobel_into(s, w, d);
                    Ok(())
                })
            })?,
            Some(g) => {
                let sides = [("width", w), ("height", h)];
                let (cols, rows) = (w.div_ceil(SOBEL_COLS), h.div_ceil(SOBEL_ROWS));
                let (groups, fold) = groups_2d(op, cols, rows, sides)?;
                let params = [param(op, w)?, param(op, h)?, fold];
                bind!(s = src.operand_device_in, d = dst.operand_device_out);
                finish!(self.run(g, op, sobel_source, &[s, d], &params, groups); src => dst)
            }
        }
    }
}

/// The sigmas [`Kernels::gaussian_blur`] takes, about [0.001, 21.3]:
/// below, the side weights underflow to zero anyway (and far below, their
/// formula divides by zero); above, the blur would pass 64 taps each side.
///
/// ```
/// assert!(tensorzone::kernels::BLUR_SIGMA.contains(&2.0));
/// assert!(!tensorzone::kernels::BLUR_SIGMA.contains(&0.0));
/// ```
pub const BLUR_SIGMA: std::ops::RangeInclusive<f32> = 1e-3..=MAX_BLUR_RADIUS as f32 / 3.0;

/// The blur kernel's weights for `sigma`, checked.
fn blur_weights(sigma: f32) -> Result<ndarray::Array1<f32>> {
    if !BLUR_SIGMA.contains(&sigma) {
        return Err(Error::InvalidArgument {
            op: "gaussian_blur",
            detail: format!(
                "sigma {sigma} is not in [{}, {}]",
                BLUR_SIGMA.start(),
                BLUR_SIGMA.end()
            ),
        });
    }
    Ok(reference::gaussian_weights(sigma))
}

fn nd(e: impl std::fmt::Display) -> Error {
    Error::Backend {
        detail: format!("ndarray: {e}"),
    }
}

/// `value`'s bytes repeated over 8 bytes, as the even and odd words of the
/// fill pattern (elements of up to 8 bytes).
fn word_patterns(bytes: &[u8]) -> (u32, u32) {
    let mut w = [0u8; 8];
    for (i, b) in w.iter_mut().enumerate() {
        *b = bytes[i % bytes.len()];
    }
    (
        u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
        u32::from_le_bytes([w[4], w[5], w[6], w[7]]),
    )
}

/// A 32-bit element's bits, as the elementwise kernel takes its scalar.
fn bits<T: Numeric>(v: T) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(bytemuck::bytes_of(&v));
    u32::from_le_bytes(w)
}

/// Outputs each blur invocation writes along its pass.
const BLUR_OUTPUTS: usize = 16;

/// `base + d` in WGSL, for a signed literal `d`.
fn offset(base: &str, d: i64) -> String {
    match d {
        0 => base.to_string(),
        d if d < 0 => format!("{base} - {}", -d),
        d => format!("{base} + {d}"),
    }
}

/// The blur kernel for `weights`: each pass's clamped loads and sums
/// written out as straight-line code, weights as exact constants, in the
/// reference's order; then the stores, unguarded when all the outputs are
/// on the line (all but an invocation at its end: one guard per store
/// cost the pass a fifth on lavapipe).
fn blur_source(weights: &ndarray::Array1<f32>) -> String {
    let r = (weights.len() / 2) as i64;
    let wt = |t: usize| format!("bitcast<f32>({}u)", weights[t].to_bits());
    let n = BLUR_OUTPUTS;
    let mut body = String::new();
    for k in 0..n as i64 + 2 * r {
        let pos = offset("along", k - r);
        body += &format!("    let v{k} = src[first + u32(clamp({pos}, 0, last)) * step];\n");
    }
    let mut stores = Vec::new();
    for j in 0..n {
        let sum: Vec<String> = (0..weights.len())
            .map(|t| format!("{} * v{}", wt(t), j + t))
            .collect();
        let sum = sum.join(" + ");
        body += &format!("    let o{j} = {sum};\n");
        stores.push(format!("dst[at + {j}u * step] = o{j};"));
    }
    body += &format!("    if (along + {} <= last) {{\n", n - 1);
    for st in &stores {
        body += &format!("        {st}\n");
    }
    body += "    } else {\n";
    for (j, st) in stores.iter().enumerate() {
        body += &match j {
            0 => format!("        {st}\n"),
            _ => format!("        if (along + {j} <= last) {{\n            {st}\n        }}\n"),
        };
    }
    body += "    }\n";
    with_grid(
        &BLUR
            .replace("{{OUTPUTS}}", &n.to_string())
            .replace("{{BODY}}", body.trim_end()),
    )
}

/// Columns and rows of the block of outputs each Sobel invocation writes.
const SOBEL_COLS: usize = 8;
const SOBEL_ROWS: usize = 4;

/// The Sobel kernel with its block written out: the clamped rows and
/// columns around it, its loads, then each output's magnitude.
fn sobel_source() -> String {
    let (cols, rows) = (SOBEL_COLS, SOBEL_ROWS);
    let mut body = String::new();
    for i in 0..rows + 2 {
        let y = offset("y0", i as i64 - 1);
        body += &format!("    let r{i} = u32(clamp({y}, 0, hl)) * w;\n");
    }
    for k in 0..cols + 2 {
        let x = offset("x0", k as i64 - 1);
        body += &format!("    let c{k} = u32(clamp({x}, 0, wl));\n");
    }
    for i in 0..rows + 2 {
        for k in 0..cols + 2 {
            body += &format!("    let p{i}_{k} = src[r{i} + c{k}];\n");
        }
    }
    for i in 0..rows {
        for j in 0..cols {
            let (a, b, c) = (i, i + 1, i + 2);
            let (l, m, r) = (j, j + 1, j + 2);
            let store = format!(
                "dst[u32({y}) * w + u32({x})] = magnitude(p{a}_{l}, p{a}_{m}, p{a}_{r}, p{b}_{l}, p{b}_{r}, p{c}_{l}, p{c}_{m}, p{c}_{r});",
                y = offset("y0", i as i64),
                x = offset("x0", j as i64),
            );
            // The block's first output is in the image: `main` returned
            // otherwise. (Unguarded stores for whole blocks, as the blur
            // has, made it slower here: the block's 32 results live at once.)
            let mut conds = Vec::new();
            if i > 0 {
                conds.push(format!("{} <= hl", offset("y0", i as i64)));
            }
            if j > 0 {
                conds.push(format!("{} <= wl", offset("x0", j as i64)));
            }
            body += &match conds.is_empty() {
                true => format!("    {store}\n"),
                false => format!(
                    "    if ({}) {{\n        {store}\n    }}\n",
                    conds.join(" && ")
                ),
            };
        }
    }
    with_grid(
        &SOBEL
            .replace("{{COLS}}", &cols.to_string())
            .replace("{{ROWS}}", &rows.to_string())
            .replace("{{BODY}}", body.trim_end()),
    )
}

fn elementwise_source<T: Numeric>(expr: &str) -> String {
    ELEMENTWISE
        .replace("{{ELEM}}", T::WGSL)
        .replace("{{EXPR}}", expr)
}

fn cast_source((src, dst, body): (&str, &str, &str)) -> String {
    CAST.replace("{{SRC}}", src)
        .replace("{{DST}}", dst)
        .replace("{{BODY}}", body)
}

/// A kernel whose WGSL [`wgsl`] returns (the arithmetic ones on `f32`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Kernel {
    /// [`Kernels::fill`]: `out` (words), params `[bytes, even word, odd
    /// word]` (the value's bytes repeated over 8 bytes).
    Fill,
    /// [`Kernels::copy`]: `src`, `dst` (words), params `[words, words]`.
    Copy,
    /// [`Kernels::add`]: `a`, `b`, `out`, params `[len, 0, 1]`.
    Add,
    /// [`Kernels::mul`]: `a`, `b`, `out`, params `[len, 0, 1]`.
    Mul,
    /// [`Kernels::scale`]: `a`, `b` (unused: bind `a` again), `out`,
    /// params `[len, scalar bits, 1]`.
    Scale,
    /// [`Kernels::bias_add`]: `x`, `bias`, `out`, params `[len, 0, bias len]`.
    BiasAdd,
    /// [`Kernels::relu`]: like `Scale`, params `[len, 0, 1]`.
    Relu,
    /// [`Kernels::u8_to_f32`]: `src`, `dst`, params `[len, len]`.
    U8ToF32,
    /// [`Kernels::f32_to_u8`]: `src`, `dst` (words), params `[words, len]`.
    F32ToU8,
    /// [`Kernels::f32_to_f16`]: `src`, `dst` (words), params `[words, len]`.
    F32ToF16,
    /// [`Kernels::f16_to_f32`]: `src`, `dst`, params `[len, len]`.
    F16ToF32,
    /// [`Kernels::matmul`]: `a`, `b`, `c`, params `[m, k, n, fold]`,
    /// 16 × 16 workgroups over (n, m) (see [`Kernel::Sobel`] for `fold`).
    Matmul,
    /// [`Kernels::grayscale`]: `rgba`, `gray`, params `[pixels]`.
    Grayscale,
    /// One pass of [`Kernels::gaussian_blur`]: `src`, `dst`, params
    /// `[width, height, radius, dir, fold]` (dir 0 along rows, 1 along
    /// columns; see [`Kernel::Sobel`] for `fold`). Each invocation writes
    /// 16 consecutive outputs along its pass: 16 × 16 workgroups over
    /// (ceil(width / 16), height) along rows and (width, ceil(height / 16))
    /// along columns.
    GaussianBlur {
        /// The blur's standard deviation.
        sigma: f32,
    },
    /// [`Kernels::sobel`]: `src`, `dst`, params `[width, height, fold]`.
    /// Each invocation writes a block of 8 columns by 4 rows: 16 × 16
    /// workgroups over (ceil(width / 8), ceil(height / 4)).
    ///
    /// The 2-D kernels (this, the blur, matmul) take more than 65,535
    /// workgroups along one dimension as a dispatch's z: dispatch 65,535
    /// along it and the rest of it as z (`z = ceil(groups / 65,535)`), with
    /// `fold` 0 when that dimension is y, 1 when it is x, the other
    /// dimension dispatched whole.
    Sobel,
}

/// The WGSL the GPU backend compiles for `kernel`, for pipelines of your
/// own: entry point `main`; group 0 holds the bindings listed on each
/// [`Kernel`] variant as `var<storage, read_write>`, then the parameter
/// words as `var<storage, read>`. One-dimensional kernels run 256-wide
/// workgroups over `x + y * 256 * groups_x`.
///
/// Errors: [`Error::InvalidArgument`] for a blur `sigma` outside
/// [`BLUR_SIGMA`].
///
/// ```
/// let src = tensorzone::kernels::wgsl(tensorzone::kernels::Kernel::Sobel).unwrap();
/// assert!(src.contains("fn main"));
/// ```
pub fn wgsl(kernel: Kernel) -> Result<String> {
    Ok(match kernel {
        Kernel::Fill => FILL.into(),
        Kernel::Copy => cast_source(COPY_WORDS),
        Kernel::Add => elementwise_source::<f32>(ADD),
        Kernel::Mul => elementwise_source::<f32>(MUL),
        Kernel::Scale => elementwise_source::<f32>(SCALE),
        Kernel::BiasAdd => elementwise_source::<f32>(BIAS_ADD),
        Kernel::Relu => elementwise_source::<f32>(&relu_expr::<f32>()),
        Kernel::U8ToF32 => cast_source(U8_TO_F32),
        Kernel::F32ToU8 => cast_source(F32_TO_U8),
        Kernel::F32ToF16 => cast_source(F32_TO_F16),
        Kernel::F16ToF32 => cast_source(F16_TO_F32),
        Kernel::Matmul => with_grid(MATMUL),
        Kernel::Grayscale => GRAYSCALE.into(),
        Kernel::GaussianBlur { sigma } => blur_source(&blur_weights(sigma)?),
        Kernel::Sobel => sobel_source(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIDES: [(&str, usize); 2] = [("width", 0), ("height", 0)];

    #[test]
    fn grids_past_one_dispatch_dimension_continue_along_z() {
        let most = 16 * MAX_GROUPS as usize;
        assert_eq!(groups_2d("t", 32, 48, SIDES).unwrap(), ([2, 3, 1], 0));
        // Rows past the limit: y dispatched whole, the rest as z.
        assert_eq!(
            groups_2d("t", 32, most + 1, SIDES).unwrap(),
            ([2, 65_535, 2], 0)
        );
        // Columns past it: x likewise, fold 1.
        assert_eq!(
            groups_2d("t", 3 * most, 17, SIDES).unwrap(),
            ([65_535, 2, 3], 1)
        );
        match groups_2d("t", most + 1, most + 1, [("width", 7), ("height", 9)]) {
            Err(Error::InvalidArgument { detail, .. }) => {
                assert!(
                    detail.contains("a width of 7 and a height of 9"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
