//! The frame pipeline: RGBA frames go up through a pinned buffer, become
//! grayscale, are blurred, give a Sobel edge image, and come back as PNG
//! files. Every temporary lives in one per-frame arena, reset after each
//! frame, so the steady state creates no buffers.
//!
//! ```text
//! cargo run --release --example frames                       # 60 generated 1280x720 frames
//! cargo run --release --example frames -- --input photos/ --output edges/
//! TENSORZONE_BACKEND=cpu cargo run --release --example frames  # the same on the CPU
//! ```
//!
//! Options: `--input DIR` (PNG and JPEG files, in name order; others are
//! reported and skipped), `--output DIR` (default `frames_out`, created if
//! missing), `--frames N` and `--size WxH` for generated frames (default 60
//! at 1280x720; at most 16384 pixels a side, and at 4 bytes a pixel a
//! frame must fit the adapter's largest storage binding), `--sigma S`
//! (blur, default 2.0), `--trace FILE` (default `OUTPUT/trace.json`, the
//! first `--trace-frames N` frames, default 3; 0 writes none; a named pipe
//! or a device is written as it is, a folder or a socket refused), `--help`.
//! Bad output or trace paths (an output folder that cannot be written
//! included) fail before the first frame and leave no folder behind, as
//! does a run in which no input file could be read.

#[path = "../common/cli.rs"]
mod cli;
mod input;
mod outputs;

use std::error::Error;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use input::{decode, list_inputs, Frame};
use std::time::{Duration, Instant};

use tensorzone::{Arena, Location, Zone};

struct Args {
    input: Option<PathBuf>,
    output: PathBuf,
    frames: usize,
    width: u32,
    height: u32,
    sigma: f32,
    trace: Option<PathBuf>,
    trace_frames: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        input: None,
        output: PathBuf::from("frames_out"),
        frames: 60,
        width: 1280,
        height: 720,
        sigma: 2.0,
        trace: None,
        trace_frames: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--input" => a.input = Some(PathBuf::from(value()?)),
            "--output" => a.output = PathBuf::from(value()?),
            "--frames" => a.frames = parse(&flag, &value()?)?,
            "--sigma" => a.sigma = parse(&flag, &value()?)?,
            "--trace" => a.trace = Some(PathBuf::from(value()?)),
            "--trace-frames" => a.trace_frames = parse(&flag, &value()?)?,
            "--size" => (a.width, a.height) = parse_size(&value()?)?,
            "--help" | "-h" => {
                println!("{}", cli::usage(include_str!("main.rs")));
                std::process::exit(0);
            }
            _ => return Err(format!("unknown option {flag:?} (try --help)")),
        }
    }
    if a.width == 0 || a.height == 0 || a.frames == 0 {
        return Err("--size and --frames must be positive".into());
    }
    if a.width.max(a.height) > MAX_SIDE {
        return Err(format!("--size: at most {MAX_SIDE} pixels a side"));
    }
    let sigmas = tensorzone::kernels::BLUR_SIGMA;
    if !sigmas.contains(&a.sigma) {
        return Err(format!(
            "--sigma {}: must be in [{}, {}]",
            a.sigma,
            sigmas.start(),
            sigmas.end()
        ));
    }
    Ok(a)
}

/// The largest generated frame side: 16384² RGBA is 1 GiB a frame.
const MAX_SIDE: u32 = 16384;

/// Bytes a pixel in the frame's largest tensors: the RGBA input and the
/// f32 planes. Each is bound whole, so each must fit one binding.
const BYTES_PER_PIXEL: u64 = 4;

fn parse<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} {v:?}: not a valid value"))
}

/// `WIDTHxHEIGHT`. An error names the whole argument: the part that failed
/// alone (`""` for `5x`) does not show what was wrong.
fn parse_size(v: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--size {v:?}: expected WIDTHxHEIGHT, such as 1280x720");
    let (w, h) = v.split_once('x').ok_or_else(bad)?;
    Ok((w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?))
}

/// A generated frame: stripes moving right, a vertical gradient and a disc
/// moving across, so that every frame has edges.
fn generated(i: usize, width: usize, height: usize) -> Frame {
    let mut rgba = vec![0u8; width * height * 4];
    let (cx, cy, r) = ((i * 13) % width, height / 2, height / 4);
    for (p, px) in rgba.chunks_exact_mut(4).enumerate() {
        let (x, y) = (p % width, p / width);
        let stripe = if (x + 4 * i) % 64 < 32 { 200 } else { 40 };
        let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
        let disc = if dx * dx + dy * dy < r * r { 255 } else { 0 };
        px.copy_from_slice(&[stripe, (y * 255 / height) as u8, disc, 255]);
    }
    Frame {
        name: format!("frame_{i:04}"),
        width,
        height,
        rgba,
    }
}

/// Runs one frame through the pipeline; returns the edge image's bytes.
/// Everything it allocates is in `arena`, which the caller resets.
fn process(zone: &Zone, arena: &Arena, f: &Frame, sigma: f32) -> tensorzone::Result<Vec<u8>> {
    let (h, w) = (f.height, f.width);
    let k = zone.kernels();
    let mut pinned = zone.pinned::<u8>(h * w * 4)?;
    pinned.write(0, &f.rgba)?;
    let mut input = arena.empty::<u8>([h, w, 4], Location::Device)?;
    input.upload_pinned(pinned)?;
    let mut gray = arena.empty::<f32>([h, w], Location::Device)?;
    k.grayscale(&mut input, &mut gray)?;
    let mut tmp = arena.empty::<f32>([h, w], Location::Device)?;
    let mut blurred = arena.empty::<f32>([h, w], Location::Device)?;
    k.gaussian_blur_via(&mut gray, &mut tmp, &mut blurred, sigma)?;
    let mut edges = arena.empty::<f32>([h, w], Location::Device)?;
    k.sobel(&mut blurred, &mut edges)?;
    // Sobel magnitudes of a blurred [0, 1] image: about 1.5 across a
    // black-to-white step at sigma 2, less across softer edges. The
    // normalised cast clamps at 1, so the strongest edges show white.
    let mut bytes = arena.empty::<u8>([h, w], Location::Device)?;
    k.f32_to_u8(&mut edges, &mut bytes)?;
    bytes.to_vec()
}

/// Refuses generated frames over the adapter's largest storage binding
/// (or buffer) now, rather than after the run has started: the kernels
/// would fail on the first frame. The CPU backend has no such limit.
fn check_frame_size(zone: &Zone, width: u32, height: u32) -> Result<(), String> {
    let Some(max) = zone.max_binding_size() else {
        return Ok(());
    };
    let max = max.min(zone.info().max_buffer_size);
    let bytes = BYTES_PER_PIXEL * u64::from(width) * u64::from(height);
    if bytes <= max {
        return Ok(());
    }
    let pixels = max / BYTES_PER_PIXEL;
    let side = pixels.isqrt().min(u64::from(MAX_SIDE));
    let at_width = (pixels / u64::from(width)).min(u64::from(MAX_SIDE));
    Err(format!(
        "--size {width}x{height}: a frame's tensors take {bytes} bytes each, over this \
         adapter's largest binding of {max} bytes; the largest frames it takes have \
         {pixels} pixels, such as {width}x{at_width} or {side}x{side}"
    ))
}

/// The `frame i/n` line, redrawn in place. Whatever else is printed while
/// it shows must end it first, or lands glued onto its end.
#[derive(Default)]
struct Progress {
    open: bool,
}

impl Progress {
    fn show(&mut self, line: &str) -> std::io::Result<()> {
        print!("\r{line}");
        self.open = true;
        std::io::stdout().flush()
    }

    fn end(&mut self) {
        if std::mem::take(&mut self.open) {
            println!();
        }
    }
}

/// Dropped on the way out of `run`, error or not: `main`'s error message
/// then starts a line of its own.
impl Drop for Progress {
    fn drop(&mut self) {
        self.end();
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("frames: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let trace_path = args
        .trace
        .clone()
        .unwrap_or_else(|| args.output.join("trace.json"));
    let inputs = match &args.input {
        Some(dir) => Some(list_inputs(dir)?),
        None => None,
    };
    // A bad input folder is reported before the adapter starts; the
    // generated frames' size needs its limits. (Input files too large are
    // skipped one by one, in the loop.)
    let zone = Zone::builder().label("frames").build()?;
    println!("backend: {}", zone.info());
    if inputs.is_none() {
        check_frame_size(&zone, args.width, args.height)?;
    }
    // Only once the input and the size are known good: a bad one then
    // leaves no folder behind.
    let trace = (args.trace_frames > 0).then_some(trace_path.as_path());
    let folders = outputs::prepare(&args.output, trace)?;
    let total = inputs.as_ref().map_or(args.frames, Vec::len);
    match &args.input {
        Some(dir) => println!("input: {total} files in {}", dir.display()),
        None => println!(
            "input: {total} generated frames of {}x{}",
            args.width, args.height
        ),
    }

    let mut arena = zone.arena();
    arena.set_label("frame")?;
    let mut tracing = args.trace_frames > 0;
    if tracing {
        zone.start_trace();
    }
    let (mut done, mut skipped) = (0usize, 0usize);
    let mut pipeline_time = Duration::ZERO;
    let mut after_first = None;
    let mut progress = Progress::default();
    let started = Instant::now();
    for i in 0..total {
        let frame = match &inputs {
            Some(files) => match decode(&files[i]) {
                Ok(f) => f,
                Err(e) => {
                    progress.end();
                    eprintln!("skipping {}: {e}", files[i].display());
                    skipped += 1;
                    continue;
                }
            },
            None => generated(i, args.width as usize, args.height as usize),
        };
        let t0 = Instant::now();
        let edges = process(&zone, &arena, &frame, args.sigma);
        arena.reset();
        let edges = match edges {
            Ok(e) => e,
            // A frame the kernels refuse (too large for a binding, say) is
            // bad input: the rest still run. Anything else stops the run.
            Err(e @ tensorzone::Error::InvalidArgument { .. }) if inputs.is_some() => {
                progress.end();
                eprintln!("skipping {}: {e}", frame.name);
                skipped += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        pipeline_time += t0.elapsed();
        done += 1;
        if done == 1 {
            after_first = Some(zone.stats());
        }
        if tracing && done >= args.trace_frames {
            // The trace may go to the terminal (`--trace /dev/stdout`).
            progress.end();
            write_trace(&zone, &trace_path)?;
            tracing = false;
        }
        let out = args.output.join(format!("{}_edges.png", frame.name));
        image::GrayImage::from_raw(frame.width as u32, frame.height as u32, edges)
            .ok_or("edge image of the wrong size")?
            .save(&out)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        progress.show(&format!("frame {done}/{total} ({})", frame.name))?;
    }
    progress.end();
    // Before the trace: a run with no frame writes nothing, and returning
    // drops `folders`, which removes the folders it made.
    if done == 0 {
        return Err(format!("none of the {total} input files could be read").into());
    }
    if tracing {
        write_trace(&zone, &trace_path)?;
    }
    let wall = started.elapsed();
    println!(
        "{done} frames ({skipped} skipped): pipeline {:.1} frames/s (upload, kernels, readback), \
         end to end {:.1} frames/s (with decoding and PNG writing)",
        done as f64 / pipeline_time.as_secs_f64(),
        done as f64 / wall.as_secs_f64()
    );
    let stats = zone.stats();
    if let Some(first) = after_first {
        println!(
            "after the first frame: {} device buffers and {} staging buffers created, peak device reserved {} -> {} bytes",
            stats.device_blocks_created - first.device_blocks_created,
            stats.staging_buffers_created - first.staging_buffers_created,
            first.peak_device_reserved_bytes,
            stats.peak_device_reserved_bytes
        );
    }
    match args.trace_frames {
        0 => println!("outputs in {}", args.output.display()),
        _ => println!(
            "outputs in {}, trace in {}",
            args.output.display(),
            trace_path.display()
        ),
    }
    println!("{stats}");
    folders.keep();
    Ok(())
}

/// Stops the zone's trace and writes it as Chrome JSON to `path`.
fn write_trace(zone: &Zone, path: &Path) -> Result<(), String> {
    // With a final newline: written to the terminal, the trace must not
    // share its last line with what the run prints next.
    let json = zone.stop_trace().to_chrome_json() + "\n";
    std::fs::write(path, json).map_err(|e| format!("cannot write trace {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn a_size_parses() {
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
    }

    #[test]
    fn a_bad_size_is_named_whole() {
        for v in ["5x", "x5", "10x10x10", "10", "axb", "-1x5", ""] {
            let err = parse_size(v).unwrap_err();
            assert!(err.starts_with(&format!("--size {v:?}:")), "{v}: {err}");
        }
    }
}
