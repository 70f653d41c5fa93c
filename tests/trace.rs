//! The opt-in event trace: recorded events, and the Chrome trace-event JSON
//! parsed back.

mod common;

use serde_json::Value;
use tensorzone::*;

fn aligned(zone: &Zone, bytes: u64) -> u64 {
    let a = zone.info().alignment;
    bytes.div_ceil(a) * a
}

#[test]
fn a_trace_records_allocations_transfers_resets_and_frees() {
    for zone in common::zones() {
        assert!(
            zone.stop_trace().events().is_empty(),
            "nothing without a trace"
        );
        let before = Tensor::<u8>::zeros(&zone, [64], Location::Host).unwrap();
        zone.start_trace();
        let mut t = Tensor::from_slice(&zone, [100], &[3u32; 100], Location::Device).unwrap();
        assert_eq!(t.to_vec().unwrap()[99], 3);
        let mut arena = zone.arena_with_capacity(64 << 10);
        arena.zeros::<u8>([10], Location::Device).unwrap();
        arena.reset();
        let s = t.try_clone().unwrap().into_shared();
        drop(s);
        drop(arena);
        drop(t);
        let trace = zone.stop_trace();
        drop(before);

        let events: Vec<&Event> = trace.events().iter().map(|e| &e.event).collect();
        let dev = aligned(&zone, 400);
        let want_in_order = [
            Event::Alloc {
                tier: Tier::Owned,
                location: Location::Device,
                bytes: dev,
            },
            Event::Transfer {
                direction: Direction::HostToDevice,
                bytes: 400,
            },
            Event::Alloc {
                tier: Tier::Owned,
                location: Location::Host,
                bytes: 400,
            },
            Event::Transfer {
                direction: Direction::DeviceToHost,
                bytes: 400,
            },
            Event::Alloc {
                tier: Tier::Arena,
                location: Location::Device,
                bytes: 64 << 10,
            },
            Event::ArenaReset {
                used: 12, // 10 bytes padded to whole words
            },
        ];
        let mut from = 0;
        for want in &want_in_order {
            let at = events[from..]
                .iter()
                .position(|e| *e == want)
                .unwrap_or_else(|| panic!("{want:?} not found after event {from} in {events:#?}"));
            from += at + 1;
        }
        let frees = events
            .iter()
            .filter(|e| matches!(e, Event::Free { .. }))
            .count();
        assert!(frees >= 5, "tensor host+device, clone, arena: {events:#?}");
        assert_eq!(
            trace.start().owned.host,
            64,
            "the tensor made before the trace"
        );
        assert!(trace.events().windows(2).all(|w| w[0].at <= w[1].at));

        // The JSON parses back: instant events match the recorded ones, and
        // the counter tracks replay to what the zone holds at the end.
        let json: Value = serde_json::from_str(&trace.to_chrome_json()).unwrap();
        let list = json["traceEvents"].as_array().unwrap();
        let instants: Vec<&Value> = list.iter().filter(|e| e["ph"] == "i").collect();
        assert_eq!(instants.len(), trace.events().len());
        assert_eq!(instants[0]["name"], "alloc");
        assert_eq!(instants[0]["args"]["tier"], "owned");
        assert_eq!(instants[0]["args"]["bytes"], dev);
        assert_eq!(instants[1]["name"], "upload");
        let last_device = list
            .iter()
            .rev()
            .find(|e| e["ph"] == "C" && e["name"] == "device bytes")
            .unwrap();
        assert_eq!(last_device["args"]["owned"], 0);
        assert_eq!(last_device["args"]["arena"], 0);
        assert_eq!(last_device["args"]["shared"], 0);
        let last_host = list
            .iter()
            .rev()
            .find(|e| e["ph"] == "C" && e["name"] == "host bytes")
            .unwrap();
        assert_eq!(
            last_host["args"]["owned"], 64,
            "the tensor from before the trace"
        );
        let path =
            std::env::temp_dir().join(format!("tensorzone-{}.trace.json", std::process::id()));
        trace.write_chrome_json(&path).unwrap();
        let back: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, json);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn shared_conversions_move_bytes_between_tiers_in_the_trace() {
    for zone in common::zones() {
        let t = Tensor::from_slice(&zone, [8], &[1u8; 8], Location::Device).unwrap();
        zone.start_trace();
        let s = t.into_shared();
        drop(s);
        let trace = zone.stop_trace();
        let dev = aligned(&zone, 8);
        let events: Vec<Event> = trace.events().iter().map(|e| e.event.clone()).collect();
        assert_eq!(
            events,
            [
                Event::Free {
                    tier: Tier::Owned,
                    location: Location::Device,
                    bytes: dev
                },
                Event::Alloc {
                    tier: Tier::Shared,
                    location: Location::Device,
                    bytes: dev
                },
                Event::Free {
                    tier: Tier::Shared,
                    location: Location::Device,
                    bytes: dev
                },
                Event::Alloc {
                    tier: Tier::Owned,
                    location: Location::Device,
                    bytes: dev
                },
                Event::Free {
                    tier: Tier::Owned,
                    location: Location::Device,
                    bytes: dev
                },
            ]
        );
    }
}

/// Allocations served from a thread's range cache are traced too: a running
/// trace makes every thread's cache step aside, and it resumes after.
#[test]
fn cached_allocations_are_traced_and_caching_resumes_after() {
    for zone in common::zones() {
        let dev = aligned(&zone, 256);
        for _ in 0..3 {
            drop(Tensor::<u8>::empty(&zone, [256], Location::Device).unwrap());
        }
        let other = std::thread::spawn({
            let zone = zone.clone();
            move || drop(Tensor::<u8>::empty(&zone, [256], Location::Device).unwrap())
        });
        other.join().unwrap();
        zone.start_trace();
        for _ in 0..10 {
            drop(Tensor::<u8>::empty(&zone, [256], Location::Device).unwrap());
        }
        let t = std::thread::spawn({
            let zone = zone.clone();
            move || drop(Tensor::<u8>::empty(&zone, [256], Location::Device).unwrap())
        });
        t.join().unwrap();
        let trace = zone.stop_trace();
        let count = |want: &Event| trace.events().iter().filter(|e| e.event == *want).count();
        let alloc = Event::Alloc {
            tier: Tier::Owned,
            location: Location::Device,
            bytes: dev,
        };
        let free = Event::Free {
            tier: Tier::Owned,
            location: Location::Device,
            bytes: dev,
        };
        assert_eq!(
            (count(&alloc), count(&free)),
            (11, 11),
            "{:#?}",
            trace.events()
        );
        // after the trace, frees are cached again: no new device blocks
        let blocks = zone.stats().device_blocks_created;
        let hits = zone.stats().pool_hits;
        for _ in 0..10 {
            drop(Tensor::<u8>::empty(&zone, [256], Location::Device).unwrap());
        }
        let s = zone.stats();
        assert_eq!(s.device_blocks_created, blocks);
        assert_eq!(s.pool_hits, hits + 10);
        assert!(zone.stop_trace().events().is_empty());
    }
}
