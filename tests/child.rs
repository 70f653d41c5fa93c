//! Child zones: own accounting over the parent's pools, roll-up into the
//! parent's figures, and byte quotas. Every test runs on each backend.

mod common;

use tensorzone::{Error, Location, Tensor};

#[test]
fn a_child_counts_its_own_and_rolls_up_into_its_parent() {
    for zone in common::zones() {
        let base = zone.stats();
        let io = zone.child("io");
        assert_eq!(io.label(), format!("{}/io", zone.label()));
        assert!(io.parent().is_some_and(|p| p.same_zone(&zone)));
        let mine = Tensor::<u32>::zeros(&zone, [64], Location::Device).unwrap();
        let mut a = Tensor::from_slice(&io, [256], &[7u32; 256], Location::Device).unwrap();
        let b = Tensor::<u8>::zeros(&io, [100], Location::Host).unwrap();

        let c = io.stats();
        assert_eq!((c.tensors_live, c.tensors_created), (2, 2), "{c}");
        assert_eq!(c.device_live_bytes, 1024, "{c}");
        assert_eq!(c.host_live_bytes, 100, "{c}");
        assert_eq!(c.host_to_device.bytes, 1024, "{c}");

        let p = zone.stats();
        assert_eq!(p.tensors_live, base.tensors_live + 3, "{p}");
        assert_eq!(
            p.device_live_bytes,
            base.device_live_bytes + 256 + 1024,
            "{p}"
        );
        assert_eq!(p.host_live_bytes, base.host_live_bytes + 100, "{p}");
        assert_eq!(
            p.host_to_device.bytes,
            base.host_to_device.bytes + 1024,
            "{p}"
        );

        // Tensors of a zone and its child copy into each other.
        let mut back = Tensor::<u32>::empty(&zone, [256], Location::Device).unwrap();
        back.copy_from(&mut a).unwrap();
        assert_eq!(back.to_vec().unwrap(), vec![7u32; 256]);
        drop(back);

        drop((a, b));
        let c = io.stats();
        assert_eq!(
            (c.tensors_live, c.device_live_bytes, c.host_live_bytes),
            (0, 0, 0)
        );
        // The child is gone with its tensors: its running totals stay in
        // the parent's.
        drop(io);
        let p = zone.stats();
        assert_eq!(p.tensors_live, base.tensors_live + 1, "{p}");
        assert_eq!(p.tensors_created, base.tensors_created + 4, "{p}");
        assert!(
            p.host_to_device.bytes >= base.host_to_device.bytes + 1024,
            "{p}"
        );
        assert_eq!(p.device_live_bytes, base.device_live_bytes + 256, "{p}");
        drop(mine);
    }
}

#[test]
fn going_over_a_quota_is_an_error_that_changes_nothing() {
    for zone in common::zones() {
        let actor = zone.child_with_quota("actor", 8192);
        let mut kept = Tensor::from_slice(&actor, [1024], &[3u32; 1024], Location::Host).unwrap();
        let before = actor.stats();
        let parent_before = zone.stats();
        for loc in [Location::Host, Location::Device] {
            let err = Tensor::<u32>::zeros(&actor, [1025], loc).unwrap_err();
            match err {
                Error::QuotaExceeded {
                    ref zone,
                    quota,
                    used,
                    requested,
                } => {
                    assert!(zone.ends_with("/actor"), "{zone}");
                    // A device range takes whole units of the alignment.
                    let a = actor.info().alignment;
                    let takes = if loc == Location::Host {
                        4100
                    } else {
                        4100u64.div_ceil(a) * a
                    };
                    assert_eq!((quota, used, requested), (8192, 4096, takes));
                }
                e => panic!("expected QuotaExceeded, got {e:?}"),
            }
        }
        // Moving the kept tensor to the device would take it to 8192: allowed.
        kept.to_device().unwrap();
        assert_eq!(actor.stats().device_live_bytes, 4096);
        kept.drop_device_copy().unwrap();
        let after = actor.stats();
        assert_eq!(
            (
                after.tensors_live,
                after.host_live_bytes,
                after.device_live_bytes
            ),
            (
                before.tensors_live,
                before.host_live_bytes,
                before.device_live_bytes
            )
        );
        assert_eq!(zone.stats().tensors_live, parent_before.tensors_live);
        assert_eq!(kept.to_vec().unwrap(), vec![3u32; 1024]);

        // A grandchild's bytes count against its parent's quota too.
        let step = actor.child("step");
        let err = Tensor::<u8>::zeros(&step, [5000], Location::Device).unwrap_err();
        assert!(
            matches!(err, Error::QuotaExceeded { quota: 8192, .. }),
            "{err:?}"
        );
        let small = Tensor::<u8>::zeros(&step, [4000], Location::Device).unwrap();
        let grandchild = step.stats().device_live_bytes;
        assert!(grandchild >= 4000);
        assert_eq!(actor.stats().device_live_bytes, grandchild);
        drop(small);
    }
}

#[test]
fn a_child_arena_counts_against_the_quota() {
    for zone in common::zones() {
        let frame = zone.child_with_quota("frame", 64 << 10);
        let arena = frame.arena_with_capacity(32 << 10);
        arena.zeros::<u8>([16 << 10], Location::Device).unwrap();
        assert_eq!(frame.stats().tiers.arena.device, 32 << 10);
        let too_big = frame.arena_with_capacity(48 << 10);
        let err = too_big.zeros::<u8>([1], Location::Device).unwrap_err();
        assert!(matches!(err, Error::QuotaExceeded { .. }), "{err:?}");
        assert_eq!(frame.leaks().len(), 2, "two arenas");
    }
}

/// A default arena fits its chunks (64 KiB host, 1 MiB device) to half
/// the room a small quota has left, so it works within the quota.
#[test]
fn a_default_arena_works_under_a_quota_smaller_than_its_chunks() {
    for zone in common::zones() {
        let b = zone.backend();
        let actor = zone.child_with_quota("actor", 4096);
        let arena = actor.arena();
        let mut h = arena
            .from_slice([100], &[5u8; 100], Location::Host)
            .unwrap();
        let mut d = arena
            .from_slice([100], &[6u8; 100], Location::Device)
            .unwrap();
        assert_eq!(
            (h.to_vec().unwrap(), d.to_vec().unwrap()),
            (vec![5; 100], vec![6; 100])
        );
        let s = actor.stats();
        assert_eq!(s.tiers.arena.host, 2048, "{b:?}: {s}");
        assert!(
            s.host_live_bytes + s.device_live_bytes <= 4096,
            "{b:?}: {s}"
        );
        // Past the room left, a request is refused with the quota's error.
        let err = arena.zeros::<u8>([4096], Location::Host).unwrap_err();
        assert!(matches!(err, Error::QuotaExceeded { .. }), "{b:?}: {err:?}");
    }
}

/// Threads that pass the quota check at the same moment must not together
/// go past it: each round exactly one of them gets its tensor.
#[test]
fn racing_allocations_never_go_past_a_quota() {
    use std::sync::{Barrier, Mutex};
    const THREADS: usize = 4;
    for zone in common::zones() {
        let child = zone.child_with_quota("racing", 4096);
        for round in 0..200 {
            let loc = if round % 2 == 0 {
                Location::Host
            } else {
                Location::Device
            };
            let start = Barrier::new(THREADS);
            let got = Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        start.wait();
                        let r = Tensor::<u8>::zeros(&child, [3000], loc);
                        got.lock().unwrap().push(r);
                    });
                }
            });
            let got = got.into_inner().unwrap();
            let ok = got.iter().filter(|r| r.is_ok()).count();
            assert_eq!(
                ok, 1,
                "round {round} ({loc:?}): {ok} tensors of 3000 B in a 4096 B quota"
            );
            for r in &got {
                if let Err(e) = r {
                    assert!(matches!(e, Error::QuotaExceeded { quota: 4096, .. }), "{e}");
                }
            }
            drop(got);
            let s = child.stats();
            assert_eq!((s.host_live_bytes, s.device_live_bytes), (0, 0), "{s}");
        }
    }
}

/// The pool rounds a request up (a size class, a reused cached block):
/// the quota holds for the bytes the range really takes.
#[test]
fn a_quota_counts_the_rounded_range_not_the_request() {
    const MIB: u64 = 1 << 20;
    for zone in common::zones() {
        let b = zone.backend();
        let child = zone.child_with_quota("q", 9 * MIB);
        let r = Tensor::<u8>::zeros(&child, [(8 << 20) + 4], Location::Device);
        match r {
            Err(Error::QuotaExceeded {
                quota, requested, ..
            }) => {
                assert_eq!(quota, 9 * MIB, "{b:?}");
                assert!(requested > 9 * MIB, "{b:?}: {requested}");
            }
            other => panic!("{b:?}: {other:?}"),
        }
        let s = child.stats();
        assert_eq!(
            (s.device_live_bytes, s.tensors_live, s.tensors_created),
            (0, 0, 0),
            "{b:?}"
        );
        // What fits as rounded is allowed, up to the quota.
        let t = Tensor::<u8>::zeros(&child, [8 << 20], Location::Device).unwrap();
        assert!(child.stats().device_live_bytes <= 9 * MIB, "{b:?}");
        assert_eq!(child.stats().tensors_created, 1, "{b:?}");
        drop(t);
    }
}

/// A cached block the pool would reuse can be up to a quarter larger than
/// a fresh one: a request that fits its quota with a fresh block gets one
/// rather than an error.
#[test]
fn a_quota_takes_a_fresh_block_when_a_cached_one_is_too_big() {
    const MIB: usize = 1 << 20;
    for zone in common::zones() {
        let b = zone.backend();
        // A 12 MiB block, cached once its tensor is dropped.
        drop(Tensor::<u8>::empty(&zone, [12 * MIB], Location::Device).unwrap());
        assert!(zone.stats().device_cached_bytes >= 12 << 20, "{b:?}");
        let child = zone.child_with_quota("q", 10 << 20);
        let t = Tensor::<u8>::zeros(&child, [9 * MIB], Location::Device)
            .unwrap_or_else(|e| panic!("{b:?}: {e}"));
        let live = child.stats().device_live_bytes;
        assert!((9 << 20..=10 << 20).contains(&live), "{b:?}: {live}");
        drop(t);
    }
}
