//! 64 MiB host→device uploads and device→host readbacks against the peers a
//! user would otherwise write, in the same process.
//!
//! Upload (each timed iteration ends with the GPU idle):
//! - `tensorzone/write_device`: `tensor.write_device(&data)` + `zone.synchronize()`
//! - `tensorzone/from_pinned`: `zone.pinned` + `pinned.write` (the caller's one
//!   copy, written in place) + `Tensor::from_pinned` + `synchronize` (+ drop)
//! - `tensorzone/upload_pinned`: the same into a preallocated tensor
//! - `wgpu/write_buffer`: `queue.write_buffer` into a preallocated buffer +
//!   `queue.submit([])` + `device.poll(wait_indefinitely)`
//! - `host/memcpy`: `dst.copy_from_slice(&src)` of 64 MiB
//!
//! Readback (the device copy is made current and the host copy stale with
//! `mark_device_written` each iteration; the data stays valid):
//! - `tensorzone/to_vec` (download into the host copy + a new Vec) and
//!   `tensorzone/as_slice` (download into the tensor's host copy)
//! - `wgpu/fresh_buffer`: a new MAP_READ|COPY_DST buffer, copy, submit,
//!   `map_async` + `poll(wait_indefinitely)`, `get_mapped_range` → new Vec, unmap
//! - `wgpu/reused_buffer`: the same with one readback buffer kept across
//!   iterations, copying into a preallocated Vec.
//!
//! After the groups the bench prints medians, GB/s and the ratios.
//! Run: `cargo bench --bench transfer`.

use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tensorzone::{Location, Tensor, Zone};

const N: usize = 64 << 20;
const SAMPLES: usize = 15;
const MEASURE: Duration = Duration::from_secs(4);
const WARM_UP: Duration = Duration::from_secs(1);

fn gbps(ns: f64) -> f64 {
    N as f64 / ns // bytes per ns = GB/s
}

// ----- benchmarks ------------------------------------------------------------

fn pattern() -> Vec<u8> {
    (0..N).map(|i| (i % 251) as u8).collect()
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(SAMPLES)
        .measurement_time(MEASURE)
        .warm_up_time(WARM_UP)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(N as u64));
    g
}

fn bench_upload(c: &mut Criterion, zone: &Zone, data: &[u8]) {
    let device = zone.wgpu_device().expect("gpu zone").clone();
    let queue = zone.wgpu_queue().expect("gpu zone").clone();
    let mut g = group(c, "upload_64MiB");

    let mut t = Tensor::<u8>::empty(zone, [N], Location::Device).unwrap();
    g.bench_function(BenchmarkId::new("tensorzone", "write_device"), |b| {
        common::timed(b, "up/tz/write_device", || {
            t.write_device(data).unwrap();
            zone.synchronize().unwrap();
        })
    });

    g.bench_function(BenchmarkId::new("tensorzone", "from_pinned"), |b| {
        common::timed(b, "up/tz/from_pinned", || {
            let mut p = zone.pinned::<u8>(N).unwrap();
            p.write(0, data).unwrap();
            let t = Tensor::from_pinned(zone, [N], p).unwrap();
            zone.synchronize().unwrap();
            drop(black_box(t));
        })
    });

    g.bench_function(BenchmarkId::new("tensorzone", "upload_pinned"), |b| {
        common::timed(b, "up/tz/upload_pinned", || {
            let mut p = zone.pinned::<u8>(N).unwrap();
            p.write(0, data).unwrap();
            t.upload_pinned(p).unwrap();
            zone.synchronize().unwrap();
        })
    });
    // Check the tensor really holds the data (outside the timing).
    assert!(t.to_vec().unwrap() == data, "upload_pinned result differs");

    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench write_buffer dst"),
        size: N as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    g.bench_function(BenchmarkId::new("wgpu", "write_buffer"), |b| {
        common::timed(b, "up/wgpu/write_buffer", || {
            queue.write_buffer(&buf, 0, data);
            queue.submit([]);
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        })
    });

    let mut dst = vec![0u8; N];
    g.bench_function(BenchmarkId::new("host", "memcpy"), |b| {
        common::timed(b, "up/host/memcpy", || {
            dst.copy_from_slice(black_box(data));
            black_box(&mut dst);
        })
    });
    g.finish();
}

fn readback_fresh(device: &wgpu::Device, queue: &wgpu::Queue, src: &wgpu::Buffer) -> Vec<u8> {
    let rb = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench readback (fresh)"),
        size: N as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    enc.copy_buffer_to_buffer(src, 0, &rb, 0, Some(N as u64));
    queue.submit([enc.finish()]);
    rb.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let out = rb.get_mapped_range(..).unwrap().to_vec();
    rb.unmap();
    out
}

fn readback_reused(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    src: &wgpu::Buffer,
    rb: &wgpu::Buffer,
    out: &mut [u8],
) {
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    enc.copy_buffer_to_buffer(src, 0, rb, 0, Some(N as u64));
    queue.submit([enc.finish()]);
    rb.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    out.copy_from_slice(&rb.get_mapped_range(..).unwrap());
    rb.unmap();
}

fn bench_readback(c: &mut Criterion, zone: &Zone, data: &[u8]) {
    let device = zone.wgpu_device().expect("gpu zone").clone();
    let queue = zone.wgpu_queue().expect("gpu zone").clone();
    let mut g = group(c, "readback_64MiB");

    let mut t = Tensor::<u8>::empty(zone, [N], Location::Device).unwrap();
    t.write_device(data).unwrap();
    zone.synchronize().unwrap();
    g.bench_function(BenchmarkId::new("tensorzone", "to_vec"), |b| {
        common::timed(b, "down/tz/to_vec", || {
            t.mark_device_written().unwrap();
            let v = t.to_vec().unwrap();
            drop(black_box(v));
        })
    });
    g.bench_function(BenchmarkId::new("tensorzone", "as_slice"), |b| {
        common::timed(b, "down/tz/as_slice", || {
            t.mark_device_written().unwrap();
            black_box(t.as_slice().unwrap());
        })
    });
    assert!(t.as_slice().unwrap() == data, "tensorzone readback differs");

    let src = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench readback src"),
        size: N as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&src, 0, data);
    queue.submit([]);
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert!(
        readback_fresh(&device, &queue, &src) == data,
        "hand-written readback differs"
    );

    g.bench_function(BenchmarkId::new("wgpu", "fresh_buffer"), |b| {
        common::timed(b, "down/wgpu/fresh", || {
            let v = readback_fresh(&device, &queue, &src);
            drop(black_box(v));
        })
    });

    let rb = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench readback (reused)"),
        size: N as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut out = vec![0u8; N];
    g.bench_function(BenchmarkId::new("wgpu", "reused_buffer"), |b| {
        common::timed(b, "down/wgpu/reused", || {
            readback_reused(&device, &queue, &src, &rb, &mut out);
            black_box(&mut out);
        })
    });
    g.finish();
}

/// The CPU backend's upload and readback, against memcpy.
fn bench_cpu(c: &mut Criterion, data: &[u8]) {
    let zone = Zone::cpu();
    let mut g = group(c, "cpu_backend_64MiB");
    let mut t = Tensor::<u8>::empty(&zone, [N], Location::Device).unwrap();
    g.bench_function(BenchmarkId::new("tensorzone", "write_device"), |b| {
        common::timed(b, "cpu/tz/write_device", || t.write_device(data).unwrap())
    });
    g.bench_function(BenchmarkId::new("tensorzone", "as_slice"), |b| {
        common::timed(b, "cpu/tz/as_slice", || {
            t.mark_device_written().unwrap();
            black_box(t.as_slice().unwrap());
        })
    });
    let mut dst = vec![0u8; N];
    g.bench_function(BenchmarkId::new("host", "memcpy"), |b| {
        common::timed(b, "cpu/host/memcpy", || {
            dst.copy_from_slice(black_box(data));
            black_box(&mut dst);
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let data = pattern();
    let gpu = common::gpu_zone("bench transfer");
    match &gpu {
        Ok(zone) => {
            bench_upload(&mut c, zone, &data);
            bench_readback(&mut c, zone, &data);
        }
        Err(why) => eprintln!("transfer: skipping GPU groups: {why}"),
    }
    bench_cpu(&mut c, &data);
    c.final_summary();

    // ----- summary --------------------------------------------------------------
    eprintln!();
    eprintln!("== transfer summary, 64 MiB (medians of this run; GB/s = 10^9 B/s) ==");
    if let Ok(zone) = &gpu {
        eprintln!("adapter: {}", zone.info());
    }
    let show = |label: &str, key: &str| {
        if let Some(ns) = common::median(key, SAMPLES) {
            eprintln!("{label:<34} {:>10.3} ms {:>8.2} GB/s", ns / 1e6, gbps(ns));
        }
    };
    // ratio of throughputs tensorzone / peer = peer time / tensorzone time
    let ratio = |label: &str, tz: &str, peer: &str, target: Option<f64>| {
        if let (Some(t), Some(p)) = (common::median(tz, SAMPLES), common::median(peer, SAMPLES)) {
            let r = p / t;
            let verdict = match target {
                Some(min) if r >= min => format!("  (target >= {min} met)"),
                Some(min) => format!("  (target >= {min} NOT met)"),
                None => String::new(),
            };
            eprintln!("{label:<52} {r:>6.3}{verdict}");
        }
    };
    for (label, key) in [
        ("upload tensorzone write_device", "up/tz/write_device"),
        ("upload tensorzone from_pinned", "up/tz/from_pinned"),
        ("upload tensorzone upload_pinned", "up/tz/upload_pinned"),
        ("upload wgpu write_buffer", "up/wgpu/write_buffer"),
        ("upload host memcpy", "up/host/memcpy"),
        ("readback tensorzone to_vec", "down/tz/to_vec"),
        ("readback tensorzone as_slice", "down/tz/as_slice"),
        ("readback wgpu fresh buffer", "down/wgpu/fresh"),
        ("readback wgpu reused buffer", "down/wgpu/reused"),
        ("cpu backend write_device", "cpu/tz/write_device"),
        ("cpu backend as_slice", "cpu/tz/as_slice"),
        ("cpu host memcpy", "cpu/host/memcpy"),
    ] {
        show(label, key);
    }
    eprintln!("-- throughput ratios (tensorzone / peer) --");
    for v in ["write_device", "from_pinned", "upload_pinned"] {
        ratio(
            &format!("upload {v} / write_buffer"),
            &format!("up/tz/{v}"),
            "up/wgpu/write_buffer",
            Some(1.0),
        );
        ratio(
            &format!("upload {v} / memcpy"),
            &format!("up/tz/{v}"),
            "up/host/memcpy",
            None,
        );
    }
    for v in ["to_vec", "as_slice"] {
        ratio(
            &format!("readback {v} / hand-written (fresh buffer)"),
            &format!("down/tz/{v}"),
            "down/wgpu/fresh",
            Some(0.9),
        );
        ratio(
            &format!("readback {v} / hand-written (reused buffer)"),
            &format!("down/tz/{v}"),
            "down/wgpu/reused",
            Some(0.9),
        );
    }
    ratio(
        "cpu backend write_device / memcpy",
        "cpu/tz/write_device",
        "cpu/host/memcpy",
        None,
    );
    ratio(
        "cpu backend as_slice / memcpy",
        "cpu/tz/as_slice",
        "cpu/host/memcpy",
        None,
    );
    if let Ok(zone) = &gpu {
        eprintln!("{}", zone.stats());
    }
}
