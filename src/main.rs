//! The `kbuild` binary: parse the command line, run it, map the outcome to
//! an exit code (0 ok, 1 the job failed, 2 usage or spec error).

fn main() -> std::process::ExitCode {
    // The sandbox helper is kbuild re-executed; it takes no clap parsing.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(kbuild::sandbox::HELPER_ARG)) {
        let spec = args.next().unwrap_or_default();
        return kbuild::sandbox::helper::main(std::path::Path::new(&spec));
    }
    kbuild::cli::main()
}
