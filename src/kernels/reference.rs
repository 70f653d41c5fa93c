//! The CPU versions of the kernels, over slices (the image kernels a row
//! at a time, so the inner loops vectorise) with ndarray forms for
//! callers: the CPU backend runs them, and they are the reference the GPU
//! kernels are tested against. Each
//! follows its WGSL kernel's arithmetic step for step (same operation
//! order, same edge rules), so the two differ only by float rounding.
//!
//! They take what the kernels have already checked: slices of matching
//! lengths (and whole rows), a non-empty bias, a `sigma` in
//! [`BLUR_SIGMA`](super::BLUR_SIGMA). Given less, the slice functions
//! panic; call them through [`Kernels`](super::Kernels) for typed errors.

use std::borrow::Cow;

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
///
/// # Panics
/// If `bias` is empty while `x` is not, or the lengths do not match.
pub fn bias_add<T: Numeric>(x: &[T], bias: &[T], out: &mut [T]) {
    assert_eq!(x.len(), out.len(), "bias_add: input and output lengths");
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
    Zip::from(dst).and(src).for_each(|o, &v| *o = to_byte(v));
}

/// `round(v * 255)` (ties to even) clamped to [0, 255]; NaN gives 0.
fn to_byte(v: f32) -> u8 {
    // Clamping first gives the same result, and in [0, 255] adding 2^23
    // rounds to a whole number, ties to even, as `round_ties_even` does,
    // without its library call per element. `as` maps NaN to 0.
    const ROUND: f32 = 8_388_608.0;
    (((v * 255.0).clamp(0.0, 255.0) + ROUND) - ROUND) as u8
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
///
/// # Panics
/// If the last axis has fewer than 3 elements.
pub fn grayscale(rgba: ArrayView3<'_, u8>) -> Array2<f32> {
    let (h, w, _) = rgba.dim();
    Array2::from_shape_fn((h, w), |(y, x)| {
        luma(rgba[[y, x, 0]], rgba[[y, x, 1]], rgba[[y, x, 2]])
    })
}

/// [`grayscale`] of `rgba` (pixel after pixel, 4 bytes each) into `out`,
/// one luma per pixel: what the CPU backend runs.
///
/// # Panics
/// If `rgba.len() != 4 * out.len()`.
pub fn grayscale_into(rgba: &[u8], out: &mut [f32]) {
    assert_eq!(
        rgba.len(),
        4 * out.len(),
        "grayscale_into: 4 bytes per output"
    );
    for (o, p) in out.iter_mut().zip(rgba.chunks_exact(4)) {
        *o = luma(p[0], p[1], p[2]);
    }
}

fn luma(r: u8, g: u8, b: u8) -> f32 {
    let c = |v: u8| f32::from(v) / 255.0;
    0.299 * c(r) + 0.587 * c(g) + 0.114 * c(b)
}

/// The normalised weights of a Gaussian of standard deviation `sigma`,
/// over offsets `-r..=r` with `r = ceil(3 sigma)` (at least 1).
///
/// # Panics
/// If `sigma` is infinite, or so large that its `2r + 1` weights do not
/// fit in memory; check it against [`BLUR_SIGMA`](super::BLUR_SIGMA) first.
pub fn gaussian_weights(sigma: f32) -> Array1<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let w = Array1::from_iter((-r..=r).map(|d| (-((d * d) as f32) / (2.0 * sigma * sigma)).exp()));
    let sum = w.sum();
    w / sum
}

/// Separable Gaussian blur of an image [height, width] with
/// [`gaussian_weights`]`(sigma)`: along rows, then along columns, edges
/// clamped. Each output sums its taps from offset `-r` to `r`, as the WGSL
/// kernel does.
pub fn gaussian_blur(src: ArrayView2<'_, f32>, sigma: f32) -> Array2<f32> {
    let (h, w) = src.dim();
    let mut tmp = vec![0.0; h * w];
    let mut out = vec![0.0; h * w];
    let weights = gaussian_weights(sigma);
    gaussian_blur_into(&in_order(src), w, weights.view(), &mut tmp, &mut out);
    from_rows(h, w, &out)
}

/// [`gaussian_blur`] of `src` (rows of `width` elements, one after the
/// other) into `out` of the same length, with `weights` (an odd number of
/// them, the middle one at offset 0) and the pass along rows written to
/// `tmp` (same length): what the CPU backend runs.
///
/// ```
/// use tensorzone::kernels::reference::{gaussian_blur_into, gaussian_weights};
/// let src = [0.0, 0.0, 4.0, 0.0, 0.0]; // one row of 5
/// let (mut tmp, mut out) = ([0.0; 5], [0.0; 5]);
/// gaussian_blur_into(&src, 5, gaussian_weights(0.5).view(), &mut tmp, &mut out);
/// assert!(out[2] > out[1] && out[1] > out[0] && out[0] > 0.0);
/// assert_eq!((out[0], out[1]), (out[4], out[3]));
/// assert!((out.iter().sum::<f32>() - 4.0).abs() < 1e-5);
/// ```
///
/// # Panics
/// If the three lengths differ or are not a multiple of `width`.
pub fn gaussian_blur_into(
    src: &[f32],
    width: usize,
    weights: ArrayView1<'_, f32>,
    tmp: &mut [f32],
    out: &mut [f32],
) {
    check_image("gaussian_blur_into", src, width, out);
    assert_eq!(src.len(), tmp.len(), "gaussian_blur_into: tmp length");
    if width == 0 {
        return;
    }
    let r = (weights.len() / 2) as isize;
    // Along rows: each tap adds one shifted row, so the inner loops run
    // over contiguous slices and vectorise. The first tap sets.
    for (t, s) in tmp.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
        for (k, (&wd, d)) in weights.iter().zip(-r..).enumerate() {
            add_shifted(t, wd, s, d, k == 0);
        }
    }
    // Along columns: each tap adds one whole (clamped) row.
    let rows = src.len() / width;
    for (y, o) in out.chunks_exact_mut(width).enumerate() {
        for (k, (&wd, d)) in weights.iter().zip(-r..).enumerate() {
            let sy = (y as isize + d).clamp(0, rows as isize - 1) as usize;
            axpy(o, wd, &tmp[sy * width..(sy + 1) * width], k == 0);
        }
    }
}

/// `acc[x] += wd * src[clamp(x + d)]` for every `x` of one line (`=` for
/// the `first` tap).
fn add_shifted(acc: &mut [f32], wd: f32, src: &[f32], d: isize, first: bool) {
    let n = acc.len() as isize;
    // `acc[lo..hi]` reads inside the line; before `lo` the first element,
    // from `hi` the last.
    let lo = (-d).clamp(0, n);
    let hi = (n - d).clamp(lo, n);
    let (lo, hi) = (lo as usize, hi as usize);
    let (head, rest) = acc.split_at_mut(lo);
    let (middle, tail) = rest.split_at_mut(hi - lo);
    axpy_one(head, wd, src[0], first);
    if !middle.is_empty() {
        let from = (lo as isize + d) as usize;
        axpy(middle, wd, &src[from..from + middle.len()], first);
    }
    axpy_one(tail, wd, src[src.len() - 1], first);
}

/// `acc += wd * src`, elementwise (`=` for the `first` tap).
fn axpy(acc: &mut [f32], wd: f32, src: &[f32], first: bool) {
    // Two loops, not a branch per element, so each vectorises.
    if first {
        acc.iter_mut().zip(src).for_each(|(a, &s)| *a = wd * s);
    } else {
        acc.iter_mut().zip(src).for_each(|(a, &s)| *a += wd * s);
    }
}

/// `acc += wd * s` for each element (`=` for the `first` tap).
fn axpy_one(acc: &mut [f32], wd: f32, s: f32, first: bool) {
    let v = wd * s;
    if first {
        acc.fill(v);
    } else {
        acc.iter_mut().for_each(|a| *a += v);
    }
}

/// Sobel gradient magnitude of an image [height, width], edges clamped.
pub fn sobel(src: ArrayView2<'_, f32>) -> Array2<f32> {
    let (h, w) = src.dim();
    let mut out = vec![0.0; h * w];
    sobel_into(&in_order(src), w, &mut out);
    from_rows(h, w, &out)
}

/// [`sobel`] of `src` (rows of `width` elements, one after the other) into
/// `out` of the same length: what the CPU backend runs.
///
/// # Panics
/// If the lengths differ or are not a multiple of `width`.
pub fn sobel_into(src: &[f32], width: usize, out: &mut [f32]) {
    check_image("sobel_into", src, width, out);
    if width == 0 {
        return;
    }
    let rows = src.len() / width;
    let row = |y: usize| &src[y * width..(y + 1) * width];
    for (y, o) in out.chunks_exact_mut(width).enumerate() {
        let (above, here) = (row(y.saturating_sub(1)), row(y));
        let below = row((y + 1).min(rows - 1));
        sobel_row([above, here, below], o);
    }
}

/// One output row of [`sobel`] from the three (clamped) input rows around it.
fn sobel_row([a, m, b]: [&[f32]; 3], out: &mut [f32]) {
    let w = out.len();
    let at = |x: usize| {
        let (l, r) = (x.saturating_sub(1), (x + 1).min(w - 1));
        magnitude([a[l], a[x], a[r]], [m[l], m[r]], [b[l], b[x], b[r]])
    };
    out[0] = at(0);
    out[w - 1] = at(w - 1);
    if w < 3 {
        return;
    }
    // Inside the row no read clamps: nine slices of one length, so the
    // loop vectorises.
    let n = w - 2;
    fn shifts(s: &[f32], n: usize) -> [&[f32]; 3] {
        [&s[..n], &s[1..n + 1], &s[2..n + 2]]
    }
    let ([al, ac, ar], [ml, _, mr], [bl, bc, br]) = (shifts(a, n), shifts(m, n), shifts(b, n));
    for (i, o) in out[1..w - 1].iter_mut().enumerate() {
        *o = magnitude([al[i], ac[i], ar[i]], [ml[i], mr[i]], [bl[i], bc[i], br[i]]);
    }
}

/// The Sobel magnitude from the row above (left, centre, right), the
/// sides of the centre row and the row below.
#[inline(always)]
fn magnitude([tl, t, tr]: [f32; 3], [l, r]: [f32; 2], [bl, b, br]: [f32; 3]) -> f32 {
    let gx = (tr + 2.0 * r + br) - (tl + 2.0 * l + bl);
    let gy = (bl + 2.0 * b + br) - (tl + 2.0 * t + tr);
    (gx * gx + gy * gy).sqrt()
}

/// Panics unless `src` and `out` are images of whole rows of `width`.
fn check_image(op: &str, src: &[f32], width: usize, out: &[f32]) {
    assert_eq!(src.len(), out.len(), "{op}: input and output lengths");
    assert!(
        width > 0 && src.len().is_multiple_of(width) || src.is_empty(),
        "{op}: {} elements are not rows of {width}",
        src.len()
    );
}

/// The elements of `a` row after row, borrowed where they already lie so.
fn in_order<'a>(a: ArrayView2<'a, f32>) -> Cow<'a, [f32]> {
    match a.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// `data` (rows of `w` elements) as an array [h, w].
fn from_rows(h: usize, w: usize, data: &[f32]) -> Array2<f32> {
    Array2::from_shape_fn((h, w), |(y, x)| data[y * w + x])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, ShapeBuilder};

    // The kernels written the obvious way, one output at a time with
    // clamped reads: the fast versions above must match them bit for bit
    // (same taps, same order).
    fn naive_blur_pass(src: ArrayView2<'_, f32>, weights: &[f32], along_rows: bool) -> Array2<f32> {
        let (h, w) = src.dim();
        let r = (weights.len() / 2) as i64;
        Array2::from_shape_fn((h, w), |(y, x)| {
            let tap = |d: i64| {
                let (sy, sx) = if along_rows {
                    (y as i64, (x as i64 + d).clamp(0, w as i64 - 1))
                } else {
                    ((y as i64 + d).clamp(0, h as i64 - 1), x as i64)
                };
                weights[(d + r) as usize] * src[[sy as usize, sx as usize]]
            };
            // The WGSL sum: the first product, then each next one added.
            (-r + 1..=r).fold(tap(-r), |acc, d| acc + tap(d))
        })
    }

    fn naive_blur(src: ArrayView2<'_, f32>, sigma: f32) -> Array2<f32> {
        let weights = gaussian_weights(sigma).to_vec();
        let rows = naive_blur_pass(src, &weights, true);
        naive_blur_pass(rows.view(), &weights, false)
    }

    fn naive_sobel(src: ArrayView2<'_, f32>) -> Array2<f32> {
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

    fn bits(a: &Array2<f32>) -> Vec<u32> {
        a.iter().map(|v| v.to_bits()).collect()
    }

    /// Values in [-1, 2) from a fixed sequence, for `n` elements.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 * 3.0 - 1.0
            })
            .collect()
    }

    // Lines of 1 and 2 elements, lines shorter than the blur radius (6 at
    // sigma 2, 64 at 21.3), and longer ones.
    const SIZES: [(usize, usize); 9] = [
        (1, 1),
        (1, 9),
        (9, 1),
        (2, 3),
        (5, 7),
        (13, 4),
        (17, 31),
        (40, 3),
        (3, 140),
    ];

    #[test]
    fn blur_and_sobel_match_the_one_output_at_a_time_versions_bit_for_bit() {
        for (i, &(h, w)) in SIZES.iter().enumerate() {
            let img = Array2::from_shape_vec((h, w), values(h * w, i as u64)).unwrap();
            for sigma in [0.3, 1.0, 2.0, 21.3] {
                let want = naive_blur(img.view(), sigma);
                let got = gaussian_blur(img.view(), sigma);
                assert_eq!(bits(&got), bits(&want), "blur {h}x{w} sigma {sigma}");
            }
            assert_eq!(
                bits(&sobel(img.view())),
                bits(&naive_sobel(img.view())),
                "sobel {h}x{w}"
            );
        }
    }

    #[test]
    fn views_in_any_layout_give_the_same_results() {
        // A column-major copy and a transposed view read differently from
        // memory, but name the same pixels.
        let img = Array2::from_shape_vec((6, 11), values(66, 7)).unwrap();
        let mut fortran = Array2::zeros((6, 11).f());
        fortran.assign(&img);
        let t = img.t().to_owned();
        for (name, view) in [
            ("column-major", fortran.view()),
            ("transposed twice", t.t()),
        ] {
            assert_eq!(bits(&sobel(view)), bits(&naive_sobel(img.view())), "{name}");
            assert_eq!(
                bits(&gaussian_blur(view, 1.5)),
                bits(&naive_blur(img.view(), 1.5)),
                "{name}"
            );
        }
    }

    #[test]
    fn bytes_round_half_to_even_and_saturate() {
        let mut values: Vec<f32> = (-600..=1200).map(|i| i as f32 * 0.5 / 255.0).collect();
        values.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            1e30,
            -1e30,
        ]);
        values.extend((0..=255).map(|i| (i as f32 + 0.5) / 255.0));
        values.extend(values.iter().map(|v| v.next_up()).collect::<Vec<_>>());
        let mut got = vec![0u8; values.len()];
        f32_to_u8(&values, &mut got);
        for (&v, &b) in values.iter().zip(&got) {
            let want = (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8;
            assert_eq!(b, want, "{v:e}");
        }
        // Spot checks of the rule itself: 0.5 and 2.5 go down, 1.5 up.
        let mut three = [0u8; 3];
        f32_to_u8(&[0.5 / 255.0, 1.5 / 255.0, 2.5 / 255.0], &mut three);
        assert_eq!(three, [0, 2, 2]);
    }

    #[test]
    #[should_panic(expected = "sobel_into: 10 elements are not rows of 3")]
    fn partial_rows_are_refused() {
        sobel_into(&[0.0; 10], 3, &mut [0.0; 10]);
    }

    #[test]
    #[should_panic(expected = "gaussian_blur_into: tmp length")]
    fn a_short_temporary_is_refused() {
        let w = gaussian_weights(1.0);
        gaussian_blur_into(&[0.0; 6], 3, w.view(), &mut [0.0; 3], &mut [0.0; 6]);
    }

    #[test]
    fn grayscale_into_matches_grayscale() {
        let bytes: Vec<u8> = values(4 * 35, 3)
            .iter()
            .map(|v| ((v + 1.0) * 85.0) as u8)
            .collect();
        let want = grayscale(
            Array3::from_shape_vec((5, 7, 4), bytes.clone())
                .unwrap()
                .view(),
        );
        let mut got = vec![0.0; 35];
        grayscale_into(&bytes, &mut got);
        assert_eq!(got, want.iter().copied().collect::<Vec<_>>());
        assert_eq!(
            want[[0, 0]].to_bits(),
            luma(bytes[0], bytes[1], bytes[2]).to_bits()
        );
    }
}
