//! `kbuild netboot`: a cell's image as a network boot set: its kernel,
//! initrd and live squashfs (the ISO's parts) and an iPXE script that
//! boots them with the flavor's netboot command line, the squashfs fetched
//! over HTTP by the initrd.
//!
//! ```text
//! <name>.kernel  <name>.initrd  <name>.squashfs  <name>.ipxe   (+ .sha256 each)
//! <name>.ipxe:
//!   isset ${base-url} || set base-url <--base-url>     (when given)
//!   kernel <base>/<name>.kernel <netboot_cmdline, {squashfs_url} = ${base-url}<name>.squashfs>
//!   initrd <base>/<name>.initrd
//!   boot
//! ```
//! Without `--base-url` the kernel and initrd are named relative to the
//! script (iPXE resolves them against the script's own URL), and the
//! script needs `base-url` set by whoever chains it, since the initrd's
//! download needs an absolute URL; it says so and stops when it is not.
//!
//! Invariants: the same image and epoch give the same bytes (the files
//! are the ISO's parts); files are published whole ([`crate::artifact`])
//! and left alone when already right.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::artifact;
use crate::compose::image::ImageReport;
use crate::digest::Digest;
use crate::iso::{self, parts, IsoError, IsoRequest};
use crate::project::Project;
use crate::report::{phase, Reporter};
use crate::sandbox::Cancel;
use crate::store::atomic::TempFile;
use crate::store::{Store, StoreError};

/// The iPXE setting the script takes the files' URL from.
pub const BASE_URL_SETTING: &str = "base-url";

pub struct NetbootRequest {
    /// The cell, `--from`, `-o`, `--name` and `--cmdline`, as for an ISO.
    pub iso: IsoRequest,
    /// Where the files will be served (ending in `/` or not).
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetbootFile {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// False when it was already up to date.
    pub written: bool,
}

#[derive(Debug, Serialize)]
pub struct NetbootReport {
    pub image: String,
    pub image_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub built: Option<ImageReport>,
    /// The iPXE script.
    pub script: PathBuf,
    pub files: Vec<NetbootFile>,
    pub base_url: Option<String>,
    /// The kernel command line as the script passes it.
    pub cmdline: String,
    pub parts_cached: bool,
    pub epoch: i64,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    #[error(transparent)]
    Iso(#[from] IsoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--base-url {0:?} is not an http:// or https:// URL")]
    BadBaseUrl(String),
    #[error("the flavor's netboot_cmdline {0:?} has no {{squashfs_url}} for the squashfs's URL")]
    NoSquashfsUrl(String),
    #[error("the netboot command line {0:?} holds what iPXE would read as another command, a comment or a setting")]
    BadCmdline(String),
    #[error("the name {0:?} must be letters, digits, `.`, `_`, `-` or `+` to stand in URLs and the iPXE script")]
    BadName(String),
    #[error("--uki and --overlay-iso are ISO options")]
    IsoOnly,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl NetbootError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetbootError + '_ {
        move |source| NetbootError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn is_input(&self) -> bool {
        match self {
            NetbootError::Iso(e) => e.is_input(),
            NetbootError::BadBaseUrl(_)
            | NetbootError::NoSquashfsUrl(_)
            | NetbootError::BadCmdline(_)
            | NetbootError::BadName(_)
            | NetbootError::IsoOnly => true,
            _ => false,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            NetbootError::Iso(e) => e.hint(),
            NetbootError::BadBaseUrl(_) => Some(
                "give the URL the set's directory is served at, e.g. http://boot.example/kairos/"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// `url` as a base: checked, ending in `/`.
fn base(url: &str) -> Result<String, NetbootError> {
    let plain = url.starts_with("http://") || url.starts_with("https://");
    if !plain || url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.contains("${") {
        return Err(NetbootError::BadBaseUrl(url.to_string()));
    }
    Ok(match url.ends_with('/') {
        true => url.to_string(),
        false => format!("{url}/"),
    })
}

/// What the script's kernel line may not hold: a newline ends the
/// command, `||`, `&&` and `;` start another, a word starting with `#`
/// cuts the line, and `${` would expand an iPXE setting nobody meant.
fn check_ipxe(text: &str) -> Result<(), NetbootError> {
    let breaks = text.contains(['\n', '\r'])
        || text.contains("${")
        || text
            .split_whitespace()
            .any(|word| matches!(word, "||" | "&&" | ";") || word.starts_with('#'));
    match breaks {
        true => Err(NetbootError::BadCmdline(text.to_string())),
        false => Ok(()),
    }
}

/// Whether `name` can stand in a URL and an iPXE command unquoted.
pub fn is_url_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

/// The iPXE script.
pub fn script(name: &str, title: &str, cmdline: &str, base_url: Option<&str>) -> String {
    let setting = BASE_URL_SETTING;
    let (kernel, initrd) = match base_url {
        Some(_) => (
            format!("${{{setting}}}{name}.kernel"),
            format!("${{{setting}}}{name}.initrd"),
        ),
        None => (format!("{name}.kernel"), format!("{name}.initrd")),
    };
    let preset = base_url
        .map(|url| format!("isset ${{{setting}}} || set {setting} {url}\n"))
        .unwrap_or_default();
    format!(
        "#!ipxe\n\
         # {title}: network boot set made by kbuild. The initrd downloads the\n\
         # squashfs from ${{{setting}}}; chain this script with {setting} set to\n\
         # where these files are served (ending in /) to serve them elsewhere.\n\
         {preset}\
         isset ${{{setting}}} || goto no_base_url\n\
         isset ${{net0/ip}} || dhcp\n\
         kernel {kernel} initrd={name}.initrd {cmdline}\n\
         initrd {initrd}\n\
         boot\n\
         :no_base_url\n\
         echo {name}: set {setting} to the URL these files are served at, then chain this script\n\
         exit 1\n"
    )
}

/// Builds (or reuses) the cell's image and writes its netboot set.
pub fn build_netboot(
    store: &Store,
    project: &Project,
    request: &NetbootRequest,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<NetbootReport, NetbootError> {
    let started = Instant::now();
    if request.iso.uki.is_some() || request.iso.overlay.is_some() {
        return Err(NetbootError::IsoOnly);
    }
    let base_url = request.base_url.as_deref().map(base).transpose()?;
    let selection = project
        .select(&request.iso.image.selection)
        .map_err(IsoError::from)?;
    let template = &project.flavors[&selection.id.flavor]
        .boot
        .live
        .netboot_cmdline;
    if !template.contains("{squashfs_url}") {
        return Err(NetbootError::NoSquashfsUrl(template.clone()));
    }
    let requested = match &request.iso.extra_cmdline {
        Some(extra) => format!("{template} {extra}"),
        None => template.clone(),
    };
    // Checked before the only `${...}` kbuild writes itself goes in.
    check_ipxe(&requested)?;
    if let Some(name) = request.iso.name.as_deref().filter(|n| !is_url_safe_name(n)) {
        return Err(NetbootError::BadName(name.to_string()));
    }
    let prepared = iso::prepare(store, project, &request.iso, reporter, cancel)?;
    let name = &prepared.name;
    if !is_url_safe_name(name) {
        return Err(NetbootError::BadName(name.clone()));
    }
    let squashfs_url = format!("${{{BASE_URL_SETTING}}}{name}.squashfs");
    let mut cmdline = requested.replace("{squashfs_url}", &squashfs_url);
    let console = prepared.selection.id.arch.serial_console();
    cmdline = format!("{cmdline} console=tty0 console={console},115200");
    let text = script(name, name, &cmdline, base_url.as_deref());
    let dir = &request.iso.output_dir;
    let files = phase(
        reporter,
        "netboot",
        || {
            std::fs::create_dir_all(dir).map_err(NetbootError::io(dir))?;
            // The script goes last; until then no old script may point at
            // a half-replaced set.
            let script = dir.join(format!("{name}.ipxe"));
            if !std::fs::read_to_string(&script).is_ok_and(|old| old == text) {
                for stale in [artifact::sums_path(&script), script.clone()] {
                    match std::fs::remove_file(&stale) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(NetbootError::io(&stale)(e))
                        }
                        _ => {}
                    }
                }
            }
            let sources = [
                (format!("{name}.kernel"), Source::Part(parts::KERNEL)),
                (format!("{name}.initrd"), Source::Part(parts::INITRD)),
                (format!("{name}.squashfs"), Source::Part(parts::SQUASHFS)),
                (format!("{name}.ipxe"), Source::Text(&text)),
            ];
            sources
                .iter()
                .map(|(file, source)| publish(store, &prepared, dir, file, source))
                .collect::<Result<Vec<_>, _>>()
        },
        |files: &Vec<NetbootFile>| {
            let written = files.iter().filter(|f| f.written).count();
            format!(
                "{} files in {} ({written} written)",
                files.len(),
                dir.display()
            )
        },
    )?;
    Ok(NetbootReport {
        image: prepared.image_name.clone(),
        image_digest: prepared.image_digest.to_string(),
        built: prepared.built.clone(),
        script: dir.join(format!("{name}.ipxe")),
        files,
        base_url,
        cmdline,
        parts_cached: prepared.parts.cached,
        epoch: prepared.epoch,
        warnings: prepared.warnings.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

enum Source<'a> {
    /// A file of the ISO parts.
    Part(&'static str),
    Text(&'a str),
}

fn publish(
    store: &Store,
    prepared: &iso::Prepared,
    dir: &Path,
    file: &str,
    source: &Source,
) -> Result<NetbootFile, NetbootError> {
    let path = dir.join(file);
    let inputs = match source {
        Source::Part(part) => format!("part {part}"),
        Source::Text(text) => format!("text {}", Digest::of(text.as_bytes())),
    };
    let note = format!("netboot {file} {}", Digest::of(inputs.as_bytes()).hex());
    let key = &prepared.key;
    let notes = &prepared.parts.entry.notes;
    let (sha256, written) = match artifact::up_to_date(store, key, notes, &note, &path)? {
        Some(sha256) => (sha256, false),
        None => {
            let temp = TempFile::create_in(dir).map_err(NetbootError::io(dir))?;
            match source {
                Source::Part(part) => {
                    std::fs::copy(prepared.part(part), temp.path())
                        .map_err(NetbootError::io(&path))?;
                }
                Source::Text(text) => {
                    std::fs::write(temp.path(), text).map_err(NetbootError::io(temp.path()))?
                }
            }
            let sha256 = artifact::publish(temp.path(), &path).map_err(NetbootError::io(&path))?;
            temp.renamed();
            artifact::record(store, key, &note, &sha256)?;
            (sha256, true)
        }
    };
    let size = std::fs::metadata(&path)
        .map_err(NetbootError::io(&path))?
        .len();
    Ok(NetbootFile {
        path,
        sha256,
        size,
        written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_a_base_url_the_script_presets_it_and_names_files_under_it() {
        let text = script(
            "k",
            "k",
            "boot=live fetch=${base-url}k.squashfs",
            Some("http://10.0.2.2:8080/set/"),
        );
        assert!(text.starts_with("#!ipxe\n"), "{text}");
        assert!(
            text.contains("isset ${base-url} || set base-url http://10.0.2.2:8080/set/\n"),
            "{text}"
        );
        assert!(
            text.contains("kernel ${base-url}k.kernel initrd=k.initrd boot=live fetch=${base-url}k.squashfs\n"),
            "{text}"
        );
        assert!(text.contains("initrd ${base-url}k.initrd\n"), "{text}");
    }

    #[test]
    fn without_one_files_are_relative_and_the_script_asks_for_it() {
        let text = script("k", "k", "boot=live", None);
        assert!(text.contains("kernel k.kernel "), "{text}");
        assert!(text.contains("initrd k.initrd\n"), "{text}");
        assert!(!text.contains("|| set base-url"), "{text}");
        assert!(
            text.contains("isset ${base-url} || goto no_base_url"),
            "{text}"
        );
    }

    #[test]
    fn base_urls_and_extras_are_checked() {
        assert_eq!(base("http://h/x").unwrap(), "http://h/x/");
        assert_eq!(base("https://h/").unwrap(), "https://h/");
        for bad in [
            "ftp://h/",
            "h/x",
            "http://h/ x",
            "http://h/${x}",
            "http://h/\n",
        ] {
            assert!(base(bad).is_err(), "{bad}");
        }
        assert!(check_ipxe("quiet splash fetch={squashfs_url}").is_ok());
        for bad in [
            "a\nchain http://evil",
            "x=${net0/mac}",
            "quiet || chain http://evil",
            "quiet ; shell",
            "quiet && shell",
            "quiet #rest",
        ] {
            assert!(check_ipxe(bad).is_err(), "{bad}");
        }
        assert!(is_url_safe_name("kairos-debian-12-core-amd64-v3.2.4+k3s1"));
        for bad in ["a b", "a?b", "a%20", ".hidden", "", "ü"] {
            assert!(!is_url_safe_name(bad), "{bad}");
        }
    }
}
