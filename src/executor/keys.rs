//! Step-cache keys: what each step's key is a digest of.
//!
//! A key is `sha256(canonical JSON {"parent": <parent key>, "step": <what
//! the step reads>})`. Every user's cache is addressed by these bytes, so
//! the JSON shapes here are a compatibility contract: changing a field
//! name, an order or a value's spelling invalidates every cache entry in
//! the field. The golden tests below pin them.
//!
//! Invariants:
//! * A key depends only on the step's inputs (parent key, instruction,
//!   visible variables, source contents, mount sources), never on its
//!   output, so a whole stage's keys are known before anything runs.
//! * Secret contents never enter a key; only the secret's id does.

use std::path::Path;

use oci_spec::image::Config;
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::platform::Platform;
use crate::store::canonical_json;

/// The key of a step: its parent's key and what the step reads.
pub fn chain(parent: &Digest, step: &Value) -> Digest {
    Digest::of(&canonical_json(
        &json!({ "parent": parent.to_string(), "step": step }),
    ))
}

/// The key of `FROM scratch` for a platform.
pub fn scratch(platform: &Platform) -> Digest {
    Digest::of(format!("scratch {platform}").as_bytes())
}

/// The key of an external image: by content (its diff_ids and runtime
/// config), never by manifest digest, so the same image imported or pulled
/// anywhere gives the same keys.
pub fn image(diff_ids: &[String], config: Option<&Config>) -> Digest {
    chain(
        &Digest::of(b"image"),
        &json!({ "diff_ids": diff_ids, "config": config }),
    )
}

/// The parent of a `COPY --link` step: nothing below it.
pub fn link_parent() -> Digest {
    Digest::of(b"link")
}

/// WORKDIR's filesystem step: it creates the missing directories, owned
/// by the current USER. The user enters the key only when it is not the
/// default root, so root's keys stayed what they were before WORKDIR
/// followed USER.
pub fn workdir(path: &str, user: &str) -> Value {
    match user {
        "0" => json!({ "workdir": path }),
        user => json!({ "workdir": path, "owner": user }),
    }
}

/// What a RUN step reads.
pub struct RunInputs<'a> {
    pub argv: &'a [String],
    /// A heredoc script mounted as the program (one with a shebang).
    pub script: Option<&'a str>,
    pub env: &'a [String],
    pub cwd: &'a str,
    pub user: &'a str,
    /// The network mode's debug name (`Host`, `None`).
    pub network: &'a str,
    /// One value per mount: what it reads, never secret contents.
    pub mounts: &'a [Value],
}

pub fn run(inputs: &RunInputs) -> Value {
    json!({
        "run": inputs.argv,
        "script": inputs.script,
        "env": inputs.env,
        "cwd": inputs.cwd,
        "user": inputs.user,
        "network": inputs.network,
        "mounts": inputs.mounts,
    })
}

/// What a COPY or ADD step reads.
pub struct CopyInputs<'a> {
    /// The instruction's text as written.
    pub text: &'a str,
    pub is_add: bool,
    pub dest: &'a str,
    /// One value per source: [`context_source`], [`heredoc_source`] or
    /// [`url_source`].
    pub sources: &'a [Value],
    /// The key of the `--from` stage or image.
    pub from: Option<String>,
    pub chown: Option<&'a str>,
    pub chmod: Option<u32>,
    pub parents: bool,
    pub link: bool,
}

pub fn copy(inputs: &CopyInputs) -> Value {
    json!({
        "copy": inputs.text,
        "add": inputs.is_add,
        "dest": inputs.dest,
        "sources": inputs.sources,
        "from": inputs.from,
        "chown": inputs.chown,
        "chmod": inputs.chmod,
        "parents": inputs.parents,
        "link": inputs.link,
    })
}

/// A context path; a name that is not UTF-8 is recorded lossily (its
/// content digest still tells such names apart).
pub fn context_source(rel: &Path, content: &Digest) -> Value {
    json!({ "path": rel.to_string_lossy(), "content": content.to_string() })
}

pub fn heredoc_source(name: &str, content: &[u8]) -> Value {
    json!({ "heredoc": name, "content": Digest::of(content).to_string() })
}

pub fn url_source(url: &str, content: &Digest) -> Value {
    json!({ "url": url, "content": content.to_string() })
}

/// `RUN --mount=type=cache`: the cache's id, never its contents.
pub fn cache_mount(id: &str, target: &str) -> Value {
    json!({ "cache": id, "target": target })
}

/// A bind mount of a stage or image: that stage's key and the path in it.
pub fn stage_bind_source(stage: &Digest, path: &str) -> Value {
    json!({ "from": stage.to_string(), "path": path })
}

/// A bind mount of the build context: the path and its content digest.
pub fn context_bind_source(path: &str, content: &Digest) -> Value {
    json!({ "context": path, "content": content.to_string() })
}

pub fn bind_mount(target: &str, source: Value, writable: bool) -> Value {
    json!({ "bind": target, "source": source, "rw": writable })
}

pub fn tmpfs_mount(target: &str, size: Option<u64>) -> Value {
    json!({ "tmpfs": target, "size": size })
}

/// A secret: its id and where it goes, never its contents.
pub fn secret_mount(id: &str, target: Option<&str>, env: Option<&str>) -> Value {
    json!({ "secret": id, "target": target, "env": env })
}

#[cfg(test)]
mod tests {
    //! Golden keys. If one of these fails, the change invalidates every
    //! user's step cache: make sure that is intended, then update the value
    //! and say so in the commit.

    use super::*;

    fn hex(d: &Digest) -> &str {
        d.hex()
    }

    #[test]
    fn scratch_and_image_keys_are_stable() {
        let platform = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            hex(&scratch(&platform)),
            "048cea675a49db586fc3f348f8d14d13696823ba4d67269e93f645d6e149a23c"
        );
        let diff_ids = vec![format!("sha256:{}", "ab".repeat(32))];
        assert_eq!(
            hex(&image(&diff_ids, None)),
            "6489c32cb6168ee684d6770bffc3e51d69b0813ff55c01a96d18d4d1d609f31f"
        );
    }

    #[test]
    fn run_and_copy_keys_are_stable() {
        let parent = Digest::of(b"parent");
        let argv = vec!["/bin/sh".to_string(), "-c".into(), "make".into()];
        let env = vec!["PATH=/usr/bin:/bin".to_string()];
        let mounts = vec![
            cache_mount("/root/.cache", "/root/.cache"),
            bind_mount(
                "/src",
                context_bind_source("/", &Digest::of(b"context")),
                false,
            ),
            bind_mount("/out", stage_bind_source(&Digest::of(b"stage"), "/"), true),
            tmpfs_mount("/tmp", Some(64 << 20)),
            secret_mount("token", None, Some("TOKEN")),
        ];
        let run_key = chain(
            &parent,
            &run(&RunInputs {
                argv: &argv,
                script: None,
                env: &env,
                cwd: "/src",
                user: "0",
                network: "Host",
                mounts: &mounts,
            }),
        );
        assert_eq!(
            hex(&run_key),
            "9821f79992baf6d49399ebf04b2409c1845e99067af2b21254bcaf51f77739c9"
        );
        let sources = vec![
            context_source(Path::new("a.txt"), &Digest::of(b"a")),
            heredoc_source("notes.txt", b"hello\n"),
            url_source("http://127.0.0.1/x.tar", &Digest::of(b"x")),
        ];
        let copy_key = chain(
            &link_parent(),
            &copy(&CopyInputs {
                text: "COPY --link a.txt <<notes.txt /etc/",
                is_add: false,
                dest: "/etc/",
                sources: &sources,
                from: None,
                chown: Some("1000:1000"),
                chmod: Some(0o644),
                parents: false,
                link: true,
            }),
        );
        assert_eq!(
            hex(&copy_key),
            "24aa4144f2b6ea55b4c7cd91eeee70c60a7004c34ce607880b9ff648e9c50990"
        );
    }
}
