//! `kbuild build` on the real Debian base (root): RUN in the sandbox with
//! apt, multi-stage COPY --from, heredocs, ENV/WORKDIR/USER, cache and
//! secret mounts; umoci unpacks what it wrote; buildah builds the same
//! spec for comparison; failures and SIGINT leave no mount, no temp dir
//! and a clean store; a registry on 127.0.0.1 carries the step cache.
//!
//! The Debian archive is the only network these tests use (the machine's
//! own apt mirror, as mmdebstrap configured the base).

mod common;

use common::harness::Needs;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::builds::{
    assert_absent_from_blobs, assert_clean, build, interrupt_a_long_run, stderr, store_with_base,
    store_with_peer_base, umoci_unpack, unpack, write, write_peer_context,
};
use common::evil_tar::Evil;
use common::registry::Registry;
use common::{disk_tree, kbuild, ok, require, Tree};

const SECRET: &str = "kbuild-test-secret-9f2c41";

/// A work dir, a store with the base and a context holding `dockerfile`.
fn setup(dockerfile: &str, tools: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    require(tools);
    let work = tempfile::tempdir().unwrap();
    let store = store_with_base(work.path());
    let context = work.path().join("context");
    write(&context.join("Dockerfile"), dockerfile);
    (work, store, context)
}

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
FROM debian:bookworm AS builder
WORKDIR /src
COPY <<EOF /src/generated.txt
built by kbuild
EOF
RUN <<EOF
set -e
echo "compiled $(cat /src/generated.txt)" > /src/artifact
EOF

FROM debian:bookworm
ARG GREETING=hello
ENV APP_HOME=/opt/app
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    apt-get update -q && apt-get install -y -q --no-install-recommends rsync
RUN useradd -m -u 1234 builder
WORKDIR $APP_HOME
COPY app.conf ./
COPY scripts/ ./scripts/
COPY --from=builder /src/artifact /opt/app/artifact
RUN --mount=type=secret,id=token sha256sum /run/secrets/token > /opt/app/token.sha
USER builder
RUN echo "$GREETING from $(id -un) in $(pwd)" > /home/builder/greeting
"#;

fn debian_context(work: &Path) -> (PathBuf, PathBuf) {
    let context = work.join("context");
    write(&context.join("Dockerfile"), DOCKERFILE);
    write(&context.join("app.conf"), "port = 8080\n");
    write(&context.join("scripts/hello.sh"), "#!/bin/sh\necho hello\n");
    fs::set_permissions(
        context.join("scripts/hello.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&context.join("scripts/debug.log"), "noise\n");
    write(&context.join(".dockerignore"), "**/*.log\n");
    let secret = work.join("token.txt");
    write(&secret, SECRET);
    (context, secret)
}

/// (filesystem steps, cache hits) from the build's summary line.
fn step_counts(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("build: "))
        .unwrap_or_else(|| panic!("no summary line:\n{log}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

fn debian_build_runs_apt_multistage_heredocs_mounts_and_caches() {
    require(&["umoci", "findmnt"]);
    let work = tempfile::tempdir().unwrap();
    let store = store_with_base(work.path());
    let (context, secret) = debian_context(work.path());
    let secret_arg = format!("id=token,src={}", secret.display());
    let out = build(&store, &context, &["-t", "app:1", "--secret", &secret_arg]);
    let log = stderr(&out);
    assert!(out.status.success(), "build failed:\n{log}");
    assert!(
        log.contains("Setting up rsync"),
        "apt output streams with the step prefix:\n{log}"
    );
    // Plain progress (CI, a pipe) puts the time first: `<time> [1 3/11] ...`.
    assert!(
        log.lines()
            .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
            .any(|l| l.starts_with("[1 3/11] ") && l.contains("rsync")),
        "prefixed lines:\n{log}"
    );

    let rootfs = unpack(&store, "app:1", work.path());
    let rsync = fs::metadata(rootfs.join("usr/bin/rsync")).expect("rsync is installed");
    assert!(rsync.mode() & 0o111 != 0);
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/app/app.conf")).unwrap(),
        "port = 8080\n"
    );
    let script = fs::metadata(rootfs.join("opt/app/scripts/hello.sh")).unwrap();
    assert_eq!(script.mode() & 0o777, 0o755, "COPY keeps modes");
    assert_eq!(
        (script.uid(), script.gid()),
        (0, 0),
        "context files belong to root"
    );
    assert!(
        !rootfs.join("opt/app/scripts/debug.log").exists(),
        ".dockerignore is honored"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/app/artifact")).unwrap(),
        "compiled built by kbuild\n",
        "heredoc COPY and RUN in the builder stage, COPY --from into the final one"
    );
    let token = fs::read_to_string(rootfs.join("opt/app/token.sha")).unwrap();
    assert!(
        token.starts_with(&common::sha256_hex(SECRET.as_bytes())),
        "the secret was readable: {token}"
    );
    assert!(
        !rootfs.join("run/secrets/token").exists(),
        "no secret mount point in the image"
    );
    assert_absent_from_blobs(&store, SECRET);
    let greeting = rootfs.join("home/builder/greeting");
    assert_eq!(
        fs::read_to_string(&greeting).unwrap(),
        "hello from builder in /opt/app\n"
    );
    assert_eq!(
        fs::metadata(&greeting).unwrap().uid(),
        1234,
        "USER resolved from the image's passwd"
    );
    let debs: Vec<_> = fs::read_dir(rootfs.join("var/cache/apt/archives"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        debs.is_empty(),
        "downloaded packages stay in the cache mount, not the image"
    );
    let cached = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ls {}/cache/mounts/*/archives/rsync_*.deb",
            store.display()
        ))
        .output()
        .unwrap();
    assert!(cached.status.success(), "the cache mount kept the .deb");

    let inspect = ok(&kbuild(
        &[
            "inspect",
            "app:1",
            "--format",
            "json",
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
    ));
    let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let config = &json["config"]["config"];
    assert_eq!(config["User"], "builder");
    assert_eq!(config["WorkingDir"], "/opt/app");
    assert!(config["Env"].to_string().contains("APP_HOME=/opt/app"));
    assert!(!json.to_string().contains(SECRET));
    assert_clean(&store);

    // The same build again: every step from the cache, nothing runs.
    let again = build(&store, &context, &["-t", "app:2", "--secret", &secret_arg]);
    let log = stderr(&again);
    assert!(again.status.success(), "{log}");
    assert_eq!(step_counts(&log), (11, 11), "{log}");
    assert!(!log.contains("] DONE"), "no step ran:\n{log}");

    // Change one COPY source: only that step and the ones after it run.
    write(&context.join("app.conf"), "port = 9090\n");
    let changed = build(&store, &context, &["-t", "app:3", "--secret", &secret_arg]);
    let log = stderr(&changed);
    assert!(changed.status.success(), "{log}");
    for step in [
        "CACHED RUN --mount=type=cache",
        "CACHED RUN useradd",
        "CACHED WORKDIR $APP_HOME",
        "CACHED COPY <<EOF",
    ] {
        assert!(log.contains(step), "{step} should be a hit:\n{log}");
    }
    assert!(
        log.contains("] COPY app.conf ./"),
        "the changed COPY runs:\n{log}"
    );
    assert_eq!(step_counts(&log), (11, 6), "{log}");
    let rootfs = unpack(&store, "app:3", work.path());
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/app/app.conf")).unwrap(),
        "port = 9090\n"
    );
    assert_clean(&store);
}

fn a_failing_run_reports_location_code_and_output_and_leaves_nothing() {
    let spec = "FROM debian:bookworm\nRUN echo prepared > /prepared\nRUN for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3\n";
    let (_work, store, context) = setup(spec, &["findmnt"]);
    let out = build(&store, &context, &["-t", "broken"]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("Dockerfile:3:1"), "location:\n{log}");
    assert!(log.contains("exited with code 3"), "exit code:\n{log}");
    assert!(log.contains("last 20 lines of output"), "{log}");
    assert!(
        log.contains("line 30") && log.contains("oops"),
        "the tail:\n{log}"
    );
    assert!(
        !log.contains("    line 10\n"),
        "only the last 20 lines are in the message"
    );
    assert!(!log.contains("panicked"));
    let tags = ok(&kbuild(
        &["images", "--store", store.to_str().unwrap()],
        &[],
    ));
    assert!(!tags.contains("broken"), "a failed build tags nothing");
    assert_clean(&store);
    // The step before the failure was cached and is reused.
    let again = build(&store, &context, &["-t", "broken"]);
    assert!(stderr(&again).contains("CACHED RUN echo prepared"));
}

fn sigint_during_a_long_run_kills_the_sandbox_and_cleans_up() {
    // A duration no other process uses, so pgrep finds only this test's.
    let sleeper = format!("sleep {}", 100_000 + std::process::id());
    let spec =
        format!("FROM debian:bookworm\nRUN echo started; {sleeper} & {sleeper}; echo finished\n");
    let (_work, store, context) = setup(&spec, &["findmnt", "pgrep"]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_kbuild"));
    command.args([
        "build",
        "--store",
        store.to_str().unwrap(),
        context.to_str().unwrap(),
    ]);
    interrupt_a_long_run(command, &sleeper);
    assert_clean(&store);
}

/// Paths whose content differs between any two runs of the same steps.
const NONDETERMINISTIC: &[&str] = &[
    "var/log/",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/",
    "var/cache/apt/",
    "var/lib/apt/extended_states",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/lock",
    "var/lib/dpkg/triggers/Lock",
    "etc/shadow",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/passwd-",
    "etc/group-",
    "etc/subuid-",
    "etc/subgid-",
];

fn comparable(tree: Tree) -> Tree {
    tree.into_iter()
        .filter(|(path, _)| {
            !NONDETERMINISTIC
                .iter()
                .any(|n| path == n.trim_end_matches('/') || path.starts_with(n))
        })
        .collect()
}

/// Runs buildah with its storage under `work`; its stdout on success.
fn buildah(work: &Path, args: &[&str]) -> String {
    let out = Command::new("buildah")
        .arg("--root")
        .arg(work.join("buildah-root"))
        .arg("--runroot")
        .arg(work.join("buildah-runroot"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds `context` with buildah on the same base as `store`'s; returns
/// the image's name in buildah's storage.
fn buildah_build(work: &Path, store: &Path, context: &Path) -> &'static str {
    let base_archive = work.join("base.tar");
    ok(&kbuild(
        &[
            "export",
            "localhost/kbuild-base:latest",
            &format!("oci-archive:{}", base_archive.display()),
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
    ));
    let pulled = buildah(
        work,
        &["pull", &format!("oci-archive:{}", base_archive.display())],
    );
    buildah(
        work,
        &["tag", pulled.trim(), "localhost/kbuild-base:latest"],
    );
    let image = "localhost/peer:buildah";
    buildah(
        work,
        &[
            "bud",
            "--isolation=chroot",
            "--pull-never",
            "--layers",
            "-t",
            image,
            context.to_str().unwrap(),
        ],
    );
    image
}

/// What buildah builds from `context`, pushed as an OCI layout and
/// unpacked by umoci.
fn buildah_tree(work: &Path, store: &Path, context: &Path) -> Tree {
    let image = buildah_build(work, store, context);
    let oci = work.join("buildah-oci");
    buildah(
        work,
        &["push", image, &format!("oci:{}:img", oci.display())],
    );
    disk_tree(&umoci_unpack(&oci, &work.join("bundle-buildah")))
}

/// What buildah builds from `context`, as the root of a working container
/// of the image (buildah 1.28 cannot push an image holding a file whose
/// name starts with `.wh.`: its layer diff takes the name for a whiteout).
fn buildah_container_tree(work: &Path, store: &Path, context: &Path) -> Tree {
    let image = buildah_build(work, store, context);
    let container = buildah(work, &["from", "--pull-never", image]);
    let root = buildah(work, &["mount", container.trim()]);
    disk_tree(Path::new(root.trim()))
}

/// Both trees hold the same paths with the same type, mode, owner,
/// content and link target.
fn assert_same_trees(ours: &Tree, theirs: &Tree) {
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let differ: Vec<String> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k).is_some_and(|t| t != *v))
        .map(|(k, v)| format!("{k}:\n  kbuild  {v}\n  buildah {}", theirs[k]))
        .collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty() && differ.is_empty(),
        "only in kbuild: {only_ours:#?}\nonly in buildah: {only_theirs:#?}\ndiffer:\n{}",
        differ.join("\n")
    );
}

fn the_tree_equals_what_buildah_builds_from_the_same_spec() {
    require(&["buildah", "umoci", "skopeo"]);
    let work = tempfile::tempdir().unwrap();
    let store = store_with_peer_base(work.path());
    let context = work.path().join("context");
    write_peer_context(&context);
    let out = build(&store, &context, &["-t", "peer:kbuild"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ours = comparable(disk_tree(&unpack(&store, "peer:kbuild", work.path())));
    let theirs = comparable(buildah_tree(work.path(), &store, &context));
    assert_same_trees(&ours, &theirs);
    assert!(ours.len() > 5000, "only {} entries compared", ours.len());
    // WORKDIR after USER gives the new directory to that user, and HOME
    // comes from passwd (both checked against buildah above, and here).
    assert!(
        ours["work"].contains("uid=1500 gid=1500"),
        "{}",
        ours["work"]
    );
    let home = |text: &str| format!("file {} ", common::sha256_hex(text.as_bytes()));
    assert!(
        ours["work/home"].starts_with(&home("/home/app\n")),
        "{}",
        ours["work/home"]
    );
    assert!(
        ours["root-home"].starts_with(&home("/root\n")),
        "{}",
        ours["root-home"]
    );
    assert!(ours.contains_key("usr/bin/rsync"));
}

/// ADD of local archives whose members sit under links of the Debian base
/// (`/var/run -> /run`), under links the archive makes (relative and
/// absolute, below the top), and with whiteout names: kbuild's image must
/// equal buildah's, file for file.
fn add_of_archives_resolves_links_from_the_image_root_as_buildah_does() {
    require(&["buildah", "umoci", "skopeo"]);
    let work = tempfile::tempdir().unwrap();
    let store = store_with_peer_base(work.path());
    let context = work.path().join("context");
    write(
        &context.join("Dockerfile"),
        "FROM localhost/kbuild-base:latest\n\
         ADD varrun.tar /\n\
         ADD nested.tar /\n\
         ADD whiteouts.tar /opt/wh/\n",
    );
    let tar = |name: &str, bytes: Vec<u8>| fs::write(context.join(name), bytes).unwrap();
    tar(
        "varrun.tar",
        Evil::default()
            .file("var/run/kbuild-foo", b"foo\n")
            .finish(),
    );
    tar(
        "nested.tar",
        Evil::default()
            .dir("srv/a/b", 0o755)
            .dir("srv/a/c", 0o755)
            .symlink("srv/a/b/rel", "../c")
            .file("srv/a/b/rel/via-relative", b"rel\n")
            .symlink("srv/a/b/abs", "/etc")
            .file("srv/a/b/abs/kbuild-via-absolute", b"abs\n")
            .symlink("srv/a/b/up", "../../../../../tmp")
            .file("srv/a/b/up/kbuild-via-dotdot", b"up\n")
            .finish(),
    );
    tar(
        "whiteouts.tar",
        Evil::default()
            .file("kept", b"kept\n")
            .file(".wh.kept", b"whiteout name\n")
            .file("d/inner", b"inner\n")
            .file("d/.wh..wh..opq", b"opaque name\n")
            .finish(),
    );
    let out = build(&store, &context, &["-t", "adds:kbuild"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ours = disk_tree(&unpack(&store, "adds:kbuild", work.path()));
    let theirs = buildah_container_tree(work.path(), &store, &context);
    assert_same_trees(&ours, &theirs);
    // What the comparison is about, where both put it. The whiteout names
    // deleted nothing while ADD unpacked them; as files they cannot
    // survive an OCI layer (there the names mean deletions), in neither
    // builder's image.
    for path in [
        "run/kbuild-foo",
        "srv/a/c/via-relative",
        "etc/kbuild-via-absolute",
        "tmp/kbuild-via-dotdot",
        "opt/wh/kept",
        "opt/wh/d/inner",
    ] {
        assert!(ours.contains_key(path), "{path} is missing");
    }
    for path in ["opt/wh/.wh.kept", "opt/wh/d/.wh..wh..opq"] {
        assert!(!ours.contains_key(path), "{path} is in the image");
    }
    assert!(ours["var/run"].starts_with("link "), "{}", ours["var/run"]);
}

fn runc_isolation_gives_the_same_layers() {
    let spec = "FROM debian:bookworm\nRUN useradd -u 2000 worker && mkdir /data && echo \"$(id -u) $(hostname)\" > /data/who && rm /etc/motd\nUSER worker\nRUN id -u > /tmp/me\n";
    let (work, store, context) = setup(spec, &["runc", "umoci"]);
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let run = |tag: &str, isolation: &str| {
        let out = kbuild(
            &[
                "build",
                "--store",
                store.to_str().unwrap(),
                "--no-cache",
                "-t",
                tag,
                "--isolation",
                isolation,
                context.to_str().unwrap(),
            ],
            &epoch,
        );
        assert!(out.status.success(), "{isolation}: {}", stderr(&out));
        let inspect = ok(&kbuild(
            &[
                "inspect",
                tag,
                "--format",
                "json",
                "--store",
                store.to_str().unwrap(),
            ],
            &[],
        ));
        let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        json["config"]["rootfs"]["diff_ids"].clone()
    };
    let builtin = run("iso:builtin", "builtin");
    let oci = run("iso:oci", "oci");
    assert_eq!(
        builtin, oci,
        "runc and the built-in sandbox produce identical layers"
    );
    let rootfs = unpack(&store, "iso:oci", work.path());
    assert_eq!(
        fs::read_to_string(rootfs.join("data/who")).unwrap(),
        "0 kbuild\n"
    );
    assert_eq!(fs::read_to_string(rootfs.join("tmp/me")).unwrap(), "2000\n");
    assert!(
        !rootfs.join("etc/motd").exists(),
        "deletions become whiteouts"
    );
    assert_clean(&store);
}

fn the_step_cache_travels_through_a_registry() {
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let first = store_with_base(work.path());
    let context = work.path().join("context");
    write(
        &context.join("Dockerfile"),
        "FROM debian:bookworm\nCOPY data.txt /data.txt\nRUN sha256sum /data.txt > /data.sha && rm /etc/motd\nRUN true\n",
    );
    write(&context.join("data.txt"), "shared cache\n");
    let cache_ref = format!("{}/kbuild/cache:main", registry.host());
    let out = build(
        &first,
        &context,
        &["-t", "cached", "--cache-to", &cache_ref],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("cache-to"), "{}", stderr(&out));

    // Another machine: an empty store with only the base.
    let other = work.path().join("other");
    fs::create_dir(&other).unwrap();
    let second = store_with_base(&other);
    let out = build(
        &second,
        &context,
        &["-t", "cached", "--cache-from", &cache_ref],
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(step_counts(&log), (3, 3), "{log}");
    let rootfs = unpack(&second, "cached", work.path());
    assert!(fs::read_to_string(rootfs.join("data.sha"))
        .unwrap()
        .contains("/data.txt"));
    assert_clean(&second);

    // A cache entry whose layer does not unpack to its diff_id is refused.
    let third_dir = work.path().join("third");
    fs::create_dir(&third_dir).unwrap();
    let third = store_with_base(&third_dir);
    ok(&kbuild(
        &[
            "cache",
            "import",
            &cache_ref,
            "--store",
            third.to_str().unwrap(),
        ],
        &[],
    ));
    let steps = third.join("cache/steps");
    for entry in fs::read_dir(&steps).unwrap() {
        let path = entry.unwrap().path();
        let mut json: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        if json["layer"].is_object() {
            json["layer"]["diffId"] =
                serde_json::Value::String(format!("sha256:{}", "0".repeat(64)));
            fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        }
    }
    let out = build(&third, &context, &["-t", "forged"]);
    let log = stderr(&out);
    assert!(
        !out.status.success(),
        "a forged diff_id was accepted:\n{log}"
    );
    assert!(log.contains("does not unpack to its diff_id"), "{log}");
    assert_clean(&third);
}

fn add_fetches_urls_unpacks_archives_and_copy_sets_owners_and_modes() {
    let body: &'static [u8] = b"downloaded payload\n";
    let server =
        common::http::FileServer::start([("files/payload.txt".to_string(), body.to_vec())].into());
    let port = server.port;
    let digest = format!("sha256:{}", common::sha256_hex(body));
    let spec = format!(
        "FROM debian:bookworm\n\
         RUN useradd -u 3000 svc\n\
         ADD --checksum={digest} http://127.0.0.1:{port}/files/payload.txt /srv/\n\
         ADD bundle.tar.gz /opt/bundle/\n\
         COPY --chown=svc:svc --chmod=0750 tool.sh /usr/local/bin/tool\n\
         COPY --link data/ /data/\n\
         COPY data/*.txt /globbed/\n"
    );
    let (work, store, context) = setup(&spec, &["umoci", "tar"]);
    write(&context.join("tool.sh"), "#!/bin/sh\n");
    write(&context.join("data/one.txt"), "1\n");
    write(&context.join("data/two.txt"), "2\n");
    write(&context.join("data/skip.md"), "md\n");
    let staging = work.path().join("bundle");
    write(&staging.join("inner/file"), "from the archive\n");
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(context.join("bundle.tar.gz"))
        .arg("-C")
        .arg(&staging)
        .arg("inner")
        .status()
        .unwrap();
    assert!(tar.success());
    let out = build(&store, &context, &["-t", "adds"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rootfs = unpack(&store, "adds", work.path());
    let payload = rootfs.join("srv/payload.txt");
    assert_eq!(fs::read(&payload).unwrap(), body);
    assert_eq!(
        fs::metadata(&payload).unwrap().mode() & 0o777,
        0o600,
        "URL downloads are 0600"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/bundle/inner/file")).unwrap(),
        "from the archive\n",
        "local archives are unpacked"
    );
    let tool = fs::metadata(rootfs.join("usr/local/bin/tool")).unwrap();
    assert_eq!(
        (tool.uid(), tool.gid(), tool.mode() & 0o7777),
        (3000, 3000, 0o750)
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("data/two.txt")).unwrap(),
        "2\n"
    );
    assert!(rootfs.join("globbed/one.txt").is_file() && rootfs.join("globbed/two.txt").is_file());
    assert!(
        !rootfs.join("globbed/skip.md").exists(),
        "the glob picks only *.txt"
    );

    // A wrong checksum fails the step with its location.
    let wrong = spec.replace(&digest, &format!("sha256:{}", "1".repeat(64)));
    write(&context.join("Dockerfile"), &wrong);
    let out = build(&store, &context, &["-t", "wrong"]);
    let log = stderr(&out);
    assert!(!out.status.success());
    assert!(
        log.contains("Dockerfile:3:1") && log.contains("checksum mismatch"),
        "{log}"
    );
    assert_clean(&store);
}

/// The library API `kbuild build` is a thin shell over: one call builds,
/// tags, writes the OCI dir, pushes and exports the step cache, and the
/// report says what each part did.
fn the_library_pipeline_builds_outputs_pushes_and_exports_the_cache() {
    use kbuild::executor::BuildOptions;
    use kbuild::export::Destination;
    use kbuild::pipeline::{self, BuildRequest};
    use kbuild::reference::ImageRef;

    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let store_dir = store_with_base(work.path());
    let context = work.path().join("context");
    write(
        &context.join("Dockerfile"),
        "FROM debian:bookworm\nCOPY data.txt /data.txt\nRUN sha256sum /data.txt > /data.sha\n",
    );
    write(&context.join("data.txt"), "through the library\n");
    let out_dir = work.path().join("out-oci");
    let push = ImageRef::parse(&format!("{}/kbuild/lib:v1", registry.host())).unwrap();
    let cache = ImageRef::parse(&format!("{}/kbuild/lib-cache:main", registry.host())).unwrap();
    let registry_options = kbuild::registry::RegistryOptions {
        jobs: 2,
        ..Default::default()
    };
    let request = BuildRequest {
        spec: context.join("Dockerfile"),
        options: BuildOptions {
            context: context.clone(),
            plan: kbuild::plan::PlanRequest::default(),
            no_cache: false,
            secrets: Default::default(),
            isolation: kbuild::sandbox::Isolation::Builtin,
            network: kbuild::sandbox::Network::Host,
            jobs: 2,
            layer: kbuild::layer::WriteOptions::default(),
            registry: registry_options,
            helper: PathBuf::from(env!("CARGO_BIN_EXE_kbuild")),
        },
        tags: vec!["lib:dev".into()],
        output: Some(Destination::OciDir {
            path: out_dir.clone(),
            tag: Some("img".into()),
        }),
        push: Some(push.clone()),
        cache_from: None,
        cache_to: Some(cache.clone()),
    };
    let store = kbuild::store::Store::open(&store_dir).unwrap();
    let cancel = kbuild::sandbox::Cancel::default();
    let report = pipeline::build(&store, &request, &kbuild::report::Silent, &cancel)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(report.digest.starts_with("sha256:"), "{report:?}");
    assert_eq!(report.tags, ["lib:dev".to_string(), push.to_string()]);
    assert_eq!((report.steps, report.cached), (2, 0));
    assert_eq!(report.steps_run.len(), 2, "{report:?}");
    assert!(report.steps_run.iter().all(|s| s.result == "done"));
    assert_eq!(
        report.output.as_deref(),
        Some(&*format!("oci:{}:img", out_dir.display()))
    );
    let index = fs::read_to_string(out_dir.join("index.json")).unwrap();
    assert!(index.contains(&report.digest), "{index}");
    let pushed = report.pushed.as_ref().expect("pushed");
    assert_eq!(pushed.digest, report.digest);
    assert!(pushed.blobs >= 3, "{pushed:?}");
    let exported = report.cache_to.as_ref().expect("cache exported");
    assert_eq!(exported.entries, Some(2));
    assert_eq!(
        store.descriptor("lib:dev").unwrap().digest().to_string(),
        report.digest
    );
    drop(store);
    assert_clean(&store_dir);
}

/// `du -sb`: the outside judge of a store's size.
fn du(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A dozen builds (each a 4 MB layer and a 2 MB cache mount), untagged
/// with `rmi`, then `cache prune --keep-storage`: the store ends at most
/// that size by `du`, the last build is still fully cached, the first is
/// not (least recently used went first), and fsck is clean; `--all` then
/// leaves only the tagged base.
fn cache_prune_keeps_storage_dropping_least_recently_used_first() {
    let work = tempfile::tempdir().unwrap();
    let store = store_with_base(work.path());
    let base_only = du(&store);
    let context = |i: usize| {
        let dir = work.path().join(format!("ctx-{i}"));
        write(
            &dir.join("Dockerfile"),
            &format!(
                "FROM debian:bookworm\n\
                 RUN --mount=type=cache,target=/var/cache/kb,id=lru-{i} \\\n\
                 head -c 2000000 /dev/urandom > /var/cache/kb/blob && \\\n\
                 head -c 4000000 /dev/urandom > /data-{i}\n"
            ),
        );
        dir
    };
    let tags: Vec<String> = (1..=12).map(|i| format!("lru:{i}")).collect();
    for (i, tag) in tags.iter().enumerate() {
        let out = build(&store, &context(i + 1), &["-t", tag]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let s = store.to_str().unwrap();
    let mut rmi = vec!["rmi", "--store", s];
    rmi.extend(tags.iter().map(String::as_str));
    let untagged = ok(&kbuild(&rmi, &[]));
    assert_eq!(untagged.lines().count(), 12, "{untagged}");
    assert!(untagged.contains("untagged lru:7"), "{untagged}");
    let unknown = kbuild(&["rmi", "--store", s, "lru:7"], &[]);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));

    let full = du(&store);
    let keep = base_only + 30_000_000;
    assert!(full > keep + 30_000_000, "{full} bytes is not past {keep}");
    let pruned = ok(&kbuild(
        &[
            "cache",
            "prune",
            "--store",
            s,
            "--keep-storage",
            &keep.to_string(),
        ],
        &[],
    ));
    let after = du(&store);
    assert!(after <= keep, "{after} > {keep} after prune: {pruned}");
    assert!(
        after + 40_000_000 > keep,
        "pruned far below the limit: {after}"
    );
    assert!(pruned.contains("step-cache entries"), "{pruned}");

    let last = build(&store, &context(12), &[]);
    assert!(last.status.success(), "{}", stderr(&last));
    assert!(
        stderr(&last).contains("1 steps, 1 cached"),
        "the most recent build lost its cache: {}",
        stderr(&last)
    );
    let first = build(&store, &context(1), &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("1 steps, 0 cached"),
        "the least recently used build kept its cache: {}",
        stderr(&first)
    );
    assert_clean(&store);

    ok(&kbuild(&["cache", "prune", "--store", s, "--all"], &[]));
    let listed = ok(&kbuild(&["cache", "ls", "--store", s], &[]));
    assert!(listed.contains("steps:     0"), "{listed}");
    assert!(listed.contains("mounts:    0 ("), "{listed}");
    // kbuild's size accounting is du's.
    assert!(
        listed.contains(&format!("total:     {} bytes", du(&store))),
        "{listed}"
    );
    assert!(
        du(&store) < base_only + 1_000_000,
        "--all left more than the base"
    );
    assert_clean(&store);
}

tests!(
    debian_build_runs_apt_multistage_heredocs_mounts_and_caches: Needs::root_and(&["mmdebstrap", "umoci", "findmnt"]),
    a_failing_run_reports_location_code_and_output_and_leaves_nothing: Needs::root_and(&["mmdebstrap", "findmnt"]),
    sigint_during_a_long_run_kills_the_sandbox_and_cleans_up: Needs::root_and(&["mmdebstrap", "findmnt", "pgrep"]),
    the_tree_equals_what_buildah_builds_from_the_same_spec: Needs::root_and(&["mmdebstrap", "buildah", "umoci", "skopeo"]),
    runc_isolation_gives_the_same_layers: Needs::root_and(&["mmdebstrap", "runc", "umoci"]),
    the_step_cache_travels_through_a_registry: Needs::root_and(&["mmdebstrap", "docker-registry"]),
    add_of_archives_resolves_links_from_the_image_root_as_buildah_does: Needs::root_and(&["mmdebstrap", "buildah", "umoci", "skopeo"]),
    add_fetches_urls_unpacks_archives_and_copy_sets_owners_and_modes: Needs::root_and(&["mmdebstrap", "umoci", "tar"]),
    the_library_pipeline_builds_outputs_pushes_and_exports_the_cache: Needs::root_and(&["mmdebstrap", "docker-registry", "findmnt"]),
    cache_prune_keeps_storage_dropping_least_recently_used_first: Needs::root_and(&["mmdebstrap", "findmnt", "du"]),
);
