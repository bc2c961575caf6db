//! The distribution's signed boot chain on the ESP. When the image has
//! the flavor's signed shim and GRUB, the ESP boots through them: shim as
//! the removable-media loader, the signed GRUB beside it under the name
//! shim loads, the MOK manager when the image has one, and a chain config
//! where a GRUB that reads its config from the ESP looks for it. Shim and
//! the signed GRUB also run with Secure Boot off, so such an ISO boots
//! wherever the image's own GRUB would have.
//!
//! Invariants:
//! * Only files of the image enter the chain (read inside its root), none
//!   from the host; nothing here is signed by kbuild.
//! * ESP paths come from the flavor and are checked to be plain relative
//!   paths, so they stay inside the FAT image.

use std::path::{Path, PathBuf};

use super::{copy_out, Firmware, IsoError};
use crate::project::flavor::SecureBoot;
use crate::project::Arch;
use crate::rootfs::Root;

/// Where the chain's files wait in the parts directory until the ESP is
/// made (then they are removed).
const STAGED: [&str; 4] = [
    "shim.efi",
    "signed-grub.efi",
    "mok-manager.efi",
    "chain.cfg",
];

/// `path` for `firmware`'s architecture: the flavor names amd64's files.
fn for_arch(path: &str, firmware: &Firmware) -> String {
    match firmware.arch {
        Arch::Amd64 => path.to_string(),
        Arch::Arm64 => path.replace("x86_64", "arm64").replace("x64", "aa64"),
    }
}

/// The first of `candidates` the image has.
fn first_present(root: &Root, candidates: &[String], firmware: &Firmware) -> Option<String> {
    candidates
        .iter()
        .map(|path| for_arch(path, firmware))
        .find(|path| root.exists(&crate::rootfs::clean(path)))
}

/// A flavor's ESP path: relative, plain components, no `..`.
fn esp_path(path: &str) -> Result<String, IsoError> {
    let plain = !path.starts_with('/') && path.split('/').all(crate::rootfs::is_plain_name);
    match plain {
        true => Ok(path.to_string()),
        false => Err(IsoError::BadEspPath(path.to_string())),
    }
}

/// Copies the chain out of the image into `dir` and returns the ESP's
/// files (path on the ESP, staged file), shim first; `None` when the
/// image lacks the signed shim or GRUB. `chain_config` is what a GRUB
/// reading its config from the ESP gets.
pub(crate) fn stage(
    root: &Root,
    secure_boot: &SecureBoot,
    firmware: &Firmware,
    dir: &Path,
    chain_config: &str,
) -> Result<Option<Vec<(String, PathBuf)>>, IsoError> {
    let (Some(shim), Some(grub)) = (
        first_present(root, &secure_boot.shim, firmware),
        first_present(root, &secure_boot.grub, firmware),
    ) else {
        return Ok(None);
    };
    let suffix = match firmware.arch {
        Arch::Amd64 => "x64",
        Arch::Arm64 => "aa64",
    };
    let [shim_file, grub_file, mok_file, config_file] = STAGED.map(|name| dir.join(name));
    copy_out(root, &shim, &shim_file)?;
    copy_out(root, &grub, &grub_file)?;
    let mut files = vec![
        (format!("EFI/BOOT/{}", firmware.efi_loader), shim_file),
        (
            format!(
                "EFI/BOOT/{}",
                esp_path(&for_arch(&secure_boot.grub_name, firmware))?
            ),
            grub_file,
        ),
    ];
    if let Some(mok) = first_present(root, &secure_boot.mok_manager, firmware) {
        copy_out(root, &mok, &mok_file)?;
        files.push((format!("EFI/BOOT/mm{suffix}.efi"), mok_file));
    }
    if let Some(config) = &secure_boot.config_on_esp {
        let config = esp_path(config)?;
        std::fs::write(&config_file, chain_config).map_err(IsoError::io(&config_file))?;
        files.push((config, config_file));
    }
    Ok(Some(files))
}

/// Removes what [`stage`] left in `dir`.
pub(crate) fn unstage(dir: &Path) -> Result<(), IsoError> {
    for name in STAGED {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IsoError::io(&path)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(config_on_esp: Option<&str>) -> SecureBoot {
        SecureBoot {
            shim: vec![
                "/missing/shim.efi".into(),
                "/usr/lib/shim/shimx64.efi.signed".into(),
            ],
            grub: vec!["/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed".into()],
            grub_name: "grubx64.efi".into(),
            mok_manager: vec!["/usr/lib/shim/mmx64.efi.signed".into()],
            config_on_esp: config_on_esp.map(str::to_string),
        }
    }

    fn image(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, file.as_bytes()).unwrap();
        }
        dir
    }

    #[test]
    fn shim_first_the_signed_grub_beside_it_and_the_mok_manager() {
        let image = image(&[
            "/usr/lib/shim/shimx64.efi.signed",
            "/usr/lib/shim/mmx64.efi.signed",
            "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
        ]);
        let root = Root::open(image.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let firmware = Firmware::for_arch(Arch::Amd64);
        let files = stage(&root, &chain(None), &firmware, out.path(), "cfg")
            .unwrap()
            .unwrap();
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "EFI/BOOT/BOOTX64.EFI",
                "EFI/BOOT/grubx64.efi",
                "EFI/BOOT/mmx64.efi"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&files[0].1).unwrap(),
            "/usr/lib/shim/shimx64.efi.signed"
        );
        unstage(out.path()).unwrap();
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_config_on_the_esp_is_written_and_checked() {
        let image = image(&[
            "/usr/lib/shim/shimx64.efi.signed",
            "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
        ]);
        let root = Root::open(image.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let firmware = Firmware::for_arch(Arch::Amd64);
        let files = stage(
            &root,
            &chain(Some("EFI/BOOT/grub.cfg")),
            &firmware,
            out.path(),
            "search --file /.disk/x\n",
        )
        .unwrap()
        .unwrap();
        let (name, path) = files.last().unwrap();
        assert_eq!(name, "EFI/BOOT/grub.cfg");
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "search --file /.disk/x\n"
        );
        for bad in ["/EFI/x.cfg", "EFI/../../x.cfg", "EFI//x.cfg"] {
            let result = stage(&root, &chain(Some(bad)), &firmware, out.path(), "");
            assert!(matches!(result, Err(IsoError::BadEspPath(_))), "{bad}");
        }
    }

    #[test]
    fn no_chain_without_the_signed_grub_and_arm64_paths_are_derived() {
        let image = image(&["/usr/lib/shim/shimaa64.efi.signed"]);
        let root = Root::open(image.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let arm = Firmware::for_arch(Arch::Arm64);
        assert!(stage(&root, &chain(None), &arm, out.path(), "")
            .unwrap()
            .is_none());
        assert_eq!(
            for_arch("/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed", &arm),
            "/usr/lib/grub/arm64-efi-signed/gcdaa64.efi.signed"
        );
    }
}
