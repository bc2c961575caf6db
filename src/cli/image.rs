//! `kbuild image`: a cell of the project's matrix as an OCI image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::progress::{summary, CliReporter};
use super::registry::{describe_transfer, RegistryArgs};
use super::{
    cancel_on_signals, key_value, open_store, parse_output, project_build_options, write_report,
    ArchArg, K8sArg, LayerArgs, StoreArgs, VariantArg,
};
use crate::compose::image::{build_image, ImageReport, ImageRequest};
use crate::project::{Project, SelectionRequest};

/// Build an OS image of the project: the flavor's spec with kbuild.yaml's
/// args, then the core layer (framework) and, for standard, the provider
/// layer (provider-kairos, edgevpn, k3s or k0s). The image is checked
/// (`kbuild check`) before it is tagged by the naming scheme `kbuild plan`
/// prints. Floating inputs are recorded in kbuild.lock.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct ImageArgs {
    #[command(flatten)]
    cell: CellArgs,
}

/// The flags that choose a cell of the matrix and say how to build its
/// image: `kbuild image`'s, which `kbuild iso` takes too.
#[derive(Debug, Args)]
pub struct CellArgs {
    /// The flavor [default: kbuild.yaml's default_flavor].
    #[arg(long, value_name = "FLAVOR")]
    flavor: Option<String>,
    /// Flavor release [default: the first kbuild.yaml lists].
    #[arg(long, value_name = "RELEASE")]
    release: Option<String>,
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,
    /// Kubernetes distribution of a standard image.
    #[arg(long, value_enum)]
    k8s: Option<K8sArg>,
    #[arg(long, value_name = "VERSION")]
    k8s_version: Option<String>,
    #[arg(long, value_enum)]
    arch: Option<ArchArg>,
    /// The model in names and kairos-release [default: kbuild.yaml's].
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// The release version [default: kbuild.yaml's].
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
    /// Build on this image instead of the flavor's base: a store name or a
    /// registry reference (for machines that cannot reach the public one).
    #[arg(long, value_name = "REF")]
    base_image: Option<String>,
    /// Also write the image here: oci:DIR[:TAG] or oci-archive:FILE.
    #[arg(long, value_name = "DEST")]
    output: Option<String>,
    /// Push the image to the name the naming scheme gives.
    #[arg(long)]
    push: bool,
    /// Resolve nothing that kbuild.lock does not hold (like cargo --locked).
    #[arg(long)]
    locked: bool,
    /// Go on even if `kbuild check` fails (with a warning).
    #[arg(long)]
    skip_check: bool,
    /// Write a JSON report (stages, steps, check, digests) to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Set a build-time variable of the flavor's spec (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = key_value)]
    build_args: Vec<(String, String)>,
    /// Run every step; take nothing from the step cache.
    #[arg(long)]
    no_cache: bool,
    /// The project directory holding kbuild.yaml.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,
    #[command(flatten)]
    layer: LayerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArgs,
}

impl CellArgs {
    /// The project, with `--model` and `--version` applied.
    pub fn project(&self) -> anyhow::Result<Project> {
        let mut project = Project::load(&self.project)
            .with_context(|| format!("cannot load the project in {}", self.project.display()))?;
        if let Some(model) = &self.model {
            project.config.model = model.clone();
        }
        if let Some(version) = &self.version {
            project.config.version = version.clone();
        }
        Ok(project)
    }

    /// The library request these flags make.
    pub fn request(&self, project: &Project) -> anyhow::Result<ImageRequest> {
        let output = self.output.as_deref().map(parse_output).transpose()?;
        let registry = self.registry.options_for(project)?;
        Ok(ImageRequest {
            selection: SelectionRequest {
                flavor: self.flavor.clone(),
                release: self.release.clone(),
                variant: self.variant.map(Into::into),
                arch: self.arch.map(Into::into),
                k8s: self.k8s.map(Into::into),
                k8s_version: self.k8s_version.clone(),
            },
            extra_args: self.build_args.iter().cloned().collect::<BTreeMap<_, _>>(),
            base_image: self.base_image.clone(),
            locked: self.locked,
            skip_check: self.skip_check,
            output,
            push: self.push,
            options: project_build_options(project, self.no_cache, &self.layer, registry)?,
        })
    }

    pub fn store(&self) -> anyhow::Result<crate::store::Store> {
        open_store(&self.store)
    }

    /// Options to build a spec (not a cell) with these flags: its
    /// `--build-arg`s, layer, registry and cache settings.
    pub fn spec_options(
        &self,
        context: PathBuf,
        plan: crate::plan::PlanRequest,
    ) -> anyhow::Result<crate::executor::BuildOptions> {
        let mut options = super::build_options(
            context,
            self.no_cache,
            &self.layer,
            self.registry.options()?,
        )?;
        options.plan = crate::plan::PlanRequest {
            build_args: self.build_args.iter().cloned().collect(),
            ..plan
        };
        Ok(options)
    }

    pub fn report_path(&self) -> Option<&std::path::Path> {
        self.report.as_deref()
    }
}

/// Prints the check report of an image that failed it.
pub fn show_failed_check(err: &crate::compose::ComposeError) {
    if let crate::compose::ComposeError::CheckFailed { image, report } = err {
        eprint!("{}", super::check::render(image, report));
    }
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let cell = &args.cell;
    let project = cell.project()?;
    let request = cell.request(&project)?;
    let store = cell.store()?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let result = build_image(&store, &project, &request, &reporter, &cancel);
    if let Err(err) = &result {
        show_failed_check(err);
    }
    let report = result?;
    render(&report);
    if let Some(path) = cell.report_path() {
        write_report(path, &report)?;
    }
    println!("{} {}", report.image, report.digest);
    Ok(())
}

pub fn render(report: &ImageReport) {
    for stage in &report.stages {
        summary!(
            "{:<9} {} steps, {} cached  {}",
            stage.stage,
            stage.steps,
            stage.cached,
            stage.name
        );
    }
    if let Some(check) = &report.check {
        summary!(
            "check     {} of {} checks passed",
            check.findings.iter().filter(|f| f.ok).count(),
            check.findings.len()
        );
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(pushed) = &report.published.pushed {
        summary!("push      {}", describe_transfer(pushed));
    }
    if report.lock_written {
        summary!("lock      kbuild.lock updated");
    }
    summary!("image     {} ({:.1}s)", report.image, report.seconds);
}
