//! A read-only HTTP/1.1 file server on 127.0.0.1 for `kbuild boot
//! --netboot`: QEMU's user-mode network lets the guest reach it as
//! 10.0.2.2, so a netboot test never leaves the machine.
//!
//! Invariants:
//! * It listens on 127.0.0.1 only, on a port the kernel picks.
//! * It serves GET and HEAD of the plain file names directly in its
//!   directory (regular files, not links) and of the files it was given
//!   in memory; any other name (a `/`, `..`, `%`, a link) is a 404.
//! * It stops when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running server.
pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `dir` and the in-memory files `files` makes from the port it
/// listens on, until dropped.
pub fn start(
    dir: &Path,
    files: impl FnOnce(u16) -> BTreeMap<String, Vec<u8>>,
) -> std::io::Result<Server> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let files = files(port);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let dir = dir.to_path_buf();
    let files = Arc::new(files);
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (dir, files) = (dir.clone(), files.clone());
                    std::thread::spawn(move || {
                        let _ = serve(stream, &dir, &files);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(Server {
        port,
        stop,
        thread: Some(thread),
    })
}

/// The file `name` of `dir`, if it is a plain name of a regular file.
fn file_in(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    let path = dir.join(name);
    (plain && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())).then_some(path)
}

fn serve(stream: TcpStream, dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers, up to the blank line; none of them matter here.
    let mut header = String::new();
    let mut read = 0;
    while reader.read_line(&mut header)? > 2 && read < 64 {
        header.clear();
        read += 1;
    }
    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let mut out = stream;
    if method != "GET" && method != "HEAD" {
        return respond(&mut out, "405 Method Not Allowed", 0, None);
    }
    let name = target.strip_prefix('/').unwrap_or("");
    if let Some(bytes) = files.get(name) {
        respond(&mut out, "200 OK", bytes.len() as u64, None)?;
        if method == "GET" {
            out.write_all(bytes)?;
        }
        return Ok(());
    }
    let Some(path) = file_in(dir, name) else {
        return respond(&mut out, "404 Not Found", 0, None);
    };
    let mut file = std::fs::File::open(&path)?;
    let size = file.metadata()?.len();
    respond(&mut out, "200 OK", size, None)?;
    if method == "GET" {
        std::io::copy(&mut file, &mut out)?;
    }
    Ok(())
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    length: u64,
    kind: Option<&str>,
) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nContent-Type: {}\r\nConnection: close\r\n\r\n",
        kind.unwrap_or("application/octet-stream")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(port: u16, request: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn serves_plain_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.kernel"), b"kernel!").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let server = start(dir.path(), |port| {
            BTreeMap::from([(
                "chain.ipxe".to_string(),
                format!("#!ipxe {port}\n").into_bytes(),
            )])
        })
        .unwrap();
        let ok = get(server.port, "GET /a.kernel HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nkernel!"), "{ok}");
        let head = get(server.port, "HEAD /a.kernel HTTP/1.1\r\n\r\n");
        assert!(
            head.contains("Content-Length: 7\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let chained = get(server.port, "GET /chain.ipxe HTTP/1.0\r\n\r\n");
        assert!(
            chained.ends_with(&format!("#!ipxe {}\n", server.port)),
            "{chained}"
        );
        for bad in [
            "/sub/x",
            "/../etc/passwd",
            "/link",
            "/%2e%2e",
            "/",
            "/.hidden",
        ] {
            let answer = get(server.port, &format!("GET {bad} HTTP/1.1\r\n\r\n"));
            assert!(answer.starts_with("HTTP/1.1 404"), "{bad}: {answer}");
        }
        let post = get(server.port, "POST /a.kernel HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }
}
