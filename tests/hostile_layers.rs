//! Hostile layers against the extractor: the classes of containerd's
//! archive breakout tests, umoci's root replacement, the tar crate's
//! symlink-chmod and PAX size-smuggling advisories, whiteout abuse,
//! hardlink-to-symlink, absolute and `..` paths, and bombs.
//!
//! Every case extracts into `<sandbox>/root` with a sentinel tree beside it
//! (`<sandbox>/sentinel`) and asserts the expected outcome and that nothing
//! outside the root was created, changed or chmodded. Needs root (owners,
//! device nodes), as CI runs it.

mod common;

use common::harness::ROOT;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kbuild::layer::{extract_layer, ExtractLimits, ExtractMode};
use tar::EntryType;

use common::evil_tar::Evil;

/// Everything under `dir` except `skip`: path -> (type, mode, uid, gid, content or target).
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<String, String> {
    common::walk(dir, Some(skip))
        .into_iter()
        .map(|(rel, path, meta)| {
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                "dir".to_string()
            } else {
                format!("file {:?}", std::fs::read(&path).unwrap())
            };
            let attrs = format!(
                "mode={:o} uid={} gid={} mtime={}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime()
            );
            (rel, format!("{what} {attrs}"))
        })
        .collect()
}

struct Sandbox {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    sentinel: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let sentinel = base.join("sentinel");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(sentinel.join("sub")).unwrap();
        std::fs::write(sentinel.join("secret.txt"), b"secret").unwrap();
        std::fs::set_permissions(
            sentinel.join("secret.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(sentinel.join("sub/deep.txt"), b"deep").unwrap();
        std::fs::write(base.join("beside.txt"), b"beside").unwrap();
        Sandbox {
            _dir: dir,
            base,
            root,
            sentinel,
        }
    }

    fn abs(&self, rel: &str) -> String {
        self.sentinel.join(rel).display().to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Rejected,
    Accepted,
}

struct Case {
    name: &'static str,
    build: fn(&Sandbox) -> Vec<u8>,
    outcome: Outcome,
    /// For accepted cases: a check on the root.
    check: Option<fn(&Sandbox)>,
    limits: ExtractLimits,
    mode: ExtractMode,
}

fn case(name: &'static str, outcome: Outcome, build: fn(&Sandbox) -> Vec<u8>) -> Case {
    Case {
        name,
        build,
        outcome,
        check: None,
        limits: ExtractLimits::default(),
        mode: ExtractMode::Flatten,
    }
}

fn checked(mut c: Case, check: fn(&Sandbox)) -> Case {
    c.check = Some(check);
    c
}

fn limited(mut c: Case, limits: ExtractLimits) -> Case {
    c.limits = limits;
    c
}

fn lower(mut c: Case) -> Case {
    c.mode = ExtractMode::OverlayLower;
    c
}

/// A local archive as ADD unpacks it: whiteout names are plain files.
fn archive(mut c: Case) -> Case {
    c.mode = ExtractMode::Archive;
    c
}

fn read(s: &Sandbox, rel: &str) -> Vec<u8> {
    std::fs::read(s.root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn inside(s: &Sandbox, abs: &str) -> PathBuf {
    s.root.join(abs.trim_start_matches('/'))
}

use Outcome::{Accepted, Rejected};

fn cases() -> Vec<Case> {
    let small = ExtractLimits {
        max_entries: 50,
        max_bytes: 1 << 20,
        max_header_bytes: 4096,
    };
    vec![
        checked(
            case("dotdot file", Accepted, |_| {
                Evil::default().file("../escape.txt", b"x").finish()
            }),
            |s| assert_eq!(read(s, "escape.txt"), b"x"),
        ),
        checked(
            case("absolute file", Accepted, |_| {
                Evil::default().file("/abs.txt", b"x").finish()
            }),
            |s| assert_eq!(read(s, "abs.txt"), b"x"),
        ),
        checked(
            case("inner dotdot", Accepted, |_| {
                Evil::default().file("a/../../../../escape", b"x").finish()
            }),
            |s| assert_eq!(read(s, "escape"), b"x"),
        ),
        checked(
            case("dotdot overwrite of sentinel", Accepted, |_| {
                Evil::default()
                    .file("./../sentinel/secret.txt", b"pwned")
                    .finish()
            }),
            |s| assert_eq!(read(s, "sentinel/secret.txt"), b"pwned"),
        ),
        checked(
            case("relative symlink dir then file", Accepted, |_| {
                Evil::default()
                    .dir("sentinel", 0o755)
                    .symlink("link", "../sentinel")
                    .file("link/secret.txt", b"pwned")
                    .finish()
            }),
            |s| assert_eq!(read(s, "sentinel/secret.txt"), b"pwned"),
        ),
        checked(
            case("absolute symlink dir then file", Accepted, |s| {
                Evil::default()
                    .dir(&s.abs(""), 0o755)
                    .symlink("link", &s.abs(""))
                    .file("link/secret.txt", b"pwned")
                    .finish()
            }),
            |s| {
                assert_eq!(
                    std::fs::read(inside(s, &s.abs("secret.txt"))).unwrap(),
                    b"pwned"
                )
            },
        ),
        case("absolute symlink then mkdir chain", Rejected, |s| {
            Evil::default()
                .symlink("link", &s.abs("sub"))
                .dir("link/new", 0o755)
                .file("link/new/deeper/file", b"x")
                .finish()
        }),
        checked(
            case("symlink to slash then etc/passwd", Accepted, |_| {
                Evil::default()
                    .symlink("l", "/")
                    .file("l/etc/passwd", b"root::0:0")
                    .finish()
            }),
            |s| assert_eq!(read(s, "etc/passwd"), b"root::0:0"),
        ),
        case("symlink to dotdot chain", Accepted, |_| {
            Evil::default()
                .symlink("l", "../../../../../../")
                .file("l/x", b"x")
                .finish()
        }),
        checked(
            case("chmod through symlink via dir entry", Accepted, |s| {
                Evil::default()
                    .symlink("s", &s.abs("secret.txt"))
                    .dir("s", 0o777)
                    .finish()
            }),
            |s| {
                assert!(std::fs::symlink_metadata(s.root.join("s"))
                    .unwrap()
                    .is_dir())
            },
        ),
        case("chmod through symlink via file entry", Accepted, |s| {
            Evil::default()
                .symlink("s", &s.abs("secret.txt"))
                .file_mode("s", b"x", 0o4777)
                .finish()
        }),
        case("chmod through symlinked dir entry", Rejected, |s| {
            Evil::default()
                .symlink("d", &s.abs(""))
                .dir("d/sub", 0o777)
                .finish()
        }),
        case("overwrite through symlink", Accepted, |s| {
            Evil::default()
                .symlink("f", &s.abs("secret.txt"))
                .file("f", b"pwned")
                .finish()
        }),
        case("hardlink to absolute outside path", Rejected, |s| {
            Evil::default().hardlink("h", &s.abs("secret.txt")).finish()
        }),
        case("hardlink with dotdot", Rejected, |_| {
            Evil::default()
                .hardlink("h", "../sentinel/secret.txt")
                .finish()
        }),
        case("hardlink through symlinked dir", Rejected, |s| {
            Evil::default()
                .symlink("d", &s.abs(""))
                .hardlink("h", "d/secret.txt")
                .finish()
        }),
        checked(
            case("hardlink to symlink", Accepted, |s| {
                Evil::default()
                    .symlink("s", &s.abs("secret.txt"))
                    .hardlink("h", "s")
                    .finish()
            }),
            |s| {
                assert!(std::fs::symlink_metadata(s.root.join("h"))
                    .unwrap()
                    .file_type()
                    .is_symlink())
            },
        ),
        case("hardlink to symlink then write", Accepted, |s| {
            Evil::default()
                .symlink("s", &s.abs("secret.txt"))
                .hardlink("h", "s")
                .file("h", b"pwned")
                .finish()
        }),
        case("hardlink to directory", Rejected, |_| {
            Evil::default().dir("d", 0o755).hardlink("h", "d").finish()
        }),
        case("hardlink to root", Rejected, |_| {
            Evil::default().hardlink("h", "../..").finish()
        }),
        case("non-directory dot entry", Rejected, |_| {
            Evil::default().file(".", b"x").finish()
        }),
        case("symlink as root (umoci root replacement)", Rejected, |s| {
            Evil::default().symlink(".", &s.abs("")).finish()
        }),
        case("symlink as dotdot root", Rejected, |s| {
            Evil::default().symlink("../", &s.abs("")).finish()
        }),
        checked(
            case("dot directory entry", Accepted, |_| {
                Evil::default().dir("./", 0o700).finish()
            }),
            |s| assert_eq!(std::fs::metadata(&s.root).unwrap().mode() & 0o777, 0o700),
        ),
        case("whiteout through symlink", Rejected, |s| {
            Evil::default()
                .symlink("s", &s.abs(""))
                .file("s/.wh.secret.txt", b"")
                .finish()
        }),
        checked(
            case("whiteout through symlink to an inside dir", Accepted, |s| {
                Evil::default()
                    .dir(&s.abs(""), 0o755)
                    .file(
                        Box::leak(format!("{}/secret.txt", s.abs("")).into_boxed_str()),
                        b"in",
                    )
                    .symlink("s", &s.abs(""))
                    .file("s/.wh.secret.txt", b"")
                    .finish()
            }),
            |s| assert!(!inside(s, &s.abs("secret.txt")).exists()),
        ),
        case("opaque through symlink to an inside dir", Accepted, |s| {
            Evil::default()
                .dir(&s.abs(""), 0o755)
                .symlink("s", &s.abs(""))
                .file("s/.wh..wh..opq", b"")
                .finish()
        }),
        case("whiteout of dotdot", Rejected, |_| {
            Evil::default().file(".wh...", b"").finish()
        }),
        case("whiteout of sentinel via dotdot", Accepted, |_| {
            Evil::default().file("../.wh.sentinel", b"").finish()
        }),
        case("whiteout via absolute path", Accepted, |s| {
            let p = format!("{}/.wh.secret.txt", s.abs("").trim_end_matches('/'));
            Evil::default()
                .file(Box::leak(p.into_boxed_str()), b"")
                .finish()
        }),
        case("opaque through symlink", Rejected, |s| {
            Evil::default()
                .symlink("s", &s.abs(""))
                .file("s/.wh..wh..opq", b"")
                .finish()
        }),
        case("opaque at root via dotdot", Accepted, |_| {
            Evil::default().file("../.wh..wh..opq", b"").finish()
        }),
        lower(case("overlay whiteout through symlink", Rejected, |s| {
            Evil::default()
                .symlink("s", &s.abs(""))
                .file("s/.wh.secret.txt", b"")
                .finish()
        })),
        lower(case("overlay opaque through symlink", Rejected, |s| {
            Evil::default()
                .symlink("s", &s.abs(""))
                .file("s/.wh..wh..opq", b"")
                .finish()
        })),
        checked(
            case("pax path with dotdot", Accepted, |_| {
                Evil::default()
                    .pax(&[("path", b"../../sentinel/pwn")])
                    .file("ignored", b"x")
                    .finish()
            }),
            |s| assert_eq!(read(s, "sentinel/pwn"), b"x"),
        ),
        case("pax linkpath absolute then write", Accepted, |s| {
            let target = s.abs("secret.txt");
            Evil::default()
                .pax(&[("linkpath", target.as_bytes())])
                .symlink("s", "x")
                .file("s", b"pwned")
                .finish()
        }),
        case("pax size smuggling", Rejected, |_| {
            Evil::default()
                .pax(&[("size", b"1024")])
                .file("a", b"")
                .file("../sentinel/secret.txt", b"pwned")
                .finish()
        }),
        case("pax size smaller than header", Rejected, |_| {
            Evil::default()
                .pax(&[("size", b"0")])
                .file("a", b"0123456789")
                .finish()
        }),
        case("pax nul in path", Rejected, |_| {
            Evil::default()
                .pax(&[("path", b"a\0../../x")])
                .file("a", b"x")
                .finish()
        }),
        case("pax malformed record", Rejected, |_| {
            let h = Evil::header(EntryType::XHeader, b"pax", 9, 0o644);
            let mut e = Evil::default();
            e.push(h, b"99 path=x").file("a", b"x").finish()
        }),
        limited(
            case("pax record bomb", Rejected, |_| {
                Evil::default()
                    .pax(&[("comment", &[b'a'; 8192])])
                    .file("a", b"x")
                    .finish()
            }),
            small,
        ),
        checked(
            case("gnu long name with dotdot", Accepted, |_| {
                let long = format!("{}/../../../../sentinel/long", "d".repeat(120));
                Evil::default()
                    .gnu_long(EntryType::GNULongName, long.as_bytes())
                    .file("short", b"x")
                    .finish()
            }),
            |s| assert_eq!(read(s, "sentinel/long"), b"x"),
        ),
        case("gnu long link absolute then write", Rejected, |s| {
            let target = format!("{}/{}", s.abs(""), "x".repeat(120));
            Evil::default()
                .gnu_long(EntryType::GNULongLink, target.as_bytes())
                .symlink("s", "short")
                .file("s/f", b"x")
                .finish()
        }),
        limited(
            case("gnu long name bomb", Rejected, |_| {
                Evil::default()
                    .gnu_long(EntryType::GNULongName, &[b'a'; 10000])
                    .file("a", b"x")
                    .finish()
            }),
            small,
        ),
        limited(
            case("entry count bomb", Rejected, |_| {
                let mut e = Evil::default();
                for i in 0..60 {
                    e.file(Box::leak(format!("f{i}").into_boxed_str()), b"");
                }
                e.finish()
            }),
            small,
        ),
        limited(
            case("size bomb", Rejected, |_| {
                Evil::default().file("big", &vec![0u8; 2 << 20]).finish()
            }),
            small,
        ),
        limited(
            case("gzip bomb", Rejected, |_| {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                enc.write_all(&Evil::default().file("zeros", &vec![0u8; 8 << 20]).finish())
                    .unwrap();
                enc.finish().unwrap()
            }),
            small,
        ),
        case("truncated archive", Rejected, |_| {
            let mut t = Evil::default().file("a", &[1u8; 4096]).finish();
            t.truncate(1024);
            t
        }),
        case("bad checksum", Rejected, |_| {
            let mut t = Evil::default().file("a", b"x").finish();
            t[148] = b'9';
            t
        }),
        case("sparse entry", Rejected, |_| {
            let h = Evil::header(EntryType::GNUSparse, b"sparse", 0, 0o644);
            Evil::default().push(h, &[]).finish()
        }),
        case("parent is a file", Rejected, |_| {
            Evil::default().file("f", b"x").file("f/x", b"y").finish()
        }),
        case("symlink loop", Rejected, |_| {
            Evil::default().symlink("a", "a").file("a/x", b"y").finish()
        }),
        checked(
            case("dir replaced by absolute symlink", Accepted, |s| {
                Evil::default()
                    .dir(&s.abs(""), 0o755)
                    .dir("d", 0o755)
                    .symlink("d", &s.abs(""))
                    .file("d/secret.txt", b"pwned")
                    .finish()
            }),
            |s| {
                assert_eq!(
                    std::fs::read(inside(s, &s.abs("secret.txt"))).unwrap(),
                    b"pwned"
                )
            },
        ),
        checked(
            case(
                "absolute link below the top resolves from the root",
                Accepted,
                |_| {
                    Evil::default()
                        .dir("run", 0o755)
                        .dir("var", 0o755)
                        .symlink("var/run", "/run")
                        .file("var/run/foo", b"foo")
                        .finish()
                },
            ),
            |s| assert_eq!(read(s, "run/foo"), b"foo"),
        ),
        checked(
            case(
                "relative link below the top resolves from its directory",
                Accepted,
                |_| {
                    Evil::default()
                        .dir("a/b", 0o755)
                        .dir("a/c", 0o755)
                        .symlink("a/b/l", "../c")
                        .file("a/b/l/f", b"f")
                        .finish()
                },
            ),
            |s| assert_eq!(read(s, "a/c/f"), b"f"),
        ),
        checked(
            case(
                "dotdot link below the top clamps at the root",
                Accepted,
                |_| {
                    Evil::default()
                        .dir("a/b", 0o755)
                        .symlink("a/b/up", "../../../../../etc")
                        .file("a/b/up/x", b"x")
                        .finish()
                },
            ),
            |s| assert_eq!(read(s, "etc/x"), b"x"),
        ),
        case("symlink loop below the top", Rejected, |_| {
            Evil::default()
                .dir("x", 0o755)
                .symlink("x/l1", "l2")
                .symlink("x/l2", "/x/l1")
                .file("x/l1/f", b"y")
                .finish()
        }),
        checked(
            archive(case(
                "an archive's whiteout names are files",
                Accepted,
                |_| {
                    Evil::default()
                        .file("kept", b"k")
                        .file(".wh.kept", b"w")
                        .file("d/inner", b"i")
                        .file("d/.wh..wh..opq", b"o")
                        .finish()
                },
            )),
            |s| {
                assert_eq!(read(s, "kept"), b"k");
                assert_eq!(read(s, ".wh.kept"), b"w");
                assert_eq!(read(s, "d/inner"), b"i");
                assert_eq!(read(s, "d/.wh..wh..opq"), b"o");
            },
        ),
        checked(
            case("setuid kept", Accepted, |_| {
                Evil::default()
                    .file_mode("usr/bin/sudo", b"bin", 0o4755)
                    .finish()
            }),
            |s| {
                assert_eq!(
                    std::fs::metadata(s.root.join("usr/bin/sudo"))
                        .unwrap()
                        .mode()
                        & 0o7777,
                    0o4755
                )
            },
        ),
        checked(
            case("device node stays inside", Accepted, |_| {
                Evil::default().device("../dev/null", 1, 3).finish()
            }),
            |s| {
                assert_eq!(
                    std::fs::symlink_metadata(s.root.join("dev/null"))
                        .unwrap()
                        .rdev(),
                    rustix::fs::makedev(1, 3)
                )
            },
        ),
        checked(
            case("overlay xattrs from a layer are dropped", Accepted, |_| {
                Evil::default()
                    .pax(&[
                        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                        ("SCHILY.xattr.user.kept", b"1"),
                    ])
                    .dir("d", 0o755)
                    .finish()
            }),
            |s| {
                let x = kbuild::layer::read_xattrs(&s.root.join("d")).unwrap();
                assert!(
                    x.iter().all(|(k, _)| !k.starts_with(b"trusted.overlay.")),
                    "{x:?}"
                );
                // The layer's other xattrs did land: the check read some.
                assert!(x.iter().any(|(k, _)| k == b"user.kept"), "{x:?}");
            },
        ),
    ]
}

fn hostile_layers_never_touch_anything_outside_the_root() {
    let all = cases();
    assert!(all.len() >= 40, "only {} cases", all.len());
    let mut failures = Vec::new();
    for case in &all {
        let sandbox = Sandbox::new();
        let before = snapshot(&sandbox.base, &sandbox.root);
        let tar = (case.build)(&sandbox);
        let reader =
            kbuild::layer::decompressing_reader(std::io::BufReader::new(tar.as_slice())).unwrap();
        let result = extract_layer(reader, &sandbox.root, case.mode, case.limits);
        let after = snapshot(&sandbox.base, &sandbox.root);
        if before != after {
            failures.push(format!(
                "{}: OUTSIDE THE ROOT CHANGED\n  before: {before:?}\n  after: {after:?}",
                case.name
            ));
        }
        match (case.outcome, &result) {
            (Rejected, Err(_)) => {}
            (Accepted, Ok(_)) => {
                if let Some(check) = case.check {
                    check(&sandbox);
                }
            }
            (want, got) => failures.push(format!("{}: wanted {want:?}, got {got:?}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

tests!(
    hostile_layers_never_touch_anything_outside_the_root: ROOT,
);
