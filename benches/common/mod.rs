//! What the benches share: an in-process recorder of criterion's samples
//! (criterion does not hand back its medians) and the GPU zone they run on.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tensorzone::{BackendChoice, Zone};

/// Per-iteration times (ns) of every sample criterion took, by key.
static RECORDED: Mutex<Option<HashMap<String, Vec<f64>>>> = Mutex::new(None);

/// Records one sample (ns per iteration) under `key`, for benches that
/// time their own iterations.
pub fn record_ns(key: &str, ns_per_iter: f64) {
    record(key, ns_per_iter);
}

fn record(key: &str, ns_per_iter: f64) {
    let mut g = RECORDED.lock().unwrap();
    g.get_or_insert_with(HashMap::new)
        .entry(key.to_string())
        .or_default()
        .push(ns_per_iter);
}

/// Median of the last `samples` recorded times of `key`. Criterion runs its
/// warm-up first and then exactly `sample_size` samples, so the last
/// `samples` entries are the measured ones.
pub fn median(key: &str, samples: usize) -> Option<f64> {
    let g = RECORDED.lock().unwrap();
    let all = g.as_ref()?.get(key)?;
    median_of(all[all.len().saturating_sub(samples)..].to_vec())
}

/// The median of `v`: the middle value, or the mean of the middle two.
pub fn median_of(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
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
pub fn timed(b: &mut criterion::Bencher<'_>, key: &str, mut f: impl FnMut()) {
    b.iter_custom(|iters| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let d = start.elapsed();
        record(key, d.as_nanos() as f64 / iters as f64);
        d
    });
}

/// A GPU zone, or why there is none (no adapter, or TENSORZONE_BACKEND=cpu).
pub fn gpu_zone(label: &str) -> Result<Zone, String> {
    let zone = Zone::builder()
        .backend(BackendChoice::Gpu)
        .label(label)
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

/// A duration in ns, printed with a unit that fits.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}
