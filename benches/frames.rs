//! Frames/s of the frame pipeline of `examples/frames.rs`
//! (upload → grayscale → blur (sigma 2) → Sobel → bytes → readback) at
//! 1280×720, the figure, and at 320×180, where the shaders cost less and
//! what each side pays per frame around them shows:
//!
//! - tensorzone: a pinned-buffer upload, `zone.kernels()`, every temporary
//!   in one arena reset after each frame, `to_vec` to read back;
//! - plain wgpu, as code without a pool writes it: the same WGSL
//!   (`tensorzone::kernels::wgsl`), pipelines built once, but every buffer
//!   (input, temporaries, parameters, readback) created for the frame,
//!   written with `queue.write_buffer`, one submit, a mapped readback.
//!
//! It prints both rates and their ratio per size, the same from frames of
//! the two interleaved (robust to a machine whose load drifts between
//! criterion's groups), and tensorzone's
//! `create_buffer` calls and peak device reserved bytes across the
//! measured 1280×720 frames.
//!
//! The same pipeline also runs on a CPU zone, against plain Rust running
//! the same kernels with a fresh `Vec` per buffer per frame.
//!
//! Run: `cargo bench --bench frames` (the GPU pipelines are skipped, with
//! the reason printed, without a GPU adapter).

use std::hint::black_box;
use std::time::Duration;

mod common;
#[path = "common/frame_pipeline.rs"]
mod frame_pipeline;

use common::fmt_ns;
use frame_pipeline::{frame, plain_cpu, tensorzone_frame, Plain};
use tensorzone::Zone;

use criterion::{Criterion, SamplingMode};

const SAMPLES: usize = 10;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut figures = Vec::new();
    let cpu = Zone::cpu();
    for (w, h) in SIZES {
        let f = frame(w, h);
        let mut arena = cpu.arena();
        // The same kernels both sides: the same bytes.
        assert_eq!(tensorzone_frame(&cpu, &arena, &f), plain_cpu(&f));
        arena.reset();
        let name = format!("frames_cpu_{w}x{h}");
        let (ours, theirs) = (format!("{name}/tensorzone"), format!("{name}/plain"));
        let mut g = group(&mut c, &name, w);
        g.bench_function("tensorzone_cpu_backend", |b| {
            common::timed(b, &ours, || {
                black_box(tensorzone_frame(&cpu, &arena, &f));
                arena.reset();
            })
        });
        g.bench_function("plain_rust_vecs_per_frame", |b| {
            common::timed(b, &theirs, || {
                black_box(plain_cpu(&f));
            })
        });
        g.finish();
        figures.push((
            "CPU backend",
            "plain Rust with per-frame Vecs",
            w,
            h,
            ours,
            theirs,
        ));
    }

    let zone = match common::gpu_zone("bench frames") {
        Ok(z) => Some(z),
        Err(why) => {
            eprintln!("frames: skipping the GPU pipelines: {why}");
            None
        }
    };
    let mut steady = None;
    let mut interleaved = Vec::new();
    if let Some(zone) = &zone {
        let mut arena = zone.arena();
        let plain = Plain::new(zone.wgpu_device().unwrap(), zone.wgpu_queue().unwrap());
        for (w, h) in SIZES {
            let f = frame(w, h);
            // Both give the same image (the same kernels; the tensorzone one
            // is checked against the CPU reference in tests/kernels.rs).
            let ours = tensorzone_frame(zone, &arena, &f);
            arena.reset();
            let theirs = plain.frame(&f);
            let worst = ours.iter().zip(&theirs).map(|(a, b)| a.abs_diff(*b)).max();
            assert_eq!(worst, Some(0), "the two pipelines disagree at {w}x{h}");

            let before = zone.stats();
            let name = format!("frames_{w}x{h}");
            let mut g = group(&mut c, &name, w);
            let (ours, theirs) = (format!("{name}/tensorzone"), format!("{name}/plain"));
            g.bench_function("tensorzone", |b| {
                common::timed(b, &ours, || {
                    black_box(tensorzone_frame(zone, &arena, &f));
                    arena.reset();
                })
            });
            g.bench_function("plain_wgpu_buffers_per_frame", |b| {
                common::timed(b, &theirs, || {
                    black_box(plain.frame(&f));
                })
            });
            g.finish();
            if steady.is_none() {
                steady = Some((before, zone.stats()));
            }
            interleaved.push((w, h, pairs(zone, &mut arena, &plain, &f)));
            figures.push((
                "GPU",
                "plain wgpu with per-frame buffers",
                w,
                h,
                ours,
                theirs,
            ));
        }
    }
    c.final_summary();

    eprintln!();
    eprintln!("== frames summary (medians of this run) ==");
    if let Some(zone) = &zone {
        eprintln!("adapter: {}", zone.info());
    }
    for (side, peer, w, h, ours, theirs) in &figures {
        if let (Some(t), Some(p)) = (
            common::median(ours, SAMPLES),
            common::median(theirs, SAMPLES),
        ) {
            let target = *side == "GPU" && *w == 1280 && p / t < 1.2;
            eprintln!(
                "{side} {w}x{h}: tensorzone {} per frame ({:.2} frames/s); {peer} {} ({:.2} frames/s); ratio {:.2}x{}",
                fmt_ns(t),
                1e9 / t,
                fmt_ns(p),
                1e9 / p,
                p / t,
                if target { "  (target 1.2x not met)" } else { "" }
            );
        }
    }
    for (w, h, (ours, theirs, ratio)) in &interleaved {
        eprintln!(
            "GPU {w}x{h}, {PAIRS} interleaved pairs: tensorzone {} per frame, plain wgpu {}; median of the pairs' ratios {ratio:.2}x",
            fmt_ns(*ours),
            fmt_ns(*theirs),
        );
    }
    if let Some((before, after)) = steady {
        eprintln!(
            "tensorzone over the measured 1280x720 frames: {} device buffers and {} staging buffers created; peak device reserved {} -> {} bytes, peak staging reserved {} -> {} bytes",
            after.device_blocks_created - before.device_blocks_created,
            after.staging_buffers_created - before.staging_buffers_created,
            before.peak_device_reserved_bytes,
            after.peak_device_reserved_bytes,
            before.peak_staging_reserved_bytes,
            after.peak_staging_reserved_bytes
        );
    }
}

/// Frames of each pipeline in the interleaved run.
const PAIRS: usize = 21;

/// Both GPU pipelines one frame after the other, `PAIRS` times (which goes
/// first alternates): on a shared machine whose load drifts, each pair
/// sees the same load, where criterion's groups, one after the other, may
/// not. The medians of each side's frame times (ns), and the median of the
/// pairs' ratios (plain / tensorzone).
fn pairs(
    zone: &Zone,
    arena: &mut tensorzone::Arena,
    plain: &Plain,
    f: &frame_pipeline::Frame,
) -> (f64, f64, f64) {
    let ours = |arena: &mut tensorzone::Arena| {
        let t = std::time::Instant::now();
        black_box(tensorzone_frame(zone, arena, f));
        arena.reset();
        t.elapsed().as_nanos() as f64
    };
    let theirs = || {
        let t = std::time::Instant::now();
        black_box(plain.frame(f));
        t.elapsed().as_nanos() as f64
    };
    let mut times = Vec::with_capacity(PAIRS);
    for i in 0..PAIRS {
        times.push(if i % 2 == 0 {
            let o = ours(arena);
            (o, theirs())
        } else {
            let p = theirs();
            (ours(arena), p)
        });
    }
    let median = |v: Vec<f64>| common::median_of(v).unwrap_or(f64::NAN);
    (
        median(times.iter().map(|t| t.0).collect()),
        median(times.iter().map(|t| t.1).collect()),
        median(times.iter().map(|t| t.1 / t.0).collect()),
    )
}

/// The frame sizes: the figure's, and one where the kernels cost less.
const SIZES: [(usize, usize); 2] = [(1280, 720), (320, 180)];

/// A benchmark group of `SAMPLES` flat samples, longer for large frames.
fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
    w: usize,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(if w >= 1280 { 12 } else { 4 }));
    g
}
