//! The kernels on each backend against their ndarray references, on random
//! inputs of awkward sizes: exact for integers and bytes, within a tight
//! tolerance for floats.

mod common;

use ndarray::{ArrayView2, ArrayView3};
use tensorzone::kernels::reference;
use tensorzone::{f16, Error, Location, Tensor, Zone};

/// A small xorshift generator: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32s(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * (self.next() % 1_000_001) as f32 / 1_000_000.0)
            .collect()
    }
    fn u8s(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn i32s(&mut self, n: usize) -> Vec<i32> {
        (0..n).map(|_| self.next() as i32).collect()
    }
    fn u32s(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.next() as u32).collect()
    }
}

/// Lengths around the word and workgroup edges.
const LENS: [usize; 6] = [1, 3, 5, 255, 257, 1000];

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

fn dev<T: tensorzone::Element>(zone: &Zone, dims: &[usize], data: &[T]) -> Tensor<T> {
    Tensor::from_slice(zone, dims, data, Location::Device).unwrap()
}

fn out<T: tensorzone::Element>(zone: &Zone, dims: &[usize]) -> Tensor<T> {
    Tensor::empty(zone, dims, Location::Device).unwrap()
}

#[test]
fn elementwise_kernels_match_the_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for zone in common::zones() {
        let k = zone.kernels();
        for n in LENS {
            let what = format!("{:?} n={n}", zone.backend());
            // f32
            let (a, b) = (rng.f32s(n, -100.0, 100.0), rng.f32s(n, -100.0, 100.0));
            let (mut ta, mut tb, mut to) = (
                dev(&zone, &[n], &a),
                dev(&zone, &[n], &b),
                out::<f32>(&zone, &[n]),
            );
            let mut want = vec![0.0; n];
            k.add(&mut ta, &mut tb, &mut to).unwrap();
            reference::add(&a, &b, &mut want);
            close(
                &to.to_vec().unwrap(),
                &want,
                1e-6,
                &format!("add f32 {what}"),
            );
            k.mul(&mut ta, &mut tb, &mut to).unwrap();
            reference::mul(&a, &b, &mut want);
            close(
                &to.to_vec().unwrap(),
                &want,
                1e-6,
                &format!("mul f32 {what}"),
            );
            k.scale(&mut ta, -0.25, &mut to).unwrap();
            reference::scale(&a, -0.25, &mut want);
            close(
                &to.to_vec().unwrap(),
                &want,
                1e-6,
                &format!("scale f32 {what}"),
            );
            k.relu(&mut ta, &mut to).unwrap();
            reference::relu(&a, &mut want);
            assert_eq!(to.to_vec().unwrap(), want, "relu f32 {what}");

            // Integers: exact, wrapping.
            let (a, b) = (rng.i32s(n), rng.i32s(n));
            let (mut ta, mut tb, mut to) = (
                dev(&zone, &[n], &a),
                dev(&zone, &[n], &b),
                out::<i32>(&zone, &[n]),
            );
            let mut want = vec![0; n];
            k.add(&mut ta, &mut tb, &mut to).unwrap();
            reference::add(&a, &b, &mut want);
            assert_eq!(to.to_vec().unwrap(), want, "add i32 {what}");
            k.mul(&mut ta, &mut tb, &mut to).unwrap();
            reference::mul(&a, &b, &mut want);
            assert_eq!(to.to_vec().unwrap(), want, "mul i32 {what}");
            k.scale(&mut ta, -3, &mut to).unwrap();
            reference::scale(&a, -3, &mut want);
            assert_eq!(to.to_vec().unwrap(), want, "scale i32 {what}");
            k.relu(&mut ta, &mut to).unwrap();
            reference::relu(&a, &mut want);
            assert_eq!(to.to_vec().unwrap(), want, "relu i32 {what}");

            let (a, b) = (rng.u32s(n), rng.u32s(n));
            let (mut ta, mut tb, mut to) = (
                dev(&zone, &[n], &a),
                dev(&zone, &[n], &b),
                out::<u32>(&zone, &[n]),
            );
            let mut want = vec![0; n];
            k.mul(&mut ta, &mut tb, &mut to).unwrap();
            reference::mul(&a, &b, &mut want);
            assert_eq!(to.to_vec().unwrap(), want, "mul u32 {what}");
        }
    }
}

#[test]
fn bias_add_repeats_the_bias_along_rows() {
    let mut rng = Rng(7);
    for zone in common::zones() {
        for (rows, n) in [(1, 1), (3, 5), (17, 33)] {
            let x = rng.f32s(rows * n, -1.0, 1.0);
            let bias = rng.f32s(n, -1.0, 1.0);
            let mut tx = dev(&zone, &[rows, n], &x);
            let mut tb = dev(&zone, &[n], &bias);
            let mut to = out::<f32>(&zone, &[rows, n]);
            zone.kernels().bias_add(&mut tx, &mut tb, &mut to).unwrap();
            let mut want = vec![0.0; rows * n];
            reference::bias_add(&x, &bias, &mut want);
            close(
                &to.to_vec().unwrap(),
                &want,
                1e-6,
                &format!("bias_add {rows}x{n}"),
            );
            // A bias of the wrong length is a typed error.
            let mut wrong = dev(&zone, &[n + 1], &vec![0.0; n + 1]);
            let err = zone
                .kernels()
                .bias_add(&mut tx, &mut wrong, &mut to)
                .unwrap_err();
            assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        }
    }
}

#[test]
fn fill_and_copy_work_for_every_element_size_and_leave_the_padding_zero() {
    for zone in common::zones() {
        let k = zone.kernels();
        for n in LENS {
            let mut t = out::<u8>(&zone, &[n]);
            k.fill(&mut t, 0xab).unwrap();
            assert_eq!(t.to_vec().unwrap(), vec![0xab; n]);
            let mut h = out::<f16>(&zone, &[n]);
            k.fill(&mut h, f16::from_f32(-2.5)).unwrap();
            assert_eq!(h.to_vec().unwrap(), vec![f16::from_f32(-2.5); n]);
            let mut f = out::<f32>(&zone, &[n]);
            k.fill(&mut f, 0.75).unwrap();
            assert_eq!(f.to_vec().unwrap(), vec![0.75; n]);

            let src: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let mut s = dev(&zone, &[n], &src);
            let mut d = out::<u8>(&zone, &[n]);
            k.copy(&mut s, &mut d).unwrap();
            assert_eq!(d.to_vec().unwrap(), src);
        }
        // The bytes past a u8 tensor's end in its last word stay zero: a
        // wider view of the same range (a tensor made over it next) reads
        // them. Checked through the binding on the GPU.
        if zone.wgpu_device().is_some() {
            let mut t = out::<u8>(&zone, &[5]);
            k.fill(&mut t, 0xff).unwrap();
            drop(t);
            let mut w = Tensor::<u32>::empty(&zone, [2], Location::Device).unwrap();
            w.mark_device_written().unwrap();
            let words = w.to_vec().unwrap();
            assert_eq!(
                words[1] & 0xffff_ff00,
                0,
                "padding of the freed u8 tensor: {words:x?}"
            );
        }
    }
}

#[test]
fn casts_match_the_reference() {
    let mut rng = Rng(99);
    for zone in common::zones() {
        let k = zone.kernels();
        for n in LENS {
            let what = format!("{:?} n={n}", zone.backend());
            let bytes = rng.u8s(n);
            let mut tb = dev(&zone, &[n], &bytes);
            let mut tf = out::<f32>(&zone, &[n]);
            k.u8_to_f32(&mut tb, &mut tf).unwrap();
            let mut want = vec![0.0; n];
            reference::u8_to_f32(&bytes, &mut want);
            close(
                &tf.to_vec().unwrap(),
                &want,
                1e-6,
                &format!("u8_to_f32 {what}"),
            );
            // And back, exactly.
            let mut back = out::<u8>(&zone, &[n]);
            k.f32_to_u8(&mut tf, &mut back).unwrap();
            assert_eq!(back.to_vec().unwrap(), bytes, "f32_to_u8 round trip {what}");
            // Out of range and between steps: clamped and rounded.
            let floats = rng.f32s(n, -0.5, 1.5);
            let mut tf = dev(&zone, &[n], &floats);
            k.f32_to_u8(&mut tf, &mut back).unwrap();
            let mut want = vec![0u8; n];
            reference::f32_to_u8(&floats, &mut want);
            let got = back.to_vec().unwrap();
            for i in 0..n {
                // A product landing within float error of a .5 tie may
                // round either way on the device.
                assert!(
                    got[i].abs_diff(want[i]) <= 1,
                    "f32_to_u8 {what}: {} -> {} want {}",
                    floats[i],
                    got[i],
                    want[i]
                );
            }

            let floats = rng.f32s(n, -60000.0, 60000.0);
            let mut tf = dev(&zone, &[n], &floats);
            let mut th = out::<f16>(&zone, &[n]);
            k.f32_to_f16(&mut tf, &mut th).unwrap();
            let mut want = vec![f16::ZERO; n];
            reference::f32_to_f16(&floats, &mut want);
            let got = th.to_vec().unwrap();
            for i in 0..n {
                let (g, w) = (got[i].to_f32(), want[i].to_f32());
                assert!(
                    (g - w).abs() <= w.abs() / 1024.0,
                    "f32_to_f16 {what}: {} -> {g} want {w}",
                    floats[i]
                );
            }
            let mut tf = out::<f32>(&zone, &[n]);
            k.f16_to_f32(&mut th, &mut tf).unwrap();
            let want: Vec<f32> = got.iter().map(|h| h.to_f32()).collect();
            assert_eq!(tf.to_vec().unwrap(), want, "f16_to_f32 is exact {what}");
        }
    }
}

/// NaN, infinities, signed zeros and the edges of the half range: the
/// device casts give the CPU's bits (NaN stays NaN with its sign; a
/// compiler that assumes no NaN must not fold the test away).
#[test]
fn casts_keep_special_values() {
    let floats: Vec<f32> = [
        0x7fc0_0000u32, // NaN
        0xffc0_0000,    // -NaN
        0x7f80_0001,    // a signalling NaN
        0xffc1_2345,    // -NaN with a payload
        0x7f80_0000,    // inf
        0xff80_0000,    // -inf
        0x8000_0000,    // -0
        0x0000_0000,
        0x3f80_0000, // 1
        0x7f7f_ffff, // the largest f32
    ]
    .iter()
    .map(|&b| f32::from_bits(b))
    .chain([65504.0, 65519.99, 65520.0, -70000.0, 0.5, 1.0 / 255.0])
    .collect();
    let n = floats.len();
    for zone in common::zones() {
        let k = zone.kernels();
        let what = format!("{:?}", zone.backend());
        let mut tf = dev(&zone, &[n], &floats);
        let mut th = out::<f16>(&zone, &[n]);
        k.f32_to_f16(&mut tf, &mut th).unwrap();
        let mut want = vec![f16::ZERO; n];
        reference::f32_to_f16(&floats, &mut want);
        let bits = |v: Vec<f16>| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
        let got = bits(th.to_vec().unwrap());
        assert_eq!(got, bits(want), "f32_to_f16 {what} of {floats:?}");
        assert_eq!(&got[..6], [0x7e00, 0xfe00, 0x7e00, 0xfe09, 0x7c00, 0xfc00]);

        let mut tb = out::<u8>(&zone, &[n]);
        k.f32_to_u8(&mut tf, &mut tb).unwrap();
        let mut want = vec![0u8; n];
        reference::f32_to_u8(&floats, &mut want);
        let got = tb.to_vec().unwrap();
        assert_eq!(got, want, "f32_to_u8 {what} of {floats:?}");
        assert_eq!(&got[..10], [0, 0, 0, 0, 255, 0, 0, 0, 255, 255]);
    }
}

#[test]
fn matmul_matches_the_reference() {
    let mut rng = Rng(5);
    for zone in common::zones() {
        for (m, kk, n) in [(1, 1, 1), (2, 3, 4), (17, 31, 15), (64, 48, 80)] {
            let a = rng.f32s(m * kk, -1.0, 1.0);
            let b = rng.f32s(kk * n, -1.0, 1.0);
            let (mut ta, mut tb) = (dev(&zone, &[m, kk], &a), dev(&zone, &[kk, n], &b));
            let mut tc = out::<f32>(&zone, &[m, n]);
            zone.kernels().matmul(&mut ta, &mut tb, &mut tc).unwrap();
            let want = reference::matmul(
                ArrayView2::from_shape((m, kk), &a).unwrap(),
                ArrayView2::from_shape((kk, n), &b).unwrap(),
            );
            close(
                &tc.to_vec().unwrap(),
                want.as_slice().unwrap(),
                1e-5,
                &format!("matmul {m}x{kk}x{n}"),
            );
        }
        // Inner dimensions that disagree, or a wrong output, are typed errors.
        let mut a = out::<f32>(&zone, &[2, 3]);
        let mut b = out::<f32>(&zone, &[4, 2]);
        let mut c = out::<f32>(&zone, &[2, 2]);
        let err = zone.kernels().matmul(&mut a, &mut b, &mut c).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        let mut b = out::<f32>(&zone, &[3, 2]);
        let mut c = out::<f32>(&zone, &[2, 3]);
        let err = zone.kernels().matmul(&mut a, &mut b, &mut c).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        let mut v = out::<f32>(&zone, &[6]);
        let err = zone.kernels().matmul(&mut v, &mut b, &mut c).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { op: "matmul", .. }),
            "{err}"
        );
    }
}

#[test]
fn image_kernels_match_the_reference() {
    let mut rng = Rng(1234);
    for zone in common::zones() {
        let k = zone.kernels();
        // Sizes below, at and past the 16 outputs a blur invocation writes
        // and the 8 × 4 block a Sobel one writes, with partial blocks at
        // every remainder of 4 rows and most of 8 and 16 columns, and lines
        // shorter and longer than the blur (radius 1 to 12), so that
        // invocations clamp at one edge, both edges or neither.
        let cases = [
            (1, 1, 1.5),
            (5, 7, 1.5),
            (33, 47, 1.5),
            (44, 44, 1.5),
            (24, 64, 0.8),
            (40, 50, 3.0),
            (20, 30, 0.3),
            (70, 9, 4.0),
            (41, 130, 4.0),
            (7, 13, 1.5),
        ];
        for (h, w, sigma) in cases {
            let what = format!("{:?} {h}x{w} sigma {sigma}", zone.backend());
            let rgba = rng.u8s(h * w * 4);
            let mut trgba = dev(&zone, &[h, w, 4], &rgba);
            let mut gray = out::<f32>(&zone, &[h, w]);
            k.grayscale(&mut trgba, &mut gray).unwrap();
            let want = reference::grayscale(ArrayView3::from_shape((h, w, 4), &rgba).unwrap());
            let g = gray.to_vec().unwrap();
            close(
                &g,
                want.as_slice().unwrap(),
                1e-5,
                &format!("grayscale {what}"),
            );

            let mut blurred = out::<f32>(&zone, &[h, w]);
            k.gaussian_blur(&mut gray, &mut blurred, sigma).unwrap();
            let gv = ArrayView2::from_shape((h, w), &g).unwrap();
            let want = reference::gaussian_blur(gv, sigma);
            close(
                &blurred.to_vec().unwrap(),
                want.as_slice().unwrap(),
                1e-5,
                &format!("blur {what}"),
            );

            let mut edges = out::<f32>(&zone, &[h, w]);
            k.sobel(&mut blurred, &mut edges).unwrap();
            let b = blurred.to_vec().unwrap();
            let want = reference::sobel(ArrayView2::from_shape((h, w), &b).unwrap());
            close(
                &edges.to_vec().unwrap(),
                want.as_slice().unwrap(),
                1e-5,
                &format!("sobel {what}"),
            );
        }
        let mut src = out::<f32>(&zone, &[4, 4]);
        let mut dst = out::<f32>(&zone, &[4, 4]);
        for sigma in [0.0, -1.0, f32::NAN, 22.0] {
            let err = k.gaussian_blur(&mut src, &mut dst, sigma).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidArgument {
                        op: "gaussian_blur",
                        ..
                    }
                ),
                "{sigma}: {err}"
            );
        }
        let mut rgb = out::<u8>(&zone, &[4, 4, 3]);
        let err = k.grayscale(&mut rgb, &mut dst).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    op: "grayscale",
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn kernels_take_arena_and_shared_tensors_and_chain_on_the_device() {
    for zone in common::zones() {
        let k = zone.kernels();
        let mut weights = dev(&zone, &[4], &[1.0f32, 2.0, 3.0, 4.0]).into_shared();
        let arena = zone.arena();
        let mut x = arena
            .from_slice([4], &[10.0f32, 20.0, 30.0, 40.0], Location::Device)
            .unwrap();
        let mut y = arena.empty::<f32>([4], Location::Device).unwrap();
        let before = zone.stats();
        k.mul(&mut x, &mut weights, &mut y).unwrap();
        let mut z = arena.empty::<f32>([4], Location::Device).unwrap();
        let between = zone.stats();
        k.scale(&mut y, 0.5, &mut z).unwrap();
        let after = zone.stats();
        // A kernel's output feeds the next one where it was written: on
        // the GPU nothing comes back to the host; on the CPU the inputs
        // placed "on the device" come to the host once, and the chained
        // step moves nothing.
        let moved = |a: &tensorzone::ZoneStats, b: &tensorzone::ZoneStats| {
            b.device_to_host.bytes + b.host_to_device.bytes
                - a.device_to_host.bytes
                - a.host_to_device.bytes
        };
        assert_eq!(moved(&between, &after), 0);
        if zone.wgpu_device().is_some() {
            assert_eq!(after.device_to_host.bytes, before.device_to_host.bytes);
        }
        assert_eq!(z.to_vec().unwrap(), [5.0, 20.0, 45.0, 80.0]);
        // Each kernel compiled once, however often it runs.
        let compiled = zone.pipelines_compiled();
        for _ in 0..3 {
            k.mul(&mut x, &mut weights, &mut y).unwrap();
        }
        assert_eq!(zone.pipelines_compiled(), compiled);
        if zone.wgpu_device().is_some() {
            assert!(compiled >= 2, "{compiled}");
        }
    }
}

#[test]
fn tensors_of_another_device_are_refused() {
    let a_zone = Zone::cpu();
    let b_zone = Zone::cpu();
    let mut a = dev(&a_zone, &[2], &[1.0f32, 2.0]);
    let mut b = dev(&b_zone, &[2], &[1.0f32, 2.0]);
    let mut o = out::<f32>(&a_zone, &[2]);
    let err = a_zone.kernels().add(&mut a, &mut b, &mut o).unwrap_err();
    assert_eq!(err, Error::ZoneMismatch);
    // A child zone shares its parent's device.
    let child = a_zone.child("kernels");
    let mut c = dev(&child, &[2], &[3.0f32, 4.0]);
    a_zone.kernels().add(&mut a, &mut c, &mut o).unwrap();
    assert_eq!(o.to_vec().unwrap(), [4.0, 6.0]);
}

/// The frame pipeline of `examples/frames.rs` (pinned upload → grayscale →
/// blur → Sobel → bytes), every temporary in one arena: the GPU's image is
/// the CPU's within one level of 255.
#[test]
fn the_frame_pipeline_gives_the_same_image_on_both_backends() {
    let (h, w) = (37, 53);
    // Smooth ramps with a few steps: magnitudes across the byte range.
    let rgba: Vec<u8> = (0..h * w * 4)
        .map(|i| {
            let (x, y) = ((i / 4) % w, (i / 4) / w);
            (x * 3 + y * 2 + if x % 16 < 8 { 40 } else { 0 }) as u8
        })
        .collect();
    let mut images = Vec::new();
    for zone in common::zones() {
        let k = zone.kernels();
        let arena = zone.arena();
        let mut pinned = zone.pinned::<u8>(h * w * 4).unwrap();
        pinned.write(0, &rgba).unwrap();
        let mut input = arena.empty::<u8>([h, w, 4], Location::Device).unwrap();
        input.upload_pinned(pinned).unwrap();
        let mut gray = arena.empty::<f32>([h, w], Location::Device).unwrap();
        let mut tmp = arena.empty::<f32>([h, w], Location::Device).unwrap();
        let mut blurred = arena.empty::<f32>([h, w], Location::Device).unwrap();
        let mut edges = arena.empty::<f32>([h, w], Location::Device).unwrap();
        let mut out = arena.empty::<u8>([h, w], Location::Device).unwrap();
        k.grayscale(&mut input, &mut gray).unwrap();
        k.gaussian_blur_via(&mut gray, &mut tmp, &mut blurred, 1.2)
            .unwrap();
        k.sobel(&mut blurred, &mut edges).unwrap();
        k.f32_to_u8(&mut edges, &mut out).unwrap();
        images.push(out.to_vec().unwrap());
    }
    let first = &images[0];
    let mid = first.iter().filter(|&&v| (10..245).contains(&v)).count();
    assert!(mid > first.len() / 4, "edges across the range: {mid}");
    for other in &images[1..] {
        for (i, (a, b)) in first.iter().zip(other).enumerate() {
            assert!(a.abs_diff(*b) <= 1, "pixel {i}: {a} against {b}");
        }
    }
}

/// Findings of a review, each a test that failed before its fix.
#[test]
fn fill_repeats_eight_byte_values_whole() {
    for zone in common::zones() {
        let mut f = out::<f64>(&zone, &[3]);
        zone.kernels().fill(&mut f, 1.5).unwrap();
        assert_eq!(f.to_vec().unwrap(), [1.5; 3]);
        let mut u = out::<u64>(&zone, &[5]);
        zone.kernels().fill(&mut u, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(u.to_vec().unwrap(), [0x1122_3344_5566_7788; 5]);
        let mut h = out::<u16>(&zone, &[3]);
        zone.kernels().fill(&mut h, 0xabcd).unwrap();
        assert_eq!(h.to_vec().unwrap(), [0xabcd; 3]);
    }
}

#[test]
fn two_blurs_of_the_same_radius_keep_their_own_weights() {
    for zone in common::zones() {
        let k = zone.kernels();
        let mut img = vec![0.0f32; 49];
        img[24] = 1.0;
        let mut src = dev(&zone, &[7, 7], &img);
        let view = ArrayView2::from_shape((7, 7), &img).unwrap();
        // Both radius 3 (ceil(3 sigma)).
        for sigma in [1.0f32, 0.8, 1.0] {
            let mut dst = out::<f32>(&zone, &[7, 7]);
            k.gaussian_blur(&mut src, &mut dst, sigma).unwrap();
            let want = reference::gaussian_blur(view, sigma);
            close(
                &dst.to_vec().unwrap(),
                want.as_slice().unwrap(),
                1e-5,
                &format!("sigma {sigma}"),
            );
        }
        let mut dst = out::<f32>(&zone, &[7, 7]);
        let err = k.gaussian_blur(&mut src, &mut dst, 1e-4).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
}

#[test]
fn two_handles_of_one_shared_tensor_can_be_both_inputs() {
    // The CPU backend read each input under the shared tensor's lock,
    // nested, and deadlocked; the GPU one must give the same answer.
    for zone in common::zones() {
        let s = dev(&zone, &[3], &[1.0f32, 2.0, 3.0]).into_shared();
        let (mut a, mut b) = (s.clone(), s.clone());
        let mut o = out::<f32>(&zone, &[3]);
        zone.kernels().mul(&mut a, &mut b, &mut o).unwrap();
        assert_eq!(o.to_vec().unwrap(), [1.0, 4.0, 9.0]);
    }
}

#[test]
fn f32_to_f16_saturates_to_infinity_like_the_reference() {
    for zone in common::zones() {
        let src = [65504.0f32, 65519.0, 65520.0, -70000.0, 1e9, -0.0];
        let mut s = dev(&zone, &[6], &src);
        let mut h = out::<f16>(&zone, &[6]);
        zone.kernels().f32_to_f16(&mut s, &mut h).unwrap();
        let mut want = [f16::ZERO; 6];
        reference::f32_to_f16(&src, &mut want);
        let got: Vec<u16> = h.to_vec().unwrap().iter().map(|v| v.to_bits()).collect();
        let want: Vec<u16> = want.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn a_tensor_over_the_binding_limit_is_a_typed_error_not_garbage() {
    let Some(zone) = common::gpu_zone_with(Zone::builder()) else {
        return;
    };
    let limit = zone
        .wgpu_device()
        .unwrap()
        .limits()
        .max_storage_buffer_binding_size as usize;
    if limit > 256 << 20 {
        eprintln!("skipping: the binding limit ({limit} bytes) is too large to test cheaply");
        return;
    }
    let n = limit / 4 + 1024;
    let mut big = Tensor::<f32>::empty(&zone, [n], Location::Device).unwrap();
    let err = zone.kernels().fill(&mut big, 2.0).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { op: "binding", .. }),
        "{err}"
    );
}

/// Kernels are batched into one submission: whatever else reaches the
/// queue afterwards (an upload, work of one's own through `binding`) must
/// still run after them.
#[test]
fn batched_kernels_stay_in_order_with_transfers_and_own_work() {
    for zone in common::zones() {
        let k = zone.kernels();
        let mut t = out::<u32>(&zone, &[300]);
        let mut o = out::<u32>(&zone, &[300]);
        k.fill(&mut t, 1).unwrap();
        // The upload comes after the fill, so the scale sees 2s.
        t.write_device(&[2; 300]).unwrap();
        k.scale(&mut t, 3, &mut o).unwrap();
        assert_eq!(o.to_vec().unwrap(), [6; 300]);

        let Some(_) = zone.wgpu_device() else {
            continue;
        };
        // Already on the device: taking its binding moves nothing, so
        // only the flush a binding makes puts the fill first.
        let mut doubled = dev(&zone, &[300], &[0u32; 300]);
        k.fill(&mut t, 7).unwrap();
        let wgsl = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;
            @group(0) @binding(1) var<storage, read_write> b: array<u32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if (g.x < 300u) { b[g.x] = a[g.x] * 2u; }
            }";
        let (ta, tb) = (t.binding().unwrap(), doubled.binding().unwrap());
        common::dispatch(
            &zone,
            wgsl,
            vec![
                wgpu::BindingResource::Buffer(ta),
                wgpu::BindingResource::Buffer(tb),
            ],
            5,
        );
        doubled.mark_device_written().unwrap();
        assert_eq!(doubled.to_vec().unwrap(), [14; 300]);
    }
}

/// Past what one dispatch dimension holds (65,535 workgroups of 16
/// invocations), the 2-D kernels continue along the dispatch's z: every
/// row and column past that limit is computed, and computed from its own
/// inputs (a pattern that repeats every 11 elements would show a row or
/// column read or written in the wrong place). Tall images fold rows,
/// wide ones columns.
#[test]
fn images_past_one_dispatch_dimension_are_computed_whole() {
    // A Sobel invocation covers 4 rows: 4.2M rows is past 65,535 × 16 × 4.
    const SOBEL_TALL: usize = 4_200_000;
    // Past 65,535 × 16 rows (the blur's row pass, matmul) or columns
    // (the blur's column pass, matmul).
    const LONG: usize = 1_100_000;
    let pattern = |n: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7) % 11) as f32).collect() };
    for zone in common::zones() {
        let k = zone.kernels();
        let b = zone.backend();

        let img = pattern(SOBEL_TALL * 2);
        let mut want = vec![0.0; img.len()];
        reference::sobel_into(&img, 2, &mut want);
        let mut src = dev(&zone, &[SOBEL_TALL, 2], &img);
        let mut dst = out::<f32>(&zone, &[SOBEL_TALL, 2]);
        k.sobel(&mut src, &mut dst).unwrap();
        close(&dst.to_vec().unwrap(), &want, 1e-6, &format!("{b:?} sobel"));
        drop((src, dst, img, want));

        let weights = reference::gaussian_weights(1.0);
        for (h, w) in [(LONG, 2), (2, LONG)] {
            let img = pattern(h * w);
            let (mut tmp, mut want) = (vec![0.0; img.len()], vec![0.0; img.len()]);
            reference::gaussian_blur_into(&img, w, weights.view(), &mut tmp, &mut want);
            let mut src = dev(&zone, &[h, w], &img);
            let mut dst = out::<f32>(&zone, &[h, w]);
            k.gaussian_blur(&mut src, &mut dst, 1.0).unwrap();
            let what = format!("{b:?} blur {h} x {w}");
            close(&dst.to_vec().unwrap(), &want, 1e-5, &what);
        }

        // Matmul over the same grid (one case: each runs 68,750
        // workgroups with barriers, seconds on lavapipe).
        let long = pattern(LONG);
        let want: Vec<f32> = long.iter().map(|v| v * 3.0).collect();
        let mut a = dev(&zone, &[1, 1], &[3.0f32]);
        let mut bt = dev(&zone, &[1, LONG], &long);
        let mut c = out::<f32>(&zone, &[1, LONG]);
        k.matmul(&mut a, &mut bt, &mut c).unwrap();
        assert_eq!(c.to_vec().unwrap(), want, "{b:?} matmul");
    }
}
