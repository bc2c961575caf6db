//! A real registry for tests: Debian's `docker-registry` (distribution
//! 2.8) on 127.0.0.1 with a temp config and storage, optionally behind
//! htpasswd basic auth; and a fault-injecting HTTP proxy in front of it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    /// Starts a registry; with `user`, it demands that user's password.
    pub fn start(user: Option<(&str, &str)>) -> Registry {
        super::require(&["docker-registry", "htpasswd"]);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth = match user {
            Some((name, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", name, password])
                    .output()
                    .unwrap();
                assert!(out.status.success());
                std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: kbuild-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Registry { port, dir, child };
        registry.wait_ready();
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut head = String::new();
                if BufReader::new(s).read_line(&mut head).is_ok() && head.starts_with("HTTP/") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start on {}: {log}", self.port);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A docker config dir holding `user:password` for `registry`.
pub fn docker_config(registry: &str, user: &str, password: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let auth = kbuild::registry::auth::base64_encode(format!("{user}:{password}").as_bytes());
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    dir
}

/// What the proxy does to a matching request instead of passing it on.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds) without forwarding.
    Status { code: u16, retry_after: Option<u32> },
    /// Forward, then flip one byte in the middle of the response body.
    Corrupt,
    /// Forward, then send only the first N body bytes and close.
    CutResponse(usize),
    /// Read only the first N request body bytes, then close without answering.
    CutRequest(usize),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    /// Matches when the request path contains this.
    pub path: String,
    pub times: usize,
    pub fault: Fault,
}

/// A one-request-per-connection HTTP proxy on 127.0.0.1 that forwards to
/// `upstream` and applies the first matching rule with uses left.
pub struct FaultProxy {
    pub port: u16,
    /// `METHOD path [range] -> what happened`, one line per request.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl FaultProxy {
    pub fn start(upstream: u16, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(Mutex::new(VecDeque::from(rules)));
        let thread_log = log.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (rules, log) = (rules.clone(), thread_log.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &rules, &log);
                });
            }
        });
        FaultProxy { port, log }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    rules: &Mutex<VecDeque<Rule>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut request_line = String::new();
    let mut range = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if request_line.is_empty() {
            request_line = line.trim_end().to_string();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("range:") || lower.starts_with("content-range:") {
            range = line.trim_end().to_string();
        }
        if lower.starts_with("transfer-encoding:") {
            client.write_all(
                b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    let record = |what: String| {
        log.lock()
            .unwrap()
            .push(format!("{method} {path} {range} -> {what}"));
    };
    if let Some(Fault::CutRequest(n)) = fault {
        let mut partial = vec![0u8; n.min(length)];
        reader.read_exact(&mut partial)?;
        record(format!("cut request after {n} bytes"));
        client.shutdown(Shutdown::Both)?;
        return Ok(());
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    if let Some(Fault::Status { code, retry_after }) = fault {
        let retry = retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
        write!(
            client,
            "HTTP/1.1 {code} Injected\r\n{retry}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        record(format!("injected {code}"));
        return Ok(());
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(&head)?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let status = String::from_utf8_lossy(&response[..split.min(12)]).to_string();
    match fault {
        Some(Fault::Corrupt) if response.len() > split => {
            let middle = split + (response.len() - split) / 2;
            response[middle] ^= 0xff;
            client.write_all(&response)?;
            record(format!("{status} corrupted"));
        }
        Some(Fault::CutResponse(n)) => {
            let end = (split + n).min(response.len());
            client.write_all(&response[..end])?;
            client.flush()?;
            client.shutdown(Shutdown::Both)?;
            record(format!("{status} cut after {n} body bytes"));
        }
        _ => {
            client.write_all(&response)?;
            record(status);
        }
    }
    Ok(())
}
