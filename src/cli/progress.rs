//! Drawing [`Event`]s; the only place indicatif is used. One of four
//! modes, chosen once per process by `--progress` and `--quiet`:
//!
//! * **live** (stderr is a terminal and `CI` is not `true`): an indicatif
//!   multi-progress view with a line per running cell, step, phase and
//!   byte counter (pulls, pushes, layer compression, squashfs), a spinner
//!   for RUN showing its last output line; finished steps scroll above;
//! * **plain**: one timestamped line per event, transfers every few
//!   seconds (logs, `CI=true`);
//! * **json**: one JSON object per event on stderr, with `time` and,
//!   inside a release cell, `cell`;
//! * **quiet**: nothing but errors and the result on stdout.
//!
//! Colour only in live mode, and never when `NO_COLOR` is set.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use clap::ValueEnum;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{Activity, CellState, Event, Reporter, StepState, TransferState};
use crate::store::image::rfc3339;

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// Live view on a terminal unless CI=true, plain lines otherwise.
    Auto,
    /// The live view even when CI=true (plain when stderr is no terminal).
    Tty,
    /// Timestamped lines.
    Plain,
    /// One JSON object per event.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Plain,
    Json,
    Quiet,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// How often a plain line repeats a transfer's progress.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);
/// How often a JSON line repeats a transfer's progress.
const JSON_INTERVAL: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(120);

/// Sets the mode for this process (the first call wins).
pub fn configure(arg: ProgressArg, quiet: bool) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let _ = MODE.set(resolve(arg, quiet, std::io::stderr().is_terminal(), ci));
}

fn resolve(arg: ProgressArg, quiet: bool, terminal: bool, ci: bool) -> Mode {
    match arg {
        _ if quiet => Mode::Quiet,
        ProgressArg::Json => Mode::Json,
        ProgressArg::Plain => Mode::Plain,
        ProgressArg::Tty if terminal => Mode::Live,
        ProgressArg::Auto if terminal && !ci => Mode::Live,
        ProgressArg::Tty | ProgressArg::Auto => Mode::Plain,
    }
}

pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Plain)
}

/// Whether human output may be coloured.
pub fn color() -> bool {
    mode() == Mode::Live && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in the ANSI colour `code` when colour is on.
pub fn paint(text: &str, code: u8) -> String {
    match color() {
        true => format!("\x1b[{code}m{text}\x1b[0m"),
        false => text.to_string(),
    }
}

/// Whether the human summary lines after a command's work are shown
/// (not with `--quiet` or `--progress=json`).
pub fn shows_summary() -> bool {
    matches!(mode(), Mode::Live | Mode::Plain)
}

/// `eprintln!` for a command's human summary; silent when
/// [`shows_summary`] says so. Warnings and errors use `eprintln!`.
macro_rules! summary {
    ($($arg:tt)*) => {
        if $crate::cli::progress::shows_summary() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use summary;

pub const GREEN: u8 = 32;
pub const RED: u8 = 31;
pub const YELLOW: u8 = 33;
const DIM: u8 = 2;

pub struct CliReporter {
    mode: Mode,
    state: Mutex<State>,
}

/// What is on screen (live) or what was last said (plain, json).
#[derive(Default)]
struct State {
    bars: Option<MultiProgress>,
    /// The running release cell: its name and `i/n`.
    cell: Option<(String, String)>,
    cell_bar: Option<ProgressBar>,
    steps: HashMap<String, Running>,
    phases: HashMap<String, ProgressBar>,
    transfers: HashMap<(Activity, String), Transfer>,
}

struct Running {
    bar: ProgressBar,
    text: String,
}

struct Transfer {
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl CliReporter {
    pub fn new() -> CliReporter {
        let mode = mode();
        let state = State {
            bars: (mode == Mode::Live)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            ..State::default()
        };
        CliReporter {
            mode,
            state: Mutex::new(state),
        }
    }

    /// Clears whatever is still drawn, so a summary can follow.
    pub fn finish(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bars) = &state.bars {
            let _ = bars.clear();
        }
    }
}

impl Drop for CliReporter {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Reporter for CliReporter {
    fn report(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match self.mode {
            Mode::Quiet => {
                if let Event::Warning { message } = event {
                    eprintln!("warning: {}", printable(&message));
                }
            }
            Mode::Json => json(&mut state, event),
            Mode::Plain => plain(&mut state, event),
            Mode::Live => live(&mut state, event),
        }
    }
}

fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    rfc3339(secs)
}

fn seconds(millis: u128) -> String {
    format!("{:.1}s", millis as f64 / 1000.0)
}

/// A step's output line made safe to draw: no control characters.
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// Tracks the running cell; true when `event` is a cell event.
fn track_cell(state: &mut State, event: &Event) {
    if let Event::Cell {
        name,
        index,
        total,
        state: cell_state,
    } = event
    {
        state.cell = match cell_state {
            CellState::Started => Some((name.clone(), format!("{index}/{total}"))),
            CellState::Finished { .. } => None,
        };
    }
}

/// Whether a transfer's progress is due for another line.
fn due(
    state: &mut State,
    key: (Activity, String),
    transfer: &TransferState,
    every: Duration,
) -> bool {
    let now = Instant::now();
    let entry = state.transfers.entry(key.clone()).or_insert(Transfer {
        started: now,
        last_line: now,
        bar: None,
    });
    match transfer {
        TransferState::Progress => {
            if now.duration_since(entry.last_line) < every {
                return false;
            }
            entry.last_line = now;
            true
        }
        TransferState::Skipped { .. } | TransferState::Finished => {
            state.transfers.remove(&key);
            true
        }
        TransferState::Started | TransferState::Retrying { .. } => true,
    }
}

fn json(state: &mut State, event: Event) {
    track_cell(state, &event);
    if let Event::Transfer {
        id,
        activity,
        state: transfer,
        ..
    } = &event
    {
        if !due(state, (*activity, id.clone()), transfer, JSON_INTERVAL) {
            return;
        }
    }
    let mut value = serde_json::to_value(&event).expect("events serialize");
    if let Some(object) = value.as_object_mut() {
        object.insert("time".into(), now().into());
        if let (Some((cell, _)), false) = (&state.cell, matches!(event, Event::Cell { .. })) {
            object.insert("cell".into(), cell.clone().into());
        }
    }
    eprintln!("{value}");
}

fn plain(state: &mut State, event: Event) {
    track_cell(state, &event);
    let prefix = match (&state.cell, &event) {
        (Some((_, position)), _) if !matches!(event, Event::Cell { .. }) => {
            format!("{} cell {position} ", now())
        }
        _ => format!("{} ", now()),
    };
    let text = match event {
        Event::PhaseStarted { .. } => return,
        Event::PhaseFinished {
            phase,
            detail,
            millis,
        } => format!("{phase}: {detail} [{}]", seconds(millis)),
        Event::Step { id, text, state } => step_line(&id, &text, state),
        Event::Output { id, line } => format!("[{id}] {}", printable(&line)),
        Event::Warning { message } => format!("warning: {}", printable(&message)),
        Event::Cell {
            name,
            index,
            total,
            state: cell_state,
        } => match cell_state {
            CellState::Started => format!("cell {index}/{total} {name}: started"),
            CellState::Finished {
                ok,
                millis,
                failure,
            } => format!(
                "cell {index}/{total} {name}: {} [{}]",
                match (ok, failure) {
                    (true, _) => "ok".to_string(),
                    (false, Some(failure)) => format!("FAILED at {failure}"),
                    (false, None) => "FAILED".to_string(),
                },
                seconds(millis)
            ),
        },
        Event::Transfer {
            id,
            activity,
            done,
            total,
            state: transfer,
        } => {
            let started = state
                .transfers
                .get(&(activity, id.clone()))
                .map_or_else(Instant::now, |t| t.started);
            if !due(state, (activity, id.clone()), &transfer, PLAIN_INTERVAL) {
                return;
            }
            match transfer_line(activity, &id, done, total, &transfer, started) {
                Some(line) => line,
                None => return,
            }
        }
    };
    eprintln!("{prefix}{text}");
}

fn step_line(id: &str, text: &str, state: StepState) -> String {
    match state {
        StepState::Started => format!("[{id}] {text}"),
        StepState::Cached { millis } => format!("[{id}] CACHED {text} [{}]", seconds(millis)),
        StepState::Done { millis } => format!("[{id}] DONE [{}]", seconds(millis)),
        StepState::Failed { millis } => format!("[{id}] FAILED [{}]", seconds(millis)),
    }
}

/// A plain line for a transfer, with rate and ETA; none for `Started`.
fn transfer_line(
    activity: Activity,
    id: &str,
    done: u64,
    total: u64,
    state: &TransferState,
    started: Instant,
) -> Option<String> {
    let verb = activity.verb();
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let rate = HumanBytes((done as f64 / elapsed) as u64);
    Some(match state {
        TransferState::Started => return None,
        TransferState::Progress if total > done && done > 0 => {
            let eta = (total - done) as f64 / (done as f64 / elapsed);
            format!(
                "{verb} {id}: {}/{} at {rate}/s, eta {eta:.0}s",
                HumanBytes(done),
                HumanBytes(total)
            )
        }
        TransferState::Progress => format!("{verb} {id}: {} at {rate}/s", HumanBytes(done)),
        TransferState::Retrying { attempt, reason } => {
            format!("{verb} {id}: retry {attempt} after: {reason}")
        }
        TransferState::Skipped { reason } => format!("{verb} {id}: skipped, {reason}"),
        TransferState::Finished => {
            format!(
                "{verb} {id}: {} in {elapsed:.1}s ({rate}/s)",
                HumanBytes(done)
            )
        }
    })
}

fn style(template: &str) -> ProgressStyle {
    // Colour keys (`{spinner:.cyan}`) are dropped when colour is off.
    let template = match color() {
        true => template.to_string(),
        false => template.replace(":.cyan}", "}").replace(":.dim}", "}"),
    };
    ProgressStyle::with_template(&template)
        .expect("valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn spinner(bars: &MultiProgress, template: &str, prefix: String) -> ProgressBar {
    let bar = bars.add(ProgressBar::new_spinner());
    bar.set_style(style(template));
    bar.set_prefix(prefix);
    bar.enable_steady_tick(TICK);
    bar
}

fn live(state: &mut State, event: Event) {
    let Some(bars) = state.bars.clone() else {
        return;
    };
    let say = |line: String| {
        let _ = bars.println(line);
    };
    match event {
        Event::Cell {
            name,
            index,
            total,
            state: cell_state,
        } => match cell_state {
            CellState::Started => {
                let bar = spinner(
                    &bars,
                    "{spinner:.cyan} cell {prefix} {wide_msg} {elapsed:.dim}",
                    format!("{index}/{total}"),
                );
                bar.set_message(name.clone());
                state.cell_bar = Some(bar);
                state.cell = Some((name, format!("{index}/{total}")));
            }
            CellState::Finished { ok, millis, .. } => {
                if let Some(bar) = state.cell_bar.take() {
                    bar.finish_and_clear();
                }
                state.cell = None;
                let result = match ok {
                    true => paint("✔ ok", GREEN),
                    false => paint("✘ FAILED", RED),
                };
                say(format!(
                    "{result} cell {index}/{total} {name} {}",
                    paint(&seconds(millis), DIM)
                ));
            }
        },
        Event::PhaseStarted { phase } => {
            let bar = spinner(
                &bars,
                "{spinner:.cyan} {prefix} {elapsed:.dim}",
                phase.clone(),
            );
            state.phases.insert(phase, bar);
        }
        Event::PhaseFinished {
            phase,
            detail,
            millis,
        } => {
            if let Some(bar) = state.phases.remove(&phase) {
                bar.finish_and_clear();
            }
            say(format!(
                "{} {phase}: {detail} {}",
                paint("✔", GREEN),
                paint(&seconds(millis), DIM)
            ));
        }
        Event::Step {
            id,
            text,
            state: step,
        } => match step {
            StepState::Started => {
                let bar = spinner(
                    &bars,
                    "{spinner:.cyan} [{prefix}] {wide_msg} {elapsed:.dim}",
                    id.clone(),
                );
                bar.set_message(text.clone());
                state.steps.insert(id, Running { bar, text });
            }
            finished => {
                if let Some(running) = state.steps.remove(&id) {
                    running.bar.finish_and_clear();
                }
                say(match finished {
                    StepState::Cached { .. } => format!("{} [{id}] {text}", paint("CACHED", DIM)),
                    StepState::Failed { millis } => format!(
                        "{} [{id}] {text} {}",
                        paint("✘ FAILED", RED),
                        seconds(millis)
                    ),
                    StepState::Done { millis } => format!(
                        "{} [{id}] {text} {}",
                        paint("✔", GREEN),
                        paint(&seconds(millis), DIM)
                    ),
                    StepState::Started => unreachable!("matched above"),
                });
            }
        },
        Event::Warning { message } => say(format!(
            "{} {}",
            paint("warning:", YELLOW),
            printable(&message)
        )),
        Event::Output { id, line } => {
            if let Some(running) = state.steps.get(&id) {
                let line = printable(&line);
                if !line.is_empty() {
                    running
                        .bar
                        .set_message(format!("{} │ {line}", running.text));
                }
            }
        }
        Event::Transfer {
            id,
            activity,
            done,
            total,
            state: transfer,
        } => live_transfer(state, &bars, activity, id, done, total, transfer),
    }
}

fn live_transfer(
    state: &mut State,
    bars: &MultiProgress,
    activity: Activity,
    id: String,
    done: u64,
    total: u64,
    transfer: TransferState,
) {
    let key = (activity, id.clone());
    let entry = state.transfers.entry(key.clone()).or_insert_with(|| {
        let prefix = format!("{} {id}", activity.verb());
        let bar = match total {
            0 => spinner(
                bars,
                "{spinner:.cyan} {prefix} {binary_bytes:>10} {binary_bytes_per_sec:>12.dim} {elapsed:.dim}",
                prefix,
            ),
            _ => {
                let bar = bars.add(ProgressBar::new(total));
                bar.set_style(style(
                    "  {prefix} {bar:24.cyan} {binary_bytes:>10}/{binary_total_bytes:10} {binary_bytes_per_sec:>12.dim} eta {eta}",
                ));
                bar.set_prefix(prefix);
                bar
            }
        };
        Transfer {
            started: Instant::now(),
            last_line: Instant::now(),
            bar: Some(bar),
        }
    });
    if let Some(bar) = &entry.bar {
        bar.set_position(done);
    }
    let started = entry.started;
    let finished = matches!(
        transfer,
        TransferState::Finished | TransferState::Skipped { .. }
    );
    if finished {
        if let Some(bar) = state.transfers.remove(&key).and_then(|t| t.bar) {
            bar.finish_and_clear();
        }
    }
    let line = match &transfer {
        TransferState::Retrying { .. } | TransferState::Finished => {
            transfer_line(activity, &id, done, total, &transfer, started)
        }
        _ => None,
    };
    if let Some(line) = line {
        let _ = bars.println(format!("{} {line}", paint("✔", GREEN)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_follows_flags_terminal_and_ci() {
        use ProgressArg::*;
        assert_eq!(resolve(Auto, false, true, false), Mode::Live);
        assert_eq!(resolve(Auto, false, true, true), Mode::Plain);
        assert_eq!(resolve(Auto, false, false, false), Mode::Plain);
        assert_eq!(resolve(Tty, false, true, true), Mode::Live);
        assert_eq!(resolve(Tty, false, false, false), Mode::Plain);
        assert_eq!(resolve(Json, false, true, false), Mode::Json);
        assert_eq!(resolve(Json, true, true, false), Mode::Quiet);
        assert_eq!(resolve(Plain, true, false, true), Mode::Quiet);
    }

    #[test]
    fn output_lines_lose_control_characters() {
        assert_eq!(printable("a\x1b[31mb\rc\t\n"), "a [31mb c");
    }

    #[test]
    fn transfer_lines_give_rate_eta_and_final_size() {
        let started = Instant::now() - Duration::from_secs(2);
        let line = transfer_line(
            Activity::Push,
            "sha256:abc",
            1 << 20,
            4 << 20,
            &TransferState::Progress,
            started,
        )
        .unwrap();
        assert!(
            line.starts_with("push sha256:abc: 1.00 MiB/4.00 MiB at "),
            "{line}"
        );
        assert!(line.ends_with("eta 6s"), "{line}");
        let line = transfer_line(
            Activity::Squashfs,
            "filesystem.squashfs",
            3 << 20,
            0,
            &TransferState::Finished,
            started,
        )
        .unwrap();
        assert!(
            line.starts_with("squashfs filesystem.squashfs: 3.00 MiB in 2.0s"),
            "{line}"
        );
        assert!(
            transfer_line(Activity::Pull, "x", 0, 0, &TransferState::Started, started).is_none()
        );
    }
}
