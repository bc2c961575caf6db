//! The release workflows as their platforms' linters judge them, offline:
//! actionlint and zizmor on `ci/github-release.yml`, GitLab's CI schema
//! (the copy check-jsonschema ships) on `ci/gitlab-release.yml`. Each
//! judge is also shown a broken copy and must object, so a judge that
//! reads nothing cannot pass these tests.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::harness::Needs;

fn ci_file(name: &str) -> PathBuf {
    common::root().join("ci").join(name)
}

fn judge(program: &str, args: &[&str], file: &Path) -> Output {
    Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `name`'s text with `from` replaced by `to`, in a temp dir.
fn broken_copy(name: &str, from: &str, to: &str) -> (tempfile::TempDir, PathBuf) {
    let original = fs::read_to_string(ci_file(name)).unwrap();
    assert!(original.contains(from), "{name} no longer holds {from:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, original.replacen(from, to, 1)).unwrap();
    (dir, path)
}

fn actionlint_finds_nothing_in_the_github_workflow() {
    let out = judge("actionlint", &[], &ci_file("github-release.yml"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).trim().is_empty(), "{}", text(&out));
    // A matrix value the workflow does not define is an error to it.
    let (_dir, broken) = broken_copy(
        "github-release.yml",
        "SHARD: ${{ matrix.shard }}",
        "SHARD: ${{ matrix.nope }}",
    );
    let out = judge("actionlint", &[], &broken);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nope"), "{}", text(&out));
}

fn zizmor_finds_nothing_in_the_github_workflow() {
    // --offline: no audit may ask GitHub anything.
    let out = judge("zizmor", &["--offline"], &ci_file("github-release.yml"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("No findings to report"),
        "{}",
        text(&out)
    );
    // An action by a moving tag is a finding.
    let (_dir, broken) = broken_copy(
        "github-release.yml",
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1",
        "actions/checkout@v7",
    );
    let out = judge("zizmor", &["--offline"], &broken);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("unpinned-uses"), "{}", text(&out));
}

fn the_gitlab_pipeline_passes_gitlab_s_ci_schema() {
    let schema = ["--builtin-schema", "vendor.gitlab-ci"];
    let out = judge("check-jsonschema", &schema, &ci_file("gitlab-release.yml"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok -- validation done"),
        "{}",
        text(&out)
    );
    // A job key GitLab does not know is refused.
    let (_dir, broken) = broken_copy("gitlab-release.yml", "  parallel: 3", "  paralel: 3");
    let out = judge("check-jsonschema", &schema, &broken);
    assert!(!out.status.success(), "{}", text(&out));
}

const LINTERS: Needs = Needs {
    root: false,
    tools: &["actionlint", "zizmor", "check-jsonschema"],
};

tests!(
    actionlint_finds_nothing_in_the_github_workflow: LINTERS,
    zizmor_finds_nothing_in_the_github_workflow: LINTERS,
    the_gitlab_pipeline_passes_gitlab_s_ci_schema: LINTERS,
);
