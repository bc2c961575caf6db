//! A read-only HTTP/1.1 file server on 127.0.0.1 for `kbuild boot
//! --netboot`: QEMU's user-mode network lets the guest reach it as
//! 10.0.2.2, so a netboot test never leaves the machine.
//!
//! Invariants:
//! * It listens on 127.0.0.1 only, on a port the kernel picks.
//! * It serves GET and HEAD of the plain file names directly in its
//!   directory (regular files, opened without following a link) and of
//!   the files it was given in memory; any other name (a `/`, `..`, `%`, a
//!   link) is a 404.
//! * A request is read up to [`MAX_REQUEST`] bytes; a peer idle for 30 s
//!   either way is dropped; at most [`MAX_CONNECTIONS`] are served at once.
//! * It stops when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most bytes of a request (line and headers) read.
const MAX_REQUEST: u64 = 16 << 10;
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 32;
const IDLE: Duration = Duration::from_secs(30);

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
    let open = Arc::new(AtomicUsize::new(0));
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let (dir, files, open) = (dir.clone(), files.clone(), open.clone());
                    open.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        let _ = serve(stream, &dir, &files);
                        open.fetch_sub(1, Ordering::SeqCst);
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

/// The file `name` of `dir`, opened, if it is a plain name of a regular
/// file (a link is not followed: its open fails).
fn file_in(dir: &Path, name: &str) -> Option<std::fs::File> {
    if !crate::netboot::is_url_safe_name(name) {
        return None;
    }
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(name))
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

fn serve(stream: TcpStream, dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_REQUEST));
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
        return respond(&mut out, "405 Method Not Allowed", 0);
    }
    let name = target.strip_prefix('/').unwrap_or("");
    if let Some(bytes) = files.get(name) {
        respond(&mut out, "200 OK", bytes.len() as u64)?;
        if method == "GET" {
            out.write_all(bytes)?;
        }
        return Ok(());
    }
    let Some(mut file) = file_in(dir, name) else {
        return respond(&mut out, "404 Not Found", 0);
    };
    let size = file.metadata()?.len();
    respond(&mut out, "200 OK", size)?;
    if method == "GET" {
        std::io::copy(&mut file, &mut out)?;
    }
    Ok(())
}

fn respond(out: &mut TcpStream, status: &str, length: u64) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
