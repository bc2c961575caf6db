//! Progress reporting. The core calls a [`Reporter`]; the CLI decides how
//! to draw it (nothing, plain lines, JSON lines). The core never prints.

/// One thing the core tells about its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A named phase started (e.g. "extract", "write layer").
    PhaseStarted { phase: String },
    /// The phase ended, with a human summary.
    PhaseFinished {
        phase: String,
        detail: String,
        millis: u128,
    },
    /// A blob or manifest moving to or from a registry. `id` is stable for
    /// one transfer (a short digest); `total` is 0 when unknown.
    Transfer {
        id: String,
        direction: Direction,
        done: u64,
        total: u64,
        state: TransferState,
    },
    /// A build step (`id` like `builder 2/7`) changed state.
    Step {
        id: String,
        text: String,
        state: StepState,
    },
    /// One line a running build step printed.
    Output { id: String, line: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Pull,
    Push,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
