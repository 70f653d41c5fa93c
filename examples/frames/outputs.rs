//! The frames example's output paths, made ready before the first frame.
//! Shared with `tests/frames_output.rs`, which checks that a bad path
//! leaves nothing behind.

use std::path::{Path, PathBuf};

use crate::cli;

/// Creates the output folder and checks that files can be written in it,
/// then creates the trace file's folder and checks that the trace file
/// (`trace`, where one is written) can be written: a bad path fails before
/// any work. When any step fails, the folders created by the earlier ones
/// are removed again, so that a failed start leaves nothing behind (the
/// empty path is the current folder).
pub fn prepare(output: &Path, trace: Option<&Path>) -> Result<Folders, String> {
    let mut folders = Folders::default();
    create_folder(output, &mut folders.created)?;
    check_folder_writable(output)?;
    if let Some(trace) = trace {
        if let Some(dir) = trace.parent() {
            create_folder(dir, &mut folders.created)?;
        }
        cli::check_writable("trace ", trace)?;
    }
    Ok(folders)
}

/// The folders [`prepare`] created. Dropped without [`Folders::keep`] (a
/// run that fails, by `?` or otherwise), it removes those still empty: a
/// run that wrote nothing leaves no folder behind, one that wrote some
/// output keeps it.
#[derive(Debug, Default)]
#[must_use = "dropping it removes the folders it holds"]
pub struct Folders {
    /// Parents first.
    created: Vec<PathBuf>,
}

impl Folders {
    /// Leaves the folders, empty or not: the run finished.
    pub fn keep(mut self) {
        self.created.clear();
    }
}

impl Drop for Folders {
    fn drop(&mut self) {
        // Deepest first. `remove_dir` takes only empty folders: whatever
        // the run or another process put there meanwhile stays.
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
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

/// Creates and removes a file in `dir`. A folder already there may refuse
/// new files (read-only, someone else's, a read-only file system), which
/// would otherwise show only when the first frame's PNG is written.
fn check_folder_writable(dir: &Path) -> Result<(), String> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // A name of its own, so that no file of the user's is touched and two
    // runs into one folder do not collide.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let probe = dir.join(format!(
        ".frames-write-check-{}-{nanos}",
        std::process::id()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|file| {
            drop(file);
            std::fs::remove_file(&probe)
        })
        .map_err(|e| format!("cannot write in folder {}: {e}", dir.display()))
}
