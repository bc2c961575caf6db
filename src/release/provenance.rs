//! In-toto statement with a SLSA provenance (v0.2) predicate for one cell:
//! what was built (the image and the ISO, by digest), by what (kbuild and
//! its version), from what (the base image, every composed package and
//! the flavor's spec, by digest).
//!
//! Invariants: it claims no more than kbuild knows (materials fetched by
//! RUN steps are not listed, so `completeness.materials` is false, and
//! `reproducible` is true only when `release --verify` rebuilt the cell in
//! an empty store and got the same bytes); no
//! wall-clock time or host detail goes in, so the same
//! inputs give the same statement on any runner (sharded releases compare
//! their SHA256SUMS with an unsharded one).

use serde_json::{json, Value};

/// Something the build consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub uri: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// Something the build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

fn digest_set(digest: &str) -> Value {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    let mut set = serde_json::Map::new();
    set.insert(algorithm.to_string(), json!(hex));
    Value::Object(set)
}

/// The statement; `parameters` are the cell's selection.
pub fn statement(
    subjects: &[Subject],
    builder: &str,
    parameters: Value,
    materials: &[Material],
    reproducible: bool,
) -> Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects
            .iter()
            .map(|s| json!({ "name": s.name, "digest": digest_set(&s.digest) }))
            .collect::<Vec<_>>(),
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "predicate": {
            "builder": { "id": builder },
            "buildType": "https://kbuild.invalid/release/v1",
            "invocation": { "parameters": parameters },
            // Only what kbuild knows: the parameters are the whole plan;
            // packages that RUN steps fetch (apt, dnf, apk) are no
            // materials here; only a verified rebuild makes it reproducible.
            "metadata": {
                "completeness": { "parameters": true, "environment": false, "materials": false },
                "reproducible": reproducible,
            },
            "materials": materials
                .iter()
                .map(|m| json!({ "uri": m.uri, "digest": digest_set(&m.digest) }))
                .collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_materials_by_digest() {
        let doc = statement(
            &[Subject {
                name: "quay.io/kairos/debian:12-core".into(),
                digest: "sha256:aa".into(),
            }],
            "kbuild/0.1.0",
            json!({ "flavor": "debian" }),
            &[Material {
                uri: "docker.io/library/debian:bookworm-slim".into(),
                digest: "sha256:bb".into(),
            }],
            false,
        );
        assert_eq!(doc["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(doc["subject"][0]["digest"]["sha256"], "aa");
        assert_eq!(doc["predicate"]["materials"][0]["digest"]["sha256"], "bb");
        assert_eq!(doc["predicate"]["builder"]["id"], "kbuild/0.1.0");
        let metadata = &doc["predicate"]["metadata"];
        assert_eq!(metadata["completeness"]["materials"], false);
        assert_eq!(metadata["reproducible"], false);
        let verified = statement(&[], "kbuild/0.1.0", json!({}), &[], true);
        assert_eq!(verified["predicate"]["metadata"]["reproducible"], true);
    }
}
