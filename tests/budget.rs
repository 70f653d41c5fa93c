//! The device budget: spill to the host, reload on the next device use,
//! and the out-of-memory error when nothing can be spilled. Every test runs
//! on each backend.

mod common;

use tensorzone::{DType, Error, Event, Location, Tensor, Zone};

const KIB: u64 = 1024;
/// One 1 MiB slab is the whole budget.
const BUDGET: u64 = 1024 * KIB;
/// 128 KiB tensors: eight fill the budget.
const LEN: usize = 32 * 1024;

fn budget() -> tensorzone::ZoneBuilder {
    Zone::builder().slab_size(BUDGET).device_budget(BUDGET)
}

fn budget_zones() -> Vec<Zone> {
    common::zones_with(budget())
}

/// The GPU zone with the budget, if this machine has an adapter.
fn gpu_budget_zone() -> Option<Zone> {
    common::gpu_zone_with(budget())
}

/// Tensor `i`'s contents: distinct per tensor and element.
fn pattern(i: usize) -> Vec<u32> {
    (0..LEN as u32)
        .map(|k| k * 31 + i as u32 * 1_000_003)
        .collect()
}

/// A device-only tensor holding `pattern(i)`.
fn device_tensor(zone: &Zone, i: usize) -> Tensor<u32> {
    let mut t = Tensor::empty(zone, [LEN], Location::Device).unwrap();
    t.write_device(&pattern(i)).unwrap();
    t
}

#[test]
fn twice_the_budget_spills_and_reloads_with_exact_contents() {
    for zone in budget_zones() {
        let bytes = (LEN * 4) as u64;
        let mut ts: Vec<Tensor<u32>> = (0..16).map(|i| device_tensor(&zone, i)).collect();
        let s = zone.stats();
        // The pool stays in its one slab (the GPU backend's scratch buffer
        // for copies within a slab is outside the budget).
        assert_eq!((s.device_slabs, s.device_dedicated_blocks), (1, 0), "{s}");
        // Eight fit; making the other eight spilled eight, oldest first.
        assert_eq!(s.spills.calls, 8, "{s}");
        assert_eq!(s.spills.bytes, 8 * bytes);
        assert_eq!(s.spilled_held_bytes, 8 * bytes);
        assert_eq!(s.reloads.calls, 0);
        // Live bytes still count every tensor: spilled ones on the host.
        assert_eq!(s.device_live_bytes, 8 * bytes);
        assert_eq!(s.host_live_bytes, 8 * bytes);

        // A device use of each tensor, oldest first: each spilled one comes
        // back (spilling the least recently used resident one), and a
        // device-to-device copy shows its exact bytes.
        for (i, t) in ts.iter_mut().enumerate() {
            let mut copy = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
            copy.copy_from(t).unwrap();
            assert_eq!(copy.to_vec().unwrap(), pattern(i), "tensor {i}");
        }
        let s = zone.stats();
        assert!(s.reloads.calls >= 8, "{s}");
        assert_eq!(s.reloads.bytes, s.reloads.calls * bytes);
        assert_eq!((s.device_slabs, s.device_dedicated_blocks), (1, 0), "{s}");

        // Host reads of spilled tensors copy the saved bytes: no reload.
        let reloads = s.reloads.calls;
        for (i, t) in ts.iter_mut().enumerate() {
            assert_eq!(t.to_vec().unwrap(), pattern(i), "tensor {i}");
        }
        assert_eq!(zone.stats().reloads.calls, reloads);

        drop(ts);
        let s = zone.stats();
        assert_eq!(
            (
                s.tensors_live,
                s.device_live_bytes,
                s.host_live_bytes,
                s.spilled_held_bytes
            ),
            (0, 0, 0, 0),
            "{s}"
        );
    }
}

/// A write of every byte to a spilled tensor (`write_device`,
/// `upload_pinned`, `copy_from`, a kernel's output) gives it a device range
/// again and drops the saved bytes: nothing is reloaded only to be
/// overwritten.
#[test]
fn a_full_write_to_a_spilled_tensor_drops_its_saved_bytes_instead_of_reloading_them() {
    for zone in budget_zones() {
        let b = zone.backend();
        let bytes = (LEN * 4) as u64;
        // Twelve tensors in a budget of eight: tensors 0..4 are spilled.
        let mut ts: Vec<Tensor<u32>> = (0..12).map(|i| device_tensor(&zone, i)).collect();
        let s = zone.stats();
        assert_eq!(
            (s.spills.calls, s.spilled_held_bytes),
            (4, 4 * bytes),
            "{b:?}"
        );

        ts[0].write_device(&pattern(100)).unwrap();
        let mut p = zone.pinned::<u32>(LEN).unwrap();
        p.write(0, &pattern(101)).unwrap();
        ts[1].upload_pinned(p).unwrap();
        let (spilled, resident) = ts.split_at_mut(4);
        spilled[2].copy_from(&mut resident[7]).unwrap();
        let kernel = zone.wgpu_device().is_some();
        if kernel {
            zone.kernels().fill(&mut spilled[3], 7u32).unwrap();
        }
        let s = zone.stats();
        assert_eq!(s.reloads.calls, 0, "{b:?}: {s}");
        // Each write spilled one more tensor to make room; the written
        // tensors' saved bytes are gone.
        let writes = if kernel { 4 } else { 3 };
        assert_eq!(s.spills.calls, 4 + writes, "{b:?}");
        assert_eq!(s.spilled_held_bytes, 4 * bytes, "{b:?}");

        let want = |i: usize| match i {
            0 => pattern(100),
            1 => pattern(101),
            2 => pattern(11),
            3 if kernel => vec![7; LEN],
            i => pattern(i),
        };
        for (i, t) in ts.iter_mut().enumerate() {
            assert_eq!(t.to_vec().unwrap(), want(i), "{b:?} tensor {i}");
        }
    }
}

#[test]
fn dropping_a_spilled_tensor_or_its_device_copy_frees_the_saved_bytes() {
    for zone in budget_zones() {
        let mut ts: Vec<Tensor<u32>> = (0..10).map(|i| device_tensor(&zone, i)).collect();
        let bytes = (LEN * 4) as u64;
        assert_eq!(zone.stats().spilled_held_bytes, 2 * bytes);
        // Spilled tensor 1 keeps its data on the host when its device copy goes.
        ts[1].drop_device_copy().unwrap();
        assert_eq!(ts[1].to_vec().unwrap(), pattern(1));
        assert!(ts[1].residency().device == tensorzone::CopyState::Absent);
        drop(ts.remove(0));
        let s = zone.stats();
        assert_eq!(s.spilled_held_bytes, 0, "{s}");
        assert_eq!(s.host_live_bytes, bytes, "{s}"); // tensor 1's host copy
        assert_eq!(s.tensors_live, 9);
    }
}

#[test]
fn arena_tensors_are_never_spilled_and_the_error_says_why() {
    for zone in budget_zones() {
        let mut owned = device_tensor(&zone, 0).with_label("small owned").unwrap();
        // Three arenas of one 256 KiB slab chunk each.
        let mut arenas: Vec<_> = (0..3)
            .map(|_| {
                let mut a = zone.arena_with_capacity(256 * KIB);
                a.set_label("frame").unwrap();
                a
            })
            .collect();
        let frame = arenas[0]
            .from_slice([LEN], &pattern(1), Location::Device)
            .unwrap();
        for a in &arenas[1..] {
            a.zeros::<u32>([LEN], Location::Device).unwrap();
        }
        // 768 KiB of arena and 128 KiB owned: a 256 KiB tensor needs the
        // owned one spilled, and still does not fit.
        let before = zone.stats();
        assert_eq!(before.spills.calls, 0, "{before}");
        let err = Tensor::<u32>::empty(&zone, [2 * LEN], Location::Device).unwrap_err();
        match &err {
            Error::OutOfMemory {
                limit,
                live,
                detail,
                ..
            } => {
                assert_eq!(*limit, Some(BUDGET));
                assert_eq!(*live, 768 * KIB, "{err}");
                assert!(detail.contains("\"frame\""), "{detail}");
            }
            e => panic!("expected OutOfMemory, got {e:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("1048576"), "{text}");
        // The owned tensor was spilled trying; nothing is lost.
        let s = zone.stats();
        assert_eq!(s.spills.calls, before.spills.calls + 1, "{s}");
        let mut frame = frame;
        assert_eq!(frame.to_vec().unwrap(), pattern(1));
        assert_eq!(owned.to_vec().unwrap(), pattern(0));
        drop(frame);
        arenas.clear();
        // With the arena gone the same request fits.
        let t = Tensor::<u32>::empty(&zone, [2 * LEN], Location::Device).unwrap();
        drop(t);
    }
}

#[test]
fn shared_tensors_spill_and_reload_too() {
    for zone in budget_zones() {
        let weights = device_tensor(&zone, 7).into_shared();
        let mut others: Vec<Tensor<u32>> = (0..8).map(|i| device_tensor(&zone, i)).collect();
        let s = zone.stats();
        assert_eq!(s.spills.calls, 1);
        // The spilled copy's bytes moved to the host in the shared tier's
        // count at once, not at the shared tensor's next operation.
        let tensor = LEN as u64 * 4;
        assert_eq!(
            (s.tiers.shared.host, s.tiers.shared.device),
            (tensor, 0),
            "{s}"
        );
        assert_eq!(
            (s.tiers.owned.host, s.tiers.owned.device),
            (0, 8 * tensor),
            "{s}"
        );
        assert_eq!(weights.to_vec().unwrap(), pattern(7));
        // A device use of the shared tensor reloads it.
        let mut copy = weights.to_owned_tensor().unwrap();
        assert_eq!(copy.to_vec().unwrap(), pattern(7));
        let s = zone.stats();
        assert!(s.reloads.calls >= 1);
        // Tier counts add up to the totals through spills and reloads.
        let t = s.tiers;
        assert_eq!(t.owned.device + t.shared.device, s.device_live_bytes, "{s}");
        assert_eq!(t.owned.host + t.shared.host, s.host_live_bytes, "{s}");
        for (i, t) in others.iter_mut().enumerate() {
            assert_eq!(t.to_vec().unwrap(), pattern(i), "tensor {i}");
        }
        drop((others, copy));
        let s = zone.stats();
        let t = s.tiers;
        assert_eq!(t.owned.device + t.shared.device, s.device_live_bytes, "{s}");
        assert_eq!(t.owned.host + t.shared.host, s.host_live_bytes, "{s}");
        drop(weights);
        let s = zone.stats();
        assert_eq!((s.tiers.shared.host, s.tiers.shared.device), (0, 0), "{s}");
        assert_eq!((s.host_live_bytes, s.device_live_bytes), (0, 0), "{s}");
    }
}

#[test]
fn a_bound_tensor_waits_for_the_device_before_it_can_spill() {
    let Some(zone) = gpu_budget_zone() else {
        return;
    };
    let mut bound = device_tensor(&zone, 0);
    bound.binding().unwrap();
    // Seven more fill the budget; the ninth must spill, and the bound
    // (least recently used) tensor is skipped: the next one goes.
    let mut ts: Vec<Tensor<u32>> = (1..9).map(|i| device_tensor(&zone, i)).collect();
    assert_eq!(zone.stats().spills.calls, 1);
    assert_eq!(zone.stats().reloads.calls, 0);
    let mut copy = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
    // Tensor 1 was spilled (copying from it reloads it), not the bound one.
    copy.copy_from(&mut ts[0]).unwrap();
    assert_eq!(zone.stats().reloads.calls, 1);
    assert_eq!(copy.to_vec().unwrap(), pattern(1));
    drop(copy);
    // After a wait for the device, the bound tensor may go.
    zone.synchronize().unwrap();
    let spills = zone.stats().spills.calls;
    let _more: Vec<Tensor<u32>> = (9..11).map(|i| device_tensor(&zone, i)).collect();
    assert!(zone.stats().spills.calls > spills);
    assert_eq!(bound.to_vec().unwrap(), pattern(0));
    for (i, t) in ts.iter_mut().enumerate() {
        assert_eq!(t.to_vec().unwrap(), pattern(i + 1), "tensor {}", i + 1);
    }
}

#[test]
fn spills_and_reloads_are_traced() {
    for zone in budget_zones() {
        zone.start_trace();
        let mut ts: Vec<Tensor<u32>> = (0..9).map(|i| device_tensor(&zone, i)).collect();
        let mut copy = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
        copy.copy_from(&mut ts[0]).unwrap();
        let trace = zone.stop_trace();
        let bytes = (LEN * 4) as u64;
        let count = |want: &Event| trace.events().iter().filter(|e| &e.event == want).count();
        // Tensor 0 for the ninth, tensor 1 for `copy`, tensor 2 for
        // tensor 0's reload.
        assert_eq!(count(&Event::Spill { bytes }), 3);
        assert_eq!(count(&Event::Reload { bytes }), 1);
        let json: serde_json::Value = serde_json::from_str(&trace.to_chrome_json()).unwrap();
        let names: Vec<&str> = json["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names.iter().filter(|n| **n == "spill").count(), 3);
        assert_eq!(names.iter().filter(|n| **n == "reload").count(), 1);
    }
}

#[test]
fn host_only_work_on_a_spilled_tensor_reloads_nothing() {
    for zone in budget_zones() {
        let mut ts: Vec<Tensor<u32>> = (0..9).map(|i| device_tensor(&zone, i)).collect();
        assert_eq!(zone.stats().spills.calls, 1);
        // Tensor 0 is spilled: host writes need its bytes on the host only.
        ts[0].as_mut_slice().unwrap()[0] = 42;
        ts[0].write_host(&pattern(50)).unwrap();
        assert_eq!(zone.stats().reloads.calls, 0);
        assert_eq!(ts[0].to_vec().unwrap(), pattern(50));
        // Its next device use uploads the host copy.
        let mut copy = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
        copy.copy_from(&mut ts[0]).unwrap();
        assert_eq!(copy.to_vec().unwrap(), pattern(50));
    }
}

#[test]
fn a_parent_and_its_child_spill_each_others_tensors() {
    for zone in budget_zones() {
        let child = zone.child("worker");
        let mut parents: Vec<Tensor<u32>> = (0..8).map(|i| device_tensor(&zone, i)).collect();
        // The budget is full of the parent's tensors: the child's spills one.
        let mut mine = device_tensor(&child, 100);
        assert_eq!(zone.stats().spills.calls, 1, "{}", zone.stats());
        assert_eq!(mine.to_vec().unwrap(), pattern(100));
        for (i, t) in parents.iter_mut().enumerate() {
            assert_eq!(t.to_vec().unwrap(), pattern(i), "tensor {i}");
        }
    }
}

#[test]
fn a_quota_does_not_count_a_reload_twice() {
    for zone in budget_zones() {
        let child = zone.child_with_quota("q", 2 * (LEN * 4) as u64);
        let mut a = device_tensor(&child, 1);
        let _b = device_tensor(&child, 2);
        // Fill the rest of the budget from the parent: the child's `a` is
        // the least recently used and goes to the host.
        let _fill: Vec<Tensor<u32>> = (0..7).map(|i| device_tensor(&zone, 10 + i)).collect();
        assert!(zone.stats().spills.calls >= 1);
        // Reloading `a` keeps the child at its 256 KiB: allowed.
        a.mark_device_written().unwrap();
        assert_eq!(zone.stats().reloads.calls, 1);
        // A host copy of `a` would take the child past its quota (`b` is
        // on the host now): read it through a copy in the parent.
        let mut out = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
        out.copy_from(&mut a).unwrap();
        assert_eq!(out.to_vec().unwrap(), pattern(1));
        assert!(matches!(
            a.to_vec(),
            Err(tensorzone::Error::QuotaExceeded { .. })
        ));
    }
}

#[test]
fn labels_stay_exact_while_other_threads_spill() {
    for zone in budget_zones() {
        // Each round both threads hold their five tensors at once: ten in
        // a budget of eight, so spills happen however the threads run.
        let together = std::sync::Arc::new(std::sync::Barrier::new(2));
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let zone = zone.clone();
                let together = together.clone();
                std::thread::spawn(move || {
                    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
                    // A failing thread still meets the other at every
                    // barrier (else the other would wait there for ever),
                    // and fails once the rounds are done.
                    let mut failed = None;
                    for round in 0..20 {
                        let made = catch_unwind(AssertUnwindSafe(|| {
                            (0..5)
                                .map(|i| {
                                    device_tensor(&zone, w * 100 + i)
                                        .with_label(if round % 2 == 0 { "even" } else { "odd" })
                                        .unwrap()
                                })
                                .collect::<Vec<Tensor<u32>>>()
                        }));
                        together.wait();
                        let used = made.and_then(|mut ts| {
                            catch_unwind(AssertUnwindSafe(|| {
                                ts[0].set_label("moved").unwrap();
                                ts[1].drop_device_copy().unwrap();
                                assert_eq!(ts[2].to_vec().unwrap(), pattern(w * 100 + 2));
                            }))
                        });
                        if let Err(p) = used {
                            failed.get_or_insert(p);
                        }
                    }
                    if let Some(p) = failed {
                        resume_unwind(p);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let s = zone.stats();
        assert!(s.spills.calls > 0, "{s}");
        assert_eq!(s.by_label, vec![], "{s}");
        assert_eq!(
            (s.host_live_bytes, s.device_live_bytes, s.spilled_held_bytes),
            (0, 0, 0)
        );
    }
}

#[test]
fn a_zero_budget_or_quota_is_a_typed_error_not_a_panic() {
    for zone in common::zones_with(Zone::builder().device_budget(0)) {
        let err = Tensor::<u8>::zeros(&zone, [16], Location::Device).unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory { limit: Some(0), .. }),
            "{err:?}"
        );
        // Host tensors need no device memory.
        let mut t = Tensor::from_slice(&zone, [2], &[1u8, 2], Location::Host).unwrap();
        assert!(matches!(t.to_device(), Err(Error::OutOfMemory { .. })));
        assert_eq!(t.to_vec().unwrap(), [1, 2]);
        assert_eq!(zone.stats().tensors_live, 1);
    }
    for zone in common::zones() {
        let none = zone.child_with_quota("none", 0);
        // A device range takes a whole unit of the alignment.
        let unit = none.info().alignment;
        for (loc, takes) in [(Location::Host, 1), (Location::Device, unit)] {
            let err = Tensor::<u8>::zeros(&none, [1], loc).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::QuotaExceeded {
                        quota: 0,
                        used: 0,
                        requested,
                        ..
                    } if requested == takes
                ),
                "{err:?}"
            );
        }
        assert_eq!(none.stats().tensors_live, 0);
        assert!(none.leaks().is_empty());
    }
}

/// A kernel whose output cannot be placed leaves none of its inputs held
/// or marked bound: the input it bound before the failure may spill at
/// once, with no wait for the device first.
#[test]
fn a_kernel_that_cannot_place_its_output_leaves_its_input_spillable() {
    let Some(zone) = gpu_budget_zone() else {
        return;
    };
    let mut out = device_tensor(&zone, 1);
    let mut input = device_tensor(&zone, 0);
    // Seven 128 KiB arenas: the sixth spills `out`, the least recently
    // used; then the budget is full of input and arenas, and nothing but
    // the input could make room.
    let arenas: Vec<_> = (0..7)
        .map(|_| {
            let a = zone.arena_with_capacity(128 * KIB);
            a.zeros::<u32>([LEN], Location::Device).unwrap();
            a
        })
        .collect();
    let s = zone.stats();
    assert_eq!((s.spills.calls, s.spilled_held_bytes), (1, LEN as u64 * 4));
    let err = zone.kernels().copy(&mut input, &mut out).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    // Released and never recorded, the input spills for the next tensor.
    let fresh = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
    let s = zone.stats();
    assert_eq!(
        (s.spills.calls, s.spilled_held_bytes),
        (2, 2 * LEN as u64 * 4)
    );
    drop((fresh, arenas));
    assert_eq!(input.to_vec().unwrap(), pattern(0));
    assert_eq!(out.to_vec().unwrap(), pattern(1));
}

#[test]
fn a_shared_kernel_input_can_spill_once_the_kernel_is_done_but_a_bound_one_cannot() {
    let Some(zone) = gpu_budget_zone() else {
        return;
    };
    let tensor = LEN as u64 * 4;
    let mut weights = device_tensor(&zone, 0).into_shared();
    let pinned = device_tensor(&zone, 1).into_shared();
    let mut out = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
    zone.kernels().copy(&mut weights, &mut out).unwrap();
    // A binding a caller holds may be used while any handle lives.
    pinned.binding().unwrap();
    zone.synchronize().unwrap();
    assert_eq!(out.to_vec().unwrap(), pattern(0));
    // Five more fill the budget; each of the next two must spill one of
    // the two shared tensors, the least recently used first, and only
    // the kernel's input may go.
    let mut more: Vec<Tensor<u32>> = (2..7).map(|i| device_tensor(&zone, i)).collect();
    assert_eq!(zone.stats().spills.calls, 0);
    more.push(device_tensor(&zone, 7));
    let s = zone.stats();
    assert_eq!(s.spills.calls, 1);
    assert_eq!(
        (s.tiers.shared.host, s.tiers.shared.device),
        (tensor, tensor),
        "{s}"
    );
    assert_eq!(weights.to_vec().unwrap(), pattern(0));
    more.push(device_tensor(&zone, 8));
    // The next victim is an owned tensor, never the bound one.
    let s = zone.stats();
    assert_eq!(s.spills.calls, 2);
    assert_eq!(s.tiers.shared.device, tensor, "{s}");
    assert_eq!(pinned.to_vec().unwrap(), pattern(1));
    for (t, i) in more.iter_mut().zip(2..) {
        assert_eq!(t.to_vec().unwrap(), pattern(i), "tensor {i}");
    }
}

#[test]
fn tensors_not_used_yet_spill_too() {
    for zone in budget_zones() {
        let dims = [LEN / 256, 256];
        let mut ts: Vec<Tensor<u32>> = (0..8)
            .map(|_| Tensor::<u32>::empty(&zone, dims, Location::Device).unwrap())
            .collect();
        // Registered with their dtype and bytes before any use...
        let d = zone.stats().by_dtype;
        let u32s = d.iter().find(|u| u.dtype == DType::U32);
        assert_eq!(
            u32s.map(|u| (u.tensors, u.bytes)),
            Some((8, 8 * LEN as u64 * 4)),
            "{d:?}"
        );
        // ...their shape as one line until the first use gives it.
        assert_eq!(zone.leaks()[0].dims, [LEN]);
        // The budget is full of tensors nothing has touched: the ninth
        // spills one rather than failing.
        let mut ninth = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
        assert_eq!(zone.stats().spills.calls, 1, "{:?}", zone.backend());
        ninth.write_device(&pattern(9)).unwrap();
        for t in &mut ts {
            assert_eq!(t.to_vec().unwrap(), vec![0; LEN]);
        }
        assert_eq!(ninth.to_vec().unwrap(), pattern(9));
        assert_eq!(zone.leaks()[0].dims, dims);
    }
}

#[test]
fn a_host_write_to_a_spilled_tensor_drops_its_saved_bytes() {
    for zone in budget_zones() {
        let mut ts: Vec<Tensor<u32>> = (0..9).map(|i| device_tensor(&zone, i)).collect();
        let s = zone.stats();
        assert_eq!((s.spills.calls, s.spilled_held_bytes), (1, LEN as u64 * 4));
        // Tensor 0 went; overwriting it on the host makes its saved bytes
        // stale: they are let go at once...
        ts[0].write_host(&pattern(50)).unwrap();
        let before = zone.stats();
        assert_eq!(before.spilled_held_bytes, 0, "{before}");
        assert_eq!(before.host_live_bytes, LEN as u64 * 4, "{before}");
        // ...and the next device use uploads the host copy once, reloading
        // nothing.
        ts[0].to_device().unwrap();
        let after = zone.stats();
        assert_eq!(after.host_to_device.calls - before.host_to_device.calls, 1);
        assert_eq!(after.reloads.calls, before.reloads.calls);
        assert_eq!(ts[0].to_vec().unwrap(), pattern(50));
        // The same through a mutable host view and a CPU-side rewrite.
        let mut more: Vec<Tensor<u32>> = (10..12).map(|i| device_tensor(&zone, i)).collect();
        let spilled = zone.stats().spilled_held_bytes;
        assert!(spilled > 0);
        for t in ts.iter_mut().chain(more.iter_mut()) {
            t.as_mut_slice().unwrap()[0] += 1;
        }
        assert_eq!(zone.stats().spilled_held_bytes, 0);
        let t = zone.stats().tiers;
        let s = zone.stats();
        assert_eq!(t.owned.device, s.device_live_bytes, "{s}");
        assert_eq!(t.owned.host, s.host_live_bytes, "{s}");
    }
}

/// `make_mut` on a shared tensor that no binding pinned leaves it free to
/// spill at once: it used to mark it bound until the zone next waited.
#[test]
fn make_mut_on_an_unbound_shared_tensor_leaves_it_spillable() {
    for zone in budget_zones() {
        let b = zone.backend();
        let t = Tensor::<f32>::full(&zone, [100_000], 1.0, Location::Device).unwrap();
        let mut s = t.into_shared();
        s.make_mut().unwrap().drop_host_copy().unwrap();
        let big = Tensor::<f32>::zeros(&zone, [150_000], Location::Device)
            .unwrap_or_else(|e| panic!("{b:?}: the shared tensor should have spilled: {e}"));
        assert_eq!(zone.stats().spills.calls, 1, "{b:?}");
        drop(big);
        assert!(s.to_vec().unwrap().iter().all(|&x| x == 1.0), "{b:?}");
    }
}

/// A child's request its quota refuses, once rounded to what a range
/// takes, spills nothing and creates nothing on its way to the error.
#[test]
fn a_request_over_a_child_quota_spills_nothing() {
    for zone in budget_zones() {
        let b = zone.backend();
        let _full: Vec<_> = (0..8).map(|i| device_tensor(&zone, i)).collect();
        let child = zone.child_with_quota("q", 4100);
        let before = zone.stats();
        let err = Tensor::<u8>::zeros(&child, [4100], Location::Device).unwrap_err();
        assert!(matches!(err, Error::QuotaExceeded { .. }), "{b:?}: {err}");
        let after = zone.stats();
        assert_eq!(after.spills, before.spills, "{b:?}");
        assert_eq!(
            after.device_blocks_created, before.device_blocks_created,
            "{b:?}"
        );
        assert_eq!(after.device_allocations, before.device_allocations, "{b:?}");
    }
}

/// Threads spilling at once never make each other fail: while some
/// resident tensor is idle, an allocation spills it. Four 128 KiB slots,
/// four threads with three tensors each: when one thread needs room, the
/// other three use at most three tensors, so one is always idle. (Before
/// spills took turns, 18 of 20 runs failed with `OutOfMemory`.)
#[test]
fn threads_spilling_at_once_never_run_out_while_a_tensor_is_idle() {
    let slots = 4 * LEN as u64 * 4;
    let builder = Zone::builder().slab_size(slots).device_budget(slots);
    for zone in common::zones_with(builder) {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let zone = zone.clone();
                std::thread::spawn(move || {
                    let mut ts: Vec<Tensor<u32>> =
                        (0..3).map(|i| device_tensor(&zone, w * 10 + i)).collect();
                    for round in 0..2000 {
                        let i = round % 3;
                        let id = w * 10 + i + round;
                        ts[i].write_device(&pattern(id)).unwrap();
                        assert_eq!(ts[i].to_vec().unwrap(), pattern(id));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let s = zone.stats();
        assert!(s.spills.calls > 0, "{s}");
        assert_eq!(s.device_live_bytes + s.host_live_bytes, 0, "{s}");
    }
}

/// `to_device` on a spilled tensor brings its bytes back (a prefetch
/// before a kernel), owned and shared alike; on a resident one it moves
/// nothing.
#[test]
fn to_device_brings_a_spilled_tensor_back() {
    for zone in budget_zones() {
        let b = zone.backend();
        let bytes = (LEN * 4) as u64;
        let shared = device_tensor(&zone, 0).into_shared();
        let mut ts: Vec<Tensor<u32>> = (1..9).map(|i| device_tensor(&zone, i)).collect();
        let s = zone.stats();
        assert_eq!((s.spills.calls, s.spilled_held_bytes), (1, bytes), "{b:?}");
        // The shared tensor was the oldest: it comes back, and the oldest
        // owned one (tensor 1) makes room.
        shared.to_device().unwrap();
        let s = zone.stats();
        assert_eq!((s.reloads.calls, s.reloads.bytes), (1, bytes), "{b:?}: {s}");
        assert_eq!((s.spills.calls, s.spilled_held_bytes), (2, bytes), "{b:?}");
        assert_eq!((s.tiers.shared.host, s.tiers.shared.device), (0, bytes));
        ts[0].to_device().unwrap();
        let s = zone.stats();
        assert_eq!((s.reloads.calls, s.spills.calls), (2, 3), "{b:?}: {s}");
        assert_eq!(s.device_live_bytes, 8 * bytes, "{b:?}");
        // Both resident now: again moves nothing.
        ts[0].to_device().unwrap();
        shared.to_device().unwrap();
        let s = zone.stats();
        assert_eq!((s.reloads.calls, s.spills.calls), (2, 3), "{b:?}: {s}");
        assert_eq!(ts[0].to_vec().unwrap(), pattern(1), "{b:?}");
        assert_eq!(shared.to_vec().unwrap(), pattern(0), "{b:?}");
        for (i, t) in ts.iter_mut().enumerate() {
            assert_eq!(t.to_vec().unwrap(), pattern(i + 1), "{b:?} tensor {i}");
        }
    }
}

/// An arena's default chunk (1 MiB on the device) is cut to half the room
/// a budget or memory limit has left, so an arena works in a zone smaller
/// than a chunk and a small temporary spills nothing; a capacity asked for
/// is taken whole.
#[test]
fn arena_chunks_fit_a_small_budget_without_spilling() {
    let small = Zone::builder().device_budget(512 * KIB);
    let limited = Zone::builder().device_memory_limit(512 * KIB);
    for zone in [small, limited].into_iter().flat_map(common::zones_with) {
        let b = zone.backend();
        let arena = zone.arena();
        let mut t = arena
            .from_slice([4], &[1u32, 2, 3, 4], Location::Device)
            .unwrap();
        assert_eq!(t.to_vec().unwrap(), [1, 2, 3, 4], "{b:?}");
        let chunk = zone.stats().tiers.arena.device;
        assert!((16..=256 * KIB).contains(&chunk), "{b:?}: {chunk}");
        // The rest of the budget is still there for other tensors.
        let other = Tensor::<u8>::zeros(&zone, [256 << 10], Location::Device);
        assert!(other.is_ok(), "{b:?}: {other:?}");
        let whole = zone.arena_with_capacity(BUDGET);
        let err = whole.zeros::<u8>([1], Location::Device).map(|_| ());
        assert!(
            matches!(err, Err(Error::OutOfMemory { .. })),
            "{b:?}: {err:?}"
        );
    }
    for zone in budget_zones() {
        let b = zone.backend();
        // Seven of eight slots taken by tensors that could spill.
        let ts: Vec<Tensor<u32>> = (0..7).map(|i| device_tensor(&zone, i)).collect();
        let arena = zone.arena();
        let mut t = arena.zeros::<u32>([16], Location::Device).unwrap();
        assert_eq!(t.to_vec().unwrap(), [0; 16], "{b:?}");
        let s = zone.stats();
        assert_eq!(s.spills.calls, 0, "{b:?}: {s}");
        assert!(s.tiers.arena.device <= 64 * KIB, "{b:?}: {s}");
        drop(ts);
    }
}

/// A chain of kernels recorded without a wait binds every tensor it uses;
/// an allocation that finds nothing else to spill waits for the device
/// once, after which the earlier kernels' tensors spill. Before, the chain
/// failed with `OutOfMemory` at its ninth tensor on the GPU.
#[test]
fn a_chain_of_kernels_past_the_budget_spills_what_earlier_kernels_used() {
    for zone in budget_zones() {
        let b = zone.backend();
        let k = zone.kernels();
        let mut ts: Vec<Tensor<u32>> =
            vec![Tensor::full(&zone, [LEN], 1u32, Location::Device).unwrap()];
        for i in 0..15 {
            let mut next = Tensor::<u32>::empty(&zone, [LEN], Location::Device).unwrap();
            k.scale(&mut ts[i], 3, &mut next)
                .unwrap_or_else(|e| panic!("{b:?} kernel {i}: {e}"));
            ts.push(next);
        }
        let s = zone.stats();
        assert!(s.spills.calls >= 8, "{b:?}: {s}");
        for (i, t) in ts.iter_mut().enumerate() {
            assert_eq!(
                t.to_vec().unwrap(),
                vec![3u32.pow(i as u32); LEN],
                "{b:?} tensor {i}"
            );
        }
    }
}

/// A blur refused for its destination (shape, zone) allocates no
/// temporary first, so it spills nothing under a full budget.
#[test]
fn a_refused_blur_spills_nothing() {
    for zone in budget_zones() {
        let b = zone.backend();
        let mut img = Tensor::full(&zone, [128, 256], 0.5f32, Location::Device).unwrap();
        let ts: Vec<Tensor<u32>> = (0..7).map(|i| device_tensor(&zone, i)).collect();
        let mut small = Tensor::<f32>::empty(&zone, [4, 4], Location::Host).unwrap();
        let r = zone.kernels().gaussian_blur(&mut img, &mut small, 1.0);
        assert!(
            matches!(r, Err(Error::ShapeMismatch { .. })),
            "{b:?}: {r:?}"
        );
        let other = Zone::cpu();
        let mut elsewhere = Tensor::<f32>::empty(&other, [128, 256], Location::Host).unwrap();
        let r = zone.kernels().gaussian_blur(&mut img, &mut elsewhere, 1.0);
        assert!(matches!(r, Err(Error::ZoneMismatch)), "{b:?}: {r:?}");
        assert_eq!(zone.stats().spills.calls, 0, "{b:?}");
        drop(ts);
    }
}

/// The wait an allocation makes when nothing else can spill ends the
/// crate's kernels' bindings only: a binding taken for work of your own,
/// maybe not submitted yet, keeps its tensor in place until a wait at
/// your call (here `synchronize`).
#[test]
fn an_allocation_never_spills_a_tensor_bound_for_your_own_work() {
    let Some(zone) = gpu_budget_zone() else {
        return;
    };
    let mut ts: Vec<Tensor<u32>> = (0..8).map(|i| device_tensor(&zone, i)).collect();
    let places: Vec<u64> = ts.iter_mut().map(|t| t.binding().unwrap().offset).collect();
    assert_eq!(places.len(), 8);
    let r = Tensor::<u32>::empty(&zone, [LEN], Location::Device);
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
    assert_eq!(zone.stats().spills.calls, 0);
    zone.synchronize().unwrap();
    let mut ninth = device_tensor(&zone, 8);
    assert_eq!(zone.stats().spills.calls, 1);
    assert_eq!(ninth.to_vec().unwrap(), pattern(8));
    for (i, t) in ts.iter_mut().enumerate() {
        assert_eq!(t.to_vec().unwrap(), pattern(i), "tensor {i}");
    }
}
