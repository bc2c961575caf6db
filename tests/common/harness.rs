//! The test harness of the privileged suites (`harness = false`): a test
//! that cannot run here (no root, a missing tool) is never a silent pass.
//! Under `CI=true` it fails, saying what is missing; elsewhere it shows as
//! ignored, and its reason is printed. Running the ignored ones anyway
//! (`--include-ignored`) fails them with the same reason.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, ExitCode};

use libtest_mimic::{Arguments, Failed, Trial};

/// What a test needs from the machine.
#[derive(Clone, Copy)]
pub struct Needs {
    pub root: bool,
    /// Programs on PATH (ci/setup.sh installs them).
    pub tools: &'static [&'static str],
}

pub const ROOT: Needs = Needs {
    root: true,
    tools: &[],
};

impl Needs {
    pub const fn root_and(tools: &'static [&'static str]) -> Needs {
        Needs { root: true, tools }
    }

    /// Why it cannot run here; empty when it can.
    fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if self.root && !super::is_root() {
            missing.push("needs root (overlayfs, namespaces, device nodes)".to_string());
        }
        for tool in self.tools {
            let found = Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                missing.push(format!("needs {tool} (run ci/setup.sh)"));
            }
        }
        missing
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs `tests` as the binary's test suite.
pub fn main(tests: Vec<(&'static str, Needs, fn())>) -> ExitCode {
    let args = Arguments::from_args();
    let ci = in_ci();
    let trials = tests
        .into_iter()
        .map(|(name, needs, test)| {
            let missing = needs.missing();
            if missing.is_empty() {
                return Trial::test(name, move || run(test));
            }
            let reason = missing.join("; ");
            if ci {
                return Trial::test(name, move || {
                    Err(format!("CI=true but this test cannot run here: {reason}").into())
                });
            }
            if !args.list {
                eprintln!("ignored {name}: {reason} (under CI=true it would fail)");
            }
            Trial::test(name, move || {
                Err(format!("cannot run here: {reason}").into())
            })
            .with_ignored_flag(true)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

fn run(test: fn()) -> Result<(), Failed> {
    catch_unwind(AssertUnwindSafe(test)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the test panicked".to_string())
            .into()
    })
}

/// `tests!(fn_name: NEEDS, ...)`: the main of a privileged suite.
#[macro_export]
macro_rules! tests {
    ($($name:ident : $needs:expr),+ $(,)?) => {
        fn main() -> std::process::ExitCode {
            common::harness::main(vec![$((stringify!($name), $needs, $name as fn())),+])
        }
    };
}
