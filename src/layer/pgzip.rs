//! Parallel gzip, the way pigz does it: the stream is cut into fixed-size
//! blocks, each compressed on a worker thread as raw deflate primed with
//! the previous block's last 32 KiB as dictionary and ended with a sync
//! flush, so the pieces concatenate into one valid deflate stream.
//!
//! Invariant: the output depends only on the input bytes and the level
//! (block boundaries are fixed by size), never on the thread count or
//! timing, so layers stay reproducible.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

const BLOCK: usize = 128 * 1024;
const DICT: usize = 32 * 1024;

struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    level: u32,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// Compresses one block to raw deflate.
fn deflate_block(job: &Job) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(job.level), false);
    if !job.dict.is_empty() {
        c.set_dictionary(&job.dict).map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() + job.data.len() / 8 + 128);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = c.total_in() as usize == job.data.len()
            && match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                // A sync flush is complete once it left spare room in the output.
                _ => out.len() < out.capacity(),
            };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(4096));
    }
}

/// A gzip writer that compresses on all cores.
pub struct ParallelGzip<W: Write> {
    /// Taken by `finish`.
    out: Option<W>,
    level: u32,
    block: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    max_pending: usize,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(mut out: W, level: u32) -> io::Result<Self> {
        // Header: deflate, no flags, mtime 0, OS = Unix. Fixed: reproducible.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (tx, rx) = sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let _ = job.reply.send(deflate_block(&job));
                })
            })
            .collect();
        Ok(ParallelGzip {
            out: Some(out),
            level: level.min(9),
            block: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
            pending: VecDeque::new(),
            jobs: Some(tx),
            workers,
            max_pending: threads * 2,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let tail = data.len().saturating_sub(DICT);
        let next_dict = data[tail..].to_vec();
        let (reply, result) = sync_channel(1);
        let job = Job {
            data,
            dict: std::mem::replace(&mut self.dict, next_dict),
            last,
            level: self.level,
            reply,
        };
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        jobs.send(job)
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.pending.push_back(result);
        while self.pending.len() > self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let compressed = rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker stopped"))??;
            self.out()?.write_all(&compressed)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        let size = self.size as u32;
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&size.to_le_bytes())?;
        self.stop_workers();
        Ok(out)
    }

    fn stop_workers(&mut self) {
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        if self.block.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out()?.flush()
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8], level: u32) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), level).unwrap();
        gz.write_all(data).unwrap();
        let compressed = gz.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        compressed
    }

    #[test]
    fn output_is_valid_gzip_for_all_sizes() {
        let text: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| format!("line {i} of the layer\n").into_bytes())
            .take(900_000)
            .collect();
        for len in [
            0,
            1,
            100,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 17,
            text.len(),
        ] {
            for level in [0, 1, 6, 9] {
                roundtrip(&text[..len], level);
            }
        }
    }

    #[test]
    fn output_is_deterministic_and_compresses() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{} ", i % 977).into_bytes())
            .collect();
        let a = roundtrip(&text, 6);
        let b = roundtrip(&text, 6);
        assert_eq!(a, b);
        assert!(a.len() < text.len() / 3, "{} of {}", a.len(), text.len());
    }
}
