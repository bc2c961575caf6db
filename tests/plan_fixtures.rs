//! Planner fixtures shaped like Kairos' per-family Dockerfiles: every case
//! pins the exact target, build order and external images
//! (tests/fixtures/plan/README.md explains the rules).

use std::path::{Path, PathBuf};

use kbuild::dockerfile;
use kbuild::plan::{self, PlanRequest, PlanSummary};
use kbuild::platform::Platform;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    build_args: std::collections::BTreeMap<String, String>,
    platform: String,
    target: Option<String>,
    expect: Expect,
}

#[derive(Deserialize)]
struct Expect {
    target: String,
    order: Vec<String>,
    images: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorCase {
    build_args: std::collections::BTreeMap<String, String>,
    platform: String,
    target: Option<String>,
    error_contains: String,
    line: u32,
    column: u32,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan")
}

fn with_suffix(suffix: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut found: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .map(|cases| {
            let name = cases
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(suffix, ".Dockerfile");
            (cases.with_file_name(name), cases)
        })
        .collect();
    found.sort();
    found
}

fn request(
    build_args: &std::collections::BTreeMap<String, String>,
    platform: &str,
    target: &Option<String>,
) -> PlanRequest {
    PlanRequest {
        build_args: build_args.clone(),
        target: target.clone(),
        platform: Some(Platform::parse(platform).unwrap()),
        source_date_epoch: None,
    }
}

#[test]
fn kairos_shaped_files_plan_as_buildkit_would() {
    let files = with_suffix(".cases.json");
    assert!(files.len() >= 4, "fixtures missing: {files:?}");
    let mut checked = 0;
    for (dockerfile, cases_path) in files {
        let file = dockerfile::parse_file(&dockerfile).unwrap_or_else(|e| panic!("{e}"));
        let cases: Vec<Case> =
            serde_json::from_str(&std::fs::read_to_string(&cases_path).unwrap()).unwrap();
        for (i, case) in cases.iter().enumerate() {
            let plan = plan::plan(
                &file,
                &request(&case.build_args, &case.platform, &case.target),
            )
            .unwrap_or_else(|e| panic!("{} case {i}: {e}", dockerfile.display()));
            let want = PlanSummary {
                target: case.expect.target.clone(),
                order: case.expect.order.clone(),
                images: case.expect.images.clone(),
            };
            assert_eq!(plan.summary(), want, "{} case {i}", dockerfile.display());
            // Unreachable stages are the majority in these files: they really are dropped.
            assert!(plan.order.len() < file.stages.len());
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} cases");
}

#[test]
fn broken_graphs_fail_at_the_offending_reference() {
    for (dockerfile, case_path) in with_suffix(".error.json") {
        let file = dockerfile::parse_file(&dockerfile).unwrap();
        let case: ErrorCase =
            serde_json::from_str(&std::fs::read_to_string(&case_path).unwrap()).unwrap();
        let err = plan::plan(
            &file,
            &request(&case.build_args, &case.platform, &case.target),
        )
        .unwrap_err();
        let plan::PlanError::Spec(err) = err else {
            panic!(
                "{}: expected a positioned error, got {err}",
                dockerfile.display()
            )
        };
        assert!(
            err.to_string().contains(&case.error_contains),
            "{}: {err}",
            dockerfile.display()
        );
        assert_eq!(
            (err.pos.line, err.pos.column),
            (case.line, case.column),
            "{}: {err}",
            dockerfile.display()
        );
    }
}

#[test]
fn unknown_target_lists_the_stages() {
    let file = dockerfile::parse("Dockerfile", "FROM a AS one\nFROM b AS two\n").unwrap();
    let err = plan::plan(
        &file,
        &PlanRequest {
            target: Some("three".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "target stage \"three\" could not be found; the stages are: one, two"
    );
}

#[test]
fn graph_errors_have_positions() {
    let cases: &[(&str, &str, (u32, u32))] = &[
        // numeric --from out of range
        (
            "FROM a\nCOPY --from=3 /x /y\n",
            "there is no stage 3",
            (2, 13),
        ),
        // --from naming a later stage (no cycle)
        (
            "FROM a AS one\nCOPY --from=two /x /y\nFROM b AS two\nFROM one\n",
            "cannot copy from stage \"two\", it needs to be defined before current stage \"one\"",
            (2, 13),
        ),
        // a stage copying from itself
        (
            "FROM a AS self\nCOPY --from=self /x /y\n",
            "circular dependency detected on stage: self (self -> self)",
            (2, 13),
        ),
        // mount from a stage that is neither a stage nor an image reference
        (
            "FROM a\nRUN --mount=from=Not_Valid,target=/x true\n",
            "no stage has this name and it is not a valid image reference",
            (2, 5),
        ),
        // invalid stage name after expansion
        (
            "ARG N=9lives\nFROM a AS ${N}\n",
            "invalid stage name \"9lives\"",
            (2, 11),
        ),
        // empty base after expansion
        (
            "ARG B\nFROM ${B}\n",
            "base name (${B}) should not be blank",
            (2, 6),
        ),
        // invalid image reference in FROM
        ("FROM UPPER/case\n", "invalid image reference", (1, 6)),
        // bad --platform after expansion
        (
            "ARG P=linux\nFROM --platform=$P a\n",
            "invalid platform \"linux\"",
            (2, 17),
        ),
    ];
    for (text, message, (line, column)) in cases {
        let file = dockerfile::parse("Dockerfile", text).unwrap();
        let err = match plan::plan(&file, &PlanRequest::default()) {
            Err(plan::PlanError::Spec(e)) => e,
            other => panic!("{text:?}: expected a spec error, got {other:?}"),
        };
        assert!(err.to_string().contains(message), "{text:?}: {err}");
        assert_eq!(
            (err.pos.line, err.pos.column),
            (*line, *column),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn unreachable_stages_are_not_expanded() {
    // The broken stage is never reached from the target, so it cannot fail the plan.
    let text = "FROM a AS good\nFROM a AS broken\nCOPY --from=${X:?boom} / /\nFROM good\n";
    let file = dockerfile::parse("Dockerfile", text).unwrap();
    let plan = plan::plan(&file, &PlanRequest::default()).unwrap();
    assert_eq!(plan.summary().order, vec!["good", "2"]);
    assert_eq!(plan.summary().images, vec!["a"]);
}
