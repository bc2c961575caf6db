//! `kbuild diff`: what differs between two images, path by path, and in
//! their configs. `kbuild verify` names a rebuild's differences with it.
//!
//! ```text
//! image -> layers, bottom first -> one tree: path -> kind, mode, owner,
//!          size, mtime, link, xattrs, content sha256 (whiteouts applied)
//! two trees -> added / removed / changed (each differing field named)
//! small text files that changed -> a unified diff of their first lines
//! two configs -> every JSON pointer whose value differs
//! ```
//!
//! Invariants:
//! * Trees are read from the layer blobs as streams; nothing is extracted
//!   on disk, so images of any provenance are safe to compare.
//! * Whiteouts and opaque directories apply to lower layers only, as the
//!   OCI layer spec says; a hard link carries its target's content.
//! * The report lists paths sorted, fields in a fixed order: the same two
//!   images always give the same report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};

use oci_spec::image::ImageManifest;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::store::cache::LayerRecord;
use crate::store::{Store, StoreError};

/// Files up to this size get a text diff when both sides are text.
const TEXT_DIFF_MAX_BYTES: u64 = 64 * 1024;
/// Lines of unified diff shown per file.
const TEXT_DIFF_LINES: usize = 40;
/// A config value longer than this is shortened in the report.
const CONFIG_VALUE_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read layer {digest} of {image}")]
    Layer {
        image: String,
        digest: String,
        #[source]
        source: std::io::Error,
    },
}

/// One image to compare: where its blobs are and what it is.
pub struct Side<'a> {
    pub store: &'a Store,
    /// How the user named it (a store name, a reference, a layout).
    pub name: String,
    pub manifest: ImageManifest,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImageId {
    pub name: String,
    pub digest: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// One field that differs, as both sides show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Field {
    /// `kind`, `content`, `size`, `mode`, `owner`, `mtime`, `link` or `xattrs`.
    pub field: &'static str,
    pub left: String,
    pub right: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PathDiff {
    pub path: String,
    pub change: Change,
    /// For a changed path, what differs; for an added or removed one,
    /// what it is on the side that has it (`left` or `right` empty).
    pub fields: Vec<Field>,
    /// A unified diff of the first lines, for small text files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_diff: Option<String>,
}

/// A config value (by JSON pointer) that differs; absent on a side: null.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigDiff {
    pub key: String,
    pub left: Option<String>,
    pub right: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub left: ImageId,
    pub right: ImageId,
    /// Same manifest digest: the images are the same bytes.
    pub identical: bool,
    pub config: Vec<ConfigDiff>,
    pub paths: Vec<PathDiff>,
}

/// What differs between `left` and `right`.
pub fn diff(left: &Side, right: &Side) -> Result<DiffReport, DiffError> {
    let report = |config, paths| DiffReport {
        left: ImageId {
            name: left.name.clone(),
            digest: left.digest.clone(),
        },
        right: ImageId {
            name: right.name.clone(),
            digest: right.digest.clone(),
        },
        identical: left.digest == right.digest,
        config,
        paths,
    };
    if left.digest == right.digest {
        return Ok(report(Vec::new(), Vec::new()));
    }
    let config = config_diff(
        &flatten_config(left.store, &left.manifest)?,
        &flatten_config(right.store, &right.manifest)?,
    );
    let left_layers = left.store.manifest_layers(&left.manifest)?;
    let right_layers = right.store.manifest_layers(&right.manifest)?;
    let left_tree = read_tree(left, &left_layers)?;
    let right_tree = read_tree(right, &right_layers)?;
    let mut paths = tree_diff(&left_tree, &right_tree);
    add_text_diffs(&mut paths, (left, &left_tree), (right, &right_tree))?;
    Ok(report(config, paths))
}

/// What a path is in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: String,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: Option<String>,
    xattrs: Vec<String>,
    sha256: Option<String>,
    /// The layer that gave it (where its content is read again).
    layer: usize,
}

type Tree = BTreeMap<String, Node>;

/// `/etc/passwd` for `./etc/passwd`, `etc/passwd/` and `/etc/passwd`.
fn normalize(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let parts: Vec<&str> = text
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn parent_and_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

fn join(dir: &str, name: &str) -> String {
    match dir {
        "/" => format!("/{name}"),
        _ => format!("{dir}/{name}"),
    }
}

/// Removes the descendants of `dir` that `keep` rejects.
fn remove_below(tree: &mut Tree, dir: &str, keep: impl Fn(&Node) -> bool) {
    let prefix = match dir {
        "/" => "/".to_string(),
        _ => format!("{dir}/"),
    };
    let doomed: Vec<String> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, node)| !keep(node))
        .map(|(k, _)| k.clone())
        .collect();
    for key in doomed {
        tree.remove(&key);
    }
}

/// Calls `visit` with each entry of `layer` and its normalized path.
fn for_each_entry(
    side: &Side,
    layer: &LayerRecord,
    mut visit: impl FnMut(&mut tar::Entry<Box<dyn Read + '_>>, String) -> std::io::Result<()>,
) -> Result<(), DiffError> {
    let io = |source| DiffError::Layer {
        image: side.name.clone(),
        digest: layer.digest.to_string(),
        source,
    };
    let file = side.store.open_blob(&layer.digest)?;
    let reader =
        crate::layer::decompressing_reader(BufReader::with_capacity(1 << 20, file)).map_err(io)?;
    let mut archive = tar::Archive::new(Box::new(reader) as Box<dyn Read>);
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = normalize(&entry.path_bytes());
        visit(&mut entry, path).map_err(io)?;
    }
    Ok(())
}

fn kind_name(entry_type: tar::EntryType, header: &tar::Header) -> String {
    use tar::EntryType::*;
    let device = || {
        format!(
            "{},{}",
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0)
        )
    };
    match entry_type {
        Regular | Continuous | GNUSparse => "file".into(),
        Directory => "dir".into(),
        Symlink => "symlink".into(),
        Link => "hardlink".into(),
        Char => format!("char {}", device()),
        Block => format!("block {}", device()),
        Fifo => "fifo".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The image's tree: each layer's entries over the ones below.
fn read_tree(side: &Side, layers: &[LayerRecord]) -> Result<Tree, DiffError> {
    let mut tree = Tree::new();
    for (index, layer) in layers.iter().enumerate() {
        for_each_entry(side, layer, |entry, path| {
            let (dir, name) = parent_and_name(&path);
            if name == ".wh..wh..opq" {
                remove_below(&mut tree, dir, |node| node.layer == index);
                return Ok(());
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let hidden = join(dir, hidden);
                tree.remove(&hidden);
                remove_below(&mut tree, &hidden, |_| false);
                return Ok(());
            }
            let node = read_node(entry, index, &tree)?;
            if node.kind != "dir" {
                remove_below(&mut tree, &path, |_| false);
            }
            tree.insert(path, node);
            Ok(())
        })?;
    }
    Ok(tree)
}

fn read_node<R: Read>(
    entry: &mut tar::Entry<R>,
    layer: usize,
    tree: &Tree,
) -> std::io::Result<Node> {
    let header = entry.header().clone();
    let entry_type = header.entry_type();
    let link = entry
        .link_name_bytes()
        .map(|l| String::from_utf8_lossy(&l).into_owned());
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            if let Some(name) = extension
                .key()
                .ok()
                .and_then(|k| k.strip_prefix("SCHILY.xattr."))
            {
                let value = hex(&Sha256::digest(extension.value_bytes()))[..16].to_string();
                xattrs.push(format!("{name}={value}"));
            }
        }
        xattrs.sort();
    }
    let mut node = Node {
        kind: kind_name(entry_type, &header),
        mode: header.mode()? & 0o7777,
        uid: header.uid()?,
        gid: header.gid()?,
        size: header.size()?,
        mtime: header.mtime()?,
        link: None,
        xattrs,
        sha256: None,
        layer,
    };
    match entry_type {
        tar::EntryType::Link => {
            // A hard link is its target's content under another name.
            let target = normalize(link.unwrap_or_default().as_bytes());
            match tree.get(&target) {
                Some(t) => {
                    node.kind = t.kind.clone();
                    node.size = t.size;
                    node.sha256 = t.sha256.clone();
                }
                None => node.link = Some(target),
            }
        }
        tar::EntryType::Symlink => node.link = link,
        t if t.is_file() => {
            let mut hasher = Sha256::new();
            std::io::copy(entry, &mut HashSink(&mut hasher))?;
            node.sha256 = Some(hex(&hasher.finalize()));
        }
        _ => {}
    }
    Ok(node)
}

struct HashSink<'a>(&'a mut Sha256);

impl std::io::Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every field of a node, in report order, as text.
fn fields(node: &Node) -> Vec<(&'static str, String)> {
    let mut out = vec![("kind", node.kind.clone())];
    if let Some(sha) = &node.sha256 {
        out.push(("content", format!("sha256:{}", &sha[..16])));
        out.push(("size", node.size.to_string()));
    }
    out.push(("mode", format!("{:04o}", node.mode)));
    out.push(("owner", format!("{}:{}", node.uid, node.gid)));
    out.push((
        "mtime",
        crate::store::image::rfc3339(i64::try_from(node.mtime).unwrap_or(i64::MAX)),
    ));
    if let Some(link) = &node.link {
        out.push(("link", link.clone()));
    }
    if !node.xattrs.is_empty() {
        out.push(("xattrs", node.xattrs.join(" ")));
    }
    out
}

fn tree_diff(left: &Tree, right: &Tree) -> Vec<PathDiff> {
    let paths: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        let diff = match (left.get(path), right.get(path)) {
            (Some(l), Some(r)) => {
                let changed = changed_fields(l, r);
                if changed.is_empty() {
                    continue;
                }
                PathDiff {
                    path: path.clone(),
                    change: Change::Changed,
                    fields: changed,
                    text_diff: None,
                }
            }
            (Some(l), None) => one_sided(path, Change::Removed, l),
            (None, Some(r)) => one_sided(path, Change::Added, r),
            (None, None) => continue,
        };
        out.push(diff);
    }
    out
}

/// The fields whose values differ between two nodes of one path.
fn changed_fields(left: &Node, right: &Node) -> Vec<Field> {
    let (lf, rf) = (fields(left), fields(right));
    let value = |fs: &[(&'static str, String)], name: &str| -> String {
        fs.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut names: Vec<&'static str> = Vec::new();
    for (name, _) in lf.iter().chain(rf.iter()) {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .filter(|name| value(&lf, name) != value(&rf, name))
        .map(|name| Field {
            field: name,
            left: value(&lf, name),
            right: value(&rf, name),
        })
        .collect()
}

fn one_sided(path: &str, change: Change, node: &Node) -> PathDiff {
    let fields = fields(node)
        .into_iter()
        .map(|(field, value)| match change {
            Change::Removed => Field {
                field,
                left: value,
                right: String::new(),
            },
            _ => Field {
                field,
                left: String::new(),
                right: value,
            },
        })
        .collect();
    PathDiff {
        path: path.to_string(),
        change,
        fields,
        text_diff: None,
    }
}

/// Small regular files whose content changed, on both sides.
fn text_candidates(paths: &[PathDiff], left: &Tree, right: &Tree) -> Vec<String> {
    paths
        .iter()
        .filter(|p| p.change == Change::Changed && p.fields.iter().any(|f| f.field == "content"))
        .filter(|p| {
            [left, right].iter().all(|tree| {
                tree.get(&p.path)
                    .is_some_and(|n| n.kind == "file" && n.size <= TEXT_DIFF_MAX_BYTES)
            })
        })
        .map(|p| p.path.clone())
        .collect()
}

/// The contents of `wanted` paths, each read from the layer that gave it.
fn read_contents(
    side: &Side,
    tree: &Tree,
    wanted: &[String],
) -> Result<BTreeMap<String, Vec<u8>>, DiffError> {
    let layers = side.store.manifest_layers(&side.manifest)?;
    let mut by_layer: BTreeMap<usize, BTreeSet<&String>> = BTreeMap::new();
    for path in wanted {
        if let Some(node) = tree.get(path) {
            by_layer.entry(node.layer).or_default().insert(path);
        }
    }
    let mut contents = BTreeMap::new();
    for (index, paths) in by_layer {
        for_each_entry(side, &layers[index], |entry, path| {
            if paths.contains(&path) && entry.header().entry_type().is_file() {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                contents.insert(path, bytes);
            }
            Ok(())
        })?;
    }
    Ok(contents)
}

fn add_text_diffs(
    paths: &mut [PathDiff],
    (left, left_tree): (&Side, &Tree),
    (right, right_tree): (&Side, &Tree),
) -> Result<(), DiffError> {
    let wanted = text_candidates(paths, left_tree, right_tree);
    if wanted.is_empty() {
        return Ok(());
    }
    let old = read_contents(left, left_tree, &wanted)?;
    let new = read_contents(right, right_tree, &wanted)?;
    for path in paths.iter_mut() {
        let (Some(a), Some(b)) = (old.get(&path.path), new.get(&path.path)) else {
            continue;
        };
        path.text_diff = text_diff(&path.path, a, b);
    }
    Ok(())
}

/// A unified diff of the first lines, when both sides are text.
fn text_diff(path: &str, old: &[u8], new: &[u8]) -> Option<String> {
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .filter(|t| !t.contains('\0'))
            .map(str::to_string)
    };
    let (old, new) = (text(old)?, text(new)?);
    let diff = similar::TextDiff::from_lines(&old, &new);
    let unified = diff
        .unified_diff()
        .context_radius(2)
        .header(&format!("left{path}"), &format!("right{path}"))
        .to_string();
    let mut lines: Vec<&str> = unified.lines().collect();
    if lines.len() > TEXT_DIFF_LINES {
        let more = lines.len() - TEXT_DIFF_LINES;
        lines.truncate(TEXT_DIFF_LINES);
        return Some(format!("{}\n... {more} more lines", lines.join("\n")));
    }
    Some(lines.join("\n"))
}

/// The image config as JSON pointer -> compact JSON value.
fn flatten_config(
    store: &Store,
    manifest: &ImageManifest,
) -> Result<BTreeMap<String, String>, DiffError> {
    let config = store.image_config(manifest)?;
    let value = serde_json::to_value(&config).unwrap_or_default();
    let mut flat = BTreeMap::new();
    flatten("", &value, &mut flat);
    Ok(flat)
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                flatten(&format!("{prefix}/{key}"), v, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}/{i}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn shorten(value: &str) -> String {
    match value.char_indices().nth(CONFIG_VALUE_CHARS) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_string(),
    }
}

fn config_diff(
    left: &BTreeMap<String, String>,
    right: &BTreeMap<String, String>,
) -> Vec<ConfigDiff> {
    let keys: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    keys.into_iter()
        .filter(|k| left.get(*k) != right.get(*k))
        .map(|k| ConfigDiff {
            key: k.clone(),
            left: left.get(k).map(|v| shorten(v)),
            right: right.get(k).map(|v| shorten(v)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: &str, layer: usize) -> Node {
        Node {
            kind: kind.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime: 0,
            link: None,
            xattrs: Vec::new(),
            sha256: Some("a".repeat(64)),
            layer,
        }
    }

    #[test]
    fn paths_normalize_to_absolute_without_dots() {
        assert_eq!(normalize(b"./etc/passwd"), "/etc/passwd");
        assert_eq!(normalize(b"etc/dir/"), "/etc/dir");
        assert_eq!(normalize(b"./"), "/");
        assert_eq!(parent_and_name("/etc"), ("/", "etc"));
        assert_eq!(parent_and_name("/etc/x"), ("/etc", "x"));
    }

    #[test]
    fn a_mode_change_names_the_field_and_both_modes() {
        let left = Tree::from([("/bin/tool".to_string(), node("file", 0))]);
        let mut changed = node("file", 1);
        changed.mode = 0o755;
        let right = Tree::from([("/bin/tool".to_string(), changed)]);
        let diff = tree_diff(&left, &right);
        assert_eq!(diff.len(), 1);
        assert_eq!(
            diff[0].fields,
            vec![Field {
                field: "mode",
                left: "0644".into(),
                right: "0755".into()
            }]
        );
    }

    #[test]
    fn added_and_removed_paths_show_what_they_are() {
        let left = Tree::from([("/old".to_string(), node("file", 0))]);
        let right = Tree::from([("/new".to_string(), node("dir", 0))]);
        let diff = tree_diff(&left, &right);
        assert_eq!(diff[0].path, "/new");
        assert_eq!(diff[0].change, Change::Added);
        assert_eq!(diff[0].fields[0].right, "dir");
        assert_eq!(diff[1].change, Change::Removed);
        assert_eq!(diff[1].fields[0].left, "file");
    }

    #[test]
    fn opaque_directories_hide_only_lower_layers() {
        let mut tree = Tree::from([
            ("/d".to_string(), node("dir", 0)),
            ("/d/low".to_string(), node("file", 0)),
            ("/d/same".to_string(), node("file", 1)),
            ("/dx".to_string(), node("file", 0)),
        ]);
        remove_below(&mut tree, "/d", |n| n.layer == 1);
        let keys: Vec<&String> = tree.keys().collect();
        assert_eq!(keys, ["/d", "/d/same", "/dx"]);
    }

    #[test]
    fn text_diffs_are_unified_and_binary_has_none() {
        let diff = text_diff("/stamp", b"Mon\n", b"Tue\n").unwrap();
        assert!(diff.contains("--- left/stamp"), "{diff}");
        assert!(diff.contains("-Mon") && diff.contains("+Tue"), "{diff}");
        assert_eq!(text_diff("/bin", b"\0\x01", b"\0\x02"), None);
    }

    #[test]
    fn config_differences_are_json_pointers() {
        let mut left = BTreeMap::new();
        let mut right = BTreeMap::new();
        flatten(
            "",
            &serde_json::json!({"created": "a", "config": {"Env": ["A=1"]}}),
            &mut left,
        );
        flatten(
            "",
            &serde_json::json!({"created": "b", "config": {"Env": ["A=1"]}}),
            &mut right,
        );
        let diff = config_diff(&left, &right);
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].key, "/created");
        assert_eq!(diff[0].left.as_deref(), Some("\"a\""));
    }
}
