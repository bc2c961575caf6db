//! The flags `kbuild iso`, `disk` and `netboot` share: the cell, an image
//! to use instead of building the cell's, where the artifacts go, their
//! name and what to add to the kernel command line.

use std::path::PathBuf;

use clap::Args;

use super::image::CellArgs;
use crate::iso::IsoRequest;
use crate::project::Project;

#[derive(Debug, Args)]
pub struct MediumArgs {
    #[command(flatten)]
    pub cell: CellArgs,
    /// Use this image instead of building the cell's: a store name, a
    /// registry reference or oci:DIR[:TAG]. The cell flags still choose
    /// the flavor's boot facts and the artifacts' name.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["output", "push", "base_image"])]
    pub from: Option<String>,
    /// The directory the artifacts are written to [default: kbuild.yaml's
    /// output_dir].
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// The artifacts' file name without its extension [default: the
    /// naming scheme's].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Append to the flavor's kernel command line.
    #[arg(long, value_name = "EXTRA")]
    pub cmdline: Option<String>,
}

impl MediumArgs {
    /// The request these flags make (no overlay, no UKI: the ISO adds
    /// its own).
    pub fn request(&self, project: &Project) -> anyhow::Result<IsoRequest> {
        Ok(IsoRequest {
            image: self.cell.request(project)?,
            from: self.from.clone(),
            output_dir: self
                .output_dir
                .clone()
                .unwrap_or_else(|| project.root.join(&project.config.output_dir)),
            name: self.name.clone(),
            overlay: None,
            extra_cmdline: self.cmdline.clone(),
            uki: None,
        })
    }
}
