//! What a pipeline run did, for the CLI to render and for `--report FILE`
//! (JSON): the image, where it went, what moved, and every filesystem
//! step with its time and whether the step cache served it.

use std::sync::Mutex;

use serde::Serialize;

use crate::reference::ImageRef;
use crate::registry::cache::CacheTransfer;
use crate::registry::push::Pushed;
use crate::registry::Totals;
use crate::report::{Event, Reporter, StepState};

#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildReport {
    /// The image manifest's digest.
    pub digest: String,
    pub tags: Vec<String>,
    /// Filesystem steps (RUN, COPY, ADD, WORKDIR) and how many were cached.
    pub steps: usize,
    pub cached: usize,
    pub steps_run: Vec<StepRecord>,
    pub output: Option<String>,
    pub pushed: Option<TransferReport>,
    pub cache_from: Option<TransferReport>,
    pub cache_to: Option<TransferReport>,
    pub seconds: f64,
}

/// One filesystem step as it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// `stage n/total`.
    pub id: String,
    pub instruction: String,
    /// `cached`, `done` or `failed`.
    pub result: &'static str,
    pub millis: u128,
}

/// A registry transfer: where, what digest, what moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferReport {
    pub reference: String,
    pub digest: String,
    /// Step-cache entries (cache transfers only).
    pub entries: Option<usize>,
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs the other side already had.
    pub skipped: usize,
}

impl TransferReport {
    fn new(reference: String, digest: String, entries: Option<usize>, totals: &Totals) -> Self {
        TransferReport {
            reference,
            digest,
            entries,
            blobs: totals.blobs,
            bytes: totals.bytes,
            skipped: totals.skipped,
        }
    }

    pub fn of_cache(reference: &ImageRef, done: &CacheTransfer) -> Self {
        Self::new(
            reference.to_string(),
            done.digest.to_string(),
            Some(done.entries),
            &done.totals,
        )
    }

    pub fn of_push(pushed: &Pushed) -> Self {
        Self::new(
            pushed.reference.clone(),
            pushed.digest.to_string(),
            None,
            &pushed.totals,
        )
    }
}

/// Passes every event on and keeps the end of each step.
pub struct StepRecorder<'a> {
    inner: &'a dyn Reporter,
    steps: Mutex<Vec<StepRecord>>,
}

impl<'a> StepRecorder<'a> {
    pub fn new(inner: &'a dyn Reporter) -> Self {
        StepRecorder {
            inner,
            steps: Mutex::new(Vec::new()),
        }
    }

    /// The steps recorded so far, in the order they ended.
    pub fn take(&self) -> Vec<StepRecord> {
        std::mem::take(&mut *self.steps.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Reporter for StepRecorder<'_> {
    fn report(&self, event: Event) {
        if let Event::Step { id, text, state } = &event {
            let ended = match *state {
                StepState::Started => None,
                StepState::Cached { millis } => Some(("cached", millis)),
                StepState::Done { millis } => Some(("done", millis)),
                StepState::Failed { millis } => Some(("failed", millis)),
            };
            if let Some((result, millis)) = ended {
                self.steps
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(StepRecord {
                        id: id.clone(),
                        instruction: text.clone(),
                        result,
                        millis,
                    });
            }
        }
        self.inner.report(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Silent;

    #[test]
    fn the_recorder_keeps_ended_steps_and_passes_everything_on() {
        struct Count(Mutex<usize>);
        impl Reporter for Count {
            fn report(&self, _: Event) {
                *self.0.lock().unwrap() += 1;
            }
        }
        let count = Count(Mutex::new(0));
        let recorder = StepRecorder::new(&count);
        let step = |state| Event::Step {
            id: "0 1/2".into(),
            text: "RUN make".into(),
            state,
        };
        recorder.report(step(StepState::Started));
        recorder.report(step(StepState::Done { millis: 1200 }));
        recorder.report(step(StepState::Cached { millis: 3 }));
        assert_eq!(*count.0.lock().unwrap(), 3);
        let steps = recorder.take();
        assert_eq!(
            steps
                .iter()
                .map(|s| (s.result, s.millis))
                .collect::<Vec<_>>(),
            [("done", 1200), ("cached", 3)]
        );
        assert!(StepRecorder::new(&Silent).take().is_empty());
    }
}
