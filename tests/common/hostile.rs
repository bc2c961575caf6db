//! The hostile Dockerfile corpus, shared by the root suite
//! (`tests/hostile_builds.rs`) and the rootless one (`tests/rootless.rs`).
//!
//! Specs that try to reach the host through
//! heredoc names, COPY/ADD sources, symlinks in the context, .dockerignore
//! negations, mount sources and cache ids, secrets, WORKDIR and COPY
//! destinations through links, a RUN that swaps a mount stub's parent for a
//! link to the host, and archives with hostile members.
//!
//! Each case states its expected outcome (a clear error naming what is
//! wrong, a build, or "contained": either, as long as nothing escapes).
//! Around every case a sentinel proves that nothing outside the store,
//! the context and the requested outputs changed: the `outside/` tree next
//! to the context (which holds a secret and targets for every trick), the
//! context itself, a host path under /tmp that the specs aim at, and the
//! host's `/` listing; the secret must be in no blob of the store.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::builds::{assert_absent_from_blobs, assert_clean, stderr, write};
use super::evil_tar::Evil;
use super::{disk_tree, kbuild, Tree};

/// Where each case's context and outside/ tree live: a fresh directory,
/// and what to do once the case's files are written (the rootless suite
/// gives them to its user).
pub struct Placement<'a> {
    pub work: &'a dyn Fn() -> tempfile::TempDir,
    pub ready: &'a dyn Fn(&Path),
    /// kbuild runs rootless: cases that say so expect another outcome.
    pub rootless: bool,
}

/// Cases in temporary directories of root's.
pub fn in_temp_dirs(_: &Path) {}

/// What the outside/ secret file holds; no blob may contain it.
const SECRET: &str = "kbuild-hostile-secret-5d1e7a";

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Fails with this text in its message.
    Error(&'static str),
    /// Builds.
    Builds,
    /// Either, as long as nothing escapes.
    Contained,
}

struct Case {
    name: &'static str,
    /// `{OUT}` is the outside/ dir, `{HOST}` a host path that must never
    /// appear.
    spec: &'static str,
    /// Extra context files or links.
    setup: fn(&Env),
    /// Extra build flags.
    flags: fn(&Env) -> Vec<String>,
    expect: Expect,
    /// Where a rootless build must end otherwise.
    rootless: Option<Expect>,
}

struct Env {
    context: PathBuf,
    outside: PathBuf,
    host: PathBuf,
}

fn none(_: &Env) {}

fn no_flags(_: &Env) -> Vec<String> {
    Vec::new()
}

fn case(name: &'static str, spec: &'static str, expect: Expect) -> Case {
    Case {
        name,
        spec,
        setup: none,
        flags: no_flags,
        expect,
        rootless: None,
    }
}

fn rootless_expects(mut c: Case, expect: Expect) -> Case {
    c.rootless = Some(expect);
    c
}

fn with_setup(mut c: Case, setup: fn(&Env)) -> Case {
    c.setup = setup;
    c
}

fn link(target: impl AsRef<Path>, at: PathBuf) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        case(
            "heredoc_absolute_name",
            "FROM scratch\nCOPY <<{HOST}/pwned /x\nhello from heredoc\n{HOST}/pwned\n",
            Error("cannot contain '/'"),
        ),
        case(
            "heredoc_dotdot_name",
            "FROM scratch\nCOPY <<../../pwned /x\nbody\n../../pwned\n",
            Error("cannot contain '/'"),
        ),
        case(
            "heredoc_dotdot_alone",
            "FROM scratch\nCOPY <<.. /x\nbody\n..\n",
            Error("be '.' or '..'"),
        ),
        case(
            "add_heredoc_absolute_name",
            "FROM scratch\nADD <<{HOST}/add /x\nbody\n{HOST}/add\n",
            Error("cannot contain '/'"),
        ),
        case(
            "run_heredoc_delimiter_is_not_a_file",
            "FROM debian:bookworm\nRUN <<{HOST}/run\necho hi > /run-heredoc\n{HOST}/run\n",
            Builds,
        ),
        case(
            "copy_absolute_source",
            "FROM scratch\nCOPY {OUT}/secret.txt /x\n",
            Error("not found in the build context"),
        ),
        case(
            "copy_dotdot_source",
            "FROM scratch\nCOPY ../outside/secret.txt /x\n",
            Error("not found in the build context"),
        ),
        case(
            "copy_parents_dotdot_source",
            "FROM scratch\nCOPY --parents ../outside/secret.txt /x/\n",
            Error("not found in the build context"),
        ),
        with_setup(
            case(
                "copy_relative_symlink_out_of_the_context",
                "FROM scratch\nCOPY rel-link /x\n",
                Contained,
            ),
            |e| link("../outside/secret.txt", e.context.join("rel-link")),
        ),
        with_setup(
            case(
                "copy_absolute_symlink_out_of_the_context",
                "FROM scratch\nCOPY abs-link /x\n",
                Contained,
            ),
            |e| link(e.outside.join("secret.txt"), e.context.join("abs-link")),
        ),
        with_setup(
            case(
                "copy_through_a_symlinked_dir",
                "FROM scratch\nCOPY dir-link/secret.txt /x\n",
                Contained,
            ),
            |e| link("../outside", e.context.join("dir-link")),
        ),
        with_setup(
            case(
                "copy_glob_through_a_symlinked_dir",
                "FROM scratch\nCOPY dir-link/* /x/\n",
                Contained,
            ),
            |e| link(&e.outside, e.context.join("dir-link")),
        ),
        with_setup(
            case(
                "dockerignore_negation_reaching_out",
                "FROM scratch\nCOPY . /ctx/\n",
                Builds,
            ),
            |e| {
                write(
                    &e.context.join(".dockerignore"),
                    "*\n!../outside/secret.txt\n!/../outside\n!Dockerfile\n",
                )
            },
        ),
        case(
            "bind_mount_source_dotdot",
            "FROM debian:bookworm\nRUN --mount=type=bind,source=../..,target=/m sh -c 'cat /m/outside/secret.txt /m/*/outside/secret.txt > /leak 2>/dev/null; true'\n",
            Builds,
        ),
        case(
            "writable_bind_mount_writes_stay_out_of_the_context",
            "FROM debian:bookworm\nRUN --mount=type=bind,source=.,target=/m,rw sh -c 'echo pwned > /m/written && rm /m/Dockerfile'\n",
            Builds,
        ),
        case(
            "bind_mount_from_an_image_dotdot",
            "FROM debian:bookworm\nRUN --mount=type=bind,from=debian:bookworm,source=../../..,target=/m ls /m > /listing\n",
            Builds,
        ),
        case(
            "cache_id_dotdot",
            "FROM debian:bookworm\nRUN --mount=type=cache,id=../../../../../outside,target=/c touch /c/pwned\n",
            Builds,
        ),
        case(
            "cache_id_absolute",
            "FROM debian:bookworm\nRUN --mount=type=cache,id={HOST},target=/c touch /c/pwned\n",
            Builds,
        ),
        Case {
            flags: |e| {
                vec![
                    "--secret".into(),
                    format!("id=s,src={}", e.context.join("secret-link").display()),
                ]
            },
            ..with_setup(
                case(
                    "secret_through_a_symlink_is_read_only",
                    "FROM debian:bookworm\nRUN --mount=type=secret,id=s,target=/run/s sh -c 'cat /run/s > /dev/null; echo overwritten > /run/s; true'\n",
                    Builds,
                ),
                |e| link(e.outside.join("secret.txt"), e.context.join("secret-link")),
            )
        },
        case(
            "workdir_through_a_symlink_to_the_root",
            "FROM debian:bookworm\nRUN ln -s / /escape\nWORKDIR /escape{HOST}\n",
            Builds,
        ),
        case(
            "copy_destination_through_a_symlink_to_a_host_dir",
            "FROM debian:bookworm\nRUN ln -s {OUT} /hostdir\nCOPY Dockerfile /hostdir/pwned\n",
            Builds,
        ),
        with_setup(
            case(
                "run_swaps_a_mount_stubs_parent_for_a_host_symlink",
                "FROM debian:bookworm\nRUN --mount=type=tmpfs,target=/stub/b/m sh -c 'mv /stub /stub.old && ln -s {OUT}/a /stub'\n",
                Builds,
            ),
            // An empty dir shaped exactly like the stub the helper makes:
            // the old cleanup followed the link and removed it.
            |e| fs::create_dir_all(e.outside.join("a/b/m")).unwrap(),
        ),
        with_setup(
            case(
                "add_of_a_local_archive_with_hostile_members",
                "FROM scratch\nADD evil.tar /x/\n",
                Contained,
            ),
            |e| {
                let out = e.outside.display().to_string();
                let tar = Evil::default()
                    .file("../../outside-pwned", b"pwned")
                    .file(&format!("{}/abs-pwned", e.host.display()), b"pwned")
                    .symlink("esc", &out)
                    .file("esc/pwned", b"pwned")
                    .hardlink("hl", &format!("{out}/secret.txt"))
                    .finish();
                fs::write(e.context.join("evil.tar"), tar).unwrap();
            },
        ),
        // Rootless, no device node can be made: ADD names the entry.
        with_setup(
            rootless_expects(case(
                "device_nodes_from_layers_do_not_open_in_run",
                "FROM debian:bookworm\nADD nodes.tar /\nRUN sh -c 'if head -c 1 /fake-zero > /dev/null 2>&1; then echo the node opened; exit 1; fi'\n",
                Builds,
            ), Error("cannot apply layer entry \"fake-zero\": a device node needs CAP_MKNOD")),
            // A char node 1:5 (the host's /dev/zero) in a layer: a block
            // node for a host disk would work the same way.
            |e| {
                let tar = Evil::default().device("fake-zero", 1, 5).finish();
                fs::write(e.context.join("nodes.tar"), tar).unwrap();
            },
        ),
        case(
            "copy_from_an_image_with_dotdot",
            "FROM scratch\nCOPY --from=debian:bookworm ../../../etc/debian_version /x\n",
            Contained,
        ),
    ]
}

/// Names directly under `/`: no case may add one.
fn root_listing() -> BTreeSet<String> {
    fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

struct Sentinel {
    outside: Tree,
    context: Tree,
    root: BTreeSet<String>,
}

impl Sentinel {
    fn take(env: &Env) -> Sentinel {
        Sentinel {
            outside: disk_tree(&env.outside),
            context: disk_tree(&env.context),
            root: root_listing(),
        }
    }

    /// What changed on the host since `take`.
    fn changes(&self, env: &Env) -> Vec<String> {
        let mut changes = Vec::new();
        if disk_tree(&env.outside) != self.outside {
            changes.push(format!("{} changed", env.outside.display()));
        }
        if disk_tree(&env.context) != self.context {
            changes.push("the build context changed".to_string());
        }
        if env.host.exists() {
            changes.push(format!("{} was created", env.host.display()));
        }
        let root = root_listing();
        if root != self.root {
            changes.push(format!(
                "/ changed: {:?}",
                root.symmetric_difference(&self.root).collect::<Vec<_>>()
            ));
        }
        changes
    }
}

fn run_case(c: &Case, store: &Path, n: usize, place: &Placement) -> Result<(), String> {
    let work = (place.work)();
    let env = Env {
        context: work.path().join("context"),
        outside: work.path().join("outside"),
        host: PathBuf::from(format!("/tmp/kbuild-hostile-{}-{n}", std::process::id())),
    };
    let expand = |text: &str| {
        text.replace("{OUT}", &env.outside.display().to_string())
            .replace("{HOST}", &env.host.display().to_string())
    };
    write(&env.outside.join("secret.txt"), SECRET);
    write(&env.context.join("Dockerfile"), &expand(c.spec));
    (c.setup)(&env);
    (place.ready)(work.path());
    let _ = fs::remove_dir_all(&env.host);
    let sentinel = Sentinel::take(&env);
    // zstd layers here (the build suite writes gzip ones), so the secret
    // scan reads both kinds of blob.
    let mut args: Vec<String> = vec![
        "build".into(),
        "--compression".into(),
        "zstd".into(),
        "--store".into(),
        store.display().to_string(),
        env.context.display().to_string(),
    ];
    args.extend((c.flags)(&env));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kbuild(&refs, &[]);
    let mut problems = sentinel.changes(&env);
    let expect = match (place.rootless, c.rootless) {
        (true, Some(expect)) => expect,
        _ => c.expect,
    };
    problems.extend(outcome_problems(expect, &out));
    let _ = fs::remove_dir_all(&env.host);
    match problems.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{}: {}\n  stderr: {}",
            c.name,
            problems.join("; "),
            stderr(&out).trim().replace('\n', "\n    ")
        )),
    }
}

fn outcome_problems(expect: Expect, out: &Output) -> Vec<String> {
    let err = stderr(out);
    let mut problems = Vec::new();
    if err.contains("panicked") || !matches!(out.status.code(), Some(0..=2)) {
        problems.push(format!("did not end cleanly ({:?})", out.status));
    }
    match expect {
        Expect::Error(text) if out.status.success() => {
            problems.push(format!("built, but should fail with \"{text}\""))
        }
        Expect::Error(text) if !err.contains(text) => {
            problems.push(format!("failed without \"{text}\""))
        }
        Expect::Builds if !out.status.success() => problems.push("did not build".into()),
        _ => {}
    }
    problems
}

/// Runs every case against `store` (holding the Debian base); panics
/// with each case that failed.
pub fn run_corpus(store: &Path, place: &Placement) {
    let all = cases();
    assert!(all.len() >= 20, "only {} cases", all.len());
    let failures: Vec<String> = all
        .iter()
        .enumerate()
        .filter_map(|(n, c)| run_case(c, store, n, place).err())
        .collect();
    assert_absent_from_blobs(store, SECRET);
    assert_clean(store);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
