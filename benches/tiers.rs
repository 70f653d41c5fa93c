//! The tiers against their peers, in one process:
//!
//! - host arena: 1,000,000 allocations of 32 bytes (then one reset) against
//!   bumpalo (`alloc_slice_fill_copy` + `reset`) and `Box<[u8; 32]>` (1,000,000
//!   boxes kept live, then all dropped);
//! - arena reset holding 100,000 allocations against one holding 10;
//! - device arena allocation (`Arena::empty` on the device, 1 KiB);
//! - a 1,000-frame loop with 50 device temporaries per frame: `create_buffer`
//!   calls after the first frame and reserved bytes per frame;
//! - shared tensor clone + drop against `Arc` clone + drop.
//!
//! Run: `cargo bench --bench tiers` (GPU parts skipped, reason printed, on
//! the CPU backend).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::fmt_ns;

use criterion::Criterion;
use tensorzone::{Location, Tensor, Zone};

const SAMPLES: usize = 20;
const ALLOCS: usize = 1_000_000;

fn bench_host_arena(c: &mut Criterion, zone: &Zone) {
    let mut g = c.benchmark_group("host_arena_1M_x_32B");
    g.sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_millis(500));
    let mut arena = zone.arena();
    g.bench_function("tensorzone", |b| {
        common::timed(b, "arena/tensorzone", || {
            for _ in 0..ALLOCS {
                let t = arena.zeros::<u8>([32], Location::Host).unwrap();
                black_box(&t);
            }
            arena.reset();
        })
    });
    g.bench_function("tensorzone_slice", |b| {
        common::timed(b, "arena/slice", || {
            for _ in 0..ALLOCS {
                let s = arena.alloc_slice::<u8>(32).unwrap();
                black_box(&s);
            }
            arena.reset();
        })
    });
    let mut bump = bumpalo::Bump::new();
    g.bench_function("bumpalo", |b| {
        common::timed(b, "arena/bumpalo", || {
            for _ in 0..ALLOCS {
                let s = bump.alloc_slice_fill_copy(32, 0u8);
                black_box(&s);
            }
            bump.reset();
        })
    });
    let mut boxes: Vec<Box<[u8; 32]>> = Vec::with_capacity(ALLOCS);
    g.bench_function("box", |b| {
        common::timed(b, "arena/box", || {
            for _ in 0..ALLOCS {
                boxes.push(black_box(Box::new([0u8; 32])));
            }
            boxes.clear();
        })
    });
    g.finish();
}

/// Times only `reset` of an arena holding `n` 32-byte host allocations.
fn reset_time(zone: &Zone, n: usize, iters: u64) -> Duration {
    let mut arena = zone.arena();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        for _ in 0..n {
            black_box(arena.zeros::<u8>([32], Location::Host).unwrap());
        }
        // A first clock read brings the clock's code and data back into
        // cache after the allocations streamed through it; the second one
        // starts the timed part.
        black_box(Instant::now());
        let t0 = Instant::now();
        arena.reset();
        total += t0.elapsed();
    }
    total
}

fn bench_reset(c: &mut Criterion, zone: &Zone) {
    let mut g = c.benchmark_group("arena_reset");
    g.sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(300));
    for n in [10usize, 100_000] {
        g.bench_function(format!("holding_{n}"), |b| {
            b.iter_custom(|iters| {
                let d = reset_time(zone, n, iters);
                common::record_ns(&format!("reset/{n}"), d.as_nanos() as f64 / iters as f64);
                d
            })
        });
    }
    g.finish();
}

fn bench_device_arena(c: &mut Criterion, zone: &Zone, tag: &str) {
    let mut g = c.benchmark_group(format!("device_arena_{tag}"));
    g.sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let mut arena = zone.arena();
    g.bench_function("alloc_1KiB", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Reset every 1,000 allocations, outside the timed part.
                let k = left.min(1000);
                let t0 = Instant::now();
                for _ in 0..k {
                    let t = arena.empty::<u8>([1024], Location::Device).unwrap();
                    black_box(&t);
                }
                total += t0.elapsed();
                arena.reset();
                left -= k;
            }
            common::record_ns(
                &format!("device_arena/{tag}"),
                total.as_nanos() as f64 / iters as f64,
            );
            total
        })
    });
    g.finish();
}

fn bench_shared(c: &mut Criterion, zone: &Zone) {
    let mut g = c.benchmark_group("shared_clone_drop");
    g.sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(300));
    let s = Tensor::<f32>::zeros(zone, [256], Location::Host)
        .unwrap()
        .into_shared();
    g.bench_function("shared_tensor", |b| {
        common::timed(b, "shared/tensorzone", || {
            let c = s.clone();
            drop(black_box(c));
        })
    });
    let a = Arc::new(vec![0f32; 256]);
    g.bench_function("arc", |b| {
        common::timed(b, "shared/arc", || {
            let c = Arc::clone(&a);
            drop(black_box(c));
        })
    });
    g.finish();
}

/// 1,000 frames of 50 device temporaries (4–200 KiB) in one arena, reset
/// each frame: `create_buffer` calls after frame 1 and reserved bytes per
/// frame.
fn frame_loop(zone: &Zone) -> String {
    let mut arena = zone.arena();
    let mut after_first = 0;
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let t0 = Instant::now();
    for frame in 0..1000usize {
        for k in 0..50usize {
            let n = 1024 + ((frame * 31 + k * 977) % 50) * 1024;
            let mut t = arena.empty::<f32>([n], Location::Device).unwrap();
            if k % 10 == 0 {
                t.mark_device_written().unwrap();
            }
            black_box(&t);
        }
        arena.reset();
        let s = zone.stats();
        if frame == 0 {
            after_first = s.create_buffer_calls();
        } else {
            lo = lo.min(s.device_reserved_bytes);
            hi = hi.max(s.device_reserved_bytes);
        }
    }
    let per_frame = t0.elapsed().as_secs_f64() * 1e3 / 1000.0;
    let s = zone.stats();
    format!(
        "1000 frames x 50 temporaries: create_buffer calls after frame 1: {} (total {}), reserved bytes frames 2-1000: min {lo} max {hi}, {per_frame:.3} ms/frame",
        s.create_buffer_calls() - after_first,
        s.create_buffer_calls()
    )
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let cpu = Zone::cpu();
    let gpu = common::gpu_zone("bench tiers");
    let host_zone = gpu.as_ref().unwrap_or(&cpu).clone();

    let mut lines = Vec::new();
    match &gpu {
        Ok(zone) => lines.push(format!("GPU: {}", frame_loop(zone))),
        Err(why) => lines.push(format!("GPU frame loop skipped: {why}")),
    }
    lines.push(format!("CPU: {}", frame_loop(&cpu)));

    bench_host_arena(&mut c, &host_zone);
    bench_reset(&mut c, &host_zone);
    if let Ok(zone) = &gpu {
        bench_device_arena(&mut c, zone, "gpu");
    }
    bench_device_arena(&mut c, &cpu, "cpu");
    bench_shared(&mut c, &host_zone);
    c.final_summary();

    let m = |k: &str| common::median(k, SAMPLES);
    eprintln!();
    eprintln!("== tiers summary (medians of this run) ==");
    if let Ok(zone) = &gpu {
        eprintln!("adapter: {}", zone.info());
    }
    if let (Some(bump), Some(boxed)) = (m("arena/bumpalo"), m("arena/box")) {
        eprintln!(
            "host arena, 1,000,000 x 32 B + reset: bumpalo {} ({:.2} ns each) | Box {} ({:.2} ns each)",
            fmt_ns(bump),
            bump / ALLOCS as f64,
            fmt_ns(boxed),
            boxed / ALLOCS as f64
        );
        for (what, key) in [
            ("Arena::alloc_slice::<u8>(32)", "arena/slice"),
            (
                "Arena::zeros::<u8>([32], Host) (tensor)",
                "arena/tensorzone",
            ),
        ] {
            if let Some(tz) = m(key) {
                eprintln!(
                    "  {what}: {} ({:.2} ns each); bumpalo/it {:.2}x (target >= 1), Box/it {:.2}x (target >= 5)",
                    fmt_ns(tz),
                    tz / ALLOCS as f64,
                    bump / tz,
                    boxed / tz
                );
            }
        }
    }
    if let (Some(small), Some(big)) = (m("reset/10"), m("reset/100000")) {
        eprintln!(
            "arena reset: holding 10 {} | holding 100,000 {} ({:.2}x, target within 2x)",
            fmt_ns(small),
            fmt_ns(big),
            big / small
        );
    }
    for tag in ["gpu", "cpu"] {
        if let Some(d) = m(&format!("device_arena/{tag}")) {
            eprintln!(
                "device arena alloc (1 KiB), {tag}: {} (target <= 100 ns)",
                fmt_ns(d)
            );
        }
    }
    if let (Some(s), Some(a)) = (m("shared/tensorzone"), m("shared/arc")) {
        eprintln!(
            "shared clone + drop {} | Arc clone + drop {} ({:.2}x, target <= 2x)",
            fmt_ns(s),
            fmt_ns(a),
            s / a
        );
    }
    for l in &lines {
        eprintln!("{l}");
    }
}
