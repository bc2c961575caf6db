//! Which stage runs when: each once the stages it depends on are done, up
//! to `jobs` at once.
//!
//! Invariants:
//! * Every started stage reports back exactly once, even when it panics,
//!   so the scheduler never waits on a stage that will not answer.
//! * After the first failure no stage starts, the running ones are told
//!   to stop through [`Cancel`], and the first error is returned once they
//!   have all ended.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use super::BuildError;
use crate::sandbox::Cancel;

/// Runs `run_stage` for every `(stage, dependencies)` in `stages`.
pub fn run(
    stages: &[(usize, BTreeSet<usize>)],
    jobs: usize,
    cancel: &Cancel,
    run_stage: impl Fn(usize) -> Result<(), BuildError> + Sync,
) -> Result<(), BuildError> {
    let mut pending: Vec<&(usize, BTreeSet<usize>)> = stages.iter().collect();
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let mut failure: Option<BuildError> = None;
    let jobs = jobs.max(1);
    let run_stage = &run_stage;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<(), BuildError>)>();
        let mut running = 0;
        loop {
            while failure.is_none() && running < jobs {
                let Some(at) = pending.iter().position(|(_, deps)| deps.is_subset(&done)) else {
                    break;
                };
                let (stage, _) = *pending.remove(at);
                let tx = tx.clone();
                running += 1;
                scope.spawn(move || {
                    let result = catch_unwind(AssertUnwindSafe(|| run_stage(stage)))
                        .unwrap_or_else(|panic| Err(panicked(stage, panic.as_ref())));
                    let _ = tx.send((stage, result));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((stage, result)) = rx.recv() else {
                break;
            };
            running -= 1;
            match result {
                Ok(()) => {
                    done.insert(stage);
                }
                Err(e) if failure.is_none() => {
                    failure = Some(e);
                    // Stop the stages still running.
                    cancel.cancel();
                }
                Err(_) => {}
            }
        }
    });
    match (failure, pending.as_slice()) {
        (Some(e), _) => Err(e),
        (None, []) => Ok(()),
        (None, stuck) => Err(BuildError::Unscheduled {
            stages: stuck
                .iter()
                .map(|(s, _)| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn panicked(stage: usize, panic: &(dyn std::any::Any + Send)) -> BuildError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string());
    BuildError::Panicked {
        stage: stage.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn chain_of(n: usize) -> Vec<(usize, BTreeSet<usize>)> {
        (0..n)
            .map(|i| {
                (
                    i,
                    if i == 0 {
                        BTreeSet::new()
                    } else {
                        [i - 1].into()
                    },
                )
            })
            .collect()
    }

    /// Runs the scheduler on its own thread; None if it did not finish in
    /// time (the hang this module exists to prevent).
    fn bounded(
        stages: Vec<(usize, BTreeSet<usize>)>,
        jobs: usize,
        run_stage: impl Fn(usize) -> Result<(), BuildError> + Sync + Send + 'static,
    ) -> Option<Result<(), BuildError>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let cancel = Cancel::default();
            let _ = tx.send(run(&stages, jobs, &cancel, run_stage));
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    #[test]
    fn dependencies_run_first() {
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = order.clone();
        let result = bounded(chain_of(4), 3, move |stage| {
            seen.lock().unwrap().push(stage);
            Ok(())
        });
        assert!(matches!(result, Some(Ok(()))));
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    }

    #[test]
    fn a_panicking_stage_fails_the_build_in_bounded_time() {
        let stages = vec![
            (0, BTreeSet::new()),
            (1, BTreeSet::new()),
            (2, [0, 1].into()),
        ];
        let result = bounded(stages, 2, |stage| {
            if stage == 1 {
                panic!("injected failure in stage {stage}");
            }
            Ok(())
        });
        match result {
            Some(Err(BuildError::Panicked { stage, message })) => {
                assert_eq!(stage, "1");
                assert_eq!(message, "injected failure in stage 1");
            }
            other => panic!("expected a Panicked error in time, got {other:?}"),
        }
    }

    #[test]
    fn stages_whose_dependencies_never_finish_are_an_error_not_a_hang() {
        let stages = vec![(0, BTreeSet::new()), (1, [7].into())];
        let result = bounded(stages, 2, |_| Ok(()));
        assert!(
            matches!(&result, Some(Err(BuildError::Unscheduled { stages })) if stages == "1"),
            "{result:?}"
        );
    }

    #[test]
    fn the_first_failure_stops_later_stages() {
        let started = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = started.clone();
        let result = bounded(chain_of(3), 1, move |stage| {
            seen.lock().unwrap().push(stage);
            match stage {
                1 => Err(BuildError::Interrupted),
                _ => Ok(()),
            }
        });
        assert!(matches!(result, Some(Err(BuildError::Interrupted))));
        assert_eq!(*started.lock().unwrap(), [0, 1]);
    }
}
