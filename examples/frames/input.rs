//! The frames example's input: the files of a folder, decoded to RGBA.
//! Shared with `tests/frames_input.rs`, which checks the bad-input rules.

use std::error::Error;
use std::path::{Path, PathBuf};

/// One RGBA frame and the name its output takes.
pub struct Frame {
    pub name: String,
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

/// The files of `dir`, in name order; an empty folder is an error.
pub fn list_inputs(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let unreadable = |e| format!("cannot read input folder {}: {e}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if is_input(&path) {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("input folder {} holds no files", dir.display()).into());
    }
    Ok(files)
}

/// Regular files, and entries whose metadata cannot be read (a broken
/// link, say): those must fail in [`decode`] and be reported, not vanish
/// from the count. Folders and special files (a FIFO would block the
/// decoder) are left out.
fn is_input(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.is_file())
}

pub fn decode(path: &Path) -> Result<Frame, Box<dyn Error>> {
    let img = image::ImageReader::open(path)
        .map_err(|e| match std::fs::read_link(path) {
            Ok(target) => format!("unreadable, a link to {}: {e}", target.display()),
            Err(_) => format!("unreadable: {e}"),
        })?
        .with_guessed_format()?
        .decode()?
        .to_rgba8();
    // The whole file name: `a.png` and `a.jpg` must not write one output.
    let name = path
        .file_name()
        .map_or_else(|| "frame".into(), |s| s.to_string_lossy().into_owned());
    Ok(Frame {
        name,
        width: img.width() as usize,
        height: img.height() as usize,
        rgba: img.into_raw(),
    })
}
