//! Command-line helpers the examples share.
// Each example uses what it needs of them.
#![allow(dead_code)]

use std::path::Path;

/// The `//!` documentation at the top of `source` (an example's own file),
/// as `--help` prints it: without the comment markers and code fences, the
/// commands indented.
pub fn usage(source: &str) -> String {
    let mut in_code = false;
    let mut lines = Vec::new();
    for line in source.lines().map_while(|l| l.strip_prefix("//!")) {
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code {
            lines.push(format!("    {line}"));
        } else {
            lines.push(line.to_string());
        }
    }
    lines.join("\n")
}

/// Fails at once when `path` cannot be written, so that a bad path costs no
/// work. Writes nothing: a file already there is left as it was, one the
/// check creates is removed again (a run that fails leaves none). A named
/// pipe or a device (`/dev/null`, `/dev/stdout`) is taken without being
/// opened: opening a pipe to write waits for a reader, which may only
/// come once the run writes to it. A folder or a socket is refused. The
/// error names the file as `what` and its path.
pub fn check_writable(what: &str, path: &Path) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {what}{}: {e}", path.display());
    // Through a link, as the write will be: a link to a named pipe is one.
    if let Ok(meta) = std::fs::metadata(path) {
        match kind(&meta.file_type()) {
            Kind::File => {}
            Kind::Stream => return Ok(()),
            Kind::Refused(kind) => return Err(fail(&format!("it is {kind}, not a regular file"))),
        }
    }
    // Through a link: a dangling one is created at its target, which is
    // what is removed again.
    let existed = path.exists();
    let open = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path);
    let removed = match open {
        Ok(_) if !existed => std::fs::canonicalize(path).and_then(std::fs::remove_file),
        other => other.map(drop),
    };
    removed.map_err(|e| fail(&e))
}

/// How [`check_writable`] takes a file already at the path.
enum Kind {
    File,
    /// A named pipe or a device: written as it is, never checked by opening.
    Stream,
    /// Not writable as a file, named for the message.
    Refused(&'static str),
}

fn kind(t: &std::fs::FileType) -> Kind {
    if t.is_file() {
        return Kind::File;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() || t.is_char_device() || t.is_block_device() {
            return Kind::Stream;
        }
        if t.is_socket() {
            return Kind::Refused("a socket");
        }
    }
    if t.is_dir() {
        Kind::Refused("a folder")
    } else {
        Kind::Refused("a special file")
    }
}
