//! Progress reporting. The core calls a [`Reporter`]; the CLI decides how
//! to draw it (nothing, plain lines, JSON lines). The core never prints.

mod bytes;

pub use bytes::{watch_growth, ByteProgress, CountingWriter};

use serde::Serialize;

/// One thing the core tells about its progress. Serialized (one JSON
/// object per event, tagged by `event`) for `--progress=json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A named phase started (e.g. "extract", "write layer").
    PhaseStarted { phase: String },
    /// The phase ended, with a human summary.
    PhaseFinished {
        phase: String,
        detail: String,
        millis: u128,
    },
    /// Bytes moving: a blob to or from a registry, a layer being
    /// compressed, a squashfs being written. `id` is stable for one
    /// transfer (a short digest, a step id); `total` is 0 when unknown.
    Transfer {
        id: String,
        activity: Activity,
        done: u64,
        total: u64,
        #[serde(flatten)]
        state: TransferState,
    },
    /// A build step (`id` like `builder 2/7`) changed state.
    Step {
        id: String,
        text: String,
        #[serde(flatten)]
        state: StepState,
    },
    /// One line a running build step printed.
    Output { id: String, line: String },
    /// Something the user should know that does not stop the job (e.g. a
    /// device node a rootless import keeps only as a stand-in).
    Warning { message: String },
    /// A release cell (`index` of `total`, from 1) started or ended; the
    /// events between belong to it.
    Cell {
        name: String,
        index: usize,
        total: usize,
        #[serde(flatten)]
        state: CellState,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    Started,
    /// Taken from the step cache; nothing ran.
    Cached {
        millis: u128,
    },
    /// Ran (or copied) and committed its result.
    Done {
        millis: u128,
    },
    Failed {
        millis: u128,
    },
}

/// What moves the bytes of a [`Event::Transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    Pull,
    Push,
    /// A step's changes being tarred and compressed into a layer blob
    /// (`done` counts the compressed bytes written).
    Compress,
    /// mksquashfs writing the live root (`done` is the file's size).
    Squashfs,
}

impl Activity {
    /// The verb a progress line starts with.
    pub fn verb(self) -> &'static str {
        match self {
            Activity::Pull => "pull",
            Activity::Push => "push",
            Activity::Compress => "layer",
            Activity::Squashfs => "squashfs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TransferState {
    Started,
    /// `done` bytes have moved so far.
    Progress,
    /// A transient failure; the transfer goes on from `done` after a pause.
    Retrying {
        attempt: u32,
        reason: String,
    },
    /// Not transferred: the other side already had it (or mounted it).
    Skipped {
        reason: String,
    },
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CellState {
    Started,
    Finished {
        ok: bool,
        millis: u128,
        /// The failure (`step: message`) when not ok.
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
    },
}

/// Receives the core's events. Implementations must be cheap: they are
/// called from build threads and async transfers.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Event);
}

/// Reports nothing (tests, library users who don't care).
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event) {}
}

/// Runs `work` as a reported phase; `detail` summarizes its result.
pub fn phase<T, E>(
    reporter: &dyn Reporter,
    name: &str,
    work: impl FnOnce() -> Result<T, E>,
    detail: impl FnOnce(&T) -> String,
) -> Result<T, E> {
    let start = std::time::Instant::now();
    reporter.report(Event::PhaseStarted {
        phase: name.to_string(),
    });
    let value = work()?;
    reporter.report(Event::PhaseFinished {
        phase: name.to_string(),
        detail: detail(&value),
        millis: start.elapsed().as_millis(),
    });
    Ok(value)
}
