//! The comparisons of the benches, in one process and one table: pooled
//! allocation against `create_buffer`, the host arena against bumpalo and
//! `Box`, 64 MiB uploads against `queue.write_buffer`, `StagingBelt` and
//! `memcpy`, readbacks against a fresh mapped buffer and `memcpy`, and the
//! 1280×720 frame pipeline against plain wgpu creating its buffers each
//! frame (and, on every machine, on the CPU backend against plain Rust
//! allocating its `Vec`s each frame). Each figure is the median of several
//! timed samples; ratios are peer / tensorzone for times and tensorzone /
//! peer for GB/s and frames/s (above 1: tensorzone is faster).
//!
//! ```text
//! cargo run --release --example host_vs_device
//! cargo run --release --example host_vs_device -- --json figures.json
//! ```
//!
//! Options: `--json FILE` (also write every figure to FILE as one JSON
//! object; default none, the table only), `--help`.
//!
//! The JSON object has the same keys on every machine, each `GROUP/NAME`
//! with exactly one `/`: GROUP is the table's figure (`upload 64MiB`), NAME
//! is `tensorzone_UNIT`, `PEER_UNIT` or `PEER_ratio`, and UNIT is `ns`,
//! `gbps` (10^9 bytes/s) or `fps` (frames/s). A figure this machine did not
//! measure (its peer skipped, or the pool's other peer) is `null`.
//!
//! Without a GPU adapter (or with `TENSORZONE_BACKEND=cpu`) the wgpu peers
//! are skipped, with the reason printed, and the rest runs on the CPU
//! backend; the pool is then compared with a zeroed `Vec` instead of
//! `create_buffer`. The criterion benches (`cargo bench`) measure the same
//! things with more samples; BENCHMARKS.md has their results.

#[path = "common/cli.rs"]
mod cli;
#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../benches/common/frame_pipeline.rs"]
mod frame_pipeline;

use common::fmt_ns;

use std::collections::BTreeMap;
use std::error::Error;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use tensorzone::{Location, Tensor, Zone};

/// Median nanoseconds per call of `f`: `samples` samples of `iters` calls,
/// after one untimed warm-up sample.
fn median_ns(samples: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters {
        f();
    }
    let mut v: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The unit of a figure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unit {
    Ns,
    Gbps,
    Fps,
}

impl Unit {
    /// As the JSON keys end: no `/`, which separates a key's group from
    /// its name.
    fn key(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Gbps => "gbps",
            Unit::Fps => "fps",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Gbps => "GB/s",
            Unit::Fps => "fps",
        }
    }
}

/// Every figure the JSON holds, measured or not, so that its keys are the
/// same on every machine: each group (the table's figure), its unit and
/// the peers it can be compared with.
const FIGURES: &[(&str, Unit, &[&str])] = &[
    ("pool alloc+free 256B", Unit::Ns, POOL_PEERS),
    ("pool alloc+free 64KiB", Unit::Ns, POOL_PEERS),
    ("pool alloc+free 4MiB", Unit::Ns, POOL_PEERS),
    ("arena alloc 32B", Unit::Ns, &["bumpalo", "box"]),
    ("upload 64MiB", Unit::Gbps, &["memcpy", "write_buffer"]),
    ("upload 64MiB pinned", Unit::Gbps, &["staging_belt"]),
    ("readback 64MiB", Unit::Gbps, READBACK_PEERS),
    ("frames 1280x720 CPU", Unit::Fps, &["per_frame_vecs"]),
    ("frames 1280x720", Unit::Fps, &["per_frame_buffers"]),
];

/// `create_buffer` on a GPU zone, `vec_zeroed` on a CPU one.
const POOL_PEERS: &[&str] = &["create_buffer", "vec_zeroed"];
const READBACK_PEERS: &[&str] = &["memcpy", "fresh_map_buffer"];

fn key(group: &str, name: &str) -> String {
    debug_assert!(!group.contains('/') && !name.contains('/'));
    format!("{group}/{name}")
}

/// Figures by key (`None` until measured), and the table's rows in the
/// order measured.
struct Figures {
    values: BTreeMap<String, Option<f64>>,
    rows: Vec<String>,
}

impl Figures {
    fn new() -> Figures {
        let mut values = BTreeMap::new();
        for &(group, unit, peers) in FIGURES {
            values.insert(key(group, &format!("tensorzone_{}", unit.key())), None);
            for peer in peers {
                values.insert(key(group, &format!("{peer}_{}", unit.key())), None);
                values.insert(key(group, &format!("{peer}_ratio")), None);
            }
        }
        Figures {
            values,
            rows: Vec::new(),
        }
    }

    /// Sets a figure of [`FIGURES`]; any other is a mistake in this file,
    /// which would make the JSON's keys depend on the machine again.
    fn set(&mut self, group: &str, name: &str, value: f64) {
        let k = key(group, name);
        match self.values.get_mut(&k) {
            Some(slot) => *slot = Some(value),
            None => panic!("figure {k:?} is not in FIGURES"),
        }
    }

    /// Records tensorzone's figure and a peer's, and their ratio.
    fn record(
        &mut self,
        group: &str,
        unit: Unit,
        ours: f64,
        peer_name: &str,
        peer: f64,
        ratio: f64,
    ) {
        self.set(group, &format!("tensorzone_{}", unit.key()), ours);
        self.set(group, &format!("{peer_name}_{}", unit.key()), peer);
        self.set(group, &format!("{peer_name}_ratio"), ratio);
    }

    /// A time (ns) of tensorzone against a peer's: both, and the ratio.
    fn times(&mut self, name: &str, ours: f64, peer_name: &str, peer: f64) {
        self.record(name, Unit::Ns, ours, peer_name, peer, peer / ours);
        self.rows.push(format!(
            "{name:<22} {:>14} {peer_name:<18} {:>14} {:>8.2}x",
            fmt_ns(ours),
            fmt_ns(peer),
            peer / ours
        ));
    }

    /// A rate (GB/s or frames/s) of tensorzone against a peer's.
    fn rates(&mut self, name: &str, unit: Unit, ours: f64, peer_name: &str, peer: f64) {
        self.record(name, unit, ours, peer_name, peer, ours / peer);
        let label = unit.label();
        self.rows.push(format!(
            "{name:<22} {:>9.2} {label:<4} {peer_name:<18} {:>9.2} {label:<4} {:>8.2}x",
            ours,
            peer,
            ours / peer
        ));
    }

    /// A rate of tensorzone whose peers are skipped: measured all the
    /// same, so the JSON has it rather than `null`.
    fn rate_alone(&mut self, name: &str, unit: Unit, ours: f64) {
        self.set(name, &format!("tensorzone_{}", unit.key()), ours);
        self.rows.push(format!(
            "{name:<22} {ours:>9.2} {:<4} (no peer)",
            unit.label()
        ));
    }

    fn skipped(&mut self, what: &str, why: &str) {
        self.rows.push(format!("{what:<22} skipped: {why}"));
    }
}

const MIB: usize = 1 << 20;
const TRANSFER: usize = 64 * MIB;

fn pool(f: &mut Figures, zone: &Zone) {
    for (n, name) in [(256usize, "256B"), (64 << 10, "64KiB"), (4 << 20, "4MiB")] {
        drop(Tensor::<u8>::empty(zone, [n], Location::Device));
        let ours = median_ns(15, 20_000, || {
            drop(black_box(Tensor::<u8>::empty(zone, [n], Location::Device)));
        });
        match zone.wgpu_device() {
            Some(device) => {
                let peer = median_ns(15, 500, || {
                    let b = device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("host_vs_device raw"),
                        size: n as u64,
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_SRC
                            | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    drop(black_box(b));
                });
                f.times(
                    &format!("pool alloc+free {name}"),
                    ours,
                    "create_buffer",
                    peer,
                );
                let _ = device.poll(wgpu::PollType::wait_indefinitely());
            }
            None => {
                let peer = median_ns(15, 2_000, || drop(black_box(vec![0u8; n])));
                f.times(&format!("pool alloc+free {name}"), ours, "vec_zeroed", peer);
            }
        }
    }
}

fn arena(f: &mut Figures, zone: &Zone) {
    const N: usize = 100_000;
    let mut arena = zone.arena();
    let ours = median_ns(11, 1, || {
        for _ in 0..N {
            black_box(arena.zeros::<u8>([32], Location::Host).ok());
        }
        arena.reset();
    }) / N as f64;
    let mut bump = bumpalo::Bump::new();
    let bumpalo = median_ns(11, 1, || {
        for _ in 0..N {
            black_box(bump.alloc_slice_fill_copy(32, 0u8));
        }
        bump.reset();
    }) / N as f64;
    let boxed = median_ns(11, 1, || {
        let v: Vec<Box<[u8; 32]>> = (0..N).map(|_| Box::new([0u8; 32])).collect();
        drop(black_box(v));
    }) / N as f64;
    f.times("arena alloc 32B", ours, "bumpalo", bumpalo);
    f.times("arena alloc 32B", ours, "box", boxed);
}

fn gbps(ns: f64) -> f64 {
    TRANSFER as f64 / ns
}

fn transfers(f: &mut Figures, zone: &Zone) -> Result<(), Box<dyn Error>> {
    let data: Vec<u8> = (0..TRANSFER).map(|i| (i * 31) as u8).collect();
    let mut t = Tensor::<u8>::empty(zone, [TRANSFER], Location::Device)?;
    let write_device = median_ns(7, 1, || {
        t.write_device(&data).expect("write_device");
        zone.synchronize().expect("synchronize");
    });
    let upload_pinned = median_ns(7, 1, || {
        let mut p = zone.pinned::<u8>(TRANSFER).expect("pinned");
        p.write(0, &data).expect("write");
        t.upload_pinned(p).expect("upload_pinned");
        zone.synchronize().expect("synchronize");
    });
    let mut dst = vec![0u8; TRANSFER];
    let memcpy = median_ns(7, 1, || {
        dst.copy_from_slice(black_box(&data));
    });
    f.rates(
        "upload 64MiB",
        Unit::Gbps,
        gbps(write_device),
        "memcpy",
        gbps(memcpy),
    );
    let as_slice = median_ns(7, 1, || {
        t.mark_device_written().expect("mark");
        black_box(t.as_slice().expect("as_slice"));
    });
    f.rates(
        "readback 64MiB",
        Unit::Gbps,
        gbps(as_slice),
        "memcpy",
        gbps(memcpy),
    );
    let (Some(device), Some(queue)) = (zone.wgpu_device(), zone.wgpu_queue()) else {
        f.rate_alone("upload 64MiB pinned", Unit::Gbps, gbps(upload_pinned));
        f.skipped("wgpu transfer peers", "no GPU backend");
        return Ok(());
    };
    use wgpu::BufferUsages as U;
    let target = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host_vs_device target"),
        size: TRANSFER as u64,
        usage: U::STORAGE | U::COPY_DST | U::COPY_SRC,
        mapped_at_creation: false,
    });
    let wait = || {
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
    };
    let write_buffer = median_ns(7, 1, || {
        queue.write_buffer(&target, 0, &data);
        queue.submit([]);
        wait();
    });
    f.rates(
        "upload 64MiB",
        Unit::Gbps,
        gbps(write_device),
        "write_buffer",
        gbps(write_buffer),
    );
    let mut belt = wgpu::util::StagingBelt::new(device.clone(), 16 * MIB as u64);
    let size = wgpu::BufferSize::new(TRANSFER as u64).expect("nonzero");
    let staging_belt = median_ns(7, 1, || {
        let mut enc = device.create_command_encoder(&Default::default());
        belt.write_buffer(&mut enc, &target, 0, size)
            .copy_from_slice(&data);
        belt.finish();
        queue.submit([enc.finish()]);
        belt.recall();
        wait();
    });
    f.rates(
        "upload 64MiB pinned",
        Unit::Gbps,
        gbps(upload_pinned),
        "staging_belt",
        gbps(staging_belt),
    );
    let fresh = median_ns(7, 1, || {
        let rb = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("host_vs_device readback"),
            size: TRANSFER as u64,
            usage: U::MAP_READ | U::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&target, 0, &rb, 0, Some(TRANSFER as u64));
        queue.submit([enc.finish()]);
        let slice = rb.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        wait();
        black_box(slice.get_mapped_range().expect("mapped").to_vec());
        rb.unmap();
    });
    f.rates(
        "readback 64MiB",
        Unit::Gbps,
        gbps(as_slice),
        "fresh_map_buffer",
        gbps(fresh),
    );
    Ok(())
}

fn frames(f: &mut Figures, zone: &Zone) {
    let rgba = frame_pipeline::frame(1280, 720);
    // The pipeline on the CPU backend, against plain Rust calling the same
    // kernels with fresh Vecs: runs on every machine.
    let cpu = Zone::cpu();
    let mut arena = cpu.arena();
    let ours = median_ns(5, 1, || {
        black_box(frame_pipeline::tensorzone_frame(&cpu, &arena, &rgba));
        arena.reset();
    });
    let peer = median_ns(5, 1, || {
        black_box(frame_pipeline::plain_cpu(&rgba));
    });
    f.rates(
        "frames 1280x720 CPU",
        Unit::Fps,
        1e9 / ours,
        "per_frame_vecs",
        1e9 / peer,
    );
    let (Some(device), Some(queue)) = (zone.wgpu_device(), zone.wgpu_queue()) else {
        f.skipped("frame pipeline", "no GPU backend for the plain wgpu peer");
        return;
    };
    let mut arena = zone.arena();
    let plain = frame_pipeline::Plain::new(device, queue);
    let ours = median_ns(5, 1, || {
        black_box(frame_pipeline::tensorzone_frame(zone, &arena, &rgba));
        arena.reset();
    });
    let peer = median_ns(5, 1, || {
        black_box(plain.frame(&rgba));
    });
    f.rates(
        "frames 1280x720",
        Unit::Fps,
        1e9 / ours,
        "per_frame_buffers",
        1e9 / peer,
    );
}

fn main() {
    if let Err(e) = run() {
        eprintln!("host_vs_device: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = Some(args.next().ok_or("--json needs a file name")?),
            "--help" | "-h" => {
                println!("{}", cli::usage(include_str!("host_vs_device.rs")));
                return Ok(());
            }
            _ => return Err(format!("unknown option {a:?} (try --help)").into()),
        }
    }
    if let Some(path) = &json {
        cli::check_writable("", Path::new(path))?;
    }
    let zone = Zone::builder().label("host_vs_device").build()?;
    println!("backend: {}", zone.info());
    if zone.tracks_tensors() {
        println!("note: this zone tracks tensors (a debug build, or TENSORZONE_TRACK=1); release builds time the untracked fast path");
    }
    let mut f = Figures::new();
    pool(&mut f, &zone);
    arena(&mut f, &zone);
    transfers(&mut f, &zone)?;
    frames(&mut f, &zone);
    println!(
        "{:<22} {:>14} {:<18} {:>14} {:>9}",
        "figure", "tensorzone", "peer", "", "ratio"
    );
    for r in &f.rows {
        println!("{r}");
    }
    if let Some(path) = json {
        let obj: serde_json::Map<String, serde_json::Value> = f
            .values
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&obj)?)
            .map_err(|e| format!("cannot write {path}: {e}"))?;
        println!("figures written to {path}");
    }
    Ok(())
}
