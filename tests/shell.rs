//! `kbuild completions` and `kbuild man`, judged by the programs that use
//! them: bash and fish complete real command lines from the scripts, zsh
//! parses its script, groff renders every man page without a warning.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::harness::Needs;
use common::{kbuild, ok, run_ok as run};

fn script(dir: &Path, shell: &str) -> String {
    let text = ok(&kbuild(&["completions", shell], &[]));
    assert!(
        text.contains("release") && text.contains("keep-storage"),
        "{shell}"
    );
    let path = dir.join(format!("kbuild.{shell}"));
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn bash_and_fish_complete_commands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let bash = script(dir.path(), "bash");
    let complete = |words: &str| {
        let count = words.split(' ').count() - 1;
        run(
            "bash",
            &[
                "-c",
                &format!(
                    "source {bash}; COMP_WORDS=({words}); COMP_CWORD={count}; \
                     _kbuild kbuild \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
                     printf '%s\\n' \"${{COMPREPLY[@]}}\""
                ),
            ],
        )
    };
    assert!(complete("kbuild rel").lines().any(|l| l == "release"));
    assert!(complete("kbuild release --sh")
        .lines()
        .any(|l| l == "--shard"));
    assert!(complete("kbuild cache prune --keep")
        .lines()
        .any(|l| l == "--keep-storage"));
    assert!(complete("kbuild completions z").lines().any(|l| l == "zsh"));

    let fish = script(dir.path(), "fish");
    let complete = |line: &str| {
        run(
            "fish",
            &["-c", &format!("source {fish}; complete -C '{line}'")],
        )
    };
    assert!(complete("kbuild rm").lines().any(|l| l.starts_with("rmi")));
    assert!(complete("kbuild release --on")
        .lines()
        .any(|l| l.starts_with("--only")));
}

fn zsh_parses_and_the_others_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let zsh = script(dir.path(), "zsh");
    run("zsh", &["-n", &zsh]);
    for shell in ["elvish", "powershell"] {
        script(dir.path(), shell);
    }
    let bad = kbuild(&["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

/// groff's warnings on `page`, which must be none.
fn groff_clean(page: &Path) {
    let out = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(page)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", page.display());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "groff warns on {}",
        page.display()
    );
}

fn man_pages_render_cleanly_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let page = ok(&kbuild(&["man"], &[]));
    assert!(
        page.starts_with(".ie") || page.contains(".TH kbuild 1"),
        "{page}"
    );
    let path = dir.path().join("kbuild.1");
    fs::write(&path, &page).unwrap();
    groff_clean(&path);
    let text = run("groff", &["-man", "-Tutf8", path.to_str().unwrap()]);
    assert!(
        text.contains("release") && text.contains("completions"),
        "{text}"
    );

    let pages = dir.path().join("pages");
    ok(&kbuild(&["man", "--dir", pages.to_str().unwrap()], &[]));
    for name in [
        "kbuild.1",
        "kbuild-release.1",
        "kbuild-rmi.1",
        "kbuild-cache-prune.1",
    ] {
        let page = pages.join(name);
        assert!(page.exists(), "no {name}");
        groff_clean(&page);
    }
    let release = run(
        "groff",
        &[
            "-man",
            "-Tutf8",
            pages.join("kbuild-release.1").to_str().unwrap(),
        ],
    );
    assert!(release.contains("--shard"), "{release}");
}

tests!(
    bash_and_fish_complete_commands_and_flags: Needs { root: false, tools: &["bash", "fish"] },
    zsh_parses_and_the_others_are_written: Needs { root: false, tools: &["zsh"] },
    man_pages_render_cleanly_for_every_command: Needs { root: false, tools: &["groff"] },
);
