//! The leak report of tracking zones: `zone.leaks()` and the hook that runs
//! when the zone's last handle is dropped with tensors or arenas alive.

mod common;

use std::sync::{Arc, Mutex};

use tensorzone::{DType, Leak, LeakKind, Location, Tensor, Zone};

fn tracking_zones() -> Vec<Zone> {
    common::zones_with(Zone::builder().label("leaky").track_tensors(true))
}

type Seen = Arc<Mutex<Vec<(String, Vec<Leak>)>>>;

fn hook(zone: &Zone) -> Seen {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    zone.set_leak_hook(Box::new(move |name, leaks| {
        sink.lock()
            .unwrap()
            .push((name.to_string(), leaks.to_vec()))
    }));
    seen
}

#[test]
fn leaks_lists_every_live_tensor_shared_tensor_and_arena() {
    for zone in tracking_zones() {
        let a = Tensor::<f32>::zeros(&zone, [2, 3], Location::Device)
            .unwrap()
            .with_label("activations")
            .unwrap();
        let w = Tensor::<u8>::zeros(&zone, [5], Location::Host)
            .unwrap()
            .into_shared();
        let mut arena = zone.arena_with_capacity(4096);
        arena.set_label("frame").unwrap();
        arena.zeros::<u32>([4], Location::Device).unwrap();
        let leaks = zone.leaks();
        assert_eq!(
            leaks,
            vec![
                Leak {
                    kind: LeakKind::Tensor,
                    label: Some("activations".into()),
                    dtype: Some(DType::F32),
                    dims: vec![2, 3],
                    bytes: 24,
                },
                Leak {
                    kind: LeakKind::Tensor,
                    label: None,
                    dtype: Some(DType::U8),
                    dims: vec![5],
                    bytes: 5,
                },
                Leak {
                    kind: LeakKind::Arena,
                    label: Some("frame".into()),
                    dtype: None,
                    dims: vec![],
                    bytes: zone.stats().tiers.arena.device,
                },
            ]
        );
        drop((a, w, arena));
        assert_eq!(zone.leaks(), vec![]);
    }
}

#[test]
fn dropping_the_zone_reports_what_is_alive_once() {
    for zone in tracking_zones() {
        let seen = hook(&zone);
        let keep = Tensor::<u32>::zeros(&zone, [8], Location::Device)
            .unwrap()
            .with_label("cache")
            .unwrap();
        let shared = Tensor::<u32>::zeros(&zone, [2], Location::Device)
            .unwrap()
            .into_shared();
        let shared2 = shared.clone();
        let gone = Tensor::<u32>::zeros(&zone, [4], Location::Host).unwrap();
        drop(gone);
        let other_handle = zone.clone();
        drop(zone);
        // Another handle is alive: no report yet.
        assert!(seen.lock().unwrap().is_empty());
        drop(other_handle);
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 1);
            let (name, leaks) = &seen[0];
            assert_eq!(name, "leaky");
            let summary: Vec<(Option<&str>, u64)> = leaks
                .iter()
                .map(|l| (l.label.as_deref(), l.bytes))
                .collect();
            assert_eq!(summary, vec![(Some("cache"), 32), (None, 8)]);
        }
        // Dropping what leaked afterwards reports nothing more.
        drop((keep, shared, shared2));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}

#[test]
fn a_zone_dropped_with_nothing_alive_reports_nothing() {
    for zone in tracking_zones() {
        let seen = hook(&zone);
        let t = Tensor::<u32>::zeros(&zone, [8], Location::Device).unwrap();
        drop(t);
        drop(zone);
        assert!(seen.lock().unwrap().is_empty());
    }
}

#[test]
fn zones_that_do_not_track_list_nothing() {
    for zone in common::zones() {
        let _t = Tensor::<u32>::zeros(&zone, [8], Location::Device).unwrap();
        assert!(zone.leaks().is_empty());
    }
}

/// A device tensor made with `empty` and never used is listed with its
/// dtype and bytes, and counted in the dtype breakdown, before any use;
/// its first use gives its shape (until then one line of elements).
#[test]
fn an_empty_tensor_never_used_is_listed_with_its_dtype_and_bytes() {
    for zone in tracking_zones() {
        let mut t = Tensor::<f32>::empty(&zone, [3, 5], Location::Device).unwrap();
        let leak = |zone: &tensorzone::Zone| {
            let leaks = zone.leaks();
            assert_eq!(leaks.len(), 1);
            (leaks[0].dtype, leaks[0].dims.clone(), leaks[0].bytes)
        };
        assert_eq!(leak(&zone), (Some(DType::F32), vec![15], 60));
        let by: Vec<_> = zone
            .stats()
            .by_dtype
            .iter()
            .map(|d| (d.dtype, d.tensors, d.bytes))
            .collect();
        assert_eq!(by, [(DType::F32, 1, 60)]);
        t.mark_device_written().unwrap();
        assert_eq!(leak(&zone), (Some(DType::F32), vec![3, 5], 60));
        drop(t);
        assert!(zone.leaks().is_empty());
        assert_eq!(zone.stats().device_live_bytes, 0);
    }
}

#[test]
fn stats_break_live_tensors_down_by_dtype() {
    for zone in tracking_zones() {
        let a = Tensor::<f32>::zeros(&zone, [100], Location::Device).unwrap();
        let b = Tensor::<f32>::zeros(&zone, [50], Location::Host).unwrap();
        let c = Tensor::<u8>::zeros(&zone, [7], Location::Host)
            .unwrap()
            .into_shared();
        let s = zone.stats();
        let got: Vec<(DType, u64, u64)> = s
            .by_dtype
            .iter()
            .map(|d| (d.dtype, d.tensors, d.bytes))
            .collect();
        assert_eq!(got, vec![(DType::F32, 2, 600), (DType::U8, 1, 7)]);
        assert!(s.to_string().contains("f32"), "{s}");
        drop((a, b, c));
        assert!(zone.stats().by_dtype.is_empty());
    }
}

/// A second user handle dropped while another thread makes a tensor is
/// not the zone's last: no report, however the two interleave.
#[test]
fn a_handle_dropped_during_an_allocation_on_another_thread_reports_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // A budget zone too: it registers each tensor before it has a handle.
    let budget = Zone::builder()
        .label("leaky budget")
        .device_budget(64 << 20);
    let zones = tracking_zones()
        .into_iter()
        .chain(common::zones_with(budget));
    for zone in zones {
        let seen = hook(&zone);
        let keep = Tensor::<u8>::zeros(&zone, [8], Location::Host).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..20_000 {
                    let t = Tensor::<u32>::empty(&zone, [64], Location::Device).unwrap();
                    drop(t);
                }
                done.store(true, Ordering::Release);
            });
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    drop(zone.clone());
                }
            });
        });
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
        // The real report still comes.
        let (b, spill) = (zone.backend(), zone.stats().spills.calls);
        drop(zone);
        assert_eq!(seen.lock().unwrap().len(), 1, "{b:?} {spill}");
        assert_eq!(seen.lock().unwrap()[0].1[0].bytes, 8);
        drop(keep);
    }
}

/// A device tensor made with `empty` and not used yet has a pending entry
/// (see `Registry::add_pending`): the report made when the zone's last
/// handle goes waits for it to be used or dropped, then lists what is alive.
#[test]
fn the_report_waits_for_an_unused_empty_tensor_and_then_lists_everything() {
    for zone in tracking_zones() {
        let seen = hook(&zone);
        let mut fresh = Tensor::<u32>::empty(&zone, [16], Location::Device).unwrap();
        let kept = Tensor::<u8>::zeros(&zone, [8], Location::Host).unwrap();
        drop(zone);
        assert!(seen.lock().unwrap().is_empty());
        // Its first use takes its entry over: now the report runs.
        fresh.write_device(&[3; 16]).unwrap();
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        let mut sizes: Vec<u64> = got[0].1.iter().map(|l| l.bytes).collect();
        sizes.sort();
        assert_eq!(sizes, vec![8, 64]);
        drop((fresh, kept));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}

/// What was alive when the last handle went is reported even if it is
/// dropped while the report waits for an unused `empty` tensor, and the
/// unused tensor itself is reported when it is dropped unused.
#[test]
fn a_waiting_report_keeps_what_was_alive_when_the_zone_went() {
    for zone in tracking_zones() {
        let b = zone.backend();
        let seen = hook(&zone);
        let kept = Tensor::<f32>::zeros(&zone, [7], Location::Device)
            .unwrap()
            .with_label("kept")
            .unwrap();
        let unused = Tensor::<f32>::empty(&zone, [9], Location::Device).unwrap();
        let arena = zone.arena_with_capacity(4096);
        drop(zone);
        drop(kept);
        assert!(seen.lock().unwrap().is_empty(), "{b:?}: the report waits");
        drop((unused, arena));
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{b:?}: {got:?}");
        let labels: Vec<(Option<&str>, u64)> = got[0]
            .1
            .iter()
            .map(|l| (l.label.as_deref(), l.bytes))
            .collect();
        // The arena took no chunk yet: 0 bytes.
        assert_eq!(labels, [(Some("kept"), 28), (None, 36), (None, 0)], "{b:?}");
    }
    // Only the unused tensor outlives the zone: it is reported when dropped.
    for zone in tracking_zones() {
        let b = zone.backend();
        let seen = hook(&zone);
        let unused = Tensor::<u16>::empty(&zone, [5], Location::Device).unwrap();
        drop(zone);
        drop(unused);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{b:?}: {got:?}");
        assert_eq!(got[0].1[0].bytes, 10, "{b:?}");
    }
    // The wait begins, then a handle comes back (through the tensor):
    // a user holds the zone again, and the tensor dropped before the zone
    // is no leak.
    for zone in tracking_zones() {
        let b = zone.backend();
        let seen = hook(&zone);
        let kept = Tensor::<u8>::zeros(&zone, [3], Location::Host).unwrap();
        let unused = Tensor::<u16>::empty(&zone, [5], Location::Device).unwrap();
        drop(zone);
        let revived = kept.zone().clone();
        drop((kept, unused));
        drop(revived);
        assert!(
            seen.lock().unwrap().is_empty(),
            "{b:?}: {:?}",
            seen.lock().unwrap()
        );
    }
}
