//! Any text that parses and plans: every planned stage is walked from a
//! scratch base the way the executor walks it (metadata into the config,
//! variables expanded, step keys chained), and never panics. Two walks of
//! the same text give the same keys.
#![no_main]

use std::collections::BTreeMap;

use kbuild::digest::Digest;
use kbuild::dockerfile::{self, Command, Word};
use kbuild::executor::keys::{self, chain};
use kbuild::executor::{FsWork, ImageState};
use kbuild::plan::{self, PlanRequest, StageScope};
use kbuild::platform::Platform;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = dockerfile::parse("Dockerfile", text) else {
        return;
    };
    let request = PlanRequest {
        platform: Some(Platform::parse("linux/amd64").unwrap()),
        ..PlanRequest::default()
    };
    let Ok(plan) = plan::plan(&file, &request) else {
        return;
    };
    let first = walk(&file, &plan);
    assert_eq!(first, walk(&file, &plan), "keys must be deterministic");
});

/// The key after each instruction of each planned stage (None where the
/// walk stopped on an error, which must render).
fn walk(file: &dockerfile::Dockerfile, plan: &plan::Plan) -> Vec<Option<Digest>> {
    let mut keys_seen = Vec::new();
    for &stage in &plan.order {
        let mut scope = StageScope::new(&plan.build, BTreeMap::new());
        let mut state = ImageState::scratch(&plan.platform);
        for ins in &file.stages[stage].instructions {
            match step(&mut state, &mut scope, ins) {
                Ok(()) => keys_seen.push(Some(state.key.clone())),
                Err(message) => {
                    assert!(!message.is_empty());
                    keys_seen.push(None);
                    break;
                }
            }
        }
    }
    keys_seen
}

fn step(
    state: &mut ImageState,
    scope: &mut StageScope<'_>,
    ins: &dockerfile::Instruction,
) -> Result<(), String> {
    let created = "1970-01-01T00:00:00Z";
    let work = state
        .apply(scope, ins, created)
        .map_err(|e| e.to_string())?;
    let expand = |scope: &StageScope<'_>, word: &Word| scope.expand(word).map_err(|e| e.to_string());
    let key = match work {
        FsWork::None => return Ok(()),
        FsWork::Workdir(path) => chain(&state.key, &keys::workdir(&path, &state.user())),
        FsWork::Run(run) => {
            let argv = match &run.command {
                Command::Exec(argv) => argv.clone(),
                Command::Shell(text) => vec!["/bin/sh".into(), "-c".into(), text.clone()],
            };
            let env: Vec<String> = scope.args().map(|(k, v)| format!("{k}={v}")).collect();
            let mounts = run
                .mounts
                .iter()
                .map(|m| keys::tmpfs_mount(m.target.as_deref().unwrap_or("/"), None))
                .collect::<Vec<_>>();
            chain(
                &state.key,
                &keys::run(&keys::RunInputs {
                    argv: &argv,
                    script: None,
                    env: &env,
                    cwd: &state.workdir(),
                    user: &state.user(),
                    network: "Host",
                    mounts: &mounts,
                }),
            )
        }
        FsWork::Copy(copy) => {
            let mut sources = Vec::new();
            for word in &copy.sources {
                let text = expand(scope, word)?;
                sources.push(keys::heredoc_source("source", text.as_bytes()));
            }
            for doc in &copy.heredocs {
                sources.push(keys::heredoc_source(&doc.name, doc.content.as_bytes()));
            }
            let dest = expand(scope, &copy.dest)?;
            chain(
                &state.key,
                &keys::copy(&keys::CopyInputs {
                    text: &ins.text,
                    is_add: copy.is_add,
                    dest: &dest,
                    sources: &sources,
                    from: None,
                    chown: None,
                    chmod: None,
                    parents: copy.parents,
                    link: copy.link,
                }),
            )
        }
    };
    state.add_step(key, None, created, &ins.text);
    Ok(())
}
