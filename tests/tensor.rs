//! Every public call of `Tensor`, `PinnedBuffer` and `Zone`, on every backend
//! this machine offers (CPU always, the GPU when wgpu finds an adapter).

mod common;

use common::{DEVICE_NEWER, DEVICE_ONLY, HOST_NEWER, HOST_ONLY, SYNCED};
use ndarray::{s, Array2, ArrayView2};
use tensorzone::*;

fn bytes_of<T: Element>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice::<T, u8>(v).to_vec()
}

/// Asserts bit-exact equality (NaN payloads and -0.0 included).
#[track_caller]
fn assert_bits<T: Element>(got: &[T], want: &[T], ctx: &str) {
    assert_eq!(got.len(), want.len(), "length: {ctx}");
    assert_eq!(bytes_of(got), bytes_of(want), "contents: {ctx}");
}

/// Deterministic pseudo-random bytes (splitmix64).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// `n` elements of `T` with arbitrary bit patterns (NaNs, infinities,
/// subnormals for the float types).
fn random<T: Element>(n: usize, seed: u64) -> Vec<T> {
    bytemuck::pod_collect_to_vec(&random_bytes(n * std::mem::size_of::<T>(), seed))
}

fn round_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn ctx<T: Element>(zone: &Zone, what: &str) -> String {
    format!("{what} {} on {:?}", T::DTYPE, zone.backend())
}

// ----- round trips ------------------------------------------------------------

/// Every constructor and read path, both locations, contents compared bit for bit.
fn round_trip<T: Element>(zone: &Zone, shape: &[usize], seed: u64) {
    let n: usize = shape.iter().product();
    let data = random::<T>(n, seed);
    let byte_len = (n * std::mem::size_of::<T>()) as u64;
    let c = ctx::<T>(zone, &format!("{shape:?}"));
    for loc in [Location::Host, Location::Device] {
        let c = format!("{c} {loc:?}");

        // from_slice
        let mut t = Tensor::from_slice(zone, shape, &data, loc).unwrap();
        assert_eq!(t.dims(), shape, "{c}");
        assert_eq!(t.shape().dims(), shape, "{c}");
        assert_eq!(t.len(), n, "{c}");
        assert!(!t.is_empty());
        assert_eq!(t.byte_len(), byte_len, "{c}");
        assert_eq!(t.dtype(), T::DTYPE, "{c}");
        assert!(t.zone().same_zone(zone));
        let expected_residency = match loc {
            Location::Host => HOST_ONLY,
            Location::Device => DEVICE_ONLY,
        };
        assert_eq!(t.residency(), expected_residency, "from_slice {c}");
        assert_bits(&t.to_vec().unwrap(), &data, &format!("from_slice {c}"));
        // force the bytes through the device and back
        t.to_device().unwrap();
        t.drop_host_copy().unwrap();
        assert_eq!(t.residency(), DEVICE_ONLY, "{c}");
        assert_bits(
            &t.to_vec().unwrap(),
            &data,
            &format!("from_slice via device {c}"),
        );
        let a = t.to_ndarray().unwrap();
        assert_eq!(a.shape(), shape, "{c}");
        assert_bits(a.as_slice().unwrap(), &data, &format!("to_ndarray {c}"));
        drop(t);

        // from_vec
        let mut t = Tensor::from_vec(zone, shape, data.clone(), loc).unwrap();
        let expected_residency = match loc {
            Location::Host => HOST_ONLY,
            Location::Device => SYNCED,
        };
        assert_eq!(t.residency(), expected_residency, "from_vec {c}");
        t.to_device().unwrap();
        t.drop_host_copy().unwrap();
        assert_bits(&t.to_vec().unwrap(), &data, &format!("from_vec {c}"));
        drop(t);

        // empty, then written on the device
        let mut t = Tensor::<T>::empty(zone, shape, loc).unwrap();
        assert!(t.residency().is_unwritten(), "{c}");
        t.write_device(&data).unwrap();
        assert_eq!(t.residency().device, CopyState::Current, "{c}");
        assert_bits(&t.to_vec().unwrap(), &data, &format!("write_device {c}"));
        // and overwritten on the host, then read through the device
        let other = random::<T>(n, seed ^ 0xABCD);
        t.write_host(&other).unwrap();
        t.to_device().unwrap();
        t.drop_host_copy().unwrap();
        assert_bits(&t.to_vec().unwrap(), &other, &format!("write_host {c}"));
        drop(t);

        // full
        let v = data[n / 2];
        let mut t = Tensor::full(zone, shape, v, loc).unwrap();
        t.to_device().unwrap();
        t.drop_host_copy().unwrap();
        assert_bits(&t.to_vec().unwrap(), &vec![v; n], &format!("full {c}"));
        drop(t);

        // zeros
        let mut t = Tensor::<T>::zeros(zone, shape, loc).unwrap();
        let expected_residency = match loc {
            Location::Host => HOST_ONLY,
            Location::Device => DEVICE_ONLY,
        };
        assert_eq!(t.residency(), expected_residency, "zeros {c}");
        assert_bits(
            &t.to_vec().unwrap(),
            &vec![T::zeroed(); n],
            &format!("zeros {c}"),
        );
        drop(t);

        // empty reads as zeros, even where a previous tensor left bytes
        let mut junk = Tensor::full(zone, shape, v, Location::Device).unwrap();
        junk.to_device().unwrap();
        drop(junk);
        let mut t = Tensor::<T>::empty(zone, shape, loc).unwrap();
        assert_bits(
            &t.to_vec().unwrap(),
            &vec![T::zeroed(); n],
            &format!("empty {c}"),
        );
        let mut t2 = Tensor::<T>::empty(zone, shape, loc).unwrap();
        t2.to_device().unwrap();
        t2.drop_host_copy().unwrap();
        assert_bits(
            &t2.to_vec().unwrap(),
            &vec![T::zeroed(); n],
            &format!("empty via device {c}"),
        );
    }
}

fn round_trip_type<T: Element>(zone: &Zone, seed: u64) {
    // Odd element counts give byte lengths that are not multiples of 4
    // for the 1- and 2-byte types, so the 4-byte padding of copies runs.
    for (i, shape) in [
        &[1usize][..],
        &[3],
        &[5],
        &[7],
        &[3, 5],
        &[2, 3, 4],
        &[1, 1, 1, 1, 1, 1, 1, 3],
        &[1000],
    ]
    .into_iter()
    .enumerate()
    {
        round_trip::<T>(zone, shape, seed + i as u64);
    }
}

#[test]
fn round_trip_every_element_type() {
    for zone in common::zones() {
        round_trip_type::<f32>(&zone, 1);
        round_trip_type::<f64>(&zone, 2);
        round_trip_type::<f16>(&zone, 3);
        round_trip_type::<bf16>(&zone, 4);
        round_trip_type::<i8>(&zone, 5);
        round_trip_type::<i16>(&zone, 6);
        round_trip_type::<i32>(&zone, 7);
        round_trip_type::<i64>(&zone, 8);
        round_trip_type::<u8>(&zone, 9);
        round_trip_type::<u16>(&zone, 10);
        round_trip_type::<u32>(&zone, 11);
        round_trip_type::<u64>(&zone, 12);
        let s = zone.stats();
        assert_eq!(s.tensors_live, 0);
        assert_eq!(s.device_live_bytes, 0);
        assert_eq!(s.host_live_bytes, 0);
    }
}

#[test]
fn special_values_survive_exactly() {
    for zone in common::zones() {
        let f = [
            0.0f32,
            -0.0,
            1.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7FA0_0001), // signalling NaN with payload
            f32::MIN_POSITIVE / 4.0,     // subnormal
            f32::MAX,
        ];
        let mut t = Tensor::from_slice(&zone, [f.len()], &f, Location::Device).unwrap();
        assert_bits(&t.to_vec().unwrap(), &f, "f32 specials");
        let h = [
            f16::from_f32(-0.0),
            f16::NAN,
            f16::INFINITY,
            f16::MIN_POSITIVE_SUBNORMAL,
            f16::MAX,
        ];
        let mut t = Tensor::from_slice(&zone, [5], &h, Location::Device).unwrap();
        assert_bits(&t.to_vec().unwrap(), &h, "f16 specials");
        let b = [bf16::from_f32(-2.5), bf16::NAN, bf16::NEG_INFINITY];
        let mut t = Tensor::from_slice(&zone, [3], &b, Location::Device).unwrap();
        assert_bits(&t.to_vec().unwrap(), &b, "bf16 specials");
        let i = [i64::MIN, -1, 0, 1, i64::MAX];
        let mut t = Tensor::from_slice(&zone, [5], &i, Location::Device).unwrap();
        assert_eq!(t.to_vec().unwrap(), i);
        let u = [u8::MAX, 0, 0x80];
        let mut t = Tensor::from_slice(&zone, [3], &u, Location::Device).unwrap();
        assert_eq!(t.to_vec().unwrap(), u);
    }
}

/// Reads `a[[i, j]]` from a row-major 4x6 vector.
fn expected_layout<T: Element>(
    v: &[T],
    rows: usize,
    cols: usize,
    at: impl Fn(usize, usize) -> (usize, usize),
) -> Vec<T> {
    let mut out = Vec::new();
    for i in 0..rows {
        for j in 0..cols {
            let (r, c) = at(i, j);
            out.push(v[r * 6 + c]);
        }
    }
    out
}

fn ndarray_layouts<T: Element>(zone: &Zone, seed: u64) {
    let v = random::<T>(24, seed);
    let a = Array2::from_shape_vec((4, 6), v.clone()).unwrap();
    type Case<'a, T> = (&'a str, ArrayView2<'a, T>, [usize; 2], Vec<T>);
    let cases: Vec<Case<T>> = vec![
        ("standard", a.view(), [4, 6], v.clone()),
        (
            "transposed",
            a.t(),
            [6, 4],
            expected_layout(&v, 6, 4, |i, j| (j, i)),
        ),
        (
            "every other column",
            a.slice(s![.., ..;2]),
            [4, 3],
            expected_layout(&v, 4, 3, |i, j| (i, 2 * j)),
        ),
        (
            "rows reversed",
            a.slice(s![..;-1, ..]),
            [4, 6],
            expected_layout(&v, 4, 6, |i, j| (3 - i, j)),
        ),
        (
            "both reversed, step 3",
            a.slice(s![..;-1, ..;-3]),
            [4, 2],
            expected_layout(&v, 4, 2, |i, j| (3 - i, 5 - 3 * j)),
        ),
    ];
    for (name, view, dims, want) in cases {
        for loc in [Location::Host, Location::Device] {
            let c = ctx::<T>(zone, &format!("from_ndarray {name} {loc:?}"));
            let mut t = Tensor::from_ndarray(zone, &view, loc).unwrap();
            assert_eq!(t.dims(), &dims, "{c}");
            t.to_device().unwrap();
            t.drop_host_copy().unwrap();
            assert_bits(&t.to_vec().unwrap(), &want, &c);
            let back = t.to_ndarray().unwrap();
            assert_eq!(back.shape(), &dims, "{c}");
            assert_bits(&back.iter().copied().collect::<Vec<_>>(), &want, &c);
        }
    }
    // an owned dynamic-rank array
    let d = a.clone().into_dyn();
    let mut t = Tensor::from_ndarray(zone, &d, Location::Device).unwrap();
    assert_eq!(t.dims(), &[4, 6]);
    assert_bits(&t.to_vec().unwrap(), &v, "owned ArrayD");
}

#[test]
fn from_ndarray_any_layout() {
    for zone in common::zones() {
        ndarray_layouts::<f32>(&zone, 100);
        ndarray_layouts::<f64>(&zone, 101);
        ndarray_layouts::<f16>(&zone, 102);
        ndarray_layouts::<bf16>(&zone, 103);
        ndarray_layouts::<i8>(&zone, 104);
        ndarray_layouts::<u8>(&zone, 105);
        ndarray_layouts::<i16>(&zone, 106);
        ndarray_layouts::<u16>(&zone, 107);
        ndarray_layouts::<i32>(&zone, 108);
        ndarray_layouts::<u32>(&zone, 109);
        ndarray_layouts::<i64>(&zone, 110);
        ndarray_layouts::<u64>(&zone, 111);
    }
}

#[test]
fn odd_byte_lengths_do_not_touch_neighbours() {
    for zone in common::zones() {
        // Small tensors share a slab; writes padded to 4 bytes must stay
        // inside each tensor's own range.
        let mut ts: Vec<Tensor<u8>> = (0..8u8)
            .map(|i| Tensor::from_slice(&zone, [3], &[i, i, i], Location::Device).unwrap())
            .collect();
        let mut hs: Vec<Tensor<f16>> = (0..8u8)
            .map(|i| {
                Tensor::full(&zone, [5], f16::from_f32(f32::from(i)), Location::Device).unwrap()
            })
            .collect();
        for (i, t) in ts.iter_mut().enumerate().step_by(2) {
            let b = 100 + i as u8;
            t.write_device(&[b, b + 1, b + 2]).unwrap();
        }
        for (i, t) in hs.iter_mut().enumerate().step_by(2) {
            t.write_device(&[f16::from_f32(-(i as f32)); 5]).unwrap();
        }
        for (i, t) in ts.iter_mut().enumerate() {
            let b = i as u8;
            let want = if i % 2 == 0 {
                [100 + b, 101 + b, 102 + b]
            } else {
                [b, b, b]
            };
            assert_eq!(
                t.to_vec().unwrap(),
                want,
                "u8 tensor {i} on {:?}",
                zone.backend()
            );
        }
        for (i, t) in hs.iter_mut().enumerate() {
            let want = if i % 2 == 0 { -(i as f32) } else { i as f32 };
            assert_bits(
                &t.to_vec().unwrap(),
                &[f16::from_f32(want); 5],
                &format!("f16 tensor {i} on {:?}", zone.backend()),
            );
        }
        let s = zone.stats();
        assert_eq!(s.device_live_bytes, 16 * zone.info().alignment);
    }
}

#[test]
fn large_tensors_round_trip() {
    for zone in common::zones() {
        // 6 MiB + 3 elements: served from a 32 MiB slab (a quarter is the limit).
        let n = (6 << 20) / 4 + 3;
        let data: Vec<u32> = (0..n as u32)
            .map(|i| i.wrapping_mul(2_654_435_761) ^ (i >> 7))
            .collect();
        let before = zone.stats();
        let mut t = Tensor::from_slice(&zone, [n], &data, Location::Device).unwrap();
        let s = zone.stats();
        assert_eq!(s.device_dedicated_blocks, before.device_dedicated_blocks);
        assert_eq!(
            s.host_to_device.bytes - before.host_to_device.bytes,
            t.byte_len()
        );
        assert!(
            t.to_vec().unwrap() == data,
            "6 MiB contents on {:?}",
            zone.backend()
        );
        assert_eq!(
            zone.stats().device_to_host.bytes - before.device_to_host.bytes,
            t.byte_len()
        );
        drop(t);

        // 10 MiB + 3 bytes of u8: over a quarter slab, so a dedicated block.
        let n: usize = (10 << 20) + 3;
        let data: Vec<u8> = (0..n)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
            .collect();
        let before = zone.stats();
        let mut t = Tensor::from_slice(&zone, [n], &data, Location::Device).unwrap();
        let s = zone.stats();
        assert_eq!(
            s.device_dedicated_blocks,
            before.device_dedicated_blocks + 1
        );
        assert!(s.device_live_bytes >= before.device_live_bytes + n as u64);
        assert!(
            t.to_vec().unwrap() == data,
            "10 MiB contents on {:?}",
            zone.backend()
        );
        // a second copy through device-to-device, then back
        let mut c = t.try_clone().unwrap();
        t.write_device(&vec![0u8; n]).unwrap();
        assert!(
            c.to_vec().unwrap() == data,
            "10 MiB clone on {:?}",
            zone.backend()
        );
        assert!(t.to_vec().unwrap().iter().all(|&b| b == 0));
    }
}

// ----- residency ----------------------------------------------------------------

#[test]
fn residency_transitions() {
    for zone in common::zones() {
        let b = zone.backend();
        let mut t = Tensor::from_slice(&zone, [2, 2], &[1i32, 2, 3, 4], Location::Host).unwrap();
        assert_eq!(t.residency(), HOST_ONLY, "create on host {b:?}");
        assert!(!t.residency().is_unwritten());
        assert!(!t.residency().is_synced());

        t.to_device().unwrap();
        assert_eq!(t.residency(), SYNCED, "to_device {b:?}");
        assert!(t.residency().is_synced());

        t.write_host(&[5, 6, 7, 8]).unwrap();
        assert_eq!(t.residency(), HOST_NEWER, "write_host {b:?}");
        t.to_device().unwrap();
        assert_eq!(t.residency(), SYNCED);

        t.as_mut_slice().unwrap()[0] = 50;
        assert_eq!(t.residency(), HOST_NEWER, "as_mut_slice {b:?}");
        t.to_device().unwrap();

        t.write_device(&[9, 10, 11, 12]).unwrap();
        assert_eq!(t.residency(), DEVICE_NEWER, "write_device {b:?}");

        t.to_host().unwrap();
        assert_eq!(t.residency(), SYNCED, "to_host {b:?}");
        assert_eq!(t.as_slice().unwrap(), &[9, 10, 11, 12]);

        t.write_device(&[13, 14, 15, 16]).unwrap();
        assert_eq!(t.to_vec().unwrap(), [13, 14, 15, 16]);
        assert_eq!(t.residency(), SYNCED, "to_vec {b:?}");

        t.write_device(&[17, 18, 19, 20]).unwrap();
        assert_eq!(
            t.view()
                .unwrap()
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap(),
            ndarray::array![[17, 18], [19, 20]]
        );
        assert_eq!(t.residency(), SYNCED, "view {b:?}");

        t.view_mut().unwrap()[[1, 0]] = 190;
        assert_eq!(t.residency(), HOST_NEWER, "view_mut {b:?}");
        t.to_device().unwrap();
        t.drop_host_copy().unwrap();
        assert_eq!(t.to_vec().unwrap(), [17, 18, 190, 20]);

        t.mark_device_written().unwrap();
        assert_eq!(t.residency(), DEVICE_NEWER, "mark_device_written {b:?}");
        assert_eq!(t.to_vec().unwrap(), [17, 18, 190, 20]);

        t.drop_host_copy().unwrap();
        assert_eq!(t.residency(), DEVICE_ONLY, "drop_host_copy {b:?}");
        t.drop_host_copy().unwrap();
        assert_eq!(t.residency(), DEVICE_ONLY, "drop_host_copy twice {b:?}");

        t.drop_device_copy().unwrap();
        assert_eq!(t.residency(), HOST_ONLY, "drop_device_copy {b:?}");
        assert_eq!(t.to_vec().unwrap(), [17, 18, 190, 20]);
        t.drop_device_copy().unwrap();
        assert_eq!(t.residency(), HOST_ONLY, "drop_device_copy twice {b:?}");

        // drop_host_copy of a host-only tensor uploads first
        let mut h = Tensor::from_slice(&zone, [3], &[1u16, 2, 3], Location::Host).unwrap();
        h.drop_host_copy().unwrap();
        assert_eq!(h.residency(), DEVICE_ONLY);
        assert_eq!(h.to_vec().unwrap(), [1, 2, 3]);

        // empty: unwritten on either side
        let e = Tensor::<f32>::empty(&zone, [4], Location::Host).unwrap();
        assert_eq!(
            e.residency(),
            Residency {
                host: CopyState::Stale,
                device: CopyState::Absent
            },
            "empty host {b:?}"
        );
        assert!(e.residency().is_unwritten());
        assert!(!e.residency().is_synced());
        let mut e = Tensor::<f32>::empty(&zone, [4], Location::Device).unwrap();
        assert_eq!(
            e.residency(),
            Residency {
                host: CopyState::Absent,
                device: CopyState::Stale
            },
            "empty device {b:?}"
        );
        assert!(e.residency().is_unwritten());
        e.to_device().unwrap();
        assert_eq!(e.residency(), DEVICE_ONLY, "empty then to_device {b:?}");
        assert_eq!(e.to_vec().unwrap(), [0.0; 4]);
        let mut e = Tensor::<f32>::empty(&zone, [4], Location::Device).unwrap();
        assert_eq!(e.to_vec().unwrap(), [0.0; 4]);
        assert_eq!(e.residency(), HOST_NEWER, "empty device then read {b:?}");
        let mut e = Tensor::<f32>::empty(&zone, [4], Location::Host).unwrap();
        e.to_host().unwrap();
        assert_eq!(e.residency(), HOST_ONLY, "empty host then to_host {b:?}");

        // copy_from
        let mut src = Tensor::from_slice(&zone, [3], &[7u8, 8, 9], Location::Host).unwrap();
        let mut dst = Tensor::<u8>::zeros(&zone, [3], Location::Host).unwrap();
        dst.copy_from(&mut src).unwrap();
        assert_eq!(src.residency(), SYNCED, "copy_from source {b:?}");
        assert_eq!(dst.residency(), DEVICE_NEWER, "copy_from destination {b:?}");
        assert_eq!(dst.to_vec().unwrap(), [7, 8, 9]);
        let mut dst2 = Tensor::<u8>::empty(&zone, [3], Location::Device).unwrap();
        dst2.copy_from(&mut src).unwrap();
        assert_eq!(dst2.residency(), DEVICE_ONLY, "copy_from into empty {b:?}");

        // try_clone
        let mut hc = src.try_clone().unwrap(); // src is synced: device copy used
        assert_eq!(hc.residency(), DEVICE_ONLY, "try_clone of synced {b:?}");
        assert_eq!(hc.to_vec().unwrap(), [7, 8, 9]);
        let mut ho = Tensor::from_slice(&zone, [2], &[1u64, 2], Location::Host).unwrap();
        let mut hoc = ho.try_clone().unwrap();
        assert_eq!(hoc.residency(), HOST_ONLY, "try_clone of host-only {b:?}");
        assert_eq!(hoc.to_vec().unwrap(), [1, 2]);
        let mut un = Tensor::<u64>::empty(&zone, [2], Location::Device).unwrap();
        let mut unc = un.try_clone().unwrap();
        assert!(
            unc.residency().is_unwritten(),
            "try_clone of unwritten {b:?}"
        );
        assert_eq!(unc.to_vec().unwrap(), [0, 0]);
    }
}

// ----- transfers --------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct Moved {
    h2d: Transfers,
    d2h: Transfers,
    d2d: Transfers,
}

fn moved(before: &ZoneStats, zone: &Zone) -> Moved {
    let s = zone.stats();
    let d = |a: Transfers, b: Transfers| Transfers {
        bytes: a.bytes - b.bytes,
        calls: a.calls - b.calls,
    };
    Moved {
        h2d: d(s.host_to_device, before.host_to_device),
        d2h: d(s.device_to_host, before.device_to_host),
        d2d: d(s.device_to_device, before.device_to_device),
    }
}

fn tr(bytes: u64, calls: u64) -> Transfers {
    Transfers { bytes, calls }
}

const NONE: Transfers = Transfers { bytes: 0, calls: 0 };

#[test]
fn transfers_are_lazy_and_counted_once() {
    for zone in common::zones() {
        let b = zone.backend();
        let data: Vec<u16> = (0..1001).collect(); // 2002 bytes: not a multiple of 4
        let len = 2002;
        let s0 = zone.stats();
        let mut t = Tensor::from_slice(&zone, [1001], &data, Location::Host).unwrap();
        assert_eq!(
            moved(&s0, &zone),
            Moved {
                h2d: NONE,
                d2h: NONE,
                d2d: NONE
            },
            "host create {b:?}"
        );

        t.to_device().unwrap();
        t.to_device().unwrap();
        assert_eq!(
            moved(&s0, &zone).h2d,
            tr(len, 1),
            "to_device twice uploads once {b:?}"
        );
        assert_eq!(t.to_vec().unwrap(), data);
        assert_eq!(
            moved(&s0, &zone).d2h,
            NONE,
            "host read of a synced tensor {b:?}"
        );

        let other: Vec<u16> = (0..1001).rev().collect();
        t.write_device(&other).unwrap();
        assert_eq!(moved(&s0, &zone).h2d, tr(2 * len, 2), "write_device {b:?}");
        assert_eq!(t.to_vec().unwrap(), other);
        assert_eq!(
            moved(&s0, &zone).d2h,
            tr(len, 1),
            "read after device write {b:?}"
        );
        assert_eq!(t.to_vec().unwrap(), other);
        assert_eq!(t.as_slice().unwrap(), &other[..]);
        let _ = t.view().unwrap();
        t.to_host().unwrap();
        assert_eq!(
            moved(&s0, &zone).d2h,
            tr(len, 1),
            "second read moves nothing {b:?}"
        );

        t.write_host(&data).unwrap();
        assert_eq!(
            moved(&s0, &zone).h2d,
            tr(2 * len, 2),
            "write_host moves nothing {b:?}"
        );
        t.to_device().unwrap();
        t.to_device().unwrap();
        assert_eq!(
            moved(&s0, &zone).h2d,
            tr(3 * len, 3),
            "upload after host write {b:?}"
        );

        t.mark_device_written().unwrap();
        t.to_vec().unwrap();
        t.to_vec().unwrap();
        assert_eq!(
            moved(&s0, &zone).d2h,
            tr(2 * len, 2),
            "read after mark_device_written {b:?}"
        );

        // zeros and empty move no data
        let s1 = zone.stats();
        let mut z = Tensor::<u16>::zeros(&zone, [1001], Location::Device).unwrap();
        let mut e = Tensor::<u16>::empty(&zone, [1001], Location::Device).unwrap();
        let mut eh = Tensor::<u16>::empty(&zone, [1001], Location::Host).unwrap();
        e.to_device().unwrap();
        eh.to_device().unwrap();
        assert_eq!(
            moved(&s1, &zone),
            Moved {
                h2d: NONE,
                d2h: NONE,
                d2d: NONE
            },
            "zeros/empty {b:?}"
        );
        assert_eq!(z.to_vec().unwrap(), vec![0; 1001]);
        assert_eq!(
            moved(&s1, &zone).d2h,
            tr(len, 1),
            "zeros read from the device {b:?}"
        );

        // full on the device: one upload
        let s2 = zone.stats();
        let mut f = Tensor::full(&zone, [3], 7u8, Location::Device).unwrap();
        assert_eq!(moved(&s2, &zone).h2d, tr(3, 1), "full {b:?}");
        assert_eq!(f.to_vec().unwrap(), [7, 7, 7]);
        assert_eq!(
            moved(&s2, &zone).d2h,
            NONE,
            "full keeps its host copy {b:?}"
        );

        // drop_device_copy downloads once when the device is newer
        let s3 = zone.stats();
        let mut d = Tensor::from_slice(&zone, [3], &[1u8, 2, 3], Location::Device).unwrap();
        d.drop_device_copy().unwrap();
        assert_eq!(
            moved(&s3, &zone),
            Moved {
                h2d: tr(3, 1),
                d2h: tr(3, 1),
                d2d: NONE
            }
        );
        assert_eq!(d.to_vec().unwrap(), [1, 2, 3]);
        assert_eq!(moved(&s3, &zone).d2h, tr(3, 1));
    }
}

// ----- pools --------------------------------------------------------------------------

#[test]
fn freed_device_memory_is_reused() {
    for zone in common::zones() {
        let b = zone.backend();
        let align = zone.info().alignment;
        let t = Tensor::<u8>::empty(&zone, [1000], Location::Device).unwrap();
        assert_eq!(
            zone.stats().device_live_bytes,
            round_up(1000, align),
            "{b:?}"
        );
        drop(t);
        assert_eq!(
            zone.stats().device_live_bytes,
            0,
            "drop returns storage {b:?}"
        );
        let s0 = zone.stats();
        let t = Tensor::<u8>::empty(&zone, [1000], Location::Device).unwrap();
        let s1 = zone.stats();
        assert_eq!(s1.device_blocks_created, s0.device_blocks_created, "{b:?}");
        assert_eq!(s1.pool_hits, s0.pool_hits + 1, "{b:?}");
        assert_eq!(s1.pool_misses, s0.pool_misses, "{b:?}");
        assert_eq!(s1.device_allocations, s0.device_allocations + 1, "{b:?}");
        drop(t);
        assert_eq!(zone.stats().device_frees, s1.device_frees + 1);
        assert_eq!(zone.stats().device_live_bytes, 0);
    }
}

#[test]
fn alloc_free_loop_creates_no_blocks_after_warm_up() {
    for zone in common::zones() {
        let b = zone.backend();
        let sizes = [256usize, 64 << 10, 4 << 20, 10 << 20];
        // warm-up: the most the loop holds at once, two of every size
        let warm: Vec<Tensor<u8>> = sizes
            .iter()
            .chain(&sizes)
            .map(|&n| Tensor::<u8>::empty(&zone, [n], Location::Device).unwrap())
            .collect();
        drop(warm);
        let s0 = zone.stats();
        assert_eq!(s0.device_live_bytes, 0);
        for i in 0..1000 {
            let n = sizes[i % sizes.len()];
            let a = Tensor::<u8>::empty(&zone, [n], Location::Device).unwrap();
            let c = Tensor::<u32>::empty(&zone, [64], Location::Device).unwrap();
            if i % 7 == 0 {
                let all: Vec<Tensor<u8>> = sizes
                    .iter()
                    .map(|&n| Tensor::<u8>::empty(&zone, [n], Location::Device).unwrap())
                    .collect();
                drop(all);
            }
            drop(a);
            drop(c);
        }
        let s1 = zone.stats();
        assert_eq!(s1.device_blocks_created, s0.device_blocks_created, "{b:?}");
        assert_eq!(s1.device_reserved_bytes, s0.device_reserved_bytes, "{b:?}");
        assert_eq!(s1.pool_misses, s0.pool_misses, "{b:?}");
        assert!(s1.pool_hits >= s0.pool_hits + 2000, "{b:?}");
        assert_eq!(s1.device_live_bytes, 0, "{b:?}");
        assert_eq!(s1.device_allocations - s1.device_frees, 0, "{b:?}");
        assert_eq!(s1.tensors_live, 0, "{b:?}");
    }
}

#[test]
fn trim_releases_cached_blocks() {
    for zone in common::zones() {
        let b = zone.backend();
        let keep = Tensor::<u8>::empty(&zone, [100], Location::Device).unwrap();
        let big = Tensor::<u8>::empty(&zone, [12 << 20], Location::Device).unwrap();
        drop(big);
        let s = zone.stats();
        assert_eq!(s.device_slabs, 1, "{b:?}");
        assert_eq!(s.device_dedicated_blocks, 1, "{b:?}");
        check_consistent(&s);
        // the slab holds a live tensor, so only the dedicated block goes
        let released = zone.trim();
        assert_eq!(released, 12 << 20, "trim with a live slab {b:?}");
        let s = zone.stats();
        assert_eq!(s.device_dedicated_blocks, 0, "{b:?}");
        assert_eq!(s.device_slabs, 1, "{b:?}");
        assert_eq!(s.device_reserved_bytes, 32 << 20, "{b:?}");
        drop(keep);
        let s = zone.stats();
        assert_eq!(s.device_cached_bytes, s.device_reserved_bytes);
        let released = zone.trim();
        assert_eq!(
            released,
            s.device_cached_bytes + s.staging_reserved_bytes,
            "{b:?}"
        );
        let s = zone.stats();
        assert_eq!(s.device_reserved_bytes, 0, "{b:?}");
        assert_eq!(s.device_cached_bytes, 0, "{b:?}");
        assert_eq!(s.device_slabs, 0, "{b:?}");
        assert_eq!(s.staging_reserved_bytes, 0, "{b:?}");
        assert_eq!(zone.trim(), 0, "second trim {b:?}");
        // still usable: a new block is made
        let created = s.device_blocks_created;
        let mut t = Tensor::from_slice(&zone, [2], &[1u32, 2], Location::Device).unwrap();
        assert_eq!(t.to_vec().unwrap(), [1, 2]);
        assert_eq!(zone.stats().device_blocks_created, created + 1);
    }
}

#[track_caller]
fn check_consistent(s: &ZoneStats) {
    assert_eq!(
        s.device_cached_bytes,
        s.device_reserved_bytes - s.device_live_bytes,
        "{s:?}"
    );
    assert!(s.staging_in_use_bytes <= s.staging_reserved_bytes, "{s:?}");
}

#[test]
fn trim_releases_staging_after_synchronize() {
    for zone in common::zones() {
        let b = zone.backend();
        let mut t = Tensor::from_slice(&zone, [4], &[1u32, 2, 3, 4], Location::Device).unwrap();
        assert_eq!(t.to_vec().unwrap(), [1, 2, 3, 4]);
        drop(t);
        zone.synchronize().unwrap();
        let s = zone.stats();
        let released = zone.trim();
        assert_eq!(
            released,
            s.device_reserved_bytes + s.staging_reserved_bytes,
            "{b:?}"
        );
        let s = zone.stats();
        assert_eq!(s.device_reserved_bytes, 0, "{b:?}");
        assert_eq!(s.staging_reserved_bytes, 0, "{b:?}");
        assert_eq!(s.staging_in_use_bytes, 0, "{b:?}");
    }
}

// ----- device to device ----------------------------------------------------------------

#[test]
fn device_to_device_copies() {
    // 1 MiB slabs: requests over 256 KiB get their own block.
    for zone in common::zones_with(Zone::builder().slab_size(1 << 20)) {
        let b = zone.backend();
        // two small tensors in one slab (on the GPU: through a scratch buffer)
        let a_data = random::<f16>(5, 200);
        let mut a = Tensor::from_slice(&zone, [5], &a_data, Location::Device).unwrap();
        let mut d =
            Tensor::from_slice(&zone, [5], &random::<f16>(5, 201), Location::Device).unwrap();
        assert_eq!(zone.stats().device_slabs, 1);
        let s0 = zone.stats();
        d.copy_from(&mut a).unwrap();
        assert_eq!(
            moved(&s0, &zone),
            Moved {
                h2d: NONE,
                d2h: NONE,
                d2d: tr(10, 1)
            },
            "{b:?}"
        );
        assert_eq!(d.residency(), DEVICE_ONLY);
        assert_bits(
            &d.to_vec().unwrap(),
            &a_data,
            &format!("same-slab copy {b:?}"),
        );
        assert_bits(
            &a.to_vec().unwrap(),
            &a_data,
            &format!("source unchanged {b:?}"),
        );
        // copy the other way, over a written destination
        let new = random::<f16>(5, 202);
        d.write_device(&new).unwrap();
        a.copy_from(&mut d).unwrap();
        assert_bits(
            &a.to_vec().unwrap(),
            &new,
            &format!("same-slab copy back {b:?}"),
        );

        // a host-current source is uploaded first
        let mut h = Tensor::from_slice(&zone, [5], &a_data, Location::Host).unwrap();
        let s1 = zone.stats();
        d.copy_from(&mut h).unwrap();
        assert_eq!(
            moved(&s1, &zone),
            Moved {
                h2d: tr(10, 1),
                d2h: NONE,
                d2d: tr(10, 1)
            },
            "copy from a host tensor {b:?}"
        );
        assert_bits(
            &d.to_vec().unwrap(),
            &a_data,
            &format!("copy from host tensor {b:?}"),
        );

        // two dedicated blocks
        let n = 100_003usize; // 400 012 bytes
        let big = random::<u32>(n, 203);
        let mut x = Tensor::from_slice(&zone, [n], &big, Location::Device).unwrap();
        let mut y = Tensor::<u32>::empty(&zone, [n], Location::Device).unwrap();
        assert_eq!(zone.stats().device_dedicated_blocks, 2, "{b:?}");
        let s2 = zone.stats();
        y.copy_from(&mut x).unwrap();
        assert_eq!(moved(&s2, &zone).d2d, tr(400_012, 1), "{b:?}");
        assert!(y.to_vec().unwrap() == big, "dedicated copy {b:?}");

        // try_clone of a device-current tensor: one device copy, independent storage
        let s3 = zone.stats();
        let mut c = a.try_clone().unwrap();
        assert_eq!(moved(&s3, &zone).d2d, tr(10, 1), "try_clone {b:?}");
        assert_eq!(moved(&s3, &zone).h2d, NONE);
        assert_eq!(c.residency(), DEVICE_ONLY);
        c.write_device(&a_data).unwrap();
        assert_bits(
            &a.to_vec().unwrap(),
            &new,
            &format!("original after clone write {b:?}"),
        );
        assert_bits(&c.to_vec().unwrap(), &a_data, &format!("clone {b:?}"));

        // try_clone of a host-only tensor moves nothing
        let s4 = zone.stats();
        let mut hh = Tensor::from_slice(&zone, [3], &[1i8, -2, 3], Location::Host).unwrap();
        let mut hhc = hh.try_clone().unwrap();
        assert_eq!(
            moved(&s4, &zone),
            Moved {
                h2d: NONE,
                d2h: NONE,
                d2d: NONE
            },
            "{b:?}"
        );
        assert_eq!(hhc.to_vec().unwrap(), [1, -2, 3]);
        hhc.write_host(&[0, 0, 0]).unwrap();
        assert_eq!(hh.to_vec().unwrap(), [1, -2, 3]);
        assert_eq!(hhc.residency(), HOST_ONLY);
        assert_eq!(hh.residency(), HOST_ONLY);
    }
}

// ----- pinned buffers -------------------------------------------------------------------

#[test]
fn pinned_buffers_upload_exact_contents() {
    for zone in common::zones() {
        let b = zone.backend();
        // write in pieces
        let data = random::<u32>(1000, 300);
        let mut p = zone.pinned::<u32>(1000).unwrap();
        assert_eq!(p.len(), 1000);
        assert!(!p.is_empty());
        assert!(p.zone().same_zone(&zone));
        p.write(0, &data[..333]).unwrap();
        p.write(333, &data[333..999]).unwrap();
        p.write(999, &data[999..]).unwrap();
        let s0 = zone.stats();
        let mut t = Tensor::from_pinned(&zone, [10, 100], p).unwrap();
        assert_eq!(moved(&s0, &zone).h2d, tr(4000, 1), "from_pinned {b:?}");
        assert_eq!(t.residency(), DEVICE_ONLY);
        assert_eq!(t.dims(), &[10, 100]);
        assert!(t.to_vec().unwrap() == data, "from_pinned {b:?}");

        // with_bytes: fill, then slices and split_at
        let mut p = zone.pinned::<u16>(5).unwrap(); // 10 bytes
        let len = p
            .with_bytes(|mut w| {
                let n = w.len();
                w.fill(0xAA);
                w.slice(2..4).copy_from_slice(&[1, 2]);
                let (_, mut tail) = w.split_at(8);
                tail.copy_from_slice(&[3, 4]);
                n
            })
            .unwrap();
        assert_eq!(len, 10, "with_bytes length {b:?}");
        let mut t = Tensor::<u16>::empty(&zone, [5], Location::Device).unwrap();
        t.upload_pinned(p).unwrap();
        assert_eq!(t.residency(), DEVICE_ONLY);
        assert_eq!(
            t.to_vec().unwrap(),
            [
                0xAAAA,
                u16::from_le_bytes([1, 2]),
                0xAAAA,
                0xAAAA,
                u16::from_le_bytes([3, 4])
            ],
            "with_bytes {b:?}"
        );

        // write at an odd element offset into odd-sized f16 and u8 buffers
        let h = random::<f16>(5, 301);
        let mut p = zone.pinned::<f16>(5).unwrap();
        p.write(3, &h[3..]).unwrap();
        p.write(0, &h[..3]).unwrap();
        let mut t = Tensor::from_pinned(&zone, [5], p).unwrap();
        assert_bits(&t.to_vec().unwrap(), &h, &format!("pinned f16 {b:?}"));
        let mut p = zone.pinned::<u8>(3).unwrap();
        p.write(1, &[20, 30]).unwrap();
        p.write(0, &[10]).unwrap();
        let mut t = Tensor::from_pinned(&zone, [3], p).unwrap();
        assert_eq!(t.to_vec().unwrap(), [10, 20, 30], "pinned u8 {b:?}");

        // upload_pinned over a host-current tensor makes the host stale
        let mut t = Tensor::from_slice(&zone, [3], &[1u8, 1, 1], Location::Host).unwrap();
        let mut p = zone.pinned::<u8>(3).unwrap();
        p.write(0, &[4, 5, 6]).unwrap();
        t.upload_pinned(p).unwrap();
        assert_eq!(t.residency(), DEVICE_NEWER);
        assert_eq!(t.to_vec().unwrap(), [4, 5, 6]);

        // a large pinned buffer (bigger than the smallest staging size)
        let n = (3 << 20) + 1;
        let big: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let mut p = zone.pinned::<u8>(n).unwrap();
        p.with_bytes(|mut w| w.copy_from_slice(&big)).unwrap();
        let mut t = Tensor::from_pinned(&zone, [n], p).unwrap();
        assert!(t.to_vec().unwrap() == big, "large pinned {b:?}");
    }
}

#[test]
fn pinned_staging_buffers_are_reused() {
    for zone in common::zones() {
        let b = zone.backend();
        let mut t = Tensor::<f32>::empty(&zone, [4096], Location::Device).unwrap();
        let mut small = Tensor::<u8>::empty(&zone, [7], Location::Device).unwrap();
        for i in 0..3 {
            let mut p = zone.pinned::<f32>(4096).unwrap();
            p.write(0, &vec![i as f32; 4096]).unwrap();
            t.upload_pinned(p).unwrap();
            let mut q = zone.pinned::<u8>(7).unwrap();
            q.write(0, &[i as u8; 7]).unwrap();
            small.upload_pinned(q).unwrap();
            zone.synchronize().unwrap();
            // readback staging too
            assert_eq!(t.to_vec().unwrap(), vec![i as f32; 4096], "{b:?}");
            assert_eq!(small.to_vec().unwrap(), [i as u8; 7], "{b:?}");
        }
        let created = zone.stats().staging_buffers_created;
        for i in 0..100u32 {
            let mut p = zone.pinned::<f32>(4096).unwrap();
            p.with_bytes(|mut w| w.copy_from_slice(bytemuck::cast_slice(&vec![i as f32; 4096])))
                .unwrap();
            t.upload_pinned(p).unwrap();
            let mut q = zone.pinned::<u8>(7).unwrap();
            q.write(0, &[i as u8; 7]).unwrap();
            small.upload_pinned(q).unwrap();
            zone.synchronize().unwrap();
            if i % 25 == 0 {
                assert_eq!(t.to_vec().unwrap(), vec![i as f32; 4096], "{b:?}");
                assert_eq!(small.to_vec().unwrap(), [i as u8; 7], "{b:?}");
            }
        }
        // The GPU re-maps an upload buffer asynchronously after its copy;
        // when a re-map is still in flight the pool makes a new buffer
        // rather than wait. Each iteration holds at most two, so a leak of
        // one per iteration would show far above this bound.
        let grown = zone.stats().staging_buffers_created - created;
        assert!(
            grown <= 2,
            "staging buffers not reused {b:?}: {grown} new over 100 iterations"
        );
    }
}

#[test]
fn unused_pinned_buffer_returns_to_the_pool() {
    for zone in common::zones() {
        let b = zone.backend();
        let p = zone.pinned::<u8>(100).unwrap();
        let s = zone.stats();
        assert_eq!(s.staging_in_use_bytes, 64 << 10, "{b:?}");
        assert_eq!(s.staging_reserved_bytes, 64 << 10, "{b:?}");
        assert_eq!(s.staging_buffers_created, 1, "{b:?}");
        drop(p);
        let s = zone.stats();
        assert_eq!(s.staging_in_use_bytes, 0, "dropped pinned buffer {b:?}");
        assert_eq!(s.staging_reserved_bytes, 64 << 10, "kept for reuse {b:?}");
        let mut p = zone.pinned::<u16>(50).unwrap();
        assert_eq!(zone.stats().staging_buffers_created, 1, "reused {b:?}");
        p.write(0, &[9; 50]).unwrap();
        let mut t = Tensor::from_pinned(&zone, [50], p).unwrap();
        assert_eq!(t.to_vec().unwrap(), vec![9u16; 50]);
    }
}

/// After `synchronize`, no transfer is in flight, so no staging is in use.
#[test]
fn no_staging_in_use_after_synchronize() {
    for zone in common::zones() {
        let b = zone.backend();
        let mut p = zone.pinned::<u32>(16).unwrap();
        p.write(0, &[3; 16]).unwrap();
        let mut t = Tensor::from_pinned(&zone, [16], p).unwrap();
        t.write_device(&[4; 16]).unwrap();
        zone.synchronize().unwrap();
        assert_eq!(zone.stats().staging_in_use_bytes, 0, "{b:?}");
        assert_eq!(t.to_vec().unwrap(), [4; 16]);
        zone.synchronize().unwrap();
        assert_eq!(zone.stats().staging_in_use_bytes, 0, "{b:?}");
    }
}

// ----- GPU kernels through binding() -----------------------------------------------------

const KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read_write> data: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&data)) {
        data[i] = data[i] * 2u + 1u;
    }
}
"#;

/// Runs the kernel over `t`; returns the binding's offset and size.
fn run_kernel(zone: &Zone, t: &mut Tensor<u32>) -> (u64, Option<u64>) {
    let n = t.len() as u32;
    let binding = t.binding().unwrap();
    let where_ = (binding.offset, binding.size.map(|s| s.get()));
    common::dispatch(
        zone,
        KERNEL,
        vec![wgpu::BindingResource::Buffer(binding)],
        n.div_ceil(64),
    );
    t.mark_device_written().unwrap();
    where_
}

#[test]
fn gpu_kernel_through_binding() {
    for zone in common::zones() {
        if zone.wgpu_device().is_none() {
            let mut t = Tensor::from_slice(&zone, [3], &[1u32, 2, 3], Location::Device).unwrap();
            assert_eq!(t.binding().err(), Some(Error::NeedsGpu { op: "binding" }));
            assert!(zone.wgpu_queue().is_none());
            assert_eq!(t.to_vec().unwrap(), [1, 2, 3], "tensor still usable");
            continue;
        }
        // another tensor first, so ours sits at a nonzero offset of the slab
        let mut first = Tensor::from_slice(&zone, [3], &[5u32, 6, 7], Location::Device).unwrap();
        let n = 1000usize;
        let data: Vec<u32> = (0..n as u32).map(|i| i * 3 + 1).collect();
        let mut t = Tensor::from_slice(&zone, [n], &data, Location::Host).unwrap();
        let s0 = zone.stats();
        let (offset, size) = run_kernel(&zone, &mut t);
        assert_ne!(
            offset, 0,
            "tensor should share the slab at a nonzero offset"
        );
        assert_eq!(offset % zone.info().alignment, 0);
        assert_eq!(size, Some(4 * n as u64));
        assert_eq!(moved(&s0, &zone).h2d, tr(4000, 1), "binding uploads once");
        assert_eq!(t.residency(), DEVICE_NEWER);
        let want: Vec<u32> = data.iter().map(|x| x * 2 + 1).collect();
        assert_eq!(t.to_vec().unwrap(), want);
        assert_eq!(t.to_vec().unwrap(), want);
        assert_eq!(
            moved(&s0, &zone).d2h,
            tr(4000, 1),
            "downloaded exactly once"
        );
        // run it again: the device copy is current, nothing is uploaded
        run_kernel(&zone, &mut t);
        assert_eq!(moved(&s0, &zone).h2d, tr(4000, 1));
        let want2: Vec<u32> = want.iter().map(|x| x * 2 + 1).collect();
        assert_eq!(t.to_vec().unwrap(), want2);
        assert_eq!(first.to_vec().unwrap(), [5, 6, 7], "neighbour untouched");

        // an odd-length u8 tensor binds with its size rounded up to 4
        let mut b =
            Tensor::<u8>::from_slice(&zone, [5], &[1, 2, 3, 4, 5], Location::Device).unwrap();
        let binding = b.binding().unwrap();
        assert_eq!(binding.size.map(|s| s.get()), Some(8));
    }
}

#[test]
fn gpu_kernel_on_empty_tensor_sees_zeros() {
    for zone in common::zones() {
        if zone.wgpu_device().is_none() {
            let mut t = Tensor::<u32>::empty(&zone, [4], Location::Device).unwrap();
            assert_eq!(t.binding().err(), Some(Error::NeedsGpu { op: "binding" }));
            continue;
        }
        // leave garbage in the pool, then reuse the same range
        let n = 512usize;
        let mut junk = Tensor::full(&zone, [n], 0xDEAD_BEEFu32, Location::Device).unwrap();
        junk.drop_host_copy().unwrap();
        drop(junk);
        let s0 = zone.stats();
        let mut t = Tensor::<u32>::empty(&zone, [n], Location::Device).unwrap();
        assert_eq!(
            zone.stats().pool_hits,
            s0.pool_hits + 1,
            "same range reused"
        );
        run_kernel(&zone, &mut t);
        assert_eq!(
            moved(&s0, &zone).h2d,
            NONE,
            "no upload for an unwritten tensor"
        );
        assert_eq!(t.to_vec().unwrap(), vec![1u32; n]);
        assert_eq!(moved(&s0, &zone).d2h, tr(4 * n as u64, 1));
    }
}

// ----- zones and threads ------------------------------------------------------------------

fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}
fn assert_send<T: Send + 'static>() {}

#[test]
fn zone_and_tensor_are_thread_safe() {
    assert_clone_send_sync::<Zone>();
    assert_send::<Tensor<f32>>();
    assert_send::<Tensor<bf16>>();
    assert_send::<PinnedBuffer<u8>>();
    assert_send::<Error>();
    for zone in common::zones() {
        let b = zone.backend();
        let handles: Vec<_> = (0..4u32)
            .map(|k| {
                let z = zone.clone();
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..25u32 {
                        let v: Vec<u32> = (0..100).map(|j| k * 1_000_000 + i * 1000 + j).collect();
                        let mut t = Tensor::from_slice(&z, [100], &v, Location::Device).unwrap();
                        assert_eq!(t.to_vec().unwrap(), v);
                        if i % 5 == 0 {
                            kept.push((t, v));
                        }
                    }
                    kept
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().unwrap());
        }
        let s = zone.stats();
        assert_eq!(s.tensors_created, 100, "{b:?}");
        assert_eq!(s.tensors_live, 20, "{b:?}");
        assert_eq!(s.host_to_device.calls, 100, "{b:?}");
        assert_eq!(s.device_to_host.calls, 100, "{b:?}");
        // tensors made in other threads read back here
        for (t, v) in &mut all {
            assert_eq!(t.to_vec().unwrap(), *v);
        }
        drop(all);
        assert_eq!(zone.stats().tensors_live, 0);
        assert_eq!(zone.stats().device_live_bytes, 0);
    }
}

#[test]
fn backend_choice_and_info() {
    let cpu = Zone::cpu();
    assert_eq!(cpu.backend(), BackendKind::Cpu);
    assert_eq!(cpu.info().kind, BackendKind::Cpu);
    assert_eq!(cpu.info().adapter, "cpu");
    assert_eq!(cpu.info().api, "none");
    assert_eq!(cpu.info().max_buffer_size, isize::MAX as u64);
    assert!(cpu.wgpu_device().is_none());
    assert!(cpu.wgpu_queue().is_none());
    assert_eq!(cpu.label(), "tensorzone");
    assert!(cpu.same_zone(&cpu.clone()));
    assert!(!cpu.same_zone(&Zone::cpu()));
    assert!(cpu.synchronize().is_ok());

    // the builder's choice (unless TENSORZONE_BACKEND=gpu overrides it)
    if std::env::var("TENSORZONE_BACKEND").map(|v| v.to_ascii_lowercase()) != Ok("gpu".into()) {
        let z = Zone::builder()
            .backend(BackendChoice::Cpu)
            .label("mine")
            .build()
            .unwrap();
        assert_eq!(z.backend(), BackendKind::Cpu);
        assert_eq!(z.label(), "mine");
        assert_eq!(
            z.info().to_string(),
            "cpu",
            "an explicit CPU choice is no fallback"
        );
    }

    for zone in common::zones() {
        let info = zone.info();
        assert_eq!(info.kind, zone.backend());
        assert!(info.alignment.is_power_of_two() && info.alignment >= 4);
        match zone.backend() {
            BackendKind::Cpu => assert_eq!(info.adapter, "cpu"),
            BackendKind::Gpu => {
                assert!(!info.adapter.trim().is_empty(), "{info:?}");
                assert!(zone.wgpu_device().is_some() && zone.wgpu_queue().is_some());
                #[cfg(target_os = "linux")]
                assert_eq!(info.api, "Vulkan", "{info:?}");
                assert!(info.max_buffer_size >= 256 << 20, "{info:?}");
                let text = info.to_string();
                assert!(text.starts_with("gpu: "), "{text}");
                assert!(text.contains(&info.adapter), "{text}");
                assert!(text.contains(&info.api), "{text}");
            }
        }
        eprintln!(
            "{info}  max_buffer_size={} alignment={}",
            info.max_buffer_size, info.alignment
        );
    }
}

#[test]
fn stats_display_names_the_figures() {
    for zone in common::zones() {
        let mut t = Tensor::from_slice(&zone, [256], &[1u32; 256], Location::Device).unwrap();
        t.to_vec().unwrap();
        let s = zone.stats();
        assert_eq!(s.tensors_live, 1);
        assert_eq!(s.tensors_created, 1);
        assert_eq!(s.host_live_bytes, 1024);
        assert_eq!(s.device_live_bytes, round_up(1024, zone.info().alignment));
        assert_eq!(
            s.create_buffer_calls(),
            s.device_blocks_created + s.staging_buffers_created
        );
        let text = s.to_string();
        assert!(text.contains("1 / 1"), "{text}");
        assert!(text.contains("1.00 KiB in 1 calls"), "{text}");
    }
}

/// Freed ranges wait in per-thread caches; they count as cached, never as
/// live, and come back to the zone when their thread exits or after `trim`.
#[test]
fn per_thread_range_caches_are_accounted_and_returned() {
    for zone in common::zones() {
        let b = zone.backend();
        let start = zone.stats();
        let workers: Vec<_> = (0..4u32)
            .map(|w| {
                let zone = zone.clone();
                std::thread::spawn(move || {
                    for i in 0..200u32 {
                        let len = 64 + (i as usize % 3) * 100;
                        let v: Vec<u32> = (0..len as u32).map(|x| x ^ w ^ i).collect();
                        let mut t = Tensor::from_slice(&zone, [len], &v, Location::Device).unwrap();
                        t.mark_device_written().unwrap();
                        assert_eq!(t.to_vec().unwrap(), v);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let s = zone.stats();
        assert_eq!(s.tensors_live, 0, "{b:?}");
        assert_eq!(s.tensors_created - start.tensors_created, 800, "{b:?}");
        assert_eq!(s.device_live_bytes, 0, "{b:?}");
        assert_eq!(s.device_allocations, s.device_frees, "{b:?}");
        assert_eq!(s.device_cached_bytes, s.device_reserved_bytes, "{b:?}");
        // The threads have exited, so everything is back in the shared pool.
        zone.trim();
        assert_eq!(zone.stats().device_reserved_bytes, 0, "{b:?}");

        // This thread's cache: a freed range is reused by the next
        // allocation of its size, and trim gives it back at once.
        let t = Tensor::<u32>::zeros(&zone, [100], Location::Device).unwrap();
        drop(t);
        let s = zone.stats();
        assert_eq!((s.device_live_bytes, s.device_slabs), (0, 1), "{b:?}");
        let hits = s.pool_hits;
        let t = Tensor::<u32>::empty(&zone, [100], Location::Device).unwrap();
        assert_eq!(zone.stats().pool_hits, hits + 1, "{b:?}");
        drop(t);
        zone.trim();
        assert_eq!(zone.stats().device_reserved_bytes, 0, "{b:?}");
    }
}

/// On a unified-memory adapter (lavapipe is one), a tensor in its own
/// dedicated buffer is written and read in place: no staging buffer, the
/// same counted transfers, and kernels still see and write its bytes.
#[test]
fn dedicated_tensors_on_unified_memory_skip_staging() {
    for zone in common::zones_with(Zone::builder().slab_size(256 << 10)) {
        let Some(_) = zone.wgpu_device() else {
            assert!(!zone.info().unified_memory, "CPU backend reports no UMA");
            continue;
        };
        let n = 256 * 1024; // 1 MiB of u32: over a quarter slab, so dedicated
        let data: Vec<u32> = (0..n as u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let s0 = zone.stats();
        let mut t = Tensor::from_slice(&zone, [n], &data, Location::Device).unwrap();
        assert_eq!(
            zone.stats().device_dedicated_blocks,
            s0.device_dedicated_blocks + 1
        );
        assert_eq!(moved(&s0, &zone).h2d, tr(4 * n as u64, 1));
        run_kernel(&zone, &mut t);
        let want: Vec<u32> = data
            .iter()
            .map(|x| x.wrapping_mul(2).wrapping_add(1))
            .collect();
        assert_eq!(t.to_vec().unwrap(), want);
        assert_eq!(moved(&s0, &zone).d2h, tr(4 * n as u64, 1));
        t.write_device(&data).unwrap();
        t.mark_device_written().unwrap();
        assert_eq!(t.to_vec().unwrap(), data);
        let staging = zone.stats().staging_buffers_created - s0.staging_buffers_created;
        if zone.info().unified_memory {
            assert_eq!(
                staging, 0,
                "UMA transfers of a dedicated tensor need no staging"
            );
        } else {
            assert!(staging > 0, "discrete GPUs go through staging");
        }
    }
}

/// A reused pinned buffer starts zeroed: what the caller leaves unwritten
/// never shows an earlier upload's bytes.
#[test]
fn reused_pinned_buffer_starts_zeroed() {
    for zone in common::zones() {
        let b = zone.backend();
        let mut p = zone.pinned::<u8>(8).unwrap();
        p.write(0, &[42; 8]).unwrap();
        let t = Tensor::from_pinned(&zone, [8], p).unwrap();
        drop(t);
        zone.synchronize().unwrap();
        let created = zone.stats().staging_buffers_created;
        let mut p = zone.pinned::<u8>(8).unwrap();
        assert_eq!(
            zone.stats().staging_buffers_created,
            created,
            "reused {b:?}"
        );
        p.write(2, &[7]).unwrap();
        let mut t = Tensor::from_pinned(&zone, [8], p).unwrap();
        assert_eq!(t.to_vec().unwrap(), [0, 0, 7, 0, 0, 0, 0, 0], "{b:?}");
    }
}

// Both tensors may share one slab, and wgpu tracks usage per buffer: a
// `read` binding beside a `read_write` one of the same buffer would be a
// usage conflict, so both are `read_write` (see `Tensor::binding`).
const READ_PADDING: &str = r#"
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(1)
fn main() {
    out[0] = data[1];
}
"#;

/// The padding a binding rounds up to (here bytes 5..8 of a 5-byte tensor)
/// is zero, even when the staging buffer and the device range last held
/// other bytes.
#[test]
fn binding_padding_is_zero() {
    for zone in common::zones() {
        if zone.wgpu_device().is_none() {
            continue;
        }
        let t = Tensor::<u8>::from_slice(&zone, [8], &[0xFF; 8], Location::Device).unwrap();
        drop(t);
        let mut t =
            Tensor::<u8>::from_slice(&zone, [5], &[1, 2, 3, 4, 5], Location::Device).unwrap();
        assert_eq!(second_word(&zone, &mut t), 5, "bytes 4..8 are [5, 0, 0, 0]");
        assert_eq!(t.to_vec().unwrap(), [1, 2, 3, 4, 5]);
    }
}

/// Word 1 (bytes 4..8) of `t`'s device binding, read by a kernel: the
/// binding of a 5-byte tensor is 8 bytes long.
fn second_word(zone: &Zone, t: &mut Tensor<u8>) -> u32 {
    let mut out = Tensor::<u32>::from_slice(zone, [1], &[0xDEAD], Location::Device).unwrap();
    let data_binding = t.binding().unwrap();
    assert_eq!(data_binding.size.map(|s| s.get()), Some(8));
    let out_binding = out.binding().unwrap();
    common::dispatch(
        zone,
        READ_PADDING,
        vec![
            wgpu::BindingResource::Buffer(data_binding),
            wgpu::BindingResource::Buffer(out_binding),
        ],
        1,
    );
    out.mark_device_written().unwrap();
    out.to_vec().unwrap()[0]
}

/// The padding an upload from a reused pinned buffer copies (bytes 5..8 of
/// a 5-byte tensor) is zero, not the bytes the buffer held before.
#[test]
fn pinned_upload_padding_is_zero() {
    for zone in common::zones() {
        if zone.wgpu_device().is_none() {
            continue;
        }
        let mut dirty = zone.pinned::<u8>(8).unwrap();
        dirty.write(0, &[0xFF; 8]).unwrap();
        drop(Tensor::from_pinned(&zone, [8], dirty).unwrap());
        zone.synchronize().unwrap();
        let created = zone.stats().staging_buffers_created;
        let mut p = zone.pinned::<u8>(5).unwrap();
        assert_eq!(zone.stats().staging_buffers_created, created, "reused");
        p.write(0, &[1, 2, 3, 4, 5]).unwrap();
        let mut t = Tensor::from_pinned(&zone, [5], p).unwrap();
        assert_eq!(second_word(&zone, &mut t), 5, "bytes 4..8 are [5, 0, 0, 0]");
    }
}

/// `trim` on one thread reaches ranges another, still running thread has
/// cached once that thread next allocates.
#[test]
fn trim_reaches_other_threads_caches_on_their_next_call() {
    use std::sync::mpsc;
    for zone in common::zones() {
        let b = zone.backend();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<Option<Tensor<u32>>>();
        let worker = {
            let zone = zone.clone();
            std::thread::spawn(move || {
                drop(Tensor::<u32>::zeros(&zone, [64], Location::Device).unwrap());
                done_tx.send(None).unwrap();
                go_rx.recv().unwrap();
                // After the trim: this allocation finds the cache stale and
                // returns what it held; the tensor goes to the main thread.
                let t = Tensor::<u32>::empty(&zone, [8], Location::Device).unwrap();
                done_tx.send(Some(t)).unwrap();
                go_rx.recv().unwrap();
            })
        };
        assert!(done_rx.recv().unwrap().is_none());
        let s = zone.stats();
        assert_eq!((s.device_live_bytes, s.device_slabs), (0, 1), "{b:?}");
        zone.trim();
        // The worker's cache still holds its range: the slab stays.
        assert_eq!(zone.stats().device_slabs, 1, "{b:?}");
        go_tx.send(()).unwrap();
        let t = done_rx.recv().unwrap().expect("tensor from the worker");
        assert_eq!(
            zone.stats().device_live_bytes,
            zone.info().alignment.max(32),
            "{b:?}"
        );
        drop(t); // into this thread's cache, which trim empties at once
        zone.trim();
        assert_eq!(
            zone.stats().device_reserved_bytes,
            0,
            "{b:?} while the worker lives"
        );
        go_tx.send(()).unwrap();
        worker.join().unwrap();
        let s = zone.stats();
        assert_eq!((s.device_reserved_bytes, s.tensors_live), (0, 0), "{b:?}");
        assert_eq!(s.device_allocations, s.device_frees, "{b:?}");
    }
}

/// When a thread's range cache makes room by giving up older sizes, the
/// stats still count exactly what it holds (a cache over-count would hide
/// live bytes).
#[test]
fn range_cache_evictions_keep_stats_exact() {
    // 256 KiB slabs: each thread caches at most 32 KiB per zone.
    for zone in common::zones_with(Zone::builder().slab_size(256 << 10)) {
        let b = zone.backend();
        let align = zone.info().alignment;
        for kib in [12u64, 10, 8, 14, 16, 6, 12, 16] {
            let n = (kib << 10) as usize / 4;
            drop(Tensor::<u32>::zeros(&zone, [n], Location::Device).unwrap());
            let s = zone.stats();
            assert_eq!(s.device_live_bytes, 0, "{b:?} after {kib} KiB");
            assert_eq!(s.device_cached_bytes, s.device_reserved_bytes, "{b:?}");
        }
        let t = Tensor::<u32>::zeros(&zone, [100], Location::Device).unwrap();
        assert_eq!(
            zone.stats().device_live_bytes,
            400u64.div_ceil(align) * align,
            "{b:?}"
        );
        drop(t);
        let s = zone.stats();
        assert_eq!(s.device_allocations, s.device_frees, "{b:?}");
        zone.trim();
        assert_eq!(zone.stats().device_reserved_bytes, 0, "{b:?}");
    }
}

/// A request that succeeds only after cached blocks are released counts as
/// one request: one miss (it needed a new block), no extra hit or miss.
#[test]
fn retried_request_counts_once() {
    let builder = Zone::builder()
        .slab_size(256 << 10)
        .device_memory_limit(3 << 20);
    for zone in common::zones_with(builder) {
        let b = zone.backend();
        drop(Tensor::<u8>::empty(&zone, [2 << 20], Location::Device).unwrap());
        assert_eq!(zone.stats().device_dedicated_blocks, 1, "{b:?}");
        let s0 = zone.stats();
        // 1.5 MiB has another size class; it fits under the limit only once
        // the cached 2 MiB block is released.
        let t = Tensor::<u8>::empty(&zone, [3 << 19], Location::Device).unwrap();
        let s1 = zone.stats();
        assert_eq!(s1.pool_misses, s0.pool_misses + 1, "{b:?}");
        assert_eq!(s1.pool_hits, s0.pool_hits, "{b:?}");
        assert_eq!(
            s1.device_dedicated_blocks, 1,
            "{b:?} the cached block went back"
        );
        assert_eq!(
            s1.device_blocks_created,
            s0.device_blocks_created + 1,
            "{b:?}"
        );
        drop(t);
    }
}

/// A copy between two tensors of one slab goes through a scratch buffer on
/// the GPU: it is reserved (and cached) device memory, and `trim` frees it.
#[test]
fn same_slab_copy_scratch_is_accounted_and_trimmed() {
    for zone in common::zones() {
        let b = zone.backend();
        let mut a = Tensor::from_slice(&zone, [4], &[1u32, 2, 3, 4], Location::Device).unwrap();
        let mut c = Tensor::<u32>::empty(&zone, [4], Location::Device).unwrap();
        let slab = zone.stats().device_reserved_bytes;
        c.copy_from(&mut a).unwrap();
        assert_eq!(c.to_vec().unwrap(), [1, 2, 3, 4], "{b:?}");
        let s = zone.stats();
        let scratch = s.device_reserved_bytes - slab;
        match b {
            BackendKind::Gpu => assert!(scratch >= 16, "{b:?}: scratch {scratch}"),
            BackendKind::Cpu => assert_eq!(scratch, 0, "the CPU copies in place"),
        }
        assert_eq!(
            s.device_cached_bytes + s.device_live_bytes,
            s.device_reserved_bytes
        );
        drop((a, c));
        let released = zone.trim();
        assert_eq!(zone.stats().device_reserved_bytes, 0, "{b:?}");
        assert!(released >= slab + scratch, "{b:?}: released {released}");
    }
}

/// Tensors over a quarter of the slab get a block of their own, which a
/// unified-memory adapter (lavapipe, integrated GPUs) maps for each
/// transfer. With four threads transferring at once, one thread's poll
/// may complete another's map: no transfer may fail for it. (Elsewhere
/// the blocks go through staging, and the test checks contents only.)
#[test]
fn threads_transferring_through_mapped_blocks_never_fail() {
    for zone in common::zones_with(Zone::builder().slab_size(64 << 10).track_tensors(false)) {
        let len = 16 << 10; // 64 KiB of u32: a dedicated block
        let workers: Vec<_> = (0..4u32)
            .map(|w| {
                let zone = zone.clone();
                std::thread::spawn(move || -> Result<()> {
                    let mut t = Tensor::<u32>::empty(&zone, [len], Location::Device)?;
                    for i in 0..3000u32 {
                        let v = vec![w * 1_000_000 + i; len];
                        t.write_device(&v)?;
                        assert_eq!(t.to_vec()?, v, "worker {w} iteration {i}");
                    }
                    Ok(())
                })
            })
            .collect();
        for (w, h) in workers.into_iter().enumerate() {
            let r = h.join().expect("worker panicked");
            assert!(r.is_ok(), "{:?} worker {w}: {r:?}", zone.backend());
        }
    }
}
