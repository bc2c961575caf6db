//! The `kbuild` binary: parse the command line, run it, map the outcome to
//! an exit code (0 ok, 1 the job failed, 2 usage or spec error).

fn main() -> std::process::ExitCode {
    // The sandbox helper is kbuild re-executed; it takes no clap parsing.
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    let mut next = || args.next().unwrap_or_default();
    match first.as_deref().and_then(|a| a.to_str()) {
        Some(kbuild::sandbox::HELPER_ARG) => {
            return kbuild::sandbox::helper::main(std::path::Path::new(&next()))
        }
        Some(kbuild::rootless::PROBE_ARG) => {
            return kbuild::rootless::probe_main(std::path::Path::new(&next()))
        }
        _ => {}
    }
    kbuild::cli::main()
}
