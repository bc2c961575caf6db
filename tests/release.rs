//! `kbuild release` end to end (root): the Debian cells of the project's
//! matrix (core, standard with k3s, standard with k0s) built with honest
//! stand-in packages (see `tests/common/standins.rs`), then the same
//! release as two shards in two empty stores sharing a step cache through
//! a registry on 127.0.0.1, merged, and a release with one cell made to
//! fail.
//!
//! The shards and the merge run through `ci/release.sh`, the script the
//! GitHub and GitLab workflows call. The three runs also check the three
//! progress formats: JSON lines (the first run), the live view in a real
//! terminal (shard 1, in tmux) and plain timestamped lines (shard 2).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use regex::Regex;

use common::builds::{stderr, store_with_pinned_base};
use common::harness::Needs;
use common::registry::Registry;
use common::{kbuild, standins};

/// The shared Debian image (tests/common/seed.rs) is built with it.
const EPOCH: &str = common::seed::SEED_EPOCH;
const ONLY: &str = "kairos-debian-*";

fn release(project: &Path, store: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "release",
        "--project",
        project.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--only",
        ONLY,
        "--base-image",
        "debian:bookworm",
    ];
    args.extend_from_slice(extra);
    kbuild(&args, &[("SOURCE_DATE_EPOCH", EPOCH)])
}

/// Every file under `dir` with its inode, size and mtime: what a rewrite
/// changes even when the bytes stay the same.
fn identities(dir: &Path) -> Vec<(String, u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut files: Vec<_> = common::walk(dir, None)
        .into_iter()
        .filter(|(_, _, meta)| meta.is_file())
        .map(|(name, _, meta)| {
            (
                name,
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Installed packages of the image's dpkg status, counted plainly.
fn dpkg_installed(store: &Path, image: &str) -> usize {
    let store = kbuild::store::Store::open(store).unwrap();
    let layers = store.image_layers(image).unwrap();
    let status = store
        .with_image_root(&layers, |root, _| {
            root.read(Path::new("var/lib/dpkg/status"))
        })
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&status)
        .split("\n\n")
        .filter(|stanza| stanza.lines().any(|l| l == "Status: install ok installed"))
        .count()
}

/// The SPDX project's own validator accepts the document at `path`.
fn assert_valid_spdx(path: &Path) {
    let validated = Command::new("pyspdxtools")
        .arg("-i")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "{}: {}{}",
        path.display(),
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
}

fn check_sums(dir: &Path) {
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ci/release.sh ARGS` from the repository, with `env`.
fn ci_script(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new("ci/release.sh");
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// Runs `argv` (from the repository) in a 160x40 tmux terminal with `env`
/// and without `CI`, as a person would, and returns every distinct screen
/// seen while it ran, the last one after it exited. Panics when it fails.
fn in_terminal(argv: &[&str], env: &[(&str, String)]) -> Vec<String> {
    let socket = format!("kbuild-test-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let exit_file = dir.path().join("exit");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .unwrap()
    };
    let mut new_session = vec![
        "new-session".to_string(),
        "-d".into(),
        "-s".into(),
        "release".into(),
        "-x".into(),
        "160".into(),
        "-y".into(),
        "40".into(),
        "-c".into(),
        env!("CARGO_MANIFEST_DIR").into(),
        "-e".into(),
        "CI=".into(),
        "-e".into(),
        format!("EXIT_FILE={}", exit_file.display()),
    ];
    for (key, value) in env {
        new_session.extend(["-e".to_string(), format!("{key}={value}")]);
    }
    new_session.extend([
        "sh".to_string(),
        "-c".into(),
        r#""$@"; echo $? > "$EXIT_FILE"; sleep 3600"#.into(),
        "sh".into(),
    ]);
    new_session.extend(argv.iter().map(|a| a.to_string()));
    let args: Vec<&str> = new_session.iter().map(String::as_str).collect();
    let started = tmux(&args);
    assert!(started.status.success(), "tmux: {}", stderr(&started));
    let mut frames: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let capture = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "release"]).stdout).into_owned()
    };
    while !exit_file.exists() && Instant::now() < deadline {
        let frame = capture();
        if frames.last() != Some(&frame) {
            frames.push(frame);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(300));
    frames.push(capture());
    tmux(&["kill-server"]);
    let code = fs::read_to_string(&exit_file).unwrap_or_default();
    assert_eq!(
        code.trim(),
        "0",
        "{argv:?} in a terminal failed; last screen:\n{}",
        frames.last().unwrap()
    );
    frames
}

/// The live view: spinner lines for the running cell and step and a byte
/// counter while it ran, finished steps above them, then the summary
/// table naming each cell with `ok`.
fn check_live_view(frames: &[String]) {
    let spinner = "[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]";
    let live = |pattern: &str| {
        let re = Regex::new(pattern).unwrap();
        frames[..frames.len() - 1]
            .iter()
            .any(|f| f.lines().any(|l| re.is_match(l)))
    };
    let all = frames.join("\n-----\n");
    assert!(
        live(&format!(r"^{spinner} cell 1/2 kairos-debian-")),
        "no running-cell line in {} screens:\n{all}",
        frames.len()
    );
    assert!(
        live(&format!(
            r"^{spinner} (squashfs|layer|pull) .+ \d+(\.\d+)? (B|KiB|MiB|GiB) "
        )),
        "no byte counter in the live view:\n{all}"
    );
    assert!(
        live(r"^(✔|CACHED) \[[^\]]+ \d+/\d+\] "),
        "no finished step above the spinners:\n{all}"
    );
    let last = frames.last().unwrap();
    assert!(
        last.contains("result  time     cached     ISO"),
        "no summary table at the end:\n{last}"
    );
    let rows: Vec<&str> = last
        .lines()
        .filter(|l| l.starts_with("kairos-debian-"))
        .collect();
    assert_eq!(rows.len(), 2, "two cells in shard 1/2:\n{last}");
    assert!(rows.iter().all(|r| r.contains(" ok ")), "{last}");
}

/// Plain progress: every line up to the summary table is timestamped,
/// lines inside a cell say which, and squashfs reports its bytes.
fn check_plain_progress(err: &str) {
    let (progress, table) = err
        .split_once("\n\ncell")
        .unwrap_or_else(|| panic!("no summary table:\n{err}"));
    let stamped = Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ").unwrap();
    for line in progress.lines() {
        assert!(stamped.is_match(line), "not a timestamped line: {line:?}");
    }
    assert!(
        Regex::new(r"(?m)Z cell 1/1 kairos-debian-\S+-standard-\S+: started$")
            .unwrap()
            .is_match(progress),
        "{progress}"
    );
    assert!(
        Regex::new(r"(?m)Z cell 1/1 squashfs filesystem\.squashfs: \d+(\.\d+)? MiB in ")
            .unwrap()
            .is_match(progress),
        "{progress}"
    );
    assert!(table.contains("ok"), "{table}");
    assert!(!err.contains('\x1b'), "escape sequences in plain output");
}

/// `--progress=json`: every line is an event with a time; `cells` cells
/// start and finish ok; steps inside a cell name it; squashfs and layer
/// compression report bytes.
fn check_json_progress(err: &str, cells: usize) {
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}")))
        .collect();
    assert!(events
        .iter()
        .all(|e| e["time"].is_string() && e["event"].is_string()));
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(&|e| e["event"] == "cell" && e["state"] == "started"),
        cells
    );
    assert_eq!(
        count(&|e| e["event"] == "cell" && e["state"] == "finished" && e["ok"] == true),
        cells
    );
    assert!(count(&|e| e["event"] == "step" && e["cell"].is_string()) > 0);
    for activity in ["squashfs", "compress"] {
        assert!(
            count(&|e| e["activity"] == activity
                && e["state"] == "finished"
                && e["done"].as_u64().unwrap_or(0) > 0)
                > 0,
            "no finished {activity} transfer"
        );
    }
}

fn release_shards_sboms_and_a_failing_cell() {
    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start(None);
    let cache = format!("{}/kbuild/cache:release", registry.host());
    let http = standins::binaries();
    let project = standins::project(work.path(), &http);
    // The first run starts from the run's shared Debian core image
    // (tests/common/seed.rs); the shards below start from empty stores.
    let store = common::seed::seeded_store(&work.path().join("one"));

    // One run: every artifact, checked.
    let out = work.path().join("release");
    let report_path = work.path().join("report.json");
    let result = release(
        &project,
        &store,
        &out,
        &[
            "--report",
            report_path.to_str().unwrap(),
            "--cache-to",
            &cache,
            "--progress=json",
        ],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    check_json_progress(&stderr(&result), 3);
    check_sums(&out);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let cells = manifest["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3, "{manifest}");
    for cell in cells {
        let name = cell["cell"].as_str().unwrap();
        let files: Vec<&str> = cell["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["path"].as_str().unwrap())
            .collect();
        for suffix in [".iso", ".iso.sha256", ".spdx.json", ".provenance.json"] {
            assert!(
                files.contains(&format!("{name}/{name}{suffix}").as_str()),
                "{name}: {files:?}"
            );
        }
        let sbom_path = out.join(name).join(format!("{name}.spdx.json"));
        assert_valid_spdx(&sbom_path);
        let sbom: serde_json::Value =
            serde_json::from_slice(&fs::read(&sbom_path).unwrap()).unwrap();
        let packages = sbom["packages"].as_array().unwrap();
        let deb = packages
            .iter()
            .filter(|p| {
                p["externalRefs"][0]["referenceLocator"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("pkg:deb/")
            })
            .count();
        let composed = packages
            .iter()
            .filter(|p| {
                p["SPDXID"]
                    .as_str()
                    .unwrap()
                    .starts_with("SPDXRef-Composed-")
            })
            .count();
        let image = cell["image"].as_str().unwrap();
        assert_eq!(deb, dpkg_installed(&store, image), "{name}");
        let expected_composed = if name.contains("-core-") { 1 } else { 4 };
        assert_eq!(composed, expected_composed, "{name}");
        // The image itself is the one other package.
        assert_eq!(packages.len(), deb + composed + 1, "{name}");
        check_provenance(&out, cell, &store, &project, expected_composed, false);
    }
    // Core was built once: the standard cells found all its steps cached.
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).unwrap()).unwrap();
    for cell in report["cells"].as_array().unwrap() {
        if cell["cell"].as_str().unwrap().contains("-standard-") {
            let core = cell["image"]["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["stage"] == "core")
                .unwrap();
            assert!(core["steps"].as_u64().unwrap() > 0, "{cell}");
            assert_eq!(core["steps"], core["cached"], "{cell}");
        }
    }

    // Again with nothing changed: no file of the release is rewritten.
    let before = identities(&out);
    let again = release(&project, &store, &out, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(identities(&out), before, "a no-op release rewrote files");

    release_verify_rebuilds_each_cell_bit_for_bit(&project, &store, work.path(), cells);

    terminated_release_exits_non_zero_and_says_what_is_missing(&project, &store, work.path());

    // Two shards in two empty stores sharing the registry cache, built and
    // merged by ci/release.sh: the same SHA256SUMS. Shard 1 runs in a
    // terminal (the live view), shard 2 in a pipe with CI=true (plain).
    let releases = work.path().join("ci-release");
    let shard_env = |index: usize| {
        let store = store_with_pinned_base(&work.path().join(format!("shard-{index}")), EPOCH);
        standins::import_images(&store);
        vec![
            ("KBUILD", env!("CARGO_BIN_EXE_kbuild").to_string()),
            ("RELEASE_DIR", releases.display().to_string()),
            (
                "KBUILD_RELEASE_ARGS",
                format!(
                    "--project {} --store {} --only {ONLY} --base-image debian:bookworm",
                    project.display(),
                    store.display()
                ),
            ),
            ("KBUILD_CACHE_FROM", cache.clone()),
            ("SOURCE_DATE_EPOCH", EPOCH.to_string()),
        ]
    };
    // A shard's store goes once its artifacts are written: a CI runner's
    // disk need not hold three full stores at once.
    let drop_store = |index: usize| {
        fs::remove_dir_all(work.path().join(format!("shard-{index}"))).unwrap();
    };
    let frames = in_terminal(&["ci/release.sh", "shard", "1/2"], &shard_env(1));
    drop_store(1);
    check_live_view(&frames);
    let mut plain = ci_script(&["shard", "2/2"], &shard_env(2));
    plain.env("CI", "true");
    let result = plain.output().unwrap();
    drop_store(2);
    assert!(result.status.success(), "shard 2/2: {}", stderr(&result));
    check_plain_progress(&stderr(&result));
    assert!(
        !releases.join("shard-2/SHA256SUMS").exists(),
        "a shard writes no SHA256SUMS"
    );
    let result = ci_script(&["merge"], &shard_env(3)).output().unwrap();
    assert!(result.status.success(), "merge: {}", stderr(&result));
    let merged = releases.join("merged");
    assert_eq!(
        String::from_utf8_lossy(&result.stdout).trim(),
        merged.display().to_string()
    );
    check_sums(&merged);
    assert_eq!(
        fs::read_to_string(merged.join("SHA256SUMS")).unwrap(),
        fs::read_to_string(out.join("SHA256SUMS")).unwrap()
    );

    // A bad checksum fails the k0s cell alone.
    let k0s = project.join("packages/k0s.yaml");
    let text = fs::read_to_string(&k0s).unwrap();
    let wrong = "0".repeat(63) + "1";
    let pinned = text.split("sha256: \"").nth(1).unwrap()[..64].to_string();
    fs::write(&k0s, text.replace(&pinned, &wrong)).unwrap();
    let lock = project.join("kbuild.lock");
    let _ = fs::remove_file(&lock);
    let failing = work.path().join("failing");
    let result = release(&project, &store, &failing, &[]);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    let err = stderr(&result);
    assert!(
        err.contains("k0s") && err.contains("failed at image"),
        "{err}"
    );
    assert!(
        err.contains(&format!("not the pinned sha256:{wrong}")),
        "{err}"
    );
    assert!(err.contains("1 of 3 cells failed"), "{err}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(failing.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["cells"].as_array().unwrap().len(), 2, "{manifest}");
    check_sums(&failing);
}

/// The cell's provenance statement names what was built by digest (the
/// image as the manifest lists it, the ISO as its bytes hash) and what it
/// was built from, each by the digest kbuild's inputs really have: the
/// base image as the store holds it, every composed package (an image as
/// the store holds it, a download by the sha256 its package file pins)
/// and the flavor's spec as it hashes; and it claims no more than that.
fn check_provenance(
    out: &Path,
    cell: &serde_json::Value,
    store: &Path,
    project: &Path,
    composed: usize,
    reproducible: bool,
) {
    let name = cell["cell"].as_str().unwrap();
    let path = out.join(name).join(format!("{name}.provenance.json"));
    let statement: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let sha = |value: &serde_json::Value| {
        format!("sha256:{}", value["digest"]["sha256"].as_str().unwrap())
    };
    let subjects = statement["subject"].as_array().unwrap();
    assert_eq!(subjects.len(), 2, "{statement}");
    assert_eq!(subjects[0]["name"], cell["image"], "{statement}");
    assert_eq!(sha(&subjects[0]), cell["image_digest"].as_str().unwrap());
    assert_eq!(subjects[1]["name"], format!("{name}.iso"));
    let iso = fs::read(out.join(name).join(format!("{name}.iso"))).unwrap();
    assert_eq!(
        sha(&subjects[1]),
        format!("sha256:{}", common::sha256_hex(&iso))
    );

    let stored = kbuild::store::Store::open(store).unwrap();
    let stored_digest =
        |reference: &str| stored.descriptor(reference).unwrap().digest().to_string();
    let pinned: String = fs::read_dir(project.join("packages"))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let materials = statement["predicate"]["materials"].as_array().unwrap();
    assert_eq!(materials.len(), 1 + composed + 1, "{statement}");
    let base = &materials[0];
    assert_eq!(base["uri"], "debian:bookworm", "{statement}");
    assert_eq!(sha(base), stored_digest("debian:bookworm"));
    for package in &materials[1..=composed] {
        let uri = package["uri"].as_str().unwrap();
        let digest = sha(package);
        if uri.starts_with("http") {
            assert!(
                pinned.contains(&digest[7..]),
                "{uri}: {digest} is not pinned"
            );
        } else {
            assert_eq!(digest, stored_digest(uri), "{uri}");
        }
    }
    let spec = &materials[composed + 1];
    assert_eq!(spec["uri"], "images/Dockerfile.debian");
    let spec_bytes = fs::read(project.join("images/Dockerfile.debian")).unwrap();
    assert_eq!(
        sha(spec),
        format!("sha256:{}", common::sha256_hex(&spec_bytes))
    );
    let metadata = &statement["predicate"]["metadata"];
    assert_eq!(metadata["completeness"]["materials"], false, "{statement}");
    assert_eq!(metadata["reproducible"], reproducible, "{statement}");
}

/// `release --verify`: each cell (core, standard with k3s, with k0s) is
/// built again in an empty store of its own, from the real spec, with the
/// same epoch: the same image digest and the same ISO bytes as the first
/// run, recorded in the manifest and claimed by the provenance.
fn release_verify_rebuilds_each_cell_bit_for_bit(
    project: &Path,
    store: &Path,
    work: &Path,
    first: &[serde_json::Value],
) {
    let out = work.join("verified");
    let result = release(project, store, &out, &["--verify"]);
    assert!(result.status.success(), "{}", stderr(&result));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let cells = manifest["cells"].as_array().unwrap();
    assert_eq!(cells.len(), first.len(), "{manifest}");
    let iso_sha = |cell: &serde_json::Value| {
        let name = cell["cell"].as_str().unwrap();
        cell["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["path"] == format!("{name}/{name}.iso"))
            .unwrap()["sha256"]
            .clone()
    };
    for (cell, before) in cells.iter().zip(first) {
        assert_eq!(cell["cell"], before["cell"]);
        assert_eq!(cell["reproducible"], true, "{cell}");
        assert_eq!(cell["image_digest"], before["image_digest"], "{cell}");
        assert_eq!(iso_sha(cell), iso_sha(before), "{cell}");
        let composed = if cell["cell"].as_str().unwrap().contains("-core-") {
            1
        } else {
            4
        };
        check_provenance(&out, cell, store, project, composed, true);
    }
    // Each rebuild's scratch store is gone.
    let tmp: Vec<_> = fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

/// SIGTERM as the second cell starts (every step cached by the run
/// before): the release exits non-zero, says it was interrupted, and its
/// manifest and report mark it incomplete, the third cell not attempted.
fn terminated_release_exits_non_zero_and_says_what_is_missing(
    project: &Path,
    store: &Path,
    work: &Path,
) {
    use std::io::BufRead;
    let out = work.join("terminated");
    let report_path = work.join("terminated-report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["release", "--project", project.to_str().unwrap()])
        .args([
            "--store",
            store.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .args(["--only", ONLY, "--base-image", "debian:bookworm"])
        .args(["--progress=json", "--report", report_path.to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut signalled = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        seen.push(line);
        if event["event"] == "cell" && event["state"] == "started" && event["index"] == 2 {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            signalled = true;
            break;
        }
    }
    assert!(signalled, "cell 2 never started:\n{}", seen.join("\n"));
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let err = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted: the release is incomplete"),
        "{err}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["complete"], false, "{manifest}");
    let selected = manifest["selection"]["cells"].as_array().unwrap();
    assert_eq!(selected.len(), 3, "{manifest}");
    let third = &selected[2];
    assert_eq!(
        manifest["not_attempted"],
        serde_json::json!([third]),
        "{manifest}"
    );
    assert!(
        manifest["cells"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| &c["cell"] != third),
        "{manifest}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["complete"], false, "{report}");
    assert_eq!(report["interrupted"], true, "{report}");
}

/// An image whose package manager is rpm: Debian's `rpm` with its own
/// SQLite database (dpkg's status removed, so rpm's is the only one),
/// holding two packages rpmbuild made, one with an epoch. `kbuild sbom`
/// lists them through the image's own rpm, and the SPDX validator passes.
fn an_rpm_image_sbom_lists_its_rpm_database() {
    let work = tempfile::tempdir().unwrap();
    let store = common::builds::store_with_base(work.path());
    let context = work.path().join("rpm");
    let spec = |name: &str, version: &str, extra: &str| {
        format!(
            "Name: {name}\nVersion: {version}\n{extra}Summary: a package of the rpm SBOM test\n\
             License: MIT\nBuildArch: noarch\n%description\nTest.\n%install\n\
             mkdir -p %{{buildroot}}/usr/share/{name}\necho hi > %{{buildroot}}/usr/share/{name}/hi\n\
             %files\n/usr/share/{name}/hi\n"
        )
    };
    common::builds::write(
        &context.join("hello.spec"),
        &spec("kbuild-hello", "1.2.3", "Release: 4\n"),
    );
    common::builds::write(
        &context.join("epoch.spec"),
        &spec("kbuild-epoch", "0.9", "Release: 1\nEpoch: 2\n"),
    );
    common::builds::write(
        &context.join("Dockerfile"),
        "FROM debian:bookworm\n\
         RUN apt-get update && apt-get install -y --no-install-recommends rpm\n\
         RUN mkdir -p /etc/rpm && echo '%_dbpath /var/lib/rpm' > /etc/rpm/macros\n\
         COPY hello.spec epoch.spec /src/\n\
         RUN for spec in /src/*.spec; do rpmbuild --quiet --define \"_topdir /tmp/top\" -bb \"$spec\"; done \\\n\
          && rpm -i --force-debian --nodeps /tmp/top/RPMS/noarch/*.rpm && rm -rf /tmp/top\n\
         RUN test -f /var/lib/rpm/rpmdb.sqlite && rm /var/lib/dpkg/status\n",
    );
    let built = common::builds::build(&store, &context, &["-t", "rpm-image:1"]);
    assert!(built.status.success(), "{}", stderr(&built));
    let sbom_path = work.path().join("rpm.spdx.json");
    let s = store.to_str().unwrap();
    let made = kbuild(
        &[
            "sbom",
            "--store",
            s,
            "rpm-image:1",
            "-o",
            sbom_path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    assert_valid_spdx(&sbom_path);
    let sbom: serde_json::Value = serde_json::from_slice(&fs::read(&sbom_path).unwrap()).unwrap();
    let purls: Vec<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:rpm/debian/kbuild-epoch@0.9-1?arch=noarch&distro=debian-12&epoch=2",
            "pkg:rpm/debian/kbuild-hello@1.2.3-4?arch=noarch&distro=debian-12",
        ],
        "{sbom}"
    );
    let versions: Vec<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|p| p["versionInfo"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2:0.9-1", "1.2.3-4"]);
    // The query is a cached step: a second SBOM is the same document.
    let again = kbuild(&["sbom", "--store", s, "rpm-image:1"], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(again.stdout, fs::read(&sbom_path).unwrap());
    common::builds::assert_clean(&store);
}

tests!(
    release_shards_sboms_and_a_failing_cell: Needs::root_and(&[
        "mmdebstrap",
        "mksquashfs",
        "xorriso",
        "mformat",
        "mcopy",
        "docker-registry",
        "htpasswd",
        "pyspdxtools",
        "sha256sum",
        "tmux",
    ]),
    an_rpm_image_sbom_lists_its_rpm_database: Needs::root_and(&["mmdebstrap", "pyspdxtools"]),
);
