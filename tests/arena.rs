//! Arenas (tier 2) on every backend this machine offers: allocation on host
//! and device, residency and transfer counts, reset and reuse, growth,
//! copy-out, scopes, errors, and GPU work across frames that reuse memory.

mod common;

use common::{DEVICE_NEWER, DEVICE_ONLY, HOST_ONLY, SYNCED};
use tensorzone::*;

fn h2d(zone: &Zone) -> Transfers {
    zone.stats().host_to_device
}

fn d2h(zone: &Zone) -> Transfers {
    zone.stats().device_to_host
}

#[test]
fn arena_tensors_hold_their_contents_on_host_and_device() {
    for zone in common::zones() {
        let arena = zone.arena();
        let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
        let mut d = arena
            .from_slice([10, 100], &data, Location::Device)
            .unwrap();
        let mut h = arena.from_slice([1000], &data, Location::Host).unwrap();
        let mut z = arena.zeros::<u32>([33], Location::Device).unwrap();
        let mut f = arena.full([7], 3u8, Location::Host).unwrap();
        let mut e = arena.empty::<i32>([5], Location::Device).unwrap();
        assert_eq!(d.residency(), DEVICE_ONLY);
        assert_eq!(h.residency(), HOST_ONLY);
        assert_eq!(d.dims(), &[10, 100]);
        assert_eq!(d.to_vec().unwrap(), data);
        assert_eq!(h.to_vec().unwrap(), data);
        assert_eq!(z.to_vec().unwrap(), vec![0; 33]);
        assert_eq!(f.to_vec().unwrap(), vec![3; 7]);
        assert_eq!(e.to_vec().unwrap(), vec![0; 5], "unwritten reads as zeros");
        assert_eq!(d.byte_len(), 4000);
        assert_eq!(f.dtype(), DType::U8);
        assert!(arena.used() > 0);
        assert!(arena.capacity() >= arena.used());
    }
}

#[test]
fn arena_residency_moves_once_and_is_counted() {
    for zone in common::zones() {
        let arena = zone.arena();
        let data: Vec<u16> = (0..501).collect(); // 1002 bytes
        let mut t = arena.from_slice([501], &data, Location::Host).unwrap();
        let (up0, down0) = (h2d(&zone), d2h(&zone));
        t.to_device().unwrap();
        t.to_device().unwrap();
        assert_eq!(h2d(&zone).calls - up0.calls, 1, "one upload");
        assert_eq!(h2d(&zone).bytes - up0.bytes, 1002);
        assert_eq!(t.residency(), SYNCED);

        let new: Vec<u16> = data.iter().map(|x| x * 3).collect();
        t.write_device(&new).unwrap();
        assert_eq!(t.residency(), DEVICE_NEWER);
        assert_eq!(t.to_vec().unwrap(), new);
        assert_eq!(t.to_vec().unwrap(), new);
        assert_eq!(d2h(&zone).calls - down0.calls, 1, "one download");
        assert_eq!(d2h(&zone).bytes - down0.bytes, 1002);

        t.as_mut_slice().unwrap()[0] = 999;
        t.to_device().unwrap();
        assert_eq!(h2d(&zone).calls - up0.calls, 3, "write_device + re-upload");
        let mut back = arena.empty::<u16>([501], Location::Device).unwrap();
        back.copy_from(&mut t).unwrap();
        assert_eq!(back.to_vec().unwrap()[..3], [999, 3, 6]);
        assert_eq!(t.view().unwrap().shape(), &[501]);
        t.view_mut().unwrap()[[1]] = 5;
        assert_eq!(t.to_ndarray().unwrap()[[1]], 5);
        t.write_host(&data).unwrap();
        assert_eq!(t.as_slice().unwrap(), &data[..]);
    }
}

#[test]
fn reset_keeps_blocks_and_frames_make_no_new_buffers() {
    for zone in common::zones() {
        let mut arena = zone.arena();
        let frame = |arena: &Arena, i: u32| {
            let mut sum = 0u64;
            for k in 0..50u32 {
                let v = vec![i * 100 + k; 1000 + k as usize];
                let mut t = arena.from_slice([v.len()], &v, Location::Device).unwrap();
                let mut h = arena.zeros::<u8>([4096], Location::Host).unwrap();
                h.as_mut_slice().unwrap()[0] = 1;
                sum += t.as_slice().unwrap()[k as usize] as u64;
            }
            sum
        };
        frame(&arena, 0);
        let cap = arena.capacity();
        let blocks = zone.stats().device_blocks_created;
        let reserved = zone.stats().device_reserved_bytes;
        arena.reset();
        assert_eq!(arena.used(), 0);
        assert_eq!(arena.capacity(), cap, "reset keeps every block");
        for i in 1..40u32 {
            let want: u64 = (0..50u64).map(|k| (i as u64) * 100 + k).sum();
            assert_eq!(frame(&arena, i), want, "frame {i}");
            arena.reset();
        }
        assert_eq!(arena.capacity(), cap, "no growth after the first frame");
        let s = zone.stats();
        assert_eq!(s.device_blocks_created, blocks, "no new device blocks");
        assert_eq!(s.device_reserved_bytes, reserved, "flat reserved memory");
    }
}

#[test]
fn arenas_grow_by_blocks_and_give_them_back_on_drop() {
    for zone in common::zones() {
        let live0 = zone.stats().device_live_bytes;
        let host0 = zone.stats().host_live_bytes;
        {
            let arena = zone.arena_with_capacity(64 << 10);
            let mut ts = Vec::new();
            for i in 0..20u32 {
                // 20 x 16 KiB on the device: more than the first 64 KiB block
                ts.push(arena.full([4096], i, Location::Device).unwrap());
            }
            let big = arena.zeros::<u8>([1 << 20], Location::Device).unwrap();
            assert!(arena.device_capacity() >= 20 * 16384 + (1 << 20));
            assert!(zone.stats().device_live_bytes >= live0 + arena.device_capacity());
            for (i, t) in ts.iter_mut().enumerate() {
                assert_eq!(t.as_slice().unwrap()[4095], i as u32, "tensor {i} intact");
            }
            drop(big);
            // host chunks grow too, and are counted as host bytes
            let hs: Vec<_> = (0..100)
                .map(|_| arena.zeros::<f64>([1000], Location::Host).unwrap())
                .collect();
            assert_eq!(hs.len(), 100);
            assert!(zone.stats().host_live_bytes >= host0 + 800_000);
        }
        let s = zone.stats();
        assert_eq!(s.device_live_bytes, live0, "device blocks back to the pool");
        assert_eq!(s.host_live_bytes, host0, "host chunks freed");
    }
}

#[test]
fn reused_memory_never_shows_an_earlier_frames_bytes() {
    for zone in common::zones() {
        let mut arena = zone.arena();
        {
            let _a = arena.full([256], 0xABu8, Location::Device).unwrap();
            let _b = arena.full([256], 0xCDu8, Location::Host).unwrap();
        }
        arena.reset();
        let mut d = arena.empty::<u8>([256], Location::Device).unwrap();
        let mut h = arena.empty::<u8>([256], Location::Host).unwrap();
        assert_eq!(d.to_vec().unwrap(), vec![0; 256]);
        assert_eq!(h.to_vec().unwrap(), vec![0; 256]);
        let mut k = arena.empty::<u8>([256], Location::Device).unwrap();
        if zone.wgpu_device().is_some() {
            k.binding().unwrap();
        }
        k.mark_device_written().unwrap();
        assert_eq!(
            k.to_vec().unwrap(),
            vec![0; 256],
            "never-written device bytes"
        );
    }
}

#[test]
fn to_owned_copies_out_of_the_arena() {
    for zone in common::zones() {
        let (mut dev, mut host, mut blank);
        {
            let arena = zone.arena();
            let mut a = arena
                .from_slice([4], &[1i32, 2, 3, 4], Location::Device)
                .unwrap();
            let d2d0 = zone.stats().device_to_device;
            dev = a.to_owned().unwrap();
            assert_eq!(zone.stats().device_to_device.calls, d2d0.calls + 1);
            let mut b = arena.from_slice([2], &[7i32, 8], Location::Host).unwrap();
            host = b.to_owned().unwrap();
            let mut c = arena.empty::<i32>([3], Location::Device).unwrap();
            blank = c.to_owned().unwrap();
            a.write_device(&[0, 0, 0, 0]).unwrap();
        }
        assert_eq!(
            dev.to_vec().unwrap(),
            [1, 2, 3, 4],
            "independent of the arena"
        );
        assert_eq!(host.to_vec().unwrap(), [7, 8]);
        assert_eq!(blank.to_vec().unwrap(), [0, 0, 0]);
    }
}

#[test]
fn scope_runs_with_its_own_arena() {
    for zone in common::zones() {
        let live0 = zone.stats().device_live_bytes;
        let owned = zone
            .scope(|arena| {
                let mut a = arena.from_slice([3], &[1.0f32, 2.0, 3.0], Location::Device)?;
                let mut b = arena.zeros::<f32>([3], Location::Device)?;
                b.copy_from(&mut a)?;
                assert!(arena.used() > 0);
                b.to_owned()
            })
            .unwrap();
        let mut owned = owned;
        assert_eq!(owned.to_vec().unwrap(), [1.0, 2.0, 3.0]);
        drop(owned);
        assert_eq!(zone.stats().device_live_bytes, live0);
    }
}

#[test]
fn bad_input_is_a_typed_error_and_the_arena_stays_usable() {
    for zone in common::zones() {
        let arena = zone.arena();
        assert!(matches!(
            arena.zeros::<f32>([0, 3], Location::Device),
            Err(Error::EmptyShape { .. })
        ));
        assert!(matches!(
            arena.from_slice([3], &[1u8, 2], Location::Host),
            Err(Error::LengthMismatch {
                expected: 3,
                actual: 2
            })
        ));
        assert!(matches!(
            arena.zeros::<u64>([usize::MAX / 4], Location::Device),
            Err(Error::ShapeOverflow { .. })
        ));
        let max = zone.info().max_buffer_size;
        let r = arena.empty::<u8>([max as usize + 8], Location::Device);
        match zone.backend() {
            BackendKind::Gpu => assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}"),
            // The CPU limit is isize::MAX: a longer byte length overflows first.
            BackendKind::Cpu => assert!(matches!(r, Err(Error::ShapeOverflow { .. })), "{r:?}"),
        }
        // the device can never give this much, and says so
        let r = arena.empty::<u8>(
            [(max as usize).min(isize::MAX as usize - 64)],
            Location::Device,
        );
        assert!(
            matches!(
                r,
                Err(Error::OutOfMemory { .. }
                    | Error::HostOutOfMemory { .. }
                    | Error::TooLarge { .. })
            ),
            "{r:?}"
        );
        let mut t = arena.from_slice([2], &[5u8, 6], Location::Device).unwrap();
        assert!(matches!(
            t.write_device(&[1, 2, 3]),
            Err(Error::LengthMismatch { .. })
        ));
        assert_eq!(t.to_vec().unwrap(), [5, 6]);
        if zone.wgpu_device().is_none() {
            assert_eq!(t.binding().err(), Some(Error::NeedsGpu { op: "binding" }));
        }
    }
}

#[test]
fn an_arena_can_move_to_another_thread() {
    for zone in common::zones() {
        let mut arena = zone.arena();
        arena.from_slice([2], &[1u32, 2], Location::Device).unwrap();
        arena.reset();
        let got = std::thread::spawn(move || {
            let mut t = arena.from_slice([2], &[3u32, 4], Location::Device).unwrap();
            t.to_vec().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, [3, 4]);
    }
}

const FRAME_KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&out)) {
        out[i] = a[i] * 3u + b[i];
    }
}
"#;

/// Each frame uploads its own inputs into arena temporaries and runs a
/// kernel whose result depends only on them; the next frame reuses the same
/// memory before anything waits for the GPU. Every frame's result is read
/// at the end and must match that frame's inputs.
#[test]
fn gpu_work_of_each_frame_sees_that_frames_temporaries() {
    for zone in common::zones() {
        if zone.wgpu_device().is_none() {
            eprintln!("skipping on {}: no GPU", zone.info());
            continue;
        }
        let n = 300usize;
        let frames = 60u32;
        let mut arena = zone.arena();
        let mut outputs = Vec::new();
        let mut blocks_after_first = 0;
        for f in 0..frames {
            let av: Vec<u32> = (0..n as u32).map(|i| i * 7 + f * 1000).collect();
            let bv: Vec<u32> = (0..n as u32).map(|i| f * 13 + i % 5).collect();
            let mut a = arena.from_slice([n], &av, Location::Host).unwrap();
            let mut b = arena.from_slice([n], &bv, Location::Device).unwrap();
            let mut out = Tensor::<u32>::empty(&zone, [n], Location::Device).unwrap();
            common::dispatch(
                &zone,
                FRAME_KERNEL,
                vec![
                    wgpu::BindingResource::Buffer(a.binding().unwrap()),
                    wgpu::BindingResource::Buffer(b.binding().unwrap()),
                    wgpu::BindingResource::Buffer(out.binding().unwrap()),
                ],
                (n as u32).div_ceil(64),
            );
            out.mark_device_written().unwrap();
            outputs.push((av, bv, out));
            drop((a, b));
            arena.reset();
            if f == 0 {
                blocks_after_first = zone.stats().device_blocks_created;
            }
        }
        for (f, (av, bv, mut out)) in outputs.into_iter().enumerate() {
            let want: Vec<u32> = av.iter().zip(&bv).map(|(a, b)| a * 3 + b).collect();
            assert_eq!(out.to_vec().unwrap(), want, "frame {f}");
        }
        assert_eq!(
            zone.stats().device_blocks_created,
            blocks_after_first,
            "frames after the first made no device blocks"
        );
    }
}

#[test]
fn alloc_slice_hands_out_zeroed_disjoint_host_memory() {
    let zone = Zone::cpu();
    let mut arena = zone.arena();
    for round in 0..3u8 {
        let a = arena.alloc_slice::<u8>(33).unwrap();
        let b = arena.alloc_slice::<u64>(5).unwrap();
        let c = arena.alloc_slice::<f32>(100_000).unwrap();
        assert_eq!(
            a,
            &[0u8; 33][..],
            "round {round}: zeroed even after a reset"
        );
        assert_eq!(b, &[0u64; 5][..]);
        assert!(c.iter().all(|&x| x == 0.0));
        assert_eq!(b.as_ptr() as usize % 8, 0, "aligned for its type");
        a.fill(0xFF);
        b.fill(u64::MAX);
        c.fill(1.0);
        assert_eq!(a[32], 0xFF);
        assert_eq!(b[0], u64::MAX, "writes to one slice leave the others alone");
        assert!(arena.alloc_slice::<u32>(0).unwrap().is_empty());
        assert!(matches!(
            arena.alloc_slice::<u64>(usize::MAX / 4),
            Err(Error::ShapeOverflow { .. })
        ));
        arena.reset();
    }
}
