//! A workload holding twice the device budget in live tensors, through
//! spill and reload:
//!
//! - 32 device tensors of 4 MiB (128 MiB) under a 64 MiB budget, each
//!   written once from the host;
//! - passes that use every tensor on the device in turn (least recently used
//!   first: the worst case for LRU, every use spills one tensor and reloads
//!   another);
//! - at the end every tensor is read back and checked element for element.
//!
//! It prints the spill and reload traffic per pass and the time a pass
//! takes, next to the same pass in a zone without a budget (nothing moves).
//!
//! Run: `cargo bench --bench budget` (the GPU part is skipped, with the
//! reason printed, without an adapter).

use std::time::Duration;

mod common;

use common::fmt_ns;

use criterion::Criterion;
use tensorzone::{BackendChoice, Location, Tensor, Zone, ZoneBuilder};

const MIB: u64 = 1 << 20;
const BUDGET: u64 = 64 * MIB;
const TENSORS: usize = 32;
const LEN: usize = (4 * MIB / 4) as usize;
const SAMPLES: usize = 10;

fn pattern(i: usize) -> Vec<u32> {
    (0..LEN as u32)
        .map(|k| k.wrapping_mul(2_654_435_761) ^ i as u32)
        .collect()
}

fn make(zone: &Zone) -> Vec<Tensor<u32>> {
    (0..TENSORS)
        .map(|i| {
            let mut t = Tensor::empty(zone, [LEN], Location::Device).unwrap();
            t.write_device(&pattern(i)).unwrap();
            t
        })
        .collect()
}

/// Uses every tensor on the device once, oldest first.
fn pass(ts: &mut [Tensor<u32>]) {
    for t in ts.iter_mut() {
        t.mark_device_written().unwrap();
    }
}

fn check(ts: &mut [Tensor<u32>]) {
    for (i, t) in ts.iter_mut().enumerate() {
        assert!(t.to_vec().unwrap() == pattern(i), "tensor {i} changed");
    }
}

fn builder(choice: BackendChoice) -> ZoneBuilder {
    Zone::builder().backend(choice).slab_size(16 * MIB)
}

fn run(c: &mut Criterion, tag: &str, choice: BackendChoice, lines: &mut Vec<String>) {
    let budget = builder(choice).device_budget(BUDGET).build().unwrap();
    let free = builder(choice).build().unwrap();
    let mut tight = make(&budget);
    let mut roomy = make(&free);
    let after_make = budget.stats();
    // One pass outside criterion, for the traffic of exactly one pass.
    pass(&mut tight);
    let s1 = budget.stats();
    let d =
        |a: tensorzone::Transfers, b: tensorzone::Transfers| (a.calls - b.calls, a.bytes - b.bytes);
    let (spill_calls, spill_bytes) = d(s1.spills, after_make.spills);
    let (reload_calls, reload_bytes) = d(s1.reloads, after_make.reloads);

    let mut g = c.benchmark_group(format!("budget_{tag}"));
    g.sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("pass_2x_budget", |b| {
        common::timed(b, &format!("{tag}/tight"), || pass(&mut tight))
    });
    g.bench_function("pass_no_budget", |b| {
        common::timed(b, &format!("{tag}/roomy"), || pass(&mut roomy))
    });
    g.finish();

    check(&mut tight);
    check(&mut roomy);
    let s = budget.stats();
    let spills = s.spills.calls - s1.spills.calls;
    let m = |k: &str| common::median(k, SAMPLES);
    let (Some(t), Some(r)) = (m(&format!("{tag}/tight")), m(&format!("{tag}/roomy"))) else {
        return;
    };
    let moved = (spill_bytes + reload_bytes) as f64;
    lines.push(format!(
        "{tag} ({}): 128 MiB live under a 64 MiB budget; one pass: {} spills ({} MiB) + {} reloads ({} MiB), {} per pass ({:.2} GB/s of spill+reload traffic) vs {} without a budget; peak device reserved {} MiB; contents exact after {} more spills",
        budget.info(),
        spill_calls,
        spill_bytes / MIB,
        reload_calls,
        reload_bytes / MIB,
        fmt_ns(t),
        moved / t,
        fmt_ns(r),
        s.peak_device_reserved_bytes / MIB,
        spills,
    ));
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut lines = Vec::new();
    match common::gpu_zone("bench budget") {
        Ok(_) => run(&mut c, "gpu", BackendChoice::Gpu, &mut lines),
        Err(why) => lines.push(format!("GPU skipped: {why}")),
    }
    run(&mut c, "cpu", BackendChoice::Cpu, &mut lines);
    c.final_summary();
    eprintln!();
    eprintln!("== budget summary (medians of this run) ==");
    for l in &lines {
        eprintln!("{l}");
    }
}
