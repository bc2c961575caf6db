//! Pull and push against a real registry (Debian's `docker-registry` on
//! 127.0.0.1), judged by skopeo; basic auth through htpasswd; transient
//! and hostile registry behaviour injected by a proxy in front of it.
//!
//! The Debian image is the mmdebstrap minbase fixture (needs root to build);
//! the fault tests use a small synthetic image so they run anywhere.

mod common;

use common::harness::Needs;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::registry::{docker_config, Fault, FaultProxy, Registry, Rule};
use common::{kbuild, ok, require};
use serde_json::Value;

/// Env for one kbuild run: its store, and credentials only from `config`
/// (so the machine's own docker config never leaks in).
fn env<'a>(store: &'a Path, config: &'a Path) -> Vec<(&'a str, &'a str)> {
    vec![
        ("KBUILD_STORE", store.to_str().unwrap()),
        ("DOCKER_CONFIG", config.to_str().unwrap()),
        ("REGISTRY_AUTH_FILE", ""),
        ("XDG_RUNTIME_DIR", config.to_str().unwrap()),
        ("HOME", config.to_str().unwrap()),
    ]
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The digest a pull/push printed (`NAME DIGEST`).
fn printed_digest(stdout: &str) -> String {
    stdout.split_whitespace().last().unwrap().to_string()
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A rootfs tarball with one file of `size` incompressible bytes.
fn random_tarball(dir: &Path, size: usize, seed: u64) -> std::path::PathBuf {
    let tarball = dir.join(format!("rootfs-{seed}.tar"));
    let mut builder = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    let mut data = Vec::with_capacity(size);
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    builder
        .append_data(&mut header, "data/random.bin", data.as_slice())
        .unwrap();
    builder.finish().unwrap();
    tarball
}

/// Imports `tarball` as `name` (with extra import flags); its manifest digest.
fn import(store: &Path, tarball: &Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["import", tarball.to_str().unwrap(), "-t", name];
    args.extend_from_slice(extra);
    printed_digest(&ok(&kbuild(
        &args,
        &[("KBUILD_STORE", store.to_str().unwrap())],
    )))
}

/// A one-layer image of `size` incompressible bytes, imported as `name`.
fn small_image(store: &Path, name: &str, size: usize, seed: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    import(store, &random_tarball(dir.path(), size, seed), name, &[])
}

fn blob_files(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn debian_push_pull_round_trip_is_judged_equal_by_skopeo() {
    require(&["skopeo"]);
    let registry = Registry::start(None);
    let host = registry.host();
    let tarball = common::debian_tarball();
    let (a, b, config) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let env_a = env(a.path(), config.path());
    let env_b = env(b.path(), config.path());
    let imported = printed_digest(&ok(&kbuild(
        &["import", tarball.to_str().unwrap(), "-t", "debian:bookworm"],
        &env_a,
    )));

    let target = format!("{host}/kbuild/debian:bookworm");
    let pushed = ok(&kbuild(&["push", "debian:bookworm", &target], &env_a));
    assert_eq!(printed_digest(&pushed), imported);

    // Pulled from a directory whose kbuild.yaml is broken: a plain pull
    // never reads the project.
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("kbuild.yaml"), "flavors: [unclosed\n").unwrap();
    let mut pull = std::process::Command::new(env!("CARGO_BIN_EXE_kbuild"));
    pull.args(["pull", &target]).current_dir(broken.path());
    for (k, v) in &env_b {
        pull.env(k, v);
    }
    let pulled = pull.output().unwrap();
    assert_eq!(printed_digest(&ok(&pulled)), imported);
    assert!(stderr(&pulled).contains("3 blobs") || stderr(&pulled).contains("2 blobs"));
    assert!(ok(&kbuild(&["images"], &env_b)).contains(&target));
    ok(&kbuild(&["cache", "fsck"], &env_b));
    // Same blobs on both sides, byte for byte (they are named by their hashes).
    let in_a = blob_files(a.path());
    for blob in blob_files(b.path()) {
        assert!(in_a.contains(&blob), "{blob} pulled but never pushed");
    }

    // skopeo reads the registry and sees what we pushed.
    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], imported.as_str());
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert_eq!(
        format!("sha256:{}", common::sha256_hex(raw.as_bytes())),
        imported
    );
    // skopeo copies it back out to an OCI dir: same manifest, same layer bytes.
    let oci = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:bookworm", oci.path().display());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{target}"),
        &dest,
    ]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(oci.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], imported.as_str());
    for blob in blob_files(oci.path()) {
        assert_eq!(
            std::fs::read(oci.path().join("blobs/sha256").join(&blob)).unwrap(),
            std::fs::read(b.path().join("blobs/sha256").join(&blob)).unwrap()
        );
    }

    // Pushing again uploads nothing; a new repository mounts instead.
    let again = kbuild(&["push", "debian:bookworm", &target], &env_a);
    ok(&again);
    assert!(stderr(&again).contains("0 blobs"), "{}", stderr(&again));
    assert!(stderr(&again).contains("already in the registry"));
    let other = format!("{host}/mirror/debian:bookworm");
    let mounted = kbuild(&["push", &target, &other], &env_b);
    assert_eq!(printed_digest(&ok(&mounted)), imported);
    assert!(
        stderr(&mounted).contains("mounted from kbuild/debian"),
        "{}",
        stderr(&mounted)
    );
    // And a second pull finds everything in the store already.
    let repeat = kbuild(&["pull", &target], &env_b);
    ok(&repeat);
    assert!(stderr(&repeat).contains("already in the store"));
}

fn login(host: &str, user: &str, password: &str, config: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["login", host, "-u", user, "--password-stdin"])
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

fn basic_auth_rejects_wrong_passwords_clearly_and_accepts_the_right_one() {
    let registry = Registry::start(Some(("kbuilder", "s3cret-pass")));
    let host = registry.host();
    let store = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let image = small_image(store.path(), "small:1", 256 << 10, 1);
    let target = format!("{host}/auth/small:1");

    // No credentials at all.
    let anonymous = kbuild(
        &["push", "small:1", &target],
        &env(store.path(), empty.path()),
    );
    assert_eq!(anonymous.status.code(), Some(1));
    let message = stderr(&anonymous);
    assert!(message.contains("401 Unauthorized"), "{message}");
    assert!(message.contains("no credentials"), "{message}");

    // A wrong password, at login and from a stored config.
    let config = tempfile::tempdir().unwrap();
    let refused = login(&host, "kbuilder", "wrong", config.path());
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("401 Unauthorized"),
        "{}",
        stderr(&refused)
    );
    assert!(
        !config.path().join("config.json").exists(),
        "a refused login stores nothing"
    );
    let wrong = docker_config(&host, "kbuilder", "wrong");
    let denied = kbuild(
        &["push", "small:1", &target],
        &env(store.path(), wrong.path()),
    );
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stderr(&denied).contains("rejected the stored credentials"),
        "{}",
        stderr(&denied)
    );
    assert!(
        !stderr(&denied).contains("wrong"),
        "the password never shows"
    );

    // The right one: login stores it, push and pull use it.
    ok(&login(&host, "kbuilder", "s3cret-pass", config.path()));
    let stored: Value =
        serde_json::from_slice(&std::fs::read(config.path().join("config.json")).unwrap()).unwrap();
    assert!(stored["auths"][&host]["auth"].is_string());
    let pushed = kbuild(
        &["push", "small:1", &target],
        &env(store.path(), config.path()),
    );
    assert_eq!(printed_digest(&ok(&pushed)), image);
    let fresh = tempfile::tempdir().unwrap();
    let pulled = kbuild(&["pull", &target], &env(fresh.path(), config.path()));
    assert_eq!(printed_digest(&ok(&pulled)), image);
}

/// A registry holding `small:1` (4 MiB layer), a proxy in front with
/// `rules`, and a fresh store to pull into.
struct FaultSetup {
    _registry: Registry,
    proxy: FaultProxy,
    image: String,
    layer: String,
    _source: tempfile::TempDir,
    fresh: tempfile::TempDir,
    config: tempfile::TempDir,
}

fn fault_setup(rules: impl FnOnce(&str) -> Vec<Rule>) -> FaultSetup {
    let registry = Registry::start(None);
    let source = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let image = small_image(source.path(), "small:1", 4 << 20, 7);
    ok(&kbuild(
        &[
            "push",
            "small:1",
            &format!("{}/faults/small:1", registry.host()),
        ],
        &env(source.path(), config.path()),
    ));
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            source
                .path()
                .join("blobs/sha256")
                .join(image.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let proxy = FaultProxy::start(registry.port, rules(&layer));
    FaultSetup {
        _registry: registry,
        proxy,
        image,
        layer,
        _source: source,
        fresh: tempfile::tempdir().unwrap(),
        config,
    }
}

impl FaultSetup {
    fn pull(&self) -> Output {
        kbuild(
            &["pull", &format!("{}/faults/small:1", self.proxy.host())],
            &env(self.fresh.path(), self.config.path()),
        )
    }
}

fn rule(method: &'static str, path: &str, times: usize, fault: Fault) -> Rule {
    Rule {
        method,
        path: path.to_string(),
        times,
        fault,
    }
}

fn a_corrupted_blob_is_refused_and_leaves_no_trace() {
    let setup = fault_setup(|layer| {
        vec![rule(
            "GET",
            &format!("/blobs/{layer}"),
            usize::MAX,
            Fault::Corrupt,
        )]
    });
    let out = setup.pull();
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("failed verification"), "{message}");
    assert!(
        message.contains(&setup.layer),
        "names the digest: {message}"
    );
    assert!(
        message.contains(&setup.proxy.host()),
        "names the registry: {message}"
    );
    // Nothing of it in the store: no blob, no temp file, no tag.
    let store = setup.fresh.path();
    let layer_hex = setup.layer.trim_start_matches("sha256:");
    for blob in blob_files(store) {
        assert_ne!(blob, layer_hex);
        assert!(!blob.starts_with(".tmp"), "leftover temp file {blob}");
    }
    assert!(std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .next()
        .is_none());
    let images = ok(&kbuild(
        &["images"],
        &[("KBUILD_STORE", store.to_str().unwrap())],
    ));
    assert!(!images.contains("faults/small"), "{images}");
    ok(&kbuild(
        &["cache", "fsck"],
        &[("KBUILD_STORE", store.to_str().unwrap())],
    ));
}

fn two_503s_then_success_is_retried() {
    let setup = fault_setup(|layer| {
        vec![rule(
            "GET",
            &format!("/blobs/{layer}"),
            2,
            Fault::Status {
                code: 503,
                retry_after: None,
            },
        )]
    });
    let out = setup.pull();
    assert_eq!(printed_digest(&ok(&out)), setup.image);
    let retries = stderr(&out).matches("HTTP 503").count();
    assert_eq!(retries, 2, "{}", stderr(&out));
    let injected = setup
        .proxy
        .lines()
        .iter()
        .filter(|l| l.contains("injected 503"))
        .count();
    assert_eq!(injected, 2);
}

fn a_429_with_retry_after_is_honored() {
    let setup = fault_setup(|layer| {
        vec![rule(
            "GET",
            &format!("/blobs/{layer}"),
            1,
            Fault::Status {
                code: 429,
                retry_after: Some(2),
            },
        )]
    });
    let started = Instant::now();
    let out = setup.pull();
    assert_eq!(printed_digest(&ok(&out)), setup.image);
    assert!(stderr(&out).contains("Retry-After 2s"), "{}", stderr(&out));
    // Correctness, not speed: the pull waited at least what the server asked.
    assert!(started.elapsed().as_secs_f64() >= 2.0);
}

fn a_connection_cut_mid_blob_resumes_with_a_range_request() {
    let setup = fault_setup(|layer| {
        vec![rule(
            "GET",
            &format!("/blobs/{layer}"),
            1,
            Fault::CutResponse(1 << 20),
        )]
    });
    let out = setup.pull();
    assert_eq!(printed_digest(&ok(&out)), setup.image);
    let lines = setup.proxy.lines();
    let layer_requests: Vec<&String> = lines.iter().filter(|l| l.contains(&setup.layer)).collect();
    assert_eq!(layer_requests.len(), 2, "{lines:#?}");
    assert!(layer_requests[0].contains("cut after"));
    assert!(
        layer_requests[1]
            .to_ascii_lowercase()
            .contains("range: bytes=1048576-")
            && layer_requests[1].contains("206"),
        "resumed where the cut happened: {lines:#?}"
    );
    ok(&kbuild(
        &["cache", "fsck"],
        &[("KBUILD_STORE", setup.fresh.path().to_str().unwrap())],
    ));
}

fn a_push_survives_a_cut_chunk_and_an_expired_token() {
    let registry = Registry::start(None);
    let store = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let image = small_image(store.path(), "small:2", 6 << 20, 11);
    let proxy = FaultProxy::start(
        registry.port,
        vec![
            rule("PATCH", "/blobs/uploads/", 1, Fault::CutRequest(1 << 20)),
            rule(
                "PATCH",
                "/blobs/uploads/",
                1,
                Fault::Status {
                    code: 401,
                    retry_after: None,
                },
            ),
        ],
    );
    let target = format!("{}/faults/small:2", proxy.host());
    let out = kbuild(
        &["push", "--chunk-size", "1", "small:2", &target],
        &env(store.path(), config.path()),
    );
    assert_eq!(printed_digest(&ok(&out)), image);
    let lines = proxy.lines();
    assert!(
        lines.iter().any(|l| l.contains("cut request")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("injected 401")),
        "{lines:#?}"
    );
    // A mount from a repository that lacks the blob gets a 202 and an
    // upload session, which the push then uses.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            store
                .path()
                .join("blobs/sha256")
                .join(image.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer: kbuild::digest::Digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Forget where the blobs really are; claim a repository that lacks them.
    for blob in blob_files(store.path()) {
        let _ = std::fs::remove_file(store.path().join("sources").join(blob));
    }
    kbuild::store::Store::open(store.path())
        .unwrap()
        .add_source(&layer, &proxy.host(), "nowhere/empty")
        .unwrap();
    let elsewhere = format!("{}/faults/elsewhere:2", proxy.host());
    let fallback = kbuild(
        &["push", "small:2", &elsewhere],
        &env(store.path(), config.path()),
    );
    assert_eq!(printed_digest(&ok(&fallback)), image);
    assert!(
        !stderr(&fallback).contains("mounted"),
        "{}",
        stderr(&fallback)
    );
    let lines = proxy.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mount=") && l.contains("from=nowhere") && l.contains("202")),
        "{lines:#?}"
    );
    // The registry has the exact image: pull it directly and compare.
    let fresh = tempfile::tempdir().unwrap();
    let direct = format!("{}/faults/small:2", registry.host());
    let pulled = kbuild(&["pull", &direct], &env(fresh.path(), config.path()));
    assert_eq!(printed_digest(&ok(&pulled)), image);
    ok(&kbuild(
        &["cache", "fsck"],
        &[("KBUILD_STORE", fresh.path().to_str().unwrap())],
    ));
}

fn manifest_size(store: &Path, digest: &str) -> u64 {
    std::fs::metadata(
        store
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len()
}

fn a_multi_platform_index_is_pushed_whole_and_pulled_per_platform() {
    use oci_spec::image::{Descriptor, MediaType};
    let registry = Registry::start(None);
    let host = registry.host();
    let (a, config) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env_a = env(a.path(), config.path());
    let mut entries = Vec::new();
    let scratch = tempfile::tempdir().unwrap();
    for (seed, arch) in [(100, "amd64"), (101, "arm64")] {
        let tarball = random_tarball(scratch.path(), 64 << 10, seed);
        let name = format!("small:{arch}");
        let imported = import(a.path(), &tarball, &name, &["--arch", arch]);
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": imported,
            "size": manifest_size(a.path(), &imported),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index_bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let index_digest = {
        let store = kbuild::store::Store::open(a.path()).unwrap();
        let digest = store.put_blob(&index_bytes).unwrap();
        store
            .tag(
                "multi:1",
                Descriptor::new(
                    MediaType::ImageIndex,
                    index_bytes.len() as u64,
                    oci_spec::image::Digest::try_from(digest.to_string()).unwrap(),
                ),
            )
            .unwrap();
        digest.to_string()
    };

    let target = format!("{host}/multi/small:1");
    assert_eq!(
        printed_digest(&ok(&kbuild(&["push", "multi:1", &target], &env_a))),
        index_digest
    );
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
    let arm: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--override-arch",
        "arm64",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");

    // One platform: the tag points at that platform's manifest.
    let b = tempfile::tempdir().unwrap();
    let pulled = ok(&kbuild(
        &["pull", "--platform", "linux/arm64", &target],
        &env(b.path(), config.path()),
    ));
    assert_eq!(
        printed_digest(&pulled),
        entries[1]["digest"].as_str().unwrap()
    );
    // All platforms: the whole index, which pushes back unchanged.
    let c = tempfile::tempdir().unwrap();
    let env_c = env(c.path(), config.path());
    assert_eq!(
        printed_digest(&ok(&kbuild(
            &["pull", "--platform", "all", &target],
            &env_c
        ))),
        index_digest
    );
    ok(&kbuild(&["cache", "fsck"], &env_c));
    let copy = format!("{host}/copy/small:1");
    assert_eq!(
        printed_digest(&ok(&kbuild(&["push", &target, &copy], &env_c))),
        index_digest
    );
    // A platform the index lacks is a clear error.
    let missing = kbuild(
        &["pull", "--platform", "linux/s390x", &target],
        &env(b.path(), config.path()),
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no manifest for linux/s390x (it has linux/amd64, linux/arm64)"),
        "{}",
        stderr(&missing)
    );
}

fn the_step_cache_travels_between_stores_as_an_ignorable_artifact() {
    use kbuild::digest::Digest;
    use kbuild::store::cache::{CacheEntry, LayerRecord};
    let registry = Registry::start(None);
    let host = registry.host();
    let (a, config) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    small_image(a.path(), "base:1", 512 << 10, 21);
    // Two step results, as a build records them: one with a layer, one empty.
    let expected = {
        let store = kbuild::store::Store::open(a.path()).unwrap();
        let (_, manifest) = store.resolve("base:1").unwrap();
        let layer = &manifest.layers()[0];
        let config: oci_spec::image::ImageConfiguration = store
            .read_json(&manifest.config().digest().to_string().parse().unwrap())
            .unwrap();
        let with_layer = CacheEntry {
            layer: Some(LayerRecord {
                digest: layer.digest().to_string().parse().unwrap(),
                diff_id: config.rootfs().diff_ids()[0].parse().unwrap(),
                size: layer.size(),
                media_type: layer.media_type().to_string(),
            }),
            // The time a step ran travels with it: a hit on another
            // runner dates its history entry the same.
            created: Some(1_700_000_123),
        };
        store
            .cache_step(&Digest::of(b"step 1"), &with_layer)
            .unwrap();
        store
            .cache_step(
                &Digest::of(b"step 2"),
                &CacheEntry {
                    layer: None,
                    created: None,
                },
            )
            .unwrap();
        store.cached_steps().unwrap()
    };
    let cache_ref = format!("{host}/kairos/cache:main");
    let exported = ok(&kbuild(
        &["cache", "export", &cache_ref],
        &env(a.path(), config.path()),
    ));
    assert!(exported.starts_with("2 entries"), "{exported}");

    // Registries and tools that don't know the format still handle it.
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{cache_ref}"),
    ]))
    .unwrap();
    assert_eq!(raw["artifactType"], "application/vnd.kbuild.cache.v1+json");
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.kbuild.cache.config.v1+json"
    );
    let copied = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{cache_ref}"),
        &format!("oci:{}:cache", copied.path().display()),
    ]);

    // An empty store imports it and has the same entries and layers.
    let b = tempfile::tempdir().unwrap();
    let env_b = env(b.path(), config.path());
    let imported = ok(&kbuild(&["cache", "import", &cache_ref], &env_b));
    assert!(imported.starts_with("2 new entries"), "{imported}");
    {
        let store = kbuild::store::Store::open(b.path()).unwrap();
        assert_eq!(store.cached_steps().unwrap(), expected);
    }
    ok(&kbuild(&["cache", "fsck"], &env_b));
    let again = ok(&kbuild(&["cache", "import", &cache_ref], &env_b));
    assert!(again.starts_with("0 new entries"), "{again}");

    // An ordinary image is not mistaken for a cache.
    let plain = format!("{host}/kairos/base:1");
    ok(&kbuild(
        &["push", "base:1", &plain],
        &env(a.path(), config.path()),
    ));
    let refused = kbuild(&["cache", "import", &plain], &env_b);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("not a kbuild cache"),
        "{}",
        stderr(&refused)
    );
}

tests!(
    debian_push_pull_round_trip_is_judged_equal_by_skopeo: REGISTRY,
    basic_auth_rejects_wrong_passwords_clearly_and_accepts_the_right_one: REGISTRY,
    a_corrupted_blob_is_refused_and_leaves_no_trace: REGISTRY,
    two_503s_then_success_is_retried: REGISTRY,
    a_429_with_retry_after_is_honored: REGISTRY,
    a_connection_cut_mid_blob_resumes_with_a_range_request: REGISTRY,
    a_push_survives_a_cut_chunk_and_an_expired_token: REGISTRY,
    a_multi_platform_index_is_pushed_whole_and_pulled_per_platform: REGISTRY,
    the_step_cache_travels_between_stores_as_an_ignorable_artifact: REGISTRY,
);

/// Each test starts the reference registry (with htpasswd for auth) and
/// imports an image built from the Debian fixture (mmdebstrap needs root).
const REGISTRY: Needs = Needs::root_and(&["mmdebstrap", "docker-registry", "htpasswd", "skopeo"]);
