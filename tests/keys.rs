//! `kbuild keys generate`, judged by openssl (the certificates) and
//! efitools' `sig-list-to-certs` (the EFI signature lists hold exactly
//! the DER certificates).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::harness::Needs;
use common::{kbuild, ok, run_ok as run};

fn a_key_set_is_enrollable_and_never_overwritten() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("keys");
    let printed = ok(&kbuild(
        &[
            "keys",
            "generate",
            dir.to_str().unwrap(),
            "--common-name",
            "Test Org",
        ],
        &[],
    ));
    assert_eq!(printed.trim(), dir.display().to_string());
    let owner = fs::read_to_string(dir.join("GUID")).unwrap();
    let owner = owner.trim();
    assert_eq!(owner.len(), 36, "{owner}");
    assert!(fs::read_to_string(dir.join("ENROLL.md"))
        .unwrap()
        .contains(&format!("--add-db {owner} db.crt")));
    for key in ["PK", "KEK", "db"] {
        let path = |ext: &str| dir.join(format!("{key}.{ext}"));
        let mode = fs::metadata(path("key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}.key");
        let subject = run(
            "openssl",
            &[
                "x509",
                "-in",
                path("crt").to_str().unwrap(),
                "-noout",
                "-subject",
            ],
        );
        assert!(subject.contains(&format!("Test Org {key}")), "{subject}");
        let modulus = |args: &[&str]| run("openssl", args);
        assert_eq!(
            modulus(&[
                "rsa",
                "-in",
                path("key").to_str().unwrap(),
                "-noout",
                "-modulus"
            ]),
            modulus(&[
                "x509",
                "-in",
                path("crt").to_str().unwrap(),
                "-noout",
                "-modulus"
            ]),
            "{key}: the key is the certificate's"
        );
        let out = work.path().join(format!("{key}-from-esl"));
        run(
            "sig-list-to-certs",
            &[path("esl").to_str().unwrap(), out.to_str().unwrap()],
        );
        assert_eq!(
            fs::read(format!("{}-0.der", out.display())).unwrap(),
            fs::read(path("cer")).unwrap(),
            "{key}.esl holds {key}.cer"
        );
    }

    let before = fs::read(dir.join("db.key")).unwrap();
    let again = kbuild(&["keys", "generate", dir.to_str().unwrap()], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    assert_eq!(fs::read(dir.join("db.key")).unwrap(), before);

    let bad = work.path().join("bad");
    let refused = kbuild(
        &[
            "keys",
            "generate",
            bad.to_str().unwrap(),
            "--common-name",
            "a/b",
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(!bad.exists());
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

tests!(
    a_key_set_is_enrollable_and_never_overwritten: Needs { root: false, tools: &["openssl", "sig-list-to-certs"] },
);
