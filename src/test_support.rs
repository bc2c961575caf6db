//! Helpers for the unit tests.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes an executable script at `path` from a child process. Written by
/// this process, the file's writable descriptor would be inherited by any
/// child another test thread forks at that moment, until that child execs;
/// running the script then fails with ETXTBSY ("Text file busy"). A `sh`
/// child holds the only writable descriptor and is gone when this returns.
pub fn write_executable(path: &Path, text: &str) {
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 0755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{}", path.display());
}
