//! Frames/s of the frame pipeline of `examples/frames.rs` at 1280×720
//! (upload → grayscale → blur (sigma 2) → Sobel → bytes → readback):
//!
//! - tensorzone: a pinned-buffer upload, `zone.kernels()`, every temporary
//!   in one arena reset after each frame, `to_vec` to read back;
//! - plain wgpu, as code without a pool writes it: the same WGSL
//!   (`tensorzone::kernels::wgsl`), pipelines built once, but every buffer
//!   (input, temporaries, parameters, readback) created for the frame,
//!   written with `queue.write_buffer`, one submit, a mapped readback.
//!
//! It prints both rates, their ratio, and tensorzone's `create_buffer`
//! calls and peak device reserved bytes across the measured frames.
//!
//! Run: `cargo bench --bench frames` (skipped, with the reason printed,
//! without a GPU adapter).

use std::hint::black_box;
use std::time::Duration;

mod common;
#[path = "common/frame_pipeline.rs"]
mod frame_pipeline;

use common::fmt_ns;
use frame_pipeline::{frame, tensorzone_frame, Plain};

use criterion::{Criterion, SamplingMode};

const SAMPLES: usize = 10;

fn main() {
    let zone = match common::gpu_zone("bench frames") {
        Ok(z) => z,
        Err(why) => {
            eprintln!("frames: skipping: {why}");
            return;
        }
    };
    let mut c = Criterion::default().configure_from_args();
    let rgba = frame();
    let mut arena = zone.arena();
    let plain = Plain::new(zone.wgpu_device().unwrap(), zone.wgpu_queue().unwrap());

    // Both give the same image (the same kernels; the tensorzone one is
    // checked against the CPU reference in tests/kernels.rs).
    let ours = tensorzone_frame(&zone, &arena, &rgba);
    arena.reset();
    let theirs = plain.frame(&rgba);
    let worst = ours.iter().zip(&theirs).map(|(a, b)| a.abs_diff(*b)).max();
    assert_eq!(worst, Some(0), "the two pipelines disagree");

    let before = zone.stats();
    let mut g = c.benchmark_group("frames_1280x720");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12));
    g.bench_function("tensorzone", |b| {
        common::timed(b, "tensorzone", || {
            black_box(tensorzone_frame(&zone, &arena, &rgba));
            arena.reset();
        })
    });
    g.bench_function("plain_wgpu_buffers_per_frame", |b| {
        common::timed(b, "plain", || {
            black_box(plain.frame(&rgba));
        })
    });
    g.finish();
    let after = zone.stats();
    c.final_summary();

    eprintln!();
    eprintln!("== frames summary (1280x720, medians of this run) ==");
    eprintln!("adapter: {}", zone.info());
    if let (Some(t), Some(p)) = (
        common::median("tensorzone", SAMPLES),
        common::median("plain", SAMPLES),
    ) {
        eprintln!(
            "tensorzone: {} per frame ({:.2} frames/s); plain wgpu with per-frame buffers: {} ({:.2} frames/s); ratio {:.2}x{}",
            fmt_ns(t),
            1e9 / t,
            fmt_ns(p),
            1e9 / p,
            p / t,
            if p / t < 1.2 { "  (target 1.2x not met)" } else { "" }
        );
    }
    eprintln!(
        "tensorzone over the measured frames: {} device buffers and {} staging buffers created; peak device reserved {} -> {} bytes, peak staging reserved {} -> {} bytes",
        after.device_blocks_created - before.device_blocks_created,
        after.staging_buffers_created - before.staging_buffers_created,
        before.peak_device_reserved_bytes,
        after.peak_device_reserved_bytes,
        before.peak_staging_reserved_bytes,
        after.peak_staging_reserved_bytes
    );
}
