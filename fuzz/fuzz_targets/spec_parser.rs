//! Any text: the parser and the planner return a value or a positioned
//! error, never panic, and every error renders.
#![no_main]

use kbuild::plan::{self, PlanRequest};
use kbuild::platform::Platform;
use kbuild::dockerfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match dockerfile::parse("Dockerfile", text) {
        Ok(file) => {
            let request = PlanRequest {
                platform: Some(Platform::parse("linux/amd64").unwrap()),
                ..PlanRequest::default()
            };
            match plan::plan(&file, &request) {
                Ok(plan) => {
                    let _ = plan.summary();
                }
                Err(err) => {
                    let _ = err.to_string();
                }
            }
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
