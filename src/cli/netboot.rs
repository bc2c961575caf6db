//! `kbuild netboot`: a cell's image as a network boot set.

use clap::Args;

use super::image::show_failed_check;
use super::medium::MediumArgs;
use super::progress::summary;
use super::progress::CliReporter;
use super::{cancel_on_signals, write_report};
use crate::iso::IsoError;
use crate::netboot::{build_netboot, NetbootError, NetbootReport, NetbootRequest};

/// Build (or reuse) a cell's image, exactly as `kbuild image` does, and
/// write it as a network boot set: <name>.kernel, <name>.initrd,
/// <name>.squashfs (the ISO's parts) and <name>.ipxe, an iPXE script that
/// boots them with the flavor's netboot command line; the initrd fetches
/// the squashfs over HTTP from --base-url (or from the iPXE setting
/// base-url of whoever chains the script). Each file gets a .sha256; the
/// same image and SOURCE_DATE_EPOCH give the same bytes. Try it with
/// `kbuild boot --netboot DIR`.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct NetbootArgs {
    #[command(flatten)]
    medium: MediumArgs,
    /// The http(s) URL the set's directory will be served at [default:
    /// the kernel and initrd relative to the script, the squashfs from the
    /// chaining script's base-url setting].
    #[arg(long = "base-url", value_name = "URL")]
    base_url: Option<String>,
}

pub fn run(args: NetbootArgs) -> anyhow::Result<()> {
    let cell = &args.medium.cell;
    let project = cell.project()?;
    let request = NetbootRequest {
        iso: args.medium.request(&project)?,
        base_url: args.base_url.clone(),
    };
    let store = cell.store()?;
    let reporter = CliReporter::new();
    let cancel = cancel_on_signals()?;
    let result = build_netboot(&store, &project, &request, &reporter, &cancel);
    if let Err(NetbootError::Iso(IsoError::Compose(err))) = &result {
        show_failed_check(err);
    }
    let report = result?;
    render(&report);
    if let Some(path) = cell.report_path() {
        write_report(path, &report)?;
    }
    println!("{}", report.script.display());
    Ok(())
}

fn render(report: &NetbootReport) {
    if let Some(built) = &report.built {
        super::image::render(built);
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for file in &report.files {
        let state = match file.written {
            true => "written",
            false => "already up to date",
        };
        summary!(
            "netboot   {} ({:.1} MiB, {state})",
            file.path.display(),
            file.size as f64 / (1 << 20) as f64
        );
    }
    summary!(
        "          base-url {}; {:.1}s",
        report
            .base_url
            .as_deref()
            .unwrap_or("set by whoever chains the script"),
        report.seconds
    );
}
