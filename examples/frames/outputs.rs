//! The frames example's output paths, made ready before the first frame.
//! Shared with `tests/frames_output.rs`, which checks that a bad path
//! leaves nothing behind.

use std::path::{Path, PathBuf};

use crate::cli;

/// Creates the output folder, then the trace file's folder, and checks that
/// the trace file (`trace`, where one is written) can be written: a bad
/// path fails before any work. When any step fails, the folders created by
/// the earlier ones are removed again, so that a failed start leaves
/// nothing behind (the empty path is the current folder).
pub fn prepare(output: &Path, trace: Option<&Path>) -> Result<(), String> {
    let mut created = Vec::new();
    let result = create_folder(output, &mut created).and_then(|()| match trace {
        Some(trace) => {
            if let Some(dir) = trace.parent() {
                create_folder(dir, &mut created)?;
            }
            cli::check_writable("trace ", trace)
        }
        None => Ok(()),
    });
    if result.is_err() {
        // Deepest first. `remove_dir` takes only empty folders: whatever
        // another process put there meanwhile stays.
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// Creates `dir` and its missing parents, recording each it creates in
/// `created`, parents first.
fn create_folder(dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), String> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => created.push(d.to_path_buf()),
            // Created meanwhile by someone else (or `a/..`): not ours to
            // remove.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(format!("cannot create folder {}: {e}", d.display())),
        }
    }
    if !dir.as_os_str().is_empty() && !dir.is_dir() {
        return Err(format!(
            "cannot create folder {}: a file that is not a folder is there",
            dir.display()
        ));
    }
    Ok(())
}
