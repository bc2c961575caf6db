//! Helpers of the suites that run `kbuild build` on the Debian fixture.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{debian_tarball, debian_tarball_for, kbuild, ok};

/// A store with the Debian base imported as `debian:bookworm`.
pub fn store_with_base(work: &Path) -> PathBuf {
    import_base(work, &[], "amd64")
}

/// The same, imported with `SOURCE_DATE_EPOCH`, so every store made by it
/// holds the base under the same digest (and shares step-cache keys).
pub fn store_with_pinned_base(work: &Path, epoch: &str) -> PathBuf {
    store_with_pinned_base_for(work, epoch, "amd64")
}

/// The same with the Debian base of `arch`.
pub fn store_with_pinned_base_for(work: &Path, epoch: &str, arch: &str) -> PathBuf {
    import_base(work, &[("SOURCE_DATE_EPOCH", epoch)], arch)
}

fn import_base(work: &Path, envs: &[(&str, &str)], arch: &str) -> PathBuf {
    let store = work.join("store");
    ok(&kbuild(
        &[
            "import",
            debian_tarball_for(arch).to_str().unwrap(),
            "-t",
            "debian:bookworm",
            "--platform",
            &format!("linux/{arch}"),
            "--store",
            store.to_str().unwrap(),
        ],
        envs,
    ));
    store
}

pub fn build(store: &Path, context: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--store",
        store.to_str().unwrap(),
        context.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    kbuild(&args, &[])
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nothing of the store is mounted, its tmp/ is empty, fsck is clean.
pub fn assert_clean(store: &Path) {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = store.to_str().unwrap();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(needle)).collect();
    assert!(leaked.is_empty(), "leaked mounts: {leaked:#?}");
    let findmnt = Command::new("findmnt")
        .args(["-rn", "-o", "TARGET"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&findmnt.stdout).contains(needle),
        "findmnt shows a store mount"
    );
    let temps: Vec<_> = fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(temps.is_empty(), "leftover temp dirs: {temps:?}");
    let fsck = kbuild(&["cache", "fsck", "--store", store.to_str().unwrap()], &[]);
    assert!(fsck.status.success(), "fsck: {}", stderr(&fsck));
}

pub fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Every layer blob of the store, decompressed, must not contain `needle`.
pub fn assert_absent_from_blobs(store: &Path, needle: &str) {
    for entry in fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let text = decompressed(&fs::read(&path).unwrap());
        assert!(
            !text.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{} contains the secret",
            path.display()
        );
    }
}

/// A blob's bytes as tar sees them: gzip and zstd (by their magic bytes)
/// decompressed, anything else as it is.
fn decompressed(raw: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut text = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(raw)
            .read_to_end(&mut text)
            .unwrap();
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(raw)
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
    } else {
        text = raw.to_vec();
    }
    text
}

/// A package stand-in: `files` (path, content, mode), owned by root, as a
/// one-layer image imported into `store` under `name`. Its digest is the
/// same in every store, as a real package image pulled by digest is.
pub fn import_files(store: &Path, files: &[(&str, &[u8], u32)], name: &str) {
    import_files_for(store, files, name, "amd64");
}

/// The same, as an image of `arch`.
pub fn import_files_for(store: &Path, files: &[(&str, &[u8], u32)], name: &str, arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Readable by the rootless suite's user, who may be the importer.
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tarball = dir.path().join("rootfs.tar");
    let mut builder = tar::Builder::new(fs::File::create(&tarball).unwrap());
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append_data(&mut header, path, *content).unwrap();
    }
    builder.into_inner().unwrap();
    ok(&kbuild(
        &[
            "import",
            tarball.to_str().unwrap(),
            "-t",
            name,
            "--platform",
            &format!("linux/{arch}"),
            "--store",
            store.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    ));
}

/// The build equivalence spec: what the buildah comparison and the
/// rootless suite build. Both kbuild and buildah 1.28 understand it (no
/// heredocs). The base has no /etc/hosts; buildah would leave the mount
/// point of its own in the first RUN's layer (kbuild, like BuildKit, does
/// not), so the spec gives the image one first. Its apt step removes what holds clock times
/// (logs, binary caches, ldconfig's aux-cache), so two builds on one day
/// give the same image.
pub const PEER_DOCKERFILE: &str = r#"FROM localhost/kbuild-base:latest AS builder
COPY hosts /etc/hosts
RUN mkdir -p /out && echo artifact > /out/file && ln -s file /out/link
FROM localhost/kbuild-base:latest
COPY hosts /etc/hosts
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q && apt-get install -y -q --no-install-recommends rsync \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log \
       /var/log/alternatives.log /var/cache/ldconfig/aux-cache /var/cache/debconf/*-old /var/lib/dpkg/*-old
RUN useradd -m -u 1500 app && mkdir -p /srv/data && chown app:app /srv/data && rm /etc/motd
WORKDIR /srv
COPY files/ ./files/
COPY --chown=app:app --chmod=640 config.ini /srv/data/config.ini
COPY --from=builder /out /opt/out
USER app
RUN echo done > /srv/data/done
WORKDIR /work
RUN touch /work/f && echo "$HOME" > /work/home
USER root
RUN echo "$HOME" > /root-home
"#;

/// Writes the equivalence spec's context into `context`.
pub fn write_peer_context(context: &Path) {
    write(&context.join("Dockerfile"), PEER_DOCKERFILE);
    write(&context.join("files/a.txt"), "alpha\n");
    write(&context.join("files/sub/b.txt"), "beta\n");
    std::os::unix::fs::symlink("a.txt", context.join("files/a-link")).unwrap();
    write(&context.join("config.ini"), "[app]\nkey=value\n");
    write(&context.join("hosts"), "127.0.0.1 localhost\n");
}

/// A store holding the Debian base as `localhost/kbuild-base:latest`, the
/// name both builders' specs use.
pub fn store_with_peer_base(work: &Path) -> PathBuf {
    let store = store_with_base(work);
    ok(&kbuild(
        &[
            "import",
            debian_tarball().to_str().unwrap(),
            "-t",
            "localhost/kbuild-base:latest",
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
    ));
    store
}

/// Unpacks `name` from the store with umoci; returns the rootfs path.
pub fn unpack(store: &Path, name: &str, work: &Path) -> PathBuf {
    let oci = work.join(format!("oci-{}", name.replace([':', '/'], "-")));
    ok(&kbuild(
        &[
            "export",
            name,
            &format!("oci:{}:img", oci.display()),
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
    ));
    umoci_unpack(
        &oci,
        &work.join(format!("bundle-{}", name.replace([':', '/'], "-"))),
    )
}

/// `umoci unpack` of the `img` tag of an OCI layout; returns the rootfs.
pub fn umoci_unpack(oci: &Path, bundle: &Path) -> PathBuf {
    let out = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:img", oci.display())])
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

/// Starts `command` (a `kbuild build` of a spec whose RUN prints "started"
/// and runs `sleeper` twice), sends it SIGINT once the sleepers run, and
/// checks it stopped within 30 s saying "interrupted", with no sleeper
/// left.
pub fn interrupt_a_long_run(mut command: Command, sleeper: &str) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let started = line.contains("] started");
            log.push(line);
            if started {
                break;
            }
        }
    }
    assert!(
        log.iter().any(|l| l.contains("] started")),
        "the RUN never started: {log:#?}"
    );
    // The signal must find the sleepers running in the sandbox, or the
    // check that none survives proves nothing.
    let running = |pattern: &str| {
        let found = Command::new("pgrep")
            .args(["-f", pattern])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&found.stdout).trim().is_empty()
    };
    let seen_by = Instant::now() + Duration::from_secs(30);
    while !running(sleeper) && Instant::now() < seen_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(running(sleeper), "the sleepers never ran: {log:#?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    let waited = started.elapsed();
    // Its last lines may still be in the reader thread: read to the end
    // of the pipe (the sender goes at EOF), waiting at most 10 s.
    let drained_by = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = rx.recv_timeout(drained_by.saturating_duration_since(Instant::now())) {
        log.push(line);
    }
    assert!(!status.success(), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("interrupted")), "{log:#?}");
    assert!(
        waited < Duration::from_secs(30),
        "kbuild took {waited:?} to stop"
    );
    assert!(!running(sleeper), "sandbox processes survived");
}
