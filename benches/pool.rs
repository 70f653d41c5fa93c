//! Pooled device allocation against the peers a user would otherwise write.
//!
//! - GPU zone: `Tensor::<u8>::empty(.., Location::Device)` + drop against a raw
//!   `device.create_buffer` (STORAGE | COPY_SRC | COPY_DST) + drop on the same
//!   wgpu device.
//! - CPU zone: the same tensor call against `vec![0u8; n]` + drop.
//!
//! Sizes: 256 B, 64 KiB, 4 MiB. After the groups the bench prints the median
//! of each figure and the peer / tensorzone ratio (how many times faster the
//! pool is), then the `create_buffer` counter around a 10,000-iteration
//! alloc/free loop of the three sizes after warm-up.
//!
//! A third group runs the tensorzone pair in a zone that tracks its tensors
//! (`track_tensors(true)`), the price of per-tensor records.
//!
//! Run: `cargo bench --bench pool`. With `TENSORZONE_BACKEND=cpu` (or no GPU
//! adapter) the GPU groups are skipped with a printed reason.

use std::hint::black_box;
use std::time::Duration;

mod common;

use common::fmt_ns;

use criterion::{BenchmarkId, Criterion, Throughput};
use tensorzone::{Location, Tensor, Zone};

const SIZES: [(u64, &str); 3] = [(256, "256B"), (64 << 10, "64KiB"), (4 << 20, "4MiB")];
const SAMPLES: usize = 40;
const MEASURE: Duration = Duration::from_secs(4);
const WARM_UP: Duration = Duration::from_millis(700);
const LOOP_ITERS: usize = 10_000;

// ----- benchmarks ------------------------------------------------------------

/// The tensorzone pair (`Tensor::empty` on the device + drop) of `n` bytes
/// in `zone`, recorded under `key`, after one pair that warms the pool for
/// this size so the measured loop is steady state.
fn bench_pair(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    zone: &Zone,
    n: u64,
    name: &str,
    key: &str,
) {
    g.throughput(Throughput::Elements(1));
    drop(Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap());
    g.bench_function(BenchmarkId::new("tensorzone", name), |b| {
        common::timed(b, key, || {
            let t = Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap();
            drop(black_box(t));
        })
    });
}

/// One group: pooled alloc + free in `zone` against `peer(n)` at each size.
/// Medians are recorded as `{tag}/tensorzone/{size}` and `{tag}/{peer_key}/{size}`.
fn bench_pool(
    c: &mut Criterion,
    zone: &Zone,
    tag: &str,
    (peer_name, peer_key): (&str, &str),
    peer: impl Fn(u64),
) {
    let mut g = c.benchmark_group(format!("pool_{tag}"));
    g.sample_size(SAMPLES)
        .measurement_time(MEASURE)
        .warm_up_time(WARM_UP);
    for (n, name) in SIZES {
        bench_pair(&mut g, zone, n, name, &format!("{tag}/tensorzone/{name}"));
        if n == SIZES[0].0 {
            // The same pair when the caller borrows the tensor and then
            // moves it (`drop(t)` after `&t` escaped): the move copies the
            // just-built 128-byte handle, and that copy waits for the
            // handle's stores to reach the cache.
            g.bench_function(BenchmarkId::new("tensorzone_moved", name), |b| {
                common::timed(b, &format!("{tag}/tensorzone_moved/{name}"), || {
                    let t = Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap();
                    black_box(&t);
                    drop(t);
                })
            });
        }
        g.bench_function(BenchmarkId::new(peer_name, name), |b| {
            common::timed(b, &format!("{tag}/{peer_key}/{name}"), || peer(n))
        });
    }
    g.finish();
}

fn bench_gpu(c: &mut Criterion, zone: &Zone) {
    let device = zone.wgpu_device().expect("checked by gpu_zone").clone();
    bench_pool(c, zone, "gpu", ("raw_create_buffer", "raw"), |n| {
        let buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench raw"),
            size: n,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        drop(black_box(buf));
    });
    // Let wgpu retire anything the raw loop left for the next poll.
    let _ = device.poll(wgpu::PollType::wait_indefinitely());
}

/// The pair in a zone that tracks its tensors (`track_tensors(true)`: leak
/// report with shapes, dtype breakdown, spill under a budget). Such a zone
/// has no per-thread cache: each pair takes the pool's lock, and the tensor
/// gets a registry entry on the way.
fn bench_tracked(c: &mut Criterion, zone: &Zone, tag: &str) {
    let mut g = c.benchmark_group(format!("pool_{tag}_tracked"));
    g.sample_size(SAMPLES)
        .measurement_time(MEASURE)
        .warm_up_time(WARM_UP);
    for (n, name) in SIZES {
        bench_pair(&mut g, zone, n, name, &format!("{tag}/tracked/{name}"));
    }
    g.finish();
}

fn bench_cpu(c: &mut Criterion, zone: &Zone) {
    bench_pool(c, zone, "cpu", ("vec_zeroed", "vec"), |n| {
        drop(black_box(vec![0u8; n as usize]));
    });
}

/// Warm-up of each size, then `LOOP_ITERS` alloc+free rounds of the three
/// sizes; returns the `create_buffer` counter before and after the loop.
fn create_buffer_loop(zone: &Zone) -> (u64, u64, u64) {
    let at_start = zone.stats().create_buffer_calls();
    for (n, _) in SIZES {
        drop(Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap());
    }
    let before = zone.stats().create_buffer_calls();
    for _ in 0..LOOP_ITERS {
        for (n, _) in SIZES {
            let t = Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap();
            drop(black_box(t));
        }
    }
    let after = zone.stats().create_buffer_calls();
    (at_start, before, after)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();

    // The counter check runs first, on fresh zones, so nothing the benches
    // did before can hide a create_buffer call.
    let gpu = common::gpu_zone("bench pool");
    let mut lines = Vec::new();
    match &gpu {
        Ok(zone) => {
            let (s, b, a) = create_buffer_loop(zone);
            lines.push(format!(
                "create_buffer calls, GPU zone ({}): {s} at start, {b} after warm-up, {a} after {LOOP_ITERS} x 3 alloc+free ({} new)",
                zone.info().adapter,
                a - b
            ));
        }
        Err(why) => {
            eprintln!("pool: skipping GPU groups: {why}");
            lines.push(format!("create_buffer calls, GPU zone: skipped ({why})"));
        }
    }
    let cpu = Zone::cpu();
    {
        let probe = Zone::cpu();
        let (s, b, a) = create_buffer_loop(&probe);
        lines.push(format!(
            "block allocations, CPU zone: {s} at start, {b} after warm-up, {a} after {LOOP_ITERS} x 3 alloc+free ({} new)",
            a - b
        ));
    }

    if let Ok(zone) = &gpu {
        bench_gpu(&mut c, zone);
        let tracked = Zone::builder()
            .backend(tensorzone::BackendChoice::Gpu)
            .label("bench pool tracked")
            .track_tensors(true)
            .build()
            .expect("a GPU zone was built above");
        bench_tracked(&mut c, &tracked, "gpu");
    }
    bench_cpu(&mut c, &cpu);
    let cpu_tracked = Zone::builder()
        .backend(tensorzone::BackendChoice::Cpu)
        .track_tensors(true)
        .build()
        .expect("the CPU backend is always there");
    bench_tracked(&mut c, &cpu_tracked, "cpu");
    c.final_summary();

    // ----- summary --------------------------------------------------------------
    eprintln!();
    eprintln!("== pool summary (medians of this run; ratio = peer / tensorzone, >1 means the pool is faster) ==");
    if let Ok(zone) = &gpu {
        eprintln!("adapter: {}", zone.info());
    }
    eprintln!(
        "{:<6} {:<7} {:>14} {:>14} {:>9}",
        "zone", "size", "tensorzone", "peer", "ratio"
    );
    for (zone, peer) in [("gpu", "raw"), ("cpu", "vec")] {
        for (_, name) in SIZES {
            let tz = common::median(&format!("{zone}/tensorzone/{name}"), SAMPLES);
            let p = common::median(&format!("{zone}/{peer}/{name}"), SAMPLES);
            if let (Some(tz), Some(p)) = (tz, p) {
                eprintln!(
                    "{:<6} {:<7} {:>14} {:>14} {:>8.1}x{}",
                    zone,
                    name,
                    fmt_ns(tz),
                    fmt_ns(p),
                    p / tz,
                    if zone == "gpu" && p / tz < 20.0 {
                        "  (target 20x not met)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    for zone in ["gpu", "cpu"] {
        let name = SIZES[0].1;
        let moved = common::median(&format!("{zone}/tensorzone_moved/{name}"), SAMPLES);
        let peer = common::median(
            &format!(
                "{zone}/{}/{name}",
                if zone == "gpu" { "raw" } else { "vec" }
            ),
            SAMPLES,
        );
        if let (Some(m), Some(p)) = (moved, peer) {
            eprintln!(
                "{zone} {name}, tensor borrowed then moved before drop: {} ({:.1}x the peer)",
                fmt_ns(m),
                p / m
            );
        }
    }
    for (zone, peer) in [("gpu", "raw"), ("cpu", "vec")] {
        for (_, name) in SIZES {
            let tracked = common::median(&format!("{zone}/tracked/{name}"), SAMPLES);
            let fast = common::median(&format!("{zone}/tensorzone/{name}"), SAMPLES);
            let p = common::median(&format!("{zone}/{peer}/{name}"), SAMPLES);
            if let (Some(t), Some(f), Some(p)) = (tracked, fast, p) {
                eprintln!(
                    "{zone} {name}, tracking zone: {} ({:.1}x the untracked pair; peer / tracked = {:.1}x)",
                    fmt_ns(t),
                    t / f,
                    p / t
                );
            }
        }
    }
    for l in &lines {
        eprintln!("{l}");
    }
    if let Ok(zone) = &gpu {
        eprintln!("{}", zone.stats());
    }
}
