//! Drawing [`Event`]s: indicatif bars on a terminal, plain lines (with
//! rate and ETA every few seconds) in logs. The only place indicatif is used.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{Direction, Event, Reporter, StepState, TransferState};

/// How often a plain-line transfer repeats its progress.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

pub struct CliReporter {
    bars: Option<MultiProgress>,
    transfers: Mutex<HashMap<String, Transfer>>,
}

struct Transfer {
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl CliReporter {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> CliReporter {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        CliReporter {
            bars,
            transfers: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn transfer(
        &self,
        id: String,
        direction: Direction,
        done: u64,
        total: u64,
        state: TransferState,
    ) {
        let verb = match direction {
            Direction::Pull => "pull",
            Direction::Push => "push",
        };
        let mut transfers = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = transfers.entry(id.clone()).or_insert_with(|| Transfer {
            started: now,
            last_line: now,
            bar: self.bars.as_ref().map(|bars| {
                let bar = bars.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {bar:24} {bytes:>10}/{total_bytes:10} {binary_bytes_per_sec:>12} eta {eta}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(format!("{verb} {id}"));
                bar
            }),
        });
        if let Some(bar) = &entry.bar {
            bar.set_position(done);
        }
        let elapsed = now.duration_since(entry.started).as_secs_f64().max(1e-3);
        let rate = done as f64 / elapsed;
        match state {
            TransferState::Started => {}
            TransferState::Progress => {
                if entry.bar.is_none() && now.duration_since(entry.last_line) >= PLAIN_INTERVAL {
                    entry.last_line = now;
                    let eta = if rate > 0.0 && total > done {
                        format!("{:.0}s", (total - done) as f64 / rate)
                    } else {
                        "?".into()
                    };
                    drop(transfers);
                    self.line(format!(
                        "{verb} {id}: {}/{} at {}/s, eta {eta}",
                        HumanBytes(done),
                        HumanBytes(total),
                        HumanBytes(rate as u64)
                    ));
                }
            }
            TransferState::Retrying { attempt, reason } => {
                drop(transfers);
                self.line(format!("{verb} {id}: retry {attempt} after: {reason}"));
            }
            TransferState::Skipped { reason } => {
                if let Some(bar) = transfers.remove(&id).and_then(|t| t.bar) {
                    bar.finish_and_clear();
                }
                drop(transfers);
                self.line(format!("{verb} {id}: skipped, {reason}"));
            }
            TransferState::Finished => {
                if let Some(bar) = transfers.remove(&id).and_then(|t| t.bar) {
                    bar.finish_and_clear();
                }
                drop(transfers);
                self.line(format!(
                    "{verb} {id}: {} in {elapsed:.1}s ({}/s)",
                    HumanBytes(total),
                    HumanBytes(rate as u64)
                ));
            }
        }
    }
}

impl Reporter for CliReporter {
    fn report(&self, event: Event) {
        match event {
            Event::PhaseStarted { .. } => {}
            Event::PhaseFinished {
                phase,
                detail,
                millis,
            } => self.line(format!(
                "{phase}: {detail} [{:.1}s]",
                millis as f64 / 1000.0
            )),
            Event::Transfer {
                id,
                direction,
                done,
                total,
                state,
            } => self.transfer(id, direction, done, total, state),
            Event::Step { id, text, state } => {
                let secs = |millis: u128| millis as f64 / 1000.0;
                self.line(match state {
                    StepState::Started => format!("[{id}] {text}"),
                    StepState::Cached { millis } => {
                        format!("[{id}] CACHED {text} [{:.2}s]", secs(millis))
                    }
                    StepState::Done { millis } => format!("[{id}] DONE [{:.2}s]", secs(millis)),
                    StepState::Failed { millis } => {
                        format!("[{id}] FAILED [{:.2}s]", secs(millis))
                    }
                })
            }
            Event::Output { id, line } => self.line(format!("[{id}] {line}")),
        }
    }
}
