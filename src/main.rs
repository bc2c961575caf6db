//! The `kbuild` binary: parse the command line, run it, map the outcome to
//! an exit code (0 ok, 1 the job failed, 2 usage or spec error).

fn main() -> std::process::ExitCode {
    kbuild::cli::main()
}
