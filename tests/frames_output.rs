//! The frames example's output paths (`examples/frames/outputs.rs` and the
//! writability check of `examples/common/cli.rs`): a bad output folder or
//! trace file fails before any frame and leaves no folder behind; a named
//! pipe is taken without blocking; a run that writes nothing removes the
//! folders it made.

#[path = "../examples/common/cli.rs"]
mod cli;
mod common;
#[path = "../examples/frames/outputs.rs"]
mod outputs;

use std::path::{Path, PathBuf};

fn folder(name: &str) -> PathBuf {
    common::temp_folder(&format!("frames-out-{name}"))
}

#[test]
fn good_paths_get_their_folders_and_no_trace_file_yet() {
    let dir = folder("good");
    let (output, trace) = (dir.join("out/a"), dir.join("traces/t.json"));
    let folders = outputs::prepare(&output, Some(&trace)).unwrap();
    assert!(output.is_dir() && trace.parent().unwrap().is_dir());
    assert!(!trace.exists(), "the check writes no trace file");
    let left: Vec<_> = std::fs::read_dir(&output).unwrap().collect();
    assert!(left.is_empty(), "the write check left {left:?}");
    folders.keep();
    assert!(output.is_dir(), "a finished run keeps even empty folders");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_output_folder_creates_no_trace_folder() {
    let dir = folder("bad-output");
    std::fs::write(dir.join("file"), "a regular file").unwrap();
    // A folder cannot be created under a regular file.
    let output = dir.join("file/out");
    let trace = dir.join("new/deeper/trace.json");
    let err = outputs::prepare(&output, Some(&trace)).unwrap_err();
    assert!(err.starts_with("cannot create folder"), "{err}");
    assert!(err.contains("file/out"), "{err}");
    assert!(!dir.join("new").exists(), "a stray trace folder was left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_trace_leaves_no_output_folder() {
    let dir = folder("bad-trace");
    let output = dir.join("out/a");
    // An existing folder as the trace file: refused.
    let trace = dir.join("traces/t.json");
    std::fs::create_dir_all(&trace).unwrap();
    let err = outputs::prepare(&output, Some(&trace)).unwrap_err();
    assert!(err.starts_with("cannot write trace"), "{err}");
    assert!(err.contains("a folder"), "{err}");
    assert!(!dir.join("out").exists(), "a stray output folder was left");
    assert!(trace.is_dir(), "folders already there stay");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `check_writable` on a thread: a check that blocks fails the test
/// after `limit` instead of hanging it (the thread is left behind).
#[cfg(unix)]
fn check_within(path: &Path, limit: std::time::Duration) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(cli::check_writable("trace ", &p));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("check_writable({}) blocked", path.display()))
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A named pipe (or a link to one) is taken at once, not opened: opening
/// it to write would wait for a reader, which may only come once the run
/// writes the trace. Devices are taken the same way.
#[cfg(unix)]
#[test]
fn a_named_pipe_or_device_trace_is_taken_without_blocking() {
    use std::os::unix::fs::FileTypeExt as _;
    let dir = folder("fifo");
    let fifo = dir.join("trace.fifo");
    mkfifo(&fifo);
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let limit = std::time::Duration::from_secs(10);
    for path in [fifo.as_path(), link.as_path(), Path::new("/dev/null")] {
        check_within(path, limit).unwrap();
    }
    let output = dir.join("out");
    let folders = outputs::prepare(&output, Some(&fifo)).unwrap();
    assert!(output.is_dir());
    folders.keep();
    let kind = std::fs::metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo(), "the pipe is left as it was");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_output_path_that_is_a_file_is_refused() {
    let dir = folder("file-output");
    let file = dir.join("out.png");
    std::fs::write(&file, "a regular file").unwrap();
    let err = outputs::prepare(&file, None).unwrap_err();
    assert!(err.starts_with("cannot create folder"), "{err}");
    assert!(err.contains("not a folder"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"a regular file");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A folder that is there but takes no new file fails at once, not at the
/// first PNG, and before the trace's folder is made. `/proc` refuses even
/// root, which a read-only mode would not.
#[cfg(target_os = "linux")]
#[test]
fn an_output_folder_that_takes_no_file_is_refused() {
    let proc = Path::new("/proc");
    if !proc.is_dir() {
        eprintln!("skipped: no /proc");
        return;
    }
    let dir = folder("unwritable-output");
    let trace = dir.join("new/trace.json");
    let err = outputs::prepare(proc, Some(&trace)).unwrap_err();
    assert!(err.starts_with("cannot write in folder /proc"), "{err}");
    assert!(!dir.join("new").exists(), "a stray trace folder was left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_that_wrote_nothing_leaves_no_folder() {
    let dir = folder("wrote-nothing");
    let (output, trace) = (dir.join("out/a"), dir.join("traces/t.json"));
    let folders = outputs::prepare(&output, Some(&trace)).unwrap();
    assert!(output.is_dir() && trace.parent().unwrap().is_dir());
    // As when no input file decodes: `run` returns its error.
    drop(folders);
    assert!(!dir.join("out").exists(), "a stray output folder was left");
    assert!(
        !dir.join("traces").exists(),
        "a stray trace folder was left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_run_keeps_folders_with_output_and_those_already_there() {
    let dir = folder("wrote-some");
    let (output, trace) = (dir.join("out/a"), dir.join("traces/t.json"));
    std::fs::create_dir(dir.join("traces")).unwrap();
    let folders = outputs::prepare(&output, Some(&trace)).unwrap();
    std::fs::write(output.join("frame_0000_edges.png"), "a frame").unwrap();
    drop(folders);
    assert!(output.join("frame_0000_edges.png").is_file());
    assert!(dir.join("traces").is_dir(), "a folder already there stays");
    std::fs::remove_dir_all(&dir).unwrap();
}
