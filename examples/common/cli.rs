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
/// check creates is removed again (a run that fails leaves none). The
/// error names the file as `what` and its path.
pub fn check_writable(what: &str, path: &Path) -> Result<(), String> {
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
    removed.map_err(|e| format!("cannot write {what}{}: {e}", path.display()))
}
