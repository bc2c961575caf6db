//! Rootless builds. CI runs as root, so the suite makes ordinary users
//! (`tests/common/rootless.rs`): one with subordinate ids, whose kbuild
//! re-executes itself in a user namespace mapped by newuidmap/newgidmap,
//! and one without, who must get an error naming the fix.
//!
//! What rootless must match is root's own result: the build equivalence
//! spec gives root's digest and tree; `kbuild image`, `kbuild iso` and
//! `kbuild disk` of the real Debian core cell, from a cold store of the
//! user's, give the image, ISO and disk bytes of the run's root-built
//! seed; the hostile corpus holds with its sentinels.
//!
//! The composed packages are the honest stand-ins of
//! `tests/common/standins.rs` served on 127.0.0.1; the Debian packages come
//! from the machine's apt mirror.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::builds::{
    assert_clean, interrupt_a_long_run, stderr, store_with_base, store_with_peer_base,
    store_with_pinned_base_for, unpack, write, write_peer_context,
};
use common::harness::Needs;
use common::hostile::{run_corpus, Placement};
use common::rootless::{with_subids, without_subids};
use common::seed::{seeded_store, SEED_EPOCH};
use common::{disk_tree, kbuild, ok, sha256_hex, standins};

const EPOCH: &[(&str, &str)] = &[("SOURCE_DATE_EPOCH", "1700000000")];

/// The digest `kbuild build` prints last.
fn built_digest(stdout: &str) -> String {
    let digest = stdout.lines().last().unwrap_or_default().to_string();
    assert!(digest.starts_with("sha256:"), "{stdout}");
    digest
}

/// The first subordinate uid of `name` (`/etc/subuid`).
fn first_subuid(name: &str) -> u32 {
    fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.next().unwrap().parse().unwrap())
        })
        .unwrap()
}

fn without_subordinate_ids_the_error_names_the_fix_and_exits_1() {
    let user = without_subids();
    let work = user.tempdir("nosubids");
    let context = work.path().join("context");
    write(&context.join("Dockerfile"), "FROM scratch\nRUN true\n");
    user.give(work.path());
    let store = work.path().join("store");
    let args = |rootless: bool| {
        let mut args = vec![
            "build",
            "--store",
            store.to_str().unwrap(),
            context.to_str().unwrap(),
        ];
        if rootless {
            args.push("--rootless");
        }
        args
    };
    let fix = "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535";
    let forced = user.command(&args(true)).output().unwrap();
    let err = stderr(&forced);
    assert_eq!(forced.status.code(), Some(1), "{err}");
    assert!(
        err.contains("kbuild-nosubids has no range in /etc/subuid"),
        "{err}"
    );
    assert!(err.contains(&format!("{fix} kbuild-nosubids")), "{err}");
    assert!(!store.exists(), "--rootless stopped before the store");
    // Auto mode runs unprivileged and stops at the first step that needs
    // privileges, with the same fix in its hint.
    let auto = user.command(&args(false)).output().unwrap();
    let err = stderr(&auto);
    assert_eq!(auto.status.code(), Some(1), "{err}");
    assert!(err.contains("RUN needs root"), "{err}");
    assert!(err.contains(fix), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `kbuild doctor --format json` as `user`: its items by name.
fn doctor_items(
    user: &common::rootless::User,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let out = user
        .command(&["doctor", "--format", "json"])
        .output()
        .unwrap();
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_string(), i.clone()))
        .collect()
}

fn doctor_reports_rootless_readiness() {
    let ready = doctor_items(with_subids());
    for name in [
        "rootless: subordinate ids",
        "rootless: newuidmap",
        "rootless: user namespaces",
        "rootless: overlayfs in a user namespace",
        "rootless: probe",
    ] {
        assert_eq!(ready[name]["ok"], true, "{name}: {}", ready[name]);
    }
    assert!(
        ready["rootless: probe"]["detail"]
            .as_str()
            .unwrap()
            .contains("overlayfs works in a user namespace"),
        "{}",
        ready["rootless: probe"]
    );
    let missing = doctor_items(without_subids());
    let subids = &missing["rootless: subordinate ids"];
    assert_eq!(subids["ok"], false, "{subids}");
    assert_eq!(subids["required"], true, "{subids}");
    assert!(
        subids["hint"].as_str().unwrap().contains(
            "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 kbuild-nosubids"
        ),
        "{subids}"
    );
    assert!(
        !missing.contains_key("rootless: probe"),
        "no probe without ids"
    );
}

/// A newuidmap that refuses (a range /etc/subuid does not grant) stops
/// kbuild with its message, never a hang; a store made as root is
/// refused rootless (their snapshots differ), naming the way out.
fn a_refused_map_and_a_store_of_roots_are_clear_errors() {
    use std::os::unix::fs::PermissionsExt;
    let user = with_subids();
    let home = user.tempdir("refusals");
    let context = home.path().join("context");
    write(&context.join("Dockerfile"), "FROM scratch\nRUN true\n");
    user.give(home.path());
    // A setuid-root program the readiness check accepts, which fails.
    let fake = tempfile::tempdir().unwrap();
    fs::set_permissions(fake.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let newuidmap = fake.path().join("newuidmap");
    write(
        &newuidmap,
        "#!/bin/sh\necho 'newuidmap: uid range [1-65537) -> [400000-465536) not allowed' >&2\nexit 1\n",
    );
    fs::set_permissions(&newuidmap, fs::Permissions::from_mode(0o4755)).unwrap();
    let store = home.path().join("store");
    let mut refused = user.command(&[
        "build",
        "--store",
        store.to_str().unwrap(),
        context.to_str().unwrap(),
    ]);
    refused.env("PATH", format!("{}:/usr/bin:/bin", fake.path().display()));
    let out = common::output_within(refused, std::time::Duration::from_secs(60));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("newuidmap failed for the user namespace"),
        "{err}"
    );
    assert!(err.contains("not allowed"), "{err}");

    let root_store = home.path().join("root-store");
    ok(&kbuild(
        &["images", "--store", root_store.to_str().unwrap()],
        &[],
    ));
    user.give(&root_store);
    let out = user
        .command(&["images", "--store", root_store.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was made as root, but this kbuild runs rootless"),
        "{err}"
    );
    assert!(err.contains("a store of their own"), "{err}");
}

fn the_equivalence_spec_builds_rootless_to_roots_digest_and_tree() {
    let work = tempfile::tempdir().unwrap();
    let store = store_with_peer_base(work.path());
    let context = work.path().join("context");
    write_peer_context(&context);
    let build = |store: &Path, context: &Path| {
        built_digest(&ok(&kbuild(
            &[
                "build",
                "--store",
                store.to_str().unwrap(),
                context.to_str().unwrap(),
                "-t",
                "peer:kbuild",
            ],
            EPOCH,
        )))
    };
    let root_digest = build(&store, &context);
    let root_tree = disk_tree(&unpack(&store, "peer:kbuild", work.path()));

    let user = with_subids();
    let home = user.tempdir("equivalence");
    let user_context = home.path().join("context");
    write_peer_context(&user_context);
    user.give(home.path());
    let (user_store, user_digest, user_tree) = user.run(|| {
        let user_store = store_with_peer_base(home.path());
        let digest = build(&user_store, &user_context);
        let tree = disk_tree(&unpack(&user_store, "peer:kbuild", home.path()));
        (user_store, digest, tree)
    });
    assert_eq!(user_digest, root_digest);
    assert_eq!(user_tree.len(), root_tree.len());
    let differ: Vec<&String> = root_tree
        .iter()
        .filter(|(path, entry)| user_tree.get(*path) != Some(entry))
        .map(|(path, _)| path)
        .collect();
    assert!(differ.is_empty(), "differ: {differ:?}");
    assert!(user_tree["srv/data/done"].contains("uid=1500 gid=1500"));
    // On disk the user's store holds the image's ids as subordinate ids:
    // uid 1500 of the image is the 1500th id after the user's own.
    let first = first_subuid(user.name);
    let owners: std::collections::BTreeSet<u32> = common::walk(&user_store.join("snapshots"), None)
        .into_iter()
        .map(|(_, _, meta)| meta.uid())
        .collect();
    assert!(owners.contains(&(first + 1500 - 1)), "{owners:?}");
    assert!(owners.contains(&user.uid), "{owners:?}");
    assert!(!owners.contains(&0), "a file of root's in the user's store");
}

/// SIGINT to the kbuild the user started (the outer process, which maps
/// the namespace) reaches the build inside it: the sandbox dies, nothing
/// is left mounted or half-written.
fn sigint_stops_a_rootless_build_and_its_sandbox() {
    let user = with_subids();
    let home = user.tempdir("sigint");
    let sleeper = format!("sleep {}", 200_000 + std::process::id());
    let context = home.path().join("context");
    write(
        &context.join("Dockerfile"),
        &format!("FROM debian:bookworm\nRUN echo started; {sleeper} & {sleeper}; echo finished\n"),
    );
    user.give(home.path());
    user.run(|| {
        let store = store_with_base(home.path());
        interrupt_a_long_run(
            user.command(&[
                "build",
                "--store",
                store.to_str().unwrap(),
                context.to_str().unwrap(),
            ]),
            &sleeper,
        );
        assert_clean(&store);
    });
}

fn the_hostile_corpus_passes_rootless() {
    let user = with_subids();
    let home = user.tempdir("hostile");
    user.run(|| {
        let store = store_with_base(home.path());
        let fresh = || user.tempdir("case");
        let ready = |path: &Path| user.give(path);
        run_corpus(
            &store,
            &Placement {
                work: &fresh,
                ready: &ready,
                rootless: true,
            },
        );
    });
}

/// `kbuild COMMAND` of the Debian core cell with the seed's epoch and
/// `--report REPORT` (and `extra`); its stdout and the report.
fn core_cell(
    command: &str,
    project: &Path,
    store: &Path,
    report: &Path,
    extra: &[&str],
) -> (String, serde_json::Value) {
    let mut args = vec![
        command,
        "--project",
        project.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--flavor",
        "debian",
        "--variant",
        "core",
        "--base-image",
        "debian:bookworm",
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let printed = ok(&kbuild(&args, &[("SOURCE_DATE_EPOCH", SEED_EPOCH)]));
    let report = serde_json::from_slice(&fs::read(report).unwrap()).unwrap();
    (printed, report)
}

/// `kbuild iso` of the core cell into `out`; its report.
fn core_iso(project: &Path, store: &Path, out: &Path) -> serde_json::Value {
    let report = out.with_extension("json");
    let out = out.to_str().unwrap();
    core_cell("iso", project, store, &report, &["-o", out]).1
}

/// `kbuild disk --format raw` of the core cell into `out`: the disk's
/// sha256.
fn core_disk(project: &Path, store: &Path, out: &Path) -> String {
    let report = out.with_extension("json");
    let args = ["-o", out.to_str().unwrap(), "--format", "raw"];
    let (_, report) = core_cell("disk", project, store, &report, &args);
    report["artifacts"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

fn debian_core_image_and_iso_rootless_equal_roots() {
    let http = standins::binaries();
    let work = tempfile::tempdir().unwrap();
    let root_store = seeded_store(work.path());
    let root_project = standins::project(work.path(), &http);
    let root_report = core_iso(&root_project, &root_store, &work.path().join("out"));
    let root_disk = core_disk(&root_project, &root_store, &work.path().join("disk"));

    let user = with_subids();
    let home = user.tempdir("debian");
    let project = standins::project(home.path(), &http);
    user.give(home.path());
    let (image, built, report, disk) = user.run(|| {
        let store = store_with_pinned_base_for(home.path(), SEED_EPOCH, "amd64");
        standins::import_images_for(&store, "amd64");
        let image_report = home.path().join("image.json");
        let (image, built) = core_cell("image", &project, &store, &image_report, &[]);
        let iso = core_iso(&project, &store, &home.path().join("out"));
        let disk = core_disk(&project, &store, &home.path().join("disk"));
        (image, built, iso, disk)
    });
    // The user's store was cold: every step of the spec ran rootless.
    let results: Vec<&serde_json::Value> = built["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|stage| stage["steps_run"].as_array().unwrap())
        .map(|step| &step["result"])
        .collect();
    assert!(results.len() >= 5, "{built}");
    assert!(results.iter().all(|r| *r != "cached"), "{results:?}");
    let root_digest = root_report["image_digest"].as_str().unwrap();
    assert!(
        image.contains(root_digest),
        "rootless image: {image}\nroot's: {root_digest}"
    );
    assert_eq!(report["image_digest"], root_report["image_digest"]);
    assert_eq!(report["sha256"], root_report["sha256"]);
    let iso = |r: &serde_json::Value| fs::read(r["iso"].as_str().unwrap()).unwrap();
    assert_eq!(sha256_hex(&iso(&report)), sha256_hex(&iso(&root_report)));
    assert_eq!(
        fs::metadata(report["iso"].as_str().unwrap()).unwrap().uid(),
        user.uid,
        "the ISO is the user's own file"
    );
    // The disk stage (mke2fs, debugfs, the image's grub-mkimage in the
    // sandbox) gives root's bytes too.
    assert_eq!(disk, root_disk);
}

const TOOLS: &[&str] = &[
    "mmdebstrap",
    "findmnt",
    "pgrep",
    "newuidmap",
    "newgidmap",
    "setpriv",
    "useradd",
    "umoci",
];
const ISO_TOOLS: &[&str] = &[
    "mmdebstrap",
    "newuidmap",
    "newgidmap",
    "setpriv",
    "useradd",
    "mksquashfs",
    "xorriso",
    "mformat",
    "mcopy",
    "mke2fs",
    "debugfs",
];

tests!(
    without_subordinate_ids_the_error_names_the_fix_and_exits_1: Needs::root_and(TOOLS),
    doctor_reports_rootless_readiness: Needs::root_and(TOOLS),
    a_refused_map_and_a_store_of_roots_are_clear_errors: Needs::root_and(TOOLS),
    the_equivalence_spec_builds_rootless_to_roots_digest_and_tree: Needs::root_and(TOOLS),
    the_hostile_corpus_passes_rootless: Needs::root_and(TOOLS),
    sigint_stops_a_rootless_build_and_its_sandbox: Needs::root_and(TOOLS),
    debian_core_image_and_iso_rootless_equal_roots: Needs::root_and(ISO_TOOLS),
);
