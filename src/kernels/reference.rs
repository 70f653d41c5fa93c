//! The CPU versions of the kernels, on ndarray: the CPU backend runs them,
//! and they are the reference the GPU kernels are tested against. Each
//! follows its WGSL kernel's arithmetic step for step (same operation
//! order, same edge rules), so the two differ only by float rounding.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayView3, Zip};

use super::Numeric;

/// `a + b`, elementwise (integers wrap, as in WGSL).
pub fn add<T: Numeric>(a: &[T], b: &[T], out: &mut [T]) {
    Zip::from(out)
        .and(a)
        .and(b)
        .for_each(|o, &x, &y| *o = x.add(y));
}

/// `a * b`, elementwise (integers wrap).
pub fn mul<T: Numeric>(a: &[T], b: &[T], out: &mut [T]) {
    Zip::from(out)
        .and(a)
        .and(b)
        .for_each(|o, &x, &y| *o = x.mul(y));
}

/// `a * s`, elementwise (integers wrap).
pub fn scale<T: Numeric>(a: &[T], s: T, out: &mut [T]) {
    Zip::from(out).and(a).for_each(|o, &x| *o = x.mul(s));
}

/// `x + bias` with `bias` repeated along each row of `x` (`x.len()` a
/// multiple of `bias.len()`).
pub fn bias_add<T: Numeric>(x: &[T], bias: &[T], out: &mut [T]) {
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        *o = v.add(bias[i % bias.len()]);
    }
}

/// `max(x, 0)`, elementwise.
pub fn relu<T: Numeric>(x: &[T], out: &mut [T]) {
    Zip::from(out).and(x).for_each(|o, &v| *o = v.relu());
}

/// Bytes to floats in [0, 1]: `v / 255`.
pub fn u8_to_f32(src: &[u8], dst: &mut [f32]) {
    Zip::from(dst)
        .and(src)
        .for_each(|o, &v| *o = f32::from(v) / 255.0);
}

/// Floats in [0, 1] to bytes: `round(v * 255)` (ties to even), clamped to
/// [0, 255]; NaN gives 0.
pub fn f32_to_u8(src: &[f32], dst: &mut [u8]) {
    Zip::from(dst).and(src).for_each(|o, &v| {
        // `as` saturates and maps NaN to 0.
        *o = (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8;
    });
}

/// `f32` to `f16`, rounding to nearest.
pub fn f32_to_f16(src: &[f32], dst: &mut [half::f16]) {
    Zip::from(dst)
        .and(src)
        .for_each(|o, &v| *o = half::f16::from_f32(v));
}

/// `f16` to `f32` (exact).
pub fn f16_to_f32(src: &[half::f16], dst: &mut [f32]) {
    Zip::from(dst).and(src).for_each(|o, &v| *o = v.to_f32());
}

/// `a · b` for `a` of shape [m, k] and `b` of shape [k, n].
pub fn matmul(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    a.dot(&b)
}

/// RGBA bytes of shape [height, width, 4] to luma in [0, 1] of shape
/// [height, width]: `0.299 R + 0.587 G + 0.114 B` on the bytes over 255.
pub fn grayscale(rgba: ArrayView3<'_, u8>) -> Array2<f32> {
    let (h, w, _) = rgba.dim();
    Array2::from_shape_fn((h, w), |(y, x)| {
        let c = |k: usize| f32::from(rgba[[y, x, k]]) / 255.0;
        0.299 * c(0) + 0.587 * c(1) + 0.114 * c(2)
    })
}

/// The normalised weights of a Gaussian of standard deviation `sigma`,
/// over offsets `-r..=r` with `r = ceil(3 sigma)` (at least 1).
pub fn gaussian_weights(sigma: f32) -> Array1<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let w = Array1::from_iter((-r..=r).map(|d| (-((d * d) as f32) / (2.0 * sigma * sigma)).exp()));
    let sum = w.sum();
    w / sum
}

/// One pass of [`gaussian_blur`]: along rows (`along_rows`) or columns.
fn blur_pass(
    src: ArrayView2<'_, f32>,
    weights: ArrayView1<'_, f32>,
    along_rows: bool,
) -> Array2<f32> {
    let (h, w) = src.dim();
    let r = (weights.len() / 2) as i64;
    Array2::from_shape_fn((h, w), |(y, x)| {
        let mut acc = 0.0f32;
        for d in -r..=r {
            let (sy, sx) = if along_rows {
                (y as i64, (x as i64 + d).clamp(0, w as i64 - 1))
            } else {
                ((y as i64 + d).clamp(0, h as i64 - 1), x as i64)
            };
            acc += weights[(d + r) as usize] * src[[sy as usize, sx as usize]];
        }
        acc
    })
}

/// Separable Gaussian blur of an image [height, width] with
/// [`gaussian_weights`]`(sigma)`: along rows, then along columns, edges
/// clamped.
pub fn gaussian_blur(src: ArrayView2<'_, f32>, sigma: f32) -> Array2<f32> {
    let weights = gaussian_weights(sigma);
    let rows = blur_pass(src, weights.view(), true);
    blur_pass(rows.view(), weights.view(), false)
}

/// Sobel gradient magnitude of an image [height, width], edges clamped.
pub fn sobel(src: ArrayView2<'_, f32>) -> Array2<f32> {
    let (h, w) = src.dim();
    let px = |x: i64, y: i64| {
        src[[
            y.clamp(0, h as i64 - 1) as usize,
            x.clamp(0, w as i64 - 1) as usize,
        ]]
    };
    Array2::from_shape_fn((h, w), |(y, x)| {
        let (x, y) = (x as i64, y as i64);
        let (tl, t, tr) = (px(x - 1, y - 1), px(x, y - 1), px(x + 1, y - 1));
        let (l, r) = (px(x - 1, y), px(x + 1, y));
        let (bl, b, br) = (px(x - 1, y + 1), px(x, y + 1), px(x + 1, y + 1));
        let gx = (tr + 2.0 * r + br) - (tl + 2.0 * l + bl);
        let gy = (bl + 2.0 * b + br) - (tl + 2.0 * t + tr);
        (gx * gx + gy * gy).sqrt()
    })
}
