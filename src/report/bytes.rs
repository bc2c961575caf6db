//! Byte counters behind [`Event::Transfer`]: a shared counter for one
//! transfer, a writer that counts what passes through it, and a watcher
//! that reports a file's growth while another program writes it.
//!
//! Invariant: a counter reports `Started` once, then `Progress` at most
//! every [`ByteProgress::STEP`] bytes, then exactly one of `Skipped` or
//! `Finished` (whose `done` is the final count).

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{Activity, Event, Reporter, TransferState};

/// Reports one transfer's progress. Shared by the futures of one
/// transfer (the body stream, the retry callback, the ticker), hence the
/// atomics.
pub struct ByteProgress<'a> {
    reporter: &'a dyn Reporter,
    id: String,
    activity: Activity,
    total: u64,
    done: AtomicU64,
    reported: AtomicU64,
}

impl<'a> ByteProgress<'a> {
    pub const STEP: u64 = 256 << 10;

    /// Reports `Started`; `total` is 0 when unknown.
    pub fn start(
        reporter: &'a dyn Reporter,
        id: String,
        activity: Activity,
        total: u64,
    ) -> ByteProgress<'a> {
        let progress = ByteProgress {
            reporter,
            id,
            activity,
            total,
            done: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        };
        progress.emit(TransferState::Started);
        progress
    }

    fn emit(&self, state: TransferState) {
        self.reporter.report(Event::Transfer {
            id: self.id.clone(),
            activity: self.activity,
            done: self.done.load(Ordering::Relaxed),
            total: self.total,
            state,
        });
    }

    /// `done` bytes have moved in all (it may go back after a restart).
    pub fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        let reported = self.reported.load(Ordering::Relaxed);
        if done < reported || done - reported >= Self::STEP {
            self.reported.store(done, Ordering::Relaxed);
            self.emit(TransferState::Progress);
        }
    }

    /// `more` bytes moved.
    pub fn add(&self, more: u64) {
        self.set(self.done.load(Ordering::Relaxed) + more);
    }

    pub fn retrying(&self, attempt: u32, reason: String) {
        self.emit(TransferState::Retrying { attempt, reason });
    }

    pub fn skipped(self, reason: String) {
        self.done.store(self.total, Ordering::Relaxed);
        self.emit(TransferState::Skipped { reason });
    }

    /// Done; a known total becomes the count, an unknown one leaves the
    /// count as it was.
    pub fn finished(self) {
        if self.total != 0 {
            self.done.store(self.total, Ordering::Relaxed);
        }
        self.emit(TransferState::Finished);
    }
}

/// Counts the bytes written through it into a [`ByteProgress`].
pub struct CountingWriter<'a, W> {
    inner: W,
    progress: ByteProgress<'a>,
}

impl<'a, W: Write> CountingWriter<'a, W> {
    pub fn new(inner: W, progress: ByteProgress<'a>) -> CountingWriter<'a, W> {
        CountingWriter { inner, progress }
    }

    /// Reports `Finished` and hands back the writer.
    pub fn finish(self) -> W {
        self.progress.finished();
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.progress.add(written as u64);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `work` while a watcher thread reports the size of `path` (which
/// `work` writes, e.g. through an external program) every `every`.
pub fn watch_growth<T>(
    progress: ByteProgress<'_>,
    path: &Path,
    every: Duration,
    work: impl FnOnce() -> T,
) -> T {
    let stop = AtomicBool::new(false);
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                progress.set(size());
                std::thread::park_timeout(every);
            }
        });
        let result = work();
        stop.store(true, Ordering::Relaxed);
        result
    });
    progress.set(size());
    progress.finished();
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);

    impl Reporter for Recorder {
        fn report(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn states(recorder: &Recorder) -> Vec<(u64, TransferState)> {
        recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                Event::Transfer { done, state, .. } => (*done, state.clone()),
                other => panic!("not a transfer: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_counting_writer_reports_every_step_and_its_final_count() {
        let recorder = Recorder::default();
        let progress = ByteProgress::start(&recorder, "x".into(), Activity::Compress, 0);
        let mut writer = CountingWriter::new(Vec::new(), progress);
        let chunk = vec![7u8; 100 << 10];
        for _ in 0..6 {
            writer.write_all(&chunk).unwrap();
        }
        let out = writer.finish();
        assert_eq!(out.len(), 600 << 10);
        let states = states(&recorder);
        assert_eq!(states.first().unwrap().1, TransferState::Started);
        assert_eq!(
            states.last().unwrap(),
            &(600 << 10, TransferState::Finished)
        );
        let progress: Vec<u64> = states
            .iter()
            .filter(|(_, s)| *s == TransferState::Progress)
            .map(|(done, _)| *done)
            .collect();
        assert_eq!(progress, vec![300 << 10, 600 << 10]);
    }

    #[test]
    fn a_watched_file_reports_its_growth_then_its_final_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let recorder = Recorder::default();
        let progress = ByteProgress::start(&recorder, "x".into(), Activity::Squashfs, 0);
        let returned = watch_growth(progress, &path, Duration::from_millis(5), || {
            let mut file = std::fs::File::create(&path).unwrap();
            for _ in 0..4 {
                file.write_all(&[0u8; 1 << 20]).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            42
        });
        assert_eq!(returned, 42);
        let states = states(&recorder);
        assert!(
            states
                .iter()
                .any(|(done, s)| *s == TransferState::Progress && *done < 4 << 20),
            "no intermediate size in {states:?}"
        );
        assert_eq!(states.last().unwrap(), &(4 << 20, TransferState::Finished));
    }
}
