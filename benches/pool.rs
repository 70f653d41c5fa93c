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
//! Run: `cargo bench --bench pool`. With `TENSORZONE_BACKEND=cpu` (or no GPU
//! adapter) the GPU groups are skipped with a printed reason.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tensorzone::{BackendChoice, Location, Tensor, Zone};

const SIZES: [(u64, &str); 3] = [(256, "256B"), (64 << 10, "64KiB"), (4 << 20, "4MiB")];
const SAMPLES: usize = 30;
const MEASURE: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_millis(700);
const LOOP_ITERS: usize = 10_000;

// ----- in-process sample recorder (criterion does not hand back its medians) -----

/// Per-iteration times (ns) of every sample criterion took, by benchmark key.
/// Criterion runs warm-up calls first and then exactly `sample_size` samples,
/// so the last `SAMPLES` entries are the measured ones.
static RECORDED: Mutex<Option<HashMap<String, Vec<f64>>>> = Mutex::new(None);

fn record(key: &str, ns_per_iter: f64) {
    let mut g = RECORDED.lock().unwrap();
    g.get_or_insert_with(HashMap::new)
        .entry(key.to_string())
        .or_default()
        .push(ns_per_iter);
}

fn median(key: &str) -> Option<f64> {
    let g = RECORDED.lock().unwrap();
    let all = g.as_ref()?.get(key)?;
    let mut v: Vec<f64> = all[all.len().saturating_sub(SAMPLES)..].to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return None;
    }
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Times `f` `iters` times per sample and records the per-iteration time.
fn timed(b: &mut criterion::Bencher<'_>, key: String, mut f: impl FnMut()) {
    b.iter_custom(|iters| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let d = start.elapsed();
        record(&key, d.as_nanos() as f64 / iters as f64);
        d
    });
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

// ----- benchmarks ------------------------------------------------------------

fn gpu_zone() -> Result<Zone, String> {
    let zone = Zone::builder()
        .backend(BackendChoice::Gpu)
        .label("bench pool")
        .build()
        .map_err(|e| format!("no GPU zone: {e}"))?;
    if zone.wgpu_device().is_none() {
        return Err(format!(
            "the zone runs on the CPU backend ({}); TENSORZONE_BACKEND={:?} overrides the GPU choice",
            zone.info(),
            std::env::var("TENSORZONE_BACKEND").unwrap_or_default()
        ));
    }
    Ok(zone)
}

fn bench_gpu(c: &mut Criterion, zone: &Zone) {
    let device = zone.wgpu_device().expect("checked by gpu_zone").clone();
    let mut g = c.benchmark_group("pool_gpu");
    g.sample_size(SAMPLES)
        .measurement_time(MEASURE)
        .warm_up_time(WARM_UP);
    for (n, name) in SIZES {
        g.throughput(Throughput::Elements(1));
        // Warm the pool for this size so the measured loop is steady state.
        drop(Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap());
        g.bench_function(BenchmarkId::new("tensorzone", name), |b| {
            timed(b, format!("gpu/tensorzone/{name}"), || {
                let t = Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap();
                drop(black_box(t));
            })
        });
        g.bench_function(BenchmarkId::new("raw_create_buffer", name), |b| {
            timed(b, format!("gpu/raw/{name}"), || {
                let buf = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench raw"),
                    size: n,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                drop(black_box(buf));
            })
        });
    }
    g.finish();
    // Let wgpu retire anything the raw loop left for the next poll.
    let _ = device.poll(wgpu::PollType::wait_indefinitely());
}

fn bench_cpu(c: &mut Criterion, zone: &Zone) {
    let mut g = c.benchmark_group("pool_cpu");
    g.sample_size(SAMPLES)
        .measurement_time(MEASURE)
        .warm_up_time(WARM_UP);
    for (n, name) in SIZES {
        g.throughput(Throughput::Elements(1));
        drop(Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap());
        g.bench_function(BenchmarkId::new("tensorzone", name), |b| {
            timed(b, format!("cpu/tensorzone/{name}"), || {
                let t = Tensor::<u8>::empty(zone, [n as usize], Location::Device).unwrap();
                drop(black_box(t));
            })
        });
        g.bench_function(BenchmarkId::new("vec_zeroed", name), |b| {
            timed(b, format!("cpu/vec/{name}"), || {
                let v = vec![0u8; n as usize];
                drop(black_box(v));
            })
        });
    }
    g.finish();
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
    let gpu = gpu_zone();
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
    }
    bench_cpu(&mut c, &cpu);
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
            let tz = median(&format!("{zone}/tensorzone/{name}"));
            let p = median(&format!("{zone}/{peer}/{name}"));
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
    for l in &lines {
        eprintln!("{l}");
    }
    if let Ok(zone) = &gpu {
        eprintln!("{}", zone.stats());
    }
}
