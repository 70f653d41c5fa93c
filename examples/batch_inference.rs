//! Batch inference with a small MLP (64 → 128, ReLU → 10): the weights are
//! shared tensors that two worker threads use at once; each batch's
//! activations live in the worker's arena, reset after the batch. Every
//! output is checked against the same network computed with ndarray.
//!
//! ```text
//! cargo run --release --example batch_inference
//! cargo run --release --example batch_inference -- --batches 100 --rows 512
//! ```
//!
//! Options: `--batches N` (batches each worker runs, default 50), `--rows N`
//! (rows a batch, default 256), `--help`.

#[path = "common/cli.rs"]
mod cli;

use std::error::Error;
use std::time::Instant;

use ndarray::{Array1, Array2};
use tensorzone::{Location, SharedTensor, Zone};

const INPUT: usize = 64;
const HIDDEN: usize = 128;
const OUTPUT: usize = 10;
const WORKERS: usize = 2;

/// A reproducible value in [-scale, scale] for index `i` of stream `seed`.
fn value(seed: u64, i: usize, scale: f32) -> f32 {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    ((x % 20_001) as f32 / 10_000.0 - 1.0) * scale
}

fn matrix(seed: u64, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(r, c)| value(seed, r * cols + c, scale))
}

fn vector(seed: u64, n: usize, scale: f32) -> Array1<f32> {
    Array1::from_shape_fn(n, |i| value(seed, i, scale))
}

/// The network's parameters, on the host (the reference uses these).
struct Params {
    w1: Array2<f32>,
    b1: Array1<f32>,
    w2: Array2<f32>,
    b2: Array1<f32>,
}

impl Params {
    fn new() -> Params {
        Params {
            w1: matrix(1, INPUT, HIDDEN, 0.2),
            b1: vector(2, HIDDEN, 0.1),
            w2: matrix(3, HIDDEN, OUTPUT, 0.2),
            b2: vector(4, OUTPUT, 0.1),
        }
    }

    /// The reference: `relu(x · w1 + b1) · w2 + b2`.
    fn forward(&self, x: &Array2<f32>) -> Array2<f32> {
        let h = (x.dot(&self.w1) + &self.b1).mapv(|v| v.max(0.0));
        h.dot(&self.w2) + &self.b2
    }
}

/// The weights as shared tensors on the zone's device.
#[derive(Clone)]
struct Weights {
    w1: SharedTensor<f32>,
    b1: SharedTensor<f32>,
    w2: SharedTensor<f32>,
    b2: SharedTensor<f32>,
}

/// A labeled shared tensor on the device (the label shows in the summary).
fn shared(
    zone: &Zone,
    label: &str,
    dims: &[usize],
    data: &[f32],
) -> tensorzone::Result<SharedTensor<f32>> {
    Ok(
        tensorzone::Tensor::from_slice(zone, dims, data, Location::Device)?
            .with_label(label)?
            .into_shared(),
    )
}

fn slice(
    a: &ndarray::ArrayBase<impl ndarray::Data<Elem = f32>, impl ndarray::Dimension>,
) -> &[f32] {
    a.as_slice().expect("standard layout")
}

/// One worker: `batches` batches of `rows` rows; returns the largest
/// difference from the reference.
fn worker(
    zone: &Zone,
    mut w: Weights,
    p: &Params,
    id: usize,
    batches: usize,
    rows: usize,
) -> Result<f32, Box<dyn Error + Send + Sync>> {
    let k = zone.kernels();
    let mut arena = zone.arena();
    arena.set_label(&format!("worker {id} batch"))?;
    let mut worst = 0.0f32;
    for b in 0..batches {
        let x = matrix(1000 + (id * batches + b) as u64, rows, INPUT, 1.0);
        let got = {
            let dev = Location::Device;
            let mut xt = arena.from_slice([rows, INPUT], slice(&x), dev)?;
            let mut h = arena.empty::<f32>([rows, HIDDEN], dev)?;
            k.matmul(&mut xt, &mut w.w1, &mut h)?;
            let mut hb = arena.empty::<f32>([rows, HIDDEN], dev)?;
            k.bias_add(&mut h, &mut w.b1, &mut hb)?;
            let mut hr = arena.empty::<f32>([rows, HIDDEN], dev)?;
            k.relu(&mut hb, &mut hr)?;
            let mut o = arena.empty::<f32>([rows, OUTPUT], dev)?;
            k.matmul(&mut hr, &mut w.w2, &mut o)?;
            let mut out = arena.empty::<f32>([rows, OUTPUT], dev)?;
            k.bias_add(&mut o, &mut w.b2, &mut out)?;
            out.to_vec()?
        };
        arena.reset();
        let want = p.forward(&x);
        worst = worse(worst, largest_error(&got, want.iter().copied()));
        // A wrong result stops the run rather than averaging away.
        check(worst).map_err(|e| format!("worker {id}, batch {b}: {e}"))?;
    }
    Ok(worst)
}

/// The largest relative difference from the reference that passes.
const TOLERANCE: f32 = 1e-4;

/// The largest relative difference between `got` and the reference `want`.
/// A NaN or an infinity on either side, or a length that differs, is
/// infinitely wrong: `f32::max` drops a NaN, and `zip` the surplus, so
/// either would let a broken result pass.
fn largest_error(got: &[f32], want: impl ExactSizeIterator<Item = f32>) -> f32 {
    if got.len() != want.len() {
        return f32::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(g, r)| {
            let e = (g - r).abs() / (1.0 + r.abs());
            if e.is_finite() {
                e
            } else {
                f32::INFINITY
            }
        })
        .fold(0.0, worse)
}

/// The larger error, keeping a NaN (which `f32::max` drops) as infinite.
fn worse(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::INFINITY
    } else {
        a.max(b)
    }
}

/// Passes `worst` only within [`TOLERANCE`]: the comparison is false for a
/// NaN, so a NaN cannot slip through as `worst > TOLERANCE` would let it.
fn check(worst: f32) -> Result<(), String> {
    if worst <= TOLERANCE {
        Ok(())
    } else if worst.is_finite() {
        Err(format!(
            "relative error {worst:.2e} against ndarray, over the tolerance {TOLERANCE:.0e}"
        ))
    } else {
        Err("an output (or its reference) is NaN or infinite, or of the wrong length".into())
    }
}

fn parse_args() -> Result<(usize, usize), String> {
    let (mut batches, mut rows) = (50usize, 256usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // The flag before its value: `--help` takes none, and an unknown
        // flag is named as such.
        let count = match flag.as_str() {
            "--batches" => &mut batches,
            "--rows" => &mut rows,
            "--help" | "-h" => {
                println!("{}", cli::usage(include_str!("batch_inference.rs")));
                std::process::exit(0);
            }
            _ => return Err(format!("unknown option {flag:?} (try --help)")),
        };
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        *count = v
            .parse()
            .map_err(|_| format!("{flag} {v:?}: not a count"))?;
    }
    if batches == 0 || rows == 0 {
        return Err("--batches and --rows must be positive".into());
    }
    Ok((batches, rows))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("batch_inference: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn Error + Send + Sync>> {
    let (batches, rows) = parse_args()?;
    let zone = Zone::builder().label("inference").build()?;
    println!("backend: {}", zone.info());
    let p = Params::new();
    let weights = Weights {
        w1: shared(&zone, "w1", &[INPUT, HIDDEN], slice(&p.w1))?,
        b1: shared(&zone, "b1", &[HIDDEN], slice(&p.b1))?,
        w2: shared(&zone, "w2", &[HIDDEN, OUTPUT], slice(&p.w2))?,
        b2: shared(&zone, "b2", &[OUTPUT], slice(&p.b2))?,
    };
    println!(
        "MLP {INPUT} -> {HIDDEN} (relu) -> {OUTPUT}; {WORKERS} workers x {batches} batches of {rows} rows"
    );
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|id| {
                let (zone, w, p) = (&zone, weights.clone(), &p);
                s.spawn(move || worker(zone, w, p, id, batches, rows))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let elapsed = started.elapsed();
    let mut worst = 0.0f32;
    for (id, r) in results.into_iter().enumerate() {
        match r {
            Ok(Ok(e)) => worst = worse(worst, e),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(format!("worker {id} panicked").into()),
        }
    }
    // The workers checked each batch; this guards the figure reported.
    check(worst)?;
    let total = WORKERS * batches;
    println!(
        "{total} batches ({} rows) in {:.2} s: {:.1} batches/s, {:.0} rows/s; largest relative error against ndarray {worst:.2e}",
        total * rows,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        (total * rows) as f64 / elapsed.as_secs_f64()
    );
    println!("{}", zone.stats());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(got: &[f32], want: &[f32]) -> f32 {
        largest_error(got, want.iter().copied())
    }

    #[test]
    fn close_outputs_pass() {
        let worst = error(&[1.0, -2.0, 0.0], &[1.0, -2.00001, 0.0]);
        assert!(worst > 0.0 && worst < TOLERANCE, "{worst}");
        check(worst).unwrap();
    }

    #[test]
    fn a_far_output_fails() {
        let err = check(error(&[1.0, 3.0], &[1.0, 2.0])).unwrap_err();
        assert!(err.contains("over the tolerance"), "{err}");
    }

    #[test]
    fn a_nan_or_infinite_output_or_reference_fails() {
        for (got, want) in [
            (f32::NAN, 1.0),
            (1.0, f32::NAN),
            (f32::INFINITY, 1.0),
            (f32::NEG_INFINITY, f32::NEG_INFINITY),
        ] {
            // After a good value: `f32::max` kept the 0 and dropped the NaN.
            let worst = error(&[1.0, got], &[1.0, want]);
            let err = check(worst).unwrap_err();
            assert!(err.contains("NaN or infinite"), "{got} vs {want}: {err}");
        }
    }

    #[test]
    fn a_length_that_differs_fails() {
        assert!(check(error(&[1.0], &[1.0, 2.0])).is_err());
        assert!(check(error(&[1.0, 2.0], &[1.0])).is_err());
    }

    #[test]
    fn a_nan_error_is_kept_across_workers() {
        assert!(check(worse(0.0, f32::NAN)).is_err());
        assert!(check(worse(f32::NAN, 0.0)).is_err());
        assert!(check(f32::NAN).is_err());
    }
}
