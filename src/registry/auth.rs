//! Registry credentials, found where Docker, Podman and skopeo keep them.
//!
//! Search order (first file that knows the registry wins):
//! `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
//! `~/.docker/config.json`, `$XDG_RUNTIME_DIR/containers/auth.json`.
//! Within a file: `credHelpers[registry]`, then `auths[registry]`, then
//! `credsStore`. Helpers are run as `docker-credential-<name> get`.
//!
//! Invariant: secrets are never logged; `Debug` of [`Credential`] hides them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An identity (refresh) token, exchanged for a bearer token.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ****)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(****)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}: invalid credentials file: {source}", path.display())]
    BadFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: the \"auth\" entry for {registry} is not base64 of user:password", path.display())]
    BadAuthEntry { path: PathBuf, registry: String },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {message}")]
    Helper {
        helper: String,
        registry: String,
        message: String,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Where to look, from the environment.
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("DOCKER_CONFIG").map(|d| d.join("config.json")));
    files.extend(env("HOME").map(|h| h.join(".docker/config.json")));
    files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files
}

/// The `auths` key forms a registry may be stored under.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io"
        || registry == "index.docker.io"
        || registry == "registry-1.docker.io"
    {
        keys.push("https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
        keys.push("docker.io".into());
    }
    keys
}

/// `https://host/v1/` -> `host`, so keys written with scheme and path match.
fn normalize_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Finds the credential for `registry` (a host[:port]), or `None` for anonymous access.
pub fn find(registry: &str, files: &[PathBuf]) -> Result<Option<Credential>, AuthError> {
    for path in files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let file: AuthFile = serde_json::from_str(&text).map_err(|source| AuthError::BadFile {
            path: path.clone(),
            source,
        })?;
        let wanted = keys_for(registry);
        if let Some(helper) = file
            .cred_helpers
            .iter()
            .find(|(k, _)| wanted.iter().any(|w| normalize_key(w) == normalize_key(k)))
            .map(|(_, h)| h)
        {
            return run_helper(helper, registry);
        }
        let entry = file
            .auths
            .iter()
            .find(|(k, _)| wanted.iter().any(|w| normalize_key(w) == normalize_key(k)));
        if let Some((_, entry)) = entry {
            if let Some(token) = &entry.identitytoken {
                return Ok(Some(Credential::IdentityToken(token.clone())));
            }
            if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
                return Ok(Some(Credential::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }));
            }
            if let Some(auth) = &entry.auth {
                let bad = || AuthError::BadAuthEntry {
                    path: path.clone(),
                    registry: registry.to_string(),
                };
                let decoded = base64_decode(auth.trim()).ok_or_else(bad)?;
                let text = String::from_utf8(decoded).map_err(|_| bad())?;
                let (username, password) = text.split_once(':').ok_or_else(bad)?;
                return Ok(Some(Credential::Basic {
                    username: username.into(),
                    password: password.into(),
                }));
            }
        }
        if let Some(store) = &file.creds_store {
            if let Some(found) = run_helper(store, registry)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, AuthError> {
    query_helper(
        Path::new(&format!("docker-credential-{helper}")),
        helper,
        registry,
    )
}

/// Runs a credential helper program with the `get` verb.
fn query_helper(
    program: &Path,
    helper: &str,
    registry: &str,
) -> Result<Option<Credential>, AuthError> {
    let fail = |message: String| AuthError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message,
    };
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // The helper protocol's way of saying "nothing stored".
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(said.trim().to_string()));
    }
    let reply: HelperReply =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("unreadable reply: {e}")))?;
    Ok(Some(if reply.username == "<token>" {
        Credential::IdentityToken(reply.secret)
    } else {
        Credential::Basic {
            username: reply.username,
            password: reply.secret,
        }
    }))
}

/// Stores basic credentials for `registry` in a docker config file,
/// keeping everything else in it (what `kbuild login` writes).
pub fn store_basic(
    path: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<(), AuthError> {
    let mut doc: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| AuthError::BadFile {
            path: path.to_path_buf(),
            source,
        })?,
        Err(_) => serde_json::json!({}),
    };
    let auth = base64_encode(format!("{username}:{password}").as_bytes());
    if !doc["auths"].is_object() {
        doc["auths"] = serde_json::json!({});
    }
    doc["auths"][registry] = serde_json::json!({ "auth": auth });
    let write_err = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        // A new config directory is the user's alone, as docker makes it.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err)?;
    }
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON value serializes");
    crate::store::atomic::write_with_mode(path, &bytes, 0o600).map_err(write_err)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as the `auth` field of a Docker config holds `user:password`.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = B64.iter().position(|b| *b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "user:pa:ss", "ünïcode:pw"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert!(base64_decode("not*base64").is_none());
    }

    fn write(dir: &Path, name: &str, json: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn finds_credentials_in_order_and_forms() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(
            dir.path(),
            "first.json",
            r#"{"auths": {"https://quay.io/v2/": {"auth": "dXNlcjpwYXNz"}}}"#,
        );
        let second = write(
            dir.path(),
            "second.json",
            r#"{"auths": {"quay.io": {"auth": "b3RoZXI6b3RoZXI="}, "https://index.docker.io/v1/": {"identitytoken": "tok"},
                "127.0.0.1:5000": {"username": "u", "password": "p"}}}"#,
        );
        let files = [PathBuf::from("/nonexistent/auth.json"), first, second];
        assert_eq!(
            find("quay.io", &files).unwrap(),
            Some(Credential::Basic {
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert_eq!(
            find("docker.io", &files).unwrap(),
            Some(Credential::IdentityToken("tok".into()))
        );
        assert_eq!(
            find("127.0.0.1:5000", &files).unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(find("ghcr.io", &files).unwrap(), None);
        assert_eq!(
            format!("{:?}", find("quay.io", &files).unwrap().unwrap()),
            "Basic(user, ****)"
        );
    }

    #[test]
    fn bad_files_and_entries_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let broken = write(dir.path(), "broken.json", "{not json");
        let err = find("quay.io", std::slice::from_ref(&broken))
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken.json"), "{err}");
        let bad = write(
            dir.path(),
            "bad.json",
            r#"{"auths": {"quay.io": {"auth": "!!!"}}}"#,
        );
        assert!(find("quay.io", &[bad])
            .unwrap_err()
            .to_string()
            .contains("not base64"));
    }

    #[test]
    fn credential_helpers_follow_the_docker_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        crate::test_support::write_executable(
            &helper,
            "#!/bin/sh\nread host\ncase \"$host\" in\n  quay.io) echo '{\"ServerURL\":\"quay.io\",\"Username\":\"bot\",\"Secret\":\"s3\"}' ;;\n  ghcr.io) echo '{\"ServerURL\":\"ghcr.io\",\"Username\":\"<token>\",\"Secret\":\"rt\"}' ;;\n  broken.io) echo 'boom' >&2; exit 3 ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        );

        assert_eq!(
            query_helper(&helper, "fake", "quay.io").unwrap(),
            Some(Credential::Basic {
                username: "bot".into(),
                password: "s3".into()
            })
        );
        assert_eq!(
            query_helper(&helper, "fake", "ghcr.io").unwrap(),
            Some(Credential::IdentityToken("rt".into()))
        );
        assert_eq!(query_helper(&helper, "fake", "other.io").unwrap(), None);
        let err = query_helper(&helper, "fake", "broken.io")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docker-credential-fake") && err.contains("boom"),
            "{err}"
        );
        let err = run_helper("kbuild-test-no-such-helper", "quay.io")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docker-credential-kbuild-test-no-such-helper"),
            "{err}"
        );
    }

    #[test]
    fn login_keeps_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "config.json",
            r#"{"auths": {"a.io": {"auth": "eDp5"}}, "psFormat": "table"}"#,
        );
        store_basic(&path, "127.0.0.1:5000", "me", "secret").unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "table");
        assert_eq!(doc["auths"]["a.io"]["auth"], "eDp5");
        assert_eq!(
            find("127.0.0.1:5000", std::slice::from_ref(&path)).unwrap(),
            Some(Credential::Basic {
                username: "me".into(),
                password: "secret".into()
            })
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_new_config_is_created_private_under_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/.docker/config.json");
        // Created with 0600 whatever the umask allows (no window between
        // creation and a chmod: the temp file itself is 0600).
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o000));
        let result = store_basic(&path, "127.0.0.1:5000", "me", "secret");
        rustix::process::umask(old);
        result.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
}
