//! `kbuild keys generate DIR`: a Secure Boot key set of one's own. PK,
//! KEK and db each get an RSA-2048 key and a self-signed X.509
//! certificate (made by the host's openssl: PEM `.crt`, DER `.cer`), the
//! EFI signature list that enrolls it (`.esl`, [`esl`]), and the set an
//! `ENROLL.md` saying how to enroll it, with the owner GUID it used.
//!
//! Invariants:
//! * An existing key set is never overwritten: DIR must not exist or be
//!   an empty directory.
//! * The set appears whole: it is written into a temp directory beside
//!   DIR and renamed; a failure leaves nothing.
//! * Private keys are readable by their owner only (0600).

pub mod esl;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::tools::{self, Located, ToolError};

pub use esl::Guid;

/// The three keys of a set, in the order firmware trusts them.
pub const KEYS: [&str; 3] = ["PK", "KEK", "db"];

/// What `generate` makes.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub dir: PathBuf,
    /// Goes into each certificate's subject: `CN=<name> <key>`.
    pub common_name: String,
    pub days: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} already holds files: kbuild never overwrites a key set", .0.display())]
    NotEmpty(PathBuf),
    #[error("the common name must be printable text without '/' or '=', not {0:?}")]
    BadName(String),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl KeyError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
        move |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the request is at fault (exit 2).
    pub fn is_input(&self) -> bool {
        matches!(self, KeyError::NotEmpty(_) | KeyError::BadName(_))
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub dir: PathBuf,
    pub owner: Guid,
    /// Per key: its `.esl` file.
    pub lists: Vec<PathBuf>,
}

/// Writes a new key set into `request.dir`.
pub fn generate(request: &KeyRequest) -> Result<KeySet, KeyError> {
    let name = &request.common_name;
    if name.is_empty() || name.chars().any(|c| c.is_control() || c == '/' || c == '=') {
        return Err(KeyError::BadName(name.clone()));
    }
    let dir = &request.dir;
    if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(KeyError::NotEmpty(dir.clone()));
    }
    let openssl = tools::locate(&tools::OPENSSL)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(KeyError::io(parent))?;
    let staging = crate::store::atomic::temp_path_in(parent);
    fs::create_dir(&staging).map_err(KeyError::io(&staging))?;
    let owner = Guid::random().map_err(KeyError::io(Path::new("/dev/urandom")))?;
    let written = write_set(&openssl, request, &staging, &owner).and_then(|()| {
        // An empty DIR the user made goes; rename needs the name free.
        let _ = fs::remove_dir(dir);
        fs::rename(&staging, dir).map_err(KeyError::io(dir))
    });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(KeySet {
        dir: dir.clone(),
        owner,
        lists: KEYS.iter().map(|k| dir.join(format!("{k}.esl"))).collect(),
    })
}

fn write_set(
    openssl: &Located,
    request: &KeyRequest,
    dir: &Path,
    owner: &Guid,
) -> Result<(), KeyError> {
    for key in KEYS {
        let path = |ext: &str| dir.join(format!("{key}.{ext}"));
        let (private, pem, der) = (path("key"), path("crt"), path("cer"));
        openssl.run([
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-sha256".as_ref(),
            "-days".as_ref(),
            request.days.to_string().as_ref(),
            "-subj".as_ref(),
            format!("/CN={} {key}/", request.common_name).as_ref(),
            "-keyout".as_ref(),
            private.as_os_str(),
            "-out".as_ref(),
            pem.as_os_str(),
        ] as [&std::ffi::OsStr; 14])?;
        fs::set_permissions(&private, fs::Permissions::from_mode(0o600))
            .map_err(KeyError::io(&private))?;
        openssl.run([
            "x509".as_ref(),
            "-in".as_ref(),
            pem.as_os_str(),
            "-outform".as_ref(),
            "DER".as_ref(),
            "-out".as_ref(),
            der.as_os_str(),
        ] as [&std::ffi::OsStr; 7])?;
        let cert = fs::read(&der).map_err(KeyError::io(&der))?;
        let list = path("esl");
        fs::write(&list, esl::x509_list(owner, &cert)).map_err(KeyError::io(&list))?;
    }
    let guide = dir.join("ENROLL.md");
    fs::write(&guide, enroll_guide(owner)).map_err(KeyError::io(&guide))?;
    let guid = dir.join("GUID");
    fs::write(&guid, format!("{owner}\n")).map_err(KeyError::io(&guid))
}

/// How to enroll the set, with its owner GUID filled in.
fn enroll_guide(owner: &Guid) -> String {
    format!(
        "# Enrolling this Secure Boot key set\n\
         \n\
         Owner GUID: {owner}. Keep `*.key` secret: whoever has `db.key` can sign\n\
         what these machines boot, and `PK.key` controls the keys themselves.\n\
         \n\
         Files per key (PK, KEK, db): `.key` private key, `.crt` certificate\n\
         (PEM), `.cer` the same certificate (DER), `.esl` its EFI signature list.\n\
         \n\
         ## Real hardware\n\
         \n\
         1. In the firmware setup, clear the platform key (\"Reset to Setup\n\
            Mode\" or \"Delete all Secure Boot keys\"). Keep Microsoft's keys in\n\
            db instead of clearing them if the machine needs option ROMs signed\n\
            by Microsoft (most graphics cards and NICs do).\n\
         2. Enroll db, then KEK, then PK last (enrolling PK leaves Setup Mode).\n\
            Firmware menus take the `.cer` or `.esl` files from a FAT USB stick.\n\
            From Linux in Setup Mode, with efitools:\n\
         \n\
         ```sh\n\
         for k in db KEK PK; do\n\
             signer=$([ $k = db ] && echo KEK || echo PK)\n\
             sign-efi-sig-list -g {owner} -k $signer.key -c $signer.crt $k $k.esl $k.auth\n\
             efi-updatevar -f $k.auth $k\n\
         done\n\
         ```\n\
         \n\
         3. Turn Secure Boot on. The machine now boots only what `db.key` signed\n\
            (plus what Microsoft signed, if you kept their db entries).\n\
         \n\
         ## QEMU/OVMF\n\
         \n\
         A variable store with this set enrolled and Secure Boot on, made with\n\
         virt-firmware (`pip install virt-firmware`):\n\
         \n\
         ```sh\n\
         virt-fw-vars --input /usr/share/OVMF/OVMF_VARS_4M.fd --output my_VARS.fd \\\n\
             --set-pk {owner} PK.crt --add-kek {owner} KEK.crt --add-db {owner} db.crt \\\n\
             --secure-boot\n\
         kbuild boot my.iso --firmware uefi-secure --vars my_VARS.fd\n\
         ```\n"
    )
}
