//! Stats by tier and location, peaks and rates, on every backend.

mod common;

use tensorzone::*;

fn aligned(zone: &Zone, bytes: u64) -> u64 {
    let a = zone.info().alignment;
    bytes.div_ceil(a) * a
}

#[test]
fn live_bytes_are_split_by_tier_and_location() {
    for zone in common::zones() {
        let z = HostDevice::default();
        let s = zone.stats();
        assert_eq!(s.tiers, TierUsage::default());

        let owned = Tensor::<u8>::zeros(&zone, [1000], Location::Device).unwrap();
        let host = Tensor::<u8>::zeros(&zone, [500], Location::Host).unwrap();
        let s = zone.stats();
        assert_eq!(
            s.tiers.owned,
            HostDevice {
                host: 500,
                device: aligned(&zone, 1000)
            }
        );
        assert_eq!((s.tiers.arena, s.tiers.shared, s.tiers.small), (z, z, z));

        let arena = zone.arena_with_capacity(256 << 10);
        let a = arena.zeros::<f32>([100], Location::Device).unwrap();
        let h = arena.zeros::<f32>([100], Location::Host).unwrap();
        let s = zone.stats();
        assert_eq!(s.tiers.arena.device, 256 << 10, "the arena's device chunk");
        assert_eq!(s.tiers.arena.host, 64 << 10, "the arena's first host chunk");
        assert_eq!(
            s.tiers.owned.device,
            aligned(&zone, 1000),
            "owned unchanged"
        );
        assert_eq!(s.host_live_bytes, 500 + (64 << 10));

        let shared = Tensor::<u16>::zeros(&zone, [1000], Location::Device)
            .unwrap()
            .into_shared();
        let s = zone.stats();
        assert_eq!(
            s.tiers.shared,
            HostDevice {
                host: 0,
                device: aligned(&zone, 2000)
            }
        );
        assert_eq!(s.tiers.owned.device, aligned(&zone, 1000));
        // a download gives the shared tensor a host copy: counted as shared
        assert_eq!(shared.read().unwrap().len(), 1000);
        assert_eq!(zone.stats().tiers.shared.host, 2000);
        let other = shared.clone();
        drop(shared);
        assert_eq!(zone.stats().tiers.shared.host, 2000, "a handle remains");
        drop(other);
        assert_eq!(zone.stats().tiers.shared, z, "last drop leaves the tier");

        drop((a, h));
        drop(arena);
        let s = zone.stats();
        assert_eq!((s.tiers.arena, s.tiers.shared), (z, z));
        assert_eq!(
            s.tiers.owned,
            HostDevice {
                host: 500,
                device: aligned(&zone, 1000)
            }
        );
        drop((owned, host));
        assert_eq!(zone.stats().tiers, TierUsage::default());
    }
}

#[test]
fn make_mut_moves_a_tensor_between_shared_and_owned_counts() {
    for zone in common::zones() {
        let mut s = Tensor::from_slice(&zone, [256], &[1u8; 256], Location::Device)
            .unwrap()
            .into_shared();
        let dev = zone.stats().tiers.shared.device;
        assert_eq!(dev, aligned(&zone, 256));
        // unique: the tensor stays in place; a host copy made through the
        // mutable borrow is counted on the next call
        s.make_mut().unwrap().to_host().unwrap();
        assert_eq!(s.to_vec().unwrap()[0], 1);
        assert_eq!(zone.stats().tiers.shared.host, 256);
        // shared: the copy is a new shared tensor; both count
        let t = s.clone();
        s.make_mut().unwrap().write_host(&[2; 256]).unwrap();
        assert_eq!(s.to_vec().unwrap()[0], 2);
        assert_eq!(t.to_vec().unwrap()[0], 1);
        let st = zone.stats().tiers.shared;
        assert_eq!(st.host, 512);
        assert_eq!(st.device, dev * 2);
        drop((s, t));
        assert_eq!(zone.stats().tiers.shared, HostDevice::default());
    }
}

#[test]
fn peaks_hold_until_reset() {
    for zone in common::zones() {
        let big = Tensor::<u8>::zeros(&zone, [3 << 20], Location::Host).unwrap();
        let dev = Tensor::<u8>::zeros(&zone, [1 << 20], Location::Device).unwrap();
        let d_peak = zone.stats().peak_device_live_bytes;
        assert!(d_peak >= 1 << 20);
        drop((big, dev));
        let s = zone.stats();
        assert_eq!(s.peak_host_live_bytes, 3 << 20);
        assert_eq!(s.peak_device_live_bytes, d_peak);
        assert!(s.peak_device_reserved_bytes >= s.device_reserved_bytes);
        // This thread's cached ranges count as handed out until a trim.
        zone.trim();
        zone.reset_peaks();
        let s = zone.stats();
        assert_eq!(s.peak_host_live_bytes, s.host_live_bytes);
        assert_eq!(s.peak_device_reserved_bytes, s.device_reserved_bytes);
        assert!(s.peak_device_live_bytes < d_peak);
        let text = s.to_string();
        assert!(text.contains("peak host / device live"), "{text}");
        assert!(text.contains("  arena"), "{text}");
    }
}

#[test]
fn two_snapshots_give_rates() {
    for zone in common::zones() {
        let s0 = zone.stats();
        let data = vec![7u8; 1 << 20];
        for _ in 0..4 {
            let mut t = Tensor::from_slice(&zone, [data.len()], &data, Location::Device).unwrap();
            assert_eq!(t.as_slice().unwrap()[5], 7);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let s1 = zone.stats();
        let r = &s1 - &s0;
        assert!(r.seconds >= 0.02, "{r:?}");
        let want_up = (4 << 20) as f64 / r.seconds / 1e9;
        assert!(
            (r.host_to_device_gbps - want_up).abs() < 1e-9 * want_up.max(1.0),
            "{r:?}"
        );
        assert!(
            (r.device_to_host_gbps - want_up).abs() < 1e-9 * want_up.max(1.0),
            "{r:?}"
        );
        let allocs = (s1.device_allocations - s0.device_allocations) as f64;
        assert!(
            (r.allocations_per_s - allocs / r.seconds).abs() < 1e-6,
            "{r:?}"
        );
        assert!((r.tensors_per_s - 4.0 / r.seconds).abs() < 1e-6, "{r:?}");
        assert_eq!((&s0 - &s0).seconds, 0.0);
    }
}

/// The zone's reserved device bytes agree with wgpu's allocator report
/// (where the backend gives one: lavapipe's Vulkan does), block for block
/// up to the driver's per-block rounding.
#[test]
fn reserved_bytes_agree_with_the_wgpu_allocator_report() {
    for zone in common::zones() {
        let Some(r0) = zone.driver_report() else {
            eprintln!("no allocator report on {}", zone.info());
            continue;
        };
        assert_eq!((r0.device_block_bytes, r0.device_blocks), (0, 0));
        let small = Tensor::<u8>::zeros(&zone, [1000], Location::Device).unwrap();
        let big = Tensor::<u8>::zeros(&zone, [40 << 20], Location::Device).unwrap();
        let arena = zone.arena();
        let _a = arena.zeros::<f32>([10], Location::Device).unwrap();
        let check = |what: &str| {
            let s = zone.stats();
            let r = zone.driver_report().unwrap();
            let blocks = s.device_slabs + s.device_dedicated_blocks;
            assert_eq!(r.device_blocks, blocks, "{what}: one allocation per block");
            assert!(
                r.device_block_bytes >= s.device_reserved_bytes
                    && r.device_block_bytes <= s.device_reserved_bytes + 4096 * blocks,
                "{what}: driver {} bytes, zone {} reserved",
                r.device_block_bytes,
                s.device_reserved_bytes
            );
        };
        check("slab and dedicated block");
        drop(_a);
        drop((small, big, arena));
        zone.trim();
        // wgpu frees a dropped buffer's memory at its next poll.
        zone.synchronize().unwrap();
        check("after trim");
        assert_eq!(zone.driver_report().unwrap().device_blocks, 0);
    }
}

#[test]
fn a_tensor_replaced_through_make_mut_is_counted_in_its_own_zone() {
    let zones = common::zones();
    let (a, b) = (&zones[0], zones.last().unwrap_or(&zones[0]));
    let other = Zone::cpu();
    for (za, zb) in [(a, &other), (b, a)] {
        let mut s = Tensor::from_slice(za, [4], &[1u32; 4], Location::Device)
            .unwrap()
            .into_shared();
        assert_eq!(za.stats().tiers.shared.device, aligned(za, 16));
        *s.make_mut().unwrap() =
            Tensor::from_slice(zb, [2, 3], &[2u32; 6], Location::Device).unwrap();
        assert_eq!(s.dims(), &[2, 3], "the handle takes up the new shape");
        assert_eq!(s.to_vec().unwrap(), [2; 6]);
        if !za.same_zone(zb) {
            assert_eq!(za.stats().tiers.shared, HostDevice::default());
        }
        assert_eq!(zb.stats().tiers.shared.device, aligned(zb, 24));
        assert!(zb.stats().tiers.shared.host >= 24, "downloaded by to_vec");
        drop(s);
        assert_eq!(zb.stats().tiers.shared, HostDevice::default());
        assert_eq!(za.stats().tiers.shared, HostDevice::default());
    }
}

/// What `stats().by_label` says `name` holds (nothing if it is absent).
fn label_bytes(zone: &Zone, name: &str) -> HostDevice {
    zone.stats()
        .by_label
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| *b)
        .unwrap_or_default()
}

#[test]
fn live_bytes_are_broken_down_by_label() {
    for zone in common::zones() {
        let mut w = Tensor::<f32>::zeros(&zone, [1000], Location::Device)
            .unwrap()
            .with_label("weights")
            .unwrap();
        assert_eq!(w.label().as_deref(), Some("weights"));
        let mut act = Tensor::<u8>::zeros(&zone, [300], Location::Host).unwrap();
        assert_eq!(act.label(), None);
        act.set_label("activations").unwrap();
        act.to_device().unwrap();
        let mut arena = zone.arena_with_capacity(128 << 10);
        arena.set_label("frame").unwrap();
        let _t = arena.zeros::<u8>([10], Location::Device).unwrap();
        let by = |name: &str| label_bytes(&zone, name);
        assert_eq!(
            by("weights"),
            HostDevice {
                host: 0,
                device: aligned(&zone, 4000)
            }
        );
        assert_eq!(
            by("activations"),
            HostDevice {
                host: 300,
                device: aligned(&zone, 300)
            }
        );
        assert_eq!(
            by("frame"),
            HostDevice {
                host: 0,
                device: 128 << 10
            }
        );
        assert_eq!(
            zone.stats().by_label[0].0,
            "frame",
            "largest device holder first"
        );
        // a host copy and a relabel move bytes with the tensor
        w.to_host().unwrap();
        assert_eq!(by("weights").host, 4000);
        w.set_label("frozen").unwrap();
        assert_eq!(by("weights"), HostDevice::default());
        assert_eq!(by("frozen").host, 4000);
        act.drop_device_copy().unwrap();
        assert_eq!(
            by("activations"),
            HostDevice {
                host: 300,
                device: 0
            }
        );
        // a shared tensor keeps its label
        let s = w.into_shared();
        assert_eq!(by("frozen").device, aligned(&zone, 4000));
        drop(s);
        drop(_t);
        drop((act, arena));
        assert!(
            zone.stats().by_label.is_empty(),
            "{:?}",
            zone.stats().by_label
        );
    }
}

#[test]
fn out_of_memory_names_the_biggest_labeled_holders() {
    for zone in common::zones_with(
        Zone::builder()
            .device_memory_limit(1 << 20)
            .slab_size(256 << 10),
    ) {
        let _big = Tensor::<u8>::zeros(&zone, [512 << 10], Location::Device)
            .unwrap()
            .with_label("cache")
            .unwrap();
        let err = Tensor::<u8>::zeros(&zone, [600 << 10], Location::Device).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("biggest labeled holders: \"cache\""),
            "{text}"
        );
    }
}

#[test]
fn a_zone_names_at_most_255_labels() {
    let zone = Zone::cpu();
    let mut t = Tensor::<u8>::zeros(&zone, [1], Location::Host).unwrap();
    for i in 0..255 {
        t.set_label(&format!("l{i}")).unwrap();
    }
    t.set_label("l7").unwrap(); // known names are fine
    assert_eq!(
        t.set_label("one too many"),
        Err(Error::TooManyLabels { max: 255 })
    );
    assert_eq!(
        t.label().as_deref(),
        Some("l7"),
        "unchanged after the error"
    );
}

/// A copy keeps its source's label, so the label's count covers both:
/// `try_clone`, `to_owned_tensor`, and the copy `make_mut` makes for a
/// writer while other handles share the tensor.
#[test]
fn copies_keep_their_label() {
    for zone in common::zones() {
        let b = zone.backend();
        let by = |name: &str| label_bytes(&zone, name);
        let mut w = Tensor::<f32>::full(&zone, [100], 1.0, Location::Device)
            .unwrap()
            .with_label("w")
            .unwrap();
        w.drop_host_copy().unwrap();
        let clone = w.try_clone().unwrap();
        assert_eq!(clone.label().as_deref(), Some("w"), "{b:?}");
        assert_eq!(by("w").device, 2 * aligned(&zone, 400), "{b:?}");
        drop(clone);
        let mut shared = w.into_shared();
        let reader = shared.clone();
        let owned = reader.to_owned_tensor().unwrap();
        assert_eq!(owned.label().as_deref(), Some("w"), "{b:?}");
        drop(owned);
        shared
            .make_mut()
            .unwrap()
            .write_device(&[2.0; 100])
            .unwrap();
        assert_eq!(by("w").device, 2 * aligned(&zone, 400), "{b:?}");
        assert_eq!(reader.to_vec().unwrap(), vec![1.0; 100], "{b:?}");
        assert_eq!(shared.to_vec().unwrap(), vec![2.0; 100], "{b:?}");
        drop((shared, reader));
        assert_eq!(by("w"), HostDevice::default(), "{b:?}");
    }
}
