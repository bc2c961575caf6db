//! The `kbuild` binary as users and CI scripts run it: output contracts,
//! exit codes (0 ok, 1 failed, 2 usage or input error) and error messages.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::root;
use serde_json::Value;

fn kbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run kbuild")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plan_json_is_the_script_contract() {
    let out = kbuild(&[
        "plan",
        "-f",
        "tests/fixtures/plan/kairos-variable-names.Dockerfile",
        "--platform",
        "linux/arm64",
        "--build-arg",
        "MODEL=rpi4",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "target": "all",
            "order": ["arm64-upstream", "kernel-src", "grub-arm64-12", "firmware", "grub-arm64-12-final", "arm64-rpi4", "all"],
            "images": ["debian:12-slim", "quay.io/kairos/kernel-arm64:6.1", "quay.io/kairos/framework:v2.15.3", "busybox:1.36"]
        })
    );
}

#[test]
fn unnamed_stages_are_named_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    std::fs::write(
        &file,
        "FROM alpine:3.20\nRUN true\nFROM scratch\nCOPY --from=0 /etc/os-release /\n",
    )
    .unwrap();
    let out = kbuild(&["plan", "-f", file.to_str().unwrap(), "--format", "json"]);
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"target": "1", "order": ["0", "1"], "images": ["alpine:3.20"]})
    );
}

#[test]
fn plan_text_shows_order_and_images() {
    let out = kbuild(&[
        "plan",
        "-f",
        "tests/fixtures/plan/kairos-variable-names.Dockerfile",
        "--platform",
        "linux/amd64",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("target:   all\nplatform: linux/amd64\nstages:\n"),
        "{text}"
    );
    assert!(
        text.contains("   1. amd64-upstream               from image debian:12-slim\n"),
        "{text}"
    );
    assert!(
        text.contains("   7. all                          from stage amd64-generic\n"),
        "{text}"
    );
    assert!(text.contains("images:\n  - debian:12-slim\n"), "{text}");
}

#[test]
fn spec_errors_exit_2_with_file_line_column_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile.bad");
    std::fs::write(&file, "FROM debian\nRUN <<EOF\necho never closed\n").unwrap();
    let out = kbuild(&["plan", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("unterminated heredoc"), "{err}");
    assert!(
        err.contains(&format!("--> {}:2:5", file.display())),
        "{err}"
    );
    assert!(err.contains("2 | RUN <<EOF\n  |     ^"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["plan"],
        vec!["plan", "-f", "x", "--flavor", "debian"],
        vec![
            "plan",
            "-f",
            "images/Dockerfile.debian",
            "--platform",
            "linux",
        ],
        vec!["plan", "--bogus"],
        vec!["plan", "-f", "Dockerfile", "--build-arg", "NOEQUALS"],
        vec!["frobnicate"],
    ] {
        let out = kbuild(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn missing_spec_file_names_the_path() {
    let out = kbuild(&["plan", "-f", "/nonexistent/Dockerfile"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read /nonexistent/Dockerfile"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_documents_every_plan_flag() {
    let out = kbuild(&["plan", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "--file",
        "--flavor",
        "--release",
        "--variant",
        "--k8s",
        "--k8s-version",
        "--arch",
        "--project",
        "--build-arg",
        "--target",
        "--platform",
        "--format",
    ] {
        assert!(help.contains(flag), "plan --help lacks {flag}:\n{help}");
    }
    let top = stdout(&kbuild(&["--help"]));
    assert!(top.contains("plan"), "{top}");
}

fn project_flavors() -> Vec<String> {
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root().join("kbuild.yaml")).unwrap())
            .unwrap();
    config["flavors"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_shipped_flavor_plans_with_kbuild_yaml_args() {
    let flavors = project_flavors();
    for expected in [
        "debian",
        "ubuntu",
        "alpine",
        "fedora",
        "rockylinux",
        "opensuse",
    ] {
        assert!(
            flavors.iter().any(|f| f == expected),
            "kbuild.yaml lacks {expected}"
        );
    }
    for flavor in &flavors {
        for variant in ["core", "standard"] {
            for arch in ["amd64", "arm64"] {
                let out = kbuild(&[
                    "plan",
                    "--flavor",
                    flavor,
                    "--variant",
                    variant,
                    "--arch",
                    arch,
                    "--format",
                    "json",
                ]);
                assert!(
                    out.status.success(),
                    "{flavor} {variant} {arch}: {}",
                    stderr(&out)
                );
                let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
                let order = json["order"].as_array().unwrap();
                assert!(!order.is_empty(), "{flavor}: empty order");
                assert_eq!(json["target"], order.last().unwrap().clone(), "{flavor}");
                let base = json["build_args"]["BASE_IMAGE"].as_str().unwrap();
                assert!(
                    json["images"].as_array().unwrap().iter().any(|i| i == base),
                    "{flavor}: {base} not in images"
                );
                assert_eq!(json["platform"], format!("linux/{arch}"));
                let iso = json["artifacts"]["iso"].as_str().unwrap();
                assert!(
                    iso.starts_with(&format!("kairos-{flavor}-"))
                        && iso.contains(&format!("-{variant}-{arch}-")),
                    "{iso}"
                );
                let layers = json["layers"].as_array().unwrap();
                assert_eq!(
                    layers.len(),
                    if variant == "core" { 1 } else { 2 },
                    "{flavor} {variant}"
                );
            }
        }
    }
}

#[test]
fn standard_plan_composes_provider_and_k8s() {
    for (k8s, binary) in [("k3s", "/usr/bin/k3s"), ("k0s", "/usr/bin/k0s")] {
        let out = kbuild(&[
            "plan",
            "--flavor",
            "debian",
            "--variant",
            "standard",
            "--k8s",
            k8s,
            "--arch",
            "amd64",
            "--format",
            "json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let version = json["k8s"]["version"].as_str().unwrap();
        let provider = &json["layers"][1];
        assert_eq!(provider["layer"], "provider");
        let targets: Vec<&str> = provider["packages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| {
                p["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["to"].as_str().unwrap())
            })
            .collect();
        assert!(targets.contains(&binary), "{targets:?}");
        assert!(
            targets.iter().any(|t| t.contains("agent-provider-kairos")),
            "{targets:?}"
        );
        let iso = json["artifacts"]["iso"].as_str().unwrap();
        let bare = version.trim_start_matches('v');
        assert!(iso.ends_with(&format!("-{k8s}v{bare}.iso")), "{iso}");
        let image = json["artifacts"]["image"].as_str().unwrap();
        assert!(
            !image.split(':').next_back().unwrap().contains('+'),
            "{image}"
        );
    }
}

/// Plans debian in a copy of the project that `edit` broke on purpose.
fn plan_broken_project(edit: impl FnOnce(&Path)) -> Output {
    let dir = project_copy();
    edit(dir.path());
    kbuild(&[
        "plan",
        "--project",
        dir.path().to_str().unwrap(),
        "--flavor",
        "debian",
    ])
}

/// A copy of the shipped project in a temp dir, to break on purpose.
fn project_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::copy_project(dir.path());
    dir
}

#[test]
fn unknown_project_keys_are_errors_naming_the_key_path() {
    let out = plan_broken_project(|dir| {
        let flavor = dir.join("flavors/debian.yaml");
        let text = std::fs::read_to_string(&flavor).unwrap();
        std::fs::write(
            &flavor,
            text.replacen("boot:\n", "boot:\n  kernal: /boot/vmlinuz\n", 1),
        )
        .unwrap();
    });
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("flavors/debian.yaml:"), "{err}");
    assert!(
        err.contains("at `boot.kernal`") && err.contains("unknown field `kernal`"),
        "{err}"
    );

    let out = plan_broken_project(|dir| {
        let config = dir.join("kbuild.yaml");
        let text = std::fs::read_to_string(&config).unwrap() + "\ncolour: blue\n";
        std::fs::write(&config, text).unwrap();
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown field `colour`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn project_cross_checks_fail_with_the_key() {
    let out = plan_broken_project(|dir| {
        let config = dir.join("kbuild.yaml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text: Vec<&str> = text
            .lines()
            .map(|l| {
                if l.starts_with("default_flavor:") {
                    "default_flavor: gentoo"
                } else {
                    l
                }
            })
            .collect();
        std::fs::write(&config, text.join("\n")).unwrap();
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("at `default_flavor`: \"gentoo\" is not one of `flavors`"),
        "{}",
        stderr(&out)
    );

    for (squashfs, message) in [
        (
            "  squashfs:\n    compression: zstd\n    level: 23\n",
            "zstd levels are 1 to 22, not 23",
        ),
        (
            "  squashfs:\n    compression: gzip\n    level: 0\n",
            "gzip levels are 1 to 9, not 0",
        ),
        (
            "  squashfs:\n    compression: xz\n    level: 6\n",
            "xz takes no level",
        ),
    ] {
        let out = plan_broken_project(|dir| {
            let config = dir.join("kbuild.yaml");
            let text = std::fs::read_to_string(&config).unwrap();
            let text: String = text
                .lines()
                .take_while(|l| !l.starts_with("iso:"))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&config, format!("{text}iso:\n{squashfs}")).unwrap();
        });
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("at `iso.squashfs.level`: {message}")),
            "{}",
            stderr(&out)
        );
    }

    let out = kbuild(&["plan", "--flavor", "gentoo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown flavor \"gentoo\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn package_names_are_plain_and_match_their_file() {
    for (name, says) in [
        ("\"x/../../../etc/cron.d\"", "lowercase letters, digits"),
        ("k3s-renamed", "must be \"k3s\", the file's name"),
    ] {
        let out = plan_broken_project(|dir| {
            let path = dir.join("packages/k3s.yaml");
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("name: k3s", &format!("name: {name}"));
            std::fs::write(&path, text).unwrap();
        });
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("k3s.yaml") && err.contains(says), "{err}");
    }
}

#[test]
fn placeholder_and_malformed_package_checksums_are_refused_with_file_and_key() {
    for (bad, says) in [
        ("0".repeat(64), "all zeros is a placeholder"),
        ("74897e4af26e".to_string(), "64 lowercase hex digits"),
    ] {
        let out = plan_broken_project(|dir| {
            let path = dir.join("packages/k3s.yaml");
            let text = std::fs::read_to_string(&path).unwrap().replace(
                "74897e4af26ea383ce50f445752f40ca63a0aef0d90994fb74073c43063eeeb2",
                &bad,
            );
            std::fs::write(&path, text).unwrap();
        });
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("k3s.yaml"), "{err}");
        assert!(err.contains("sources.amd64.sha256"), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn doctor_lists_every_prerequisite_with_hints_for_the_missing() {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("xorriso");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'xorriso 1.5.4 : RockRidge filesystem manipulator'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["doctor", "--format", "json"])
        .env("PATH", bin.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |name: &str| {
        items
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {items}"))
            .clone()
    };
    let xorriso = by_name("xorriso");
    assert_eq!(xorriso["ok"], true);
    assert!(
        xorriso["detail"].as_str().unwrap().contains("1.5.4"),
        "{xorriso}"
    );
    for missing in [
        "mksquashfs",
        "mformat",
        "mmd",
        "mcopy",
        "qemu-system-x86_64",
        "runc",
    ] {
        let item = by_name(missing);
        assert_eq!(item["ok"], false, "{item}");
        assert!(item["hint"].as_str().unwrap().contains("install"), "{item}");
    }
    // Without QEMU on PATH, KVM cannot be proven: boots would use TCG.
    assert!(
        by_name("kvm")["detail"].as_str().unwrap().contains("TCG"),
        "{items}"
    );
    assert!(by_name("ovmf")["purpose"]
        .as_str()
        .unwrap()
        .contains("uefi"));
    // The project's matrix has arm64: what building and booting it on
    // this amd64 host needs is listed, and required.
    for name in [
        "binfmt-arm64",
        "qemu-system-aarch64",
        "aavmf",
        "aavmf-secure-boot",
    ] {
        assert_eq!(by_name(name)["required"], true, "{items}");
    }
    assert_eq!(by_name("qemu-system-aarch64")["ok"], false, "{items}");
    assert!(
        by_name("binfmt-arm64")["purpose"]
            .as_str()
            .unwrap()
            .contains("RUN steps of arm64 images"),
        "{items}"
    );

    // Outside a project every architecture is listed, the foreign one's
    // needs as optional: they alone do not fail doctor.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["doctor", "--format", "json"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    let arm: Vec<&Value> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"].as_str().unwrap().contains("arm64") || i["name"] == "aavmf")
        .collect();
    assert!(!arm.is_empty(), "{items}");
    assert!(arm.iter().all(|i| i["required"] == false), "{items}");
}

#[test]
fn boot_refuses_a_bad_regex_a_bad_login_a_bad_kbuild_accel_and_a_missing_iso() {
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["boot", "x.iso", "--expect", "("])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--expect is not a regular expression"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["boot", "x.iso", "--login", "root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--login takes USER:PASS"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["boot", "x.iso"])
        .env("KBUILD_ACCEL", "hvf")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("KBUILD_ACCEL=\"hvf\" is not an accelerator"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["boot", "/nonexistent/x.iso"])
        .output()
        .unwrap();
    // A file the user named that is not there: bad input.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not an ISO file"),
        "{}",
        stderr(&out)
    );
}

/// The GitHub and GitLab release workflows build and merge only through
/// `ci/release.sh` (which tests/release.rs runs), and their shard counts
/// agree with their shard run lines, so they cannot drift from the test.
#[test]
fn ci_workflows_run_the_release_script_the_release_test_runs() {
    let read = |name: &str| -> serde_yaml_ng::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci").join(name);
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let lines = |steps: &serde_yaml_ng::Value, key: &str| -> Vec<String> {
        steps
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|step| match key {
                "run" => step["run"].as_str(),
                _ => step.as_str(),
            })
            .flat_map(|text| text.lines().map(str::trim).map(String::from))
            .filter(|line| line.contains("ci/release.sh"))
            .collect()
    };

    let github = read("github-release.yml");
    let shards = github["jobs"]["shard"]["strategy"]["matrix"]["shard"]
        .as_sequence()
        .unwrap();
    let count = shards.len();
    let expected: Vec<u64> = (1..=count as u64).collect();
    let listed: Vec<u64> = shards.iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(listed, expected);
    assert_eq!(
        lines(&github["jobs"]["shard"]["steps"], "run"),
        [format!("ci/release.sh shard \"$SHARD/{count}\"")]
    );
    let shard_env = &github["jobs"]["shard"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|step| step["env"]["SHARD"].is_string())
        .expect("a step that passes the shard through SHARD")["env"]["SHARD"];
    assert_eq!(shard_env.as_str(), Some("${{ matrix.shard }}"));
    assert_eq!(github["jobs"]["merge"]["needs"].as_str(), Some("shard"));
    assert_eq!(
        lines(&github["jobs"]["merge"]["steps"], "run"),
        ["ci/release.sh merge"]
    );

    let gitlab = read("gitlab-release.yml");
    assert!(gitlab["release-shard"]["parallel"].as_u64().unwrap() >= 2);
    assert_eq!(
        lines(&gitlab["release-shard"]["script"], "script"),
        [r#"ci/release.sh shard "$CI_NODE_INDEX/$CI_NODE_TOTAL""#]
    );
    assert_eq!(
        gitlab["release-merge"]["needs"][0].as_str(),
        Some("release-shard")
    );
    assert_eq!(
        lines(&gitlab["release-merge"]["script"], "script"),
        ["ci/release.sh merge"]
    );

    let script = Command::new("bash")
        .args(["-n", "ci/release.sh"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(script.success());
}

/// A base image no registry serves (a closed port on 127.0.0.1) fails the
/// job (exit 1) with one `error:` line, its cause once, and the way out.
#[test]
fn an_unpullable_base_image_hints_at_base_image() {
    let dir = project_copy();
    let flavor = dir.path().join("flavors/alpine.yaml");
    let text = std::fs::read_to_string(&flavor).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("127.0.0.1:{port}/library/alpine:3.20");
    std::fs::write(
        &flavor,
        text.replace("docker.io/library/alpine:3.20", &unreachable),
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = kbuild(&[
        "image",
        "--project",
        dir.path().to_str().unwrap(),
        "--flavor",
        "alpine",
        "--store",
        store.path().to_str().unwrap(),
        "--progress=plain",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let error_lines = err.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(error_lines, 1, "{err}");
    let cause_lines = err.lines().filter(|l| l.contains("Caused by:")).count();
    assert_eq!(cause_lines, 1, "{err}");
    assert!(
        err.contains(&format!("error: cannot pull {unreachable}")),
        "{err}"
    );
    assert!(
        err.contains("hint: the flavor's base image cannot be pulled"),
        "{err}"
    );
    assert!(err.contains("--base-image NAME"), "{err}");
}

/// A file or directory named on the command line that is not there is bad
/// input: exit 2, naming the path.
#[test]
fn missing_input_files_exit_2() {
    let store = tempfile::tempdir().unwrap();
    let store = store.path().to_str().unwrap();
    for args in [
        vec![
            "import",
            "/nonexistent/base.tar",
            "-t",
            "x:y",
            "--store",
            store,
        ],
        vec!["check", "--rootfs", "/nonexistent/rootfs"],
        vec![
            "release",
            "merge",
            "/nonexistent/shard-1",
            "-o",
            "/nonexistent/out",
        ],
        vec!["boot", "/nonexistent/x.iso"],
        vec!["build", "-f", "/nonexistent/Dockerfile", "/tmp"],
    ] {
        let out = kbuild(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("/nonexistent/"), "{args:?}: {err}");
    }
}
