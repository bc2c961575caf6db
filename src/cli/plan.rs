//! `kbuild plan`: the resolved stage graph of a spec, or of a flavor of the
//! project, without doing any work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::compose;
use crate::dockerfile;
use crate::plan::{self, Origin, Plan, PlanRequest};
use crate::project::{Arch, K8sDistribution, Project, SelectionRequest, Variant};

use super::OutputFormat as Format;
use super::{key_value, ArchArg, K8sArg, UsageError, VariantArg};

/// Show the stage graph a build would run: build order, external images
/// and, for a flavor, the composed layers and artifact names.
///
/// Either a spec file (-f) or a flavor of the project (--flavor).
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The spec file to plan.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "flavor"
    )]
    file: Option<PathBuf>,

    /// Plan a flavor of the project in --project (images/Dockerfile.<FLAVOR> with kbuild.yaml's args).
    #[arg(long, value_name = "FLAVOR")]
    flavor: Option<String>,

    /// Flavor release (default: the first release kbuild.yaml lists for the flavor).
    #[arg(long, value_name = "RELEASE", requires = "flavor")]
    release: Option<String>,

    /// Variant to compose on top of the flavor base.
    #[arg(long, value_enum, requires = "flavor")]
    variant: Option<VariantArg>,

    /// Kubernetes distribution of the standard variant (default: the first in kbuild.yaml).
    #[arg(long, value_enum, requires = "flavor")]
    k8s: Option<K8sArg>,

    /// Kubernetes version (default: the first kbuild.yaml lists).
    #[arg(long, value_name = "VERSION", requires = "flavor")]
    k8s_version: Option<String>,

    /// Target architecture of the flavor build (default: the host's if kbuild.yaml lists it).
    #[arg(long, value_enum, requires = "flavor")]
    arch: Option<ArchArg>,

    /// The project directory holding kbuild.yaml.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,

    /// Set a build-time variable (repeatable); overrides ARG defaults.
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = key_value)]
    build_args: Vec<(String, String)>,

    /// The stage to build (default: the last stage).
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,

    /// Target platform as OS/ARCH[/VARIANT] (default: the host's, or linux/<--arch> for a flavor).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let platform = super::parse_platform(args.platform.as_deref())?;
    let mut request = PlanRequest {
        build_args: BTreeMap::new(),
        target: args.target.clone(),
        platform,
        source_date_epoch: super::source_date_epoch()?,
    };
    match (&args.file, &args.flavor) {
        (Some(file), None) => {
            request.build_args = args.build_args.iter().cloned().collect();
            let plan = plan_file(file, &request)?;
            print_file_plan(&plan, args.format)
        }
        (None, Some(flavor)) => plan_flavor(&args, flavor, request),
        _ => Err(UsageError(
            "give a spec with -f FILE or a project flavor with --flavor FLAVOR".into(),
        )
        .into()),
    }
}

fn plan_file(file: &Path, request: &PlanRequest) -> anyhow::Result<Plan> {
    let dockerfile = dockerfile::parse_file(file)?;
    let plan = plan::plan(&dockerfile, request)
        .with_context(|| format!("cannot plan {}", file.display()))?;
    Ok(plan)
}

fn print_file_plan(plan: &Plan, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan.summary())?),
        Format::Text => print!("{}", render_text(plan)),
    }
    Ok(())
}

fn render_text(plan: &Plan) -> String {
    let summary = plan.summary();
    let mut out = format!(
        "target:   {}\nplatform: {}\nstages:\n",
        summary.target, plan.platform
    );
    for (step, &index) in plan.order.iter().enumerate() {
        let header = &plan.headers[index];
        let base = match &header.base {
            Origin::Scratch => "scratch".to_string(),
            Origin::Image(r) => format!("image {r}"),
            Origin::Stage(s) => format!("stage {}", plan.headers[*s].name),
        };
        out.push_str(&format!(
            "  {:>2}. {:<28} from {base}\n",
            step + 1,
            header.name
        ));
    }
    out.push_str("images:\n");
    if summary.images.is_empty() {
        out.push_str("  (none)\n");
    }
    for image in &summary.images {
        out.push_str(&format!("  - {image}\n"));
    }
    out
}

fn plan_flavor(args: &PlanArgs, flavor: &str, request: PlanRequest) -> anyhow::Result<()> {
    let project = Project::load(&args.project)
        .with_context(|| format!("cannot load the project in {}", args.project.display()))?;
    let selection = SelectionRequest {
        flavor: Some(flavor.to_string()),
        release: args.release.clone(),
        variant: args.variant.map(Variant::from),
        arch: args.arch.map(Arch::from),
        k8s: args.k8s.map(K8sDistribution::from),
        k8s_version: args.k8s_version.clone(),
    };
    let extra: BTreeMap<String, String> = args.build_args.iter().cloned().collect();
    let planned = compose::plan_flavor(
        &project,
        &selection,
        &extra,
        request.target,
        request.platform,
    )?;
    let flavor_plan = &planned.flavor;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(flavor_plan)?),
        Format::Text => {
            print!("{}", render_text(&planned.plan));
            println!("layers:");
            println!("  - base        {}", flavor_plan.dockerfile.display());
            for layer in &flavor_plan.layers {
                let names: Vec<String> = layer
                    .packages
                    .iter()
                    .map(|p| format!("{} {}", p.name, p.version))
                    .collect();
                println!("  - {:<11} {}", layer.layer, names.join(", "));
            }
            println!(
                "artifacts:\n  iso:   {}\n  image: {}",
                flavor_plan.artifacts.iso, flavor_plan.artifacts.image
            );
        }
    }
    Ok(())
}
