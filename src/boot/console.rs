//! The guest's serial console: text as it comes, matched against
//! expectations, and typing (log in, run a command, read its output).
//!
//! A command is typed between two markers whose typed form differs from
//! their printed form (`KBUILD''-BEGIN` prints `KBUILD-BEGIN`), so the
//! terminal's echo of the command line is never taken for its output.
//!
//! Under KVM a console that prints nothing at all for [`SILENT_GRACE`]
//! ends the wait: firmware and boot loaders write to the serial port
//! within seconds, so the guest is executing nothing, which nested KVM
//! can do even after its probe passed.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use regex::Regex;

use super::accel::{Acceleration, Accelerator};
use super::qemu::Machine;
use super::{BootError, BootRequest, LOGIN_PROMPT, TAIL_LINES};
use crate::sandbox::Cancel;

/// A shell prompt (`root@host:~# `), or the login failing.
const AFTER_PASSWORD: &str = r"(?m)[#$] *$|Login incorrect";
/// How long one login attempt waits for each prompt.
const ATTEMPT: Duration = Duration::from_secs(45);
/// How long a console under KVM may print nothing at all.
const SILENT_GRACE: Duration = Duration::from_secs(60);

pub(super) struct Console<'a> {
    machine: Machine,
    /// Everything the console printed, `\r` removed.
    text: String,
    /// Expectations match after this offset of `text`.
    consumed: usize,
    log: Option<File>,
    show: bool,
    cancel: &'a Cancel,
    started: Instant,
    /// How long the console may stay silent from `started`: under KVM
    /// until it first prints, never under TCG (which may be that slow).
    silent_grace: Option<Duration>,
}

impl<'a> Console<'a> {
    pub fn new(
        machine: Machine,
        request: &BootRequest,
        cancel: &'a Cancel,
    ) -> Result<Self, BootError> {
        let log = match &request.serial_log {
            Some(path) => Some(File::create(path).map_err(|source| BootError::Io {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let kvm = machine.acceleration.accelerator == Accelerator::Kvm;
        Ok(Console {
            machine,
            text: String::new(),
            consumed: 0,
            log,
            show: request.show_console,
            cancel,
            started: Instant::now(),
            silent_grace: kvm.then_some(SILENT_GRACE),
        })
    }

    pub fn acceleration(&self) -> &Acceleration {
        &self.machine.acceleration
    }

    fn tail(&self) -> Vec<String> {
        let lines: Vec<&str> = self.text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }

    /// Takes what the console printed until `until`; false once QEMU's
    /// output closed.
    fn receive(&mut self, until: Instant) -> Result<bool, BootError> {
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        match self.machine.output.recv_timeout(wait) {
            Ok(bytes) => {
                self.silent_grace = None;
                if let Some(log) = &mut self.log {
                    let _ = log.write_all(&bytes);
                }
                if self.show {
                    let _ = std::io::stderr().write_all(&bytes);
                }
                self.text
                    .push_str(&String::from_utf8_lossy(&bytes).replace('\r', ""));
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) => Ok(true),
            Err(RecvTimeoutError::Disconnected) => Ok(false),
        }
    }

    /// Waits until `regex` matches the text after the last match; returns
    /// the match's range in the text.
    fn find(
        &mut self,
        regex: &Regex,
        waiting: &str,
        deadline: Instant,
    ) -> Result<(usize, usize), BootError> {
        let started = Instant::now();
        loop {
            if let Some(found) = regex.find(&self.text[self.consumed..]) {
                let range = (self.consumed + found.start(), self.consumed + found.end());
                self.consumed = range.1;
                return Ok(range);
            }
            if self.cancel.is_cancelled() {
                return Err(BootError::Cancelled);
            }
            if self
                .silent_grace
                .is_some_and(|grace| self.started.elapsed() >= grace)
            {
                return Err(BootError::SilentUnderKvm {
                    waited: self.started.elapsed(),
                });
            }
            if Instant::now() >= deadline {
                return Err(BootError::Timeout {
                    waiting: waiting.to_string(),
                    waited: started.elapsed(),
                    tail: self.tail(),
                });
            }
            if !self.receive(deadline)? {
                // Give the reader a moment to hand over the last bytes.
                let status = self
                    .machine
                    .exit_status()
                    .unwrap_or_else(|| "closed".into());
                return Err(BootError::Exited {
                    status,
                    waiting: waiting.to_string(),
                    tail: self.tail(),
                });
            }
        }
    }

    /// Waits for `regex`; returns the matched text.
    pub fn wait_for(
        &mut self,
        regex: &Regex,
        waiting: &str,
        deadline: Instant,
    ) -> Result<String, BootError> {
        let (start, end) = self.find(regex, waiting, deadline)?;
        Ok(self.text[start..end].to_string())
    }

    fn type_text(&mut self, text: &str) -> Result<(), BootError> {
        let io = |source| BootError::Io {
            path: "QEMU's serial port".into(),
            source,
        };
        self.machine.stdin.write_all(text.as_bytes()).map_err(io)?;
        self.machine.stdin.flush().map_err(io)
    }

    /// Logs in at the login prompt that was just seen. A prompt redrawn by
    /// late boot messages is retried, twice.
    pub fn log_in(
        &mut self,
        user: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<(), BootError> {
        let password_prompt = Regex::new("Password: ?").expect("valid");
        let login_prompt = Regex::new(LOGIN_PROMPT).expect("valid");
        let mut attempts = 0;
        loop {
            // The getty may still be setting up the line after printing.
            std::thread::sleep(Duration::from_millis(500));
            self.type_text(&format!("{user}\n"))?;
            let attempt = deadline.min(Instant::now() + ATTEMPT);
            match self.find(&password_prompt, "the password prompt", attempt) {
                Ok(_) => break,
                Err(BootError::Timeout { .. }) if attempts < 2 && Instant::now() < deadline => {
                    attempts += 1;
                    self.type_text("\n")?;
                    self.find(&login_prompt, "a login prompt", deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        self.type_text(&format!("{password}\n"))?;
        let after = Regex::new(AFTER_PASSWORD).expect("valid");
        let seen = self.wait_for(&after, "a shell prompt", deadline)?;
        if seen.contains("incorrect") {
            return Err(BootError::CommandFailed {
                command: format!("login as {user}"),
                status: 1,
                output: "Login incorrect".into(),
            });
        }
        Ok(())
    }

    /// Runs `command` in the shell; returns its output and exit status.
    pub fn run(&mut self, command: &str, deadline: Instant) -> Result<(String, i32), BootError> {
        self.type_text(&format!(
            "echo KBUILD''-BEGIN; {command}; echo KBUILD''-END-$?\n"
        ))?;
        let begin = Regex::new("KBUILD-BEGIN\n").expect("valid");
        let end = Regex::new(r"KBUILD-END-(\d+)").expect("valid");
        let (_, from) = self.find(&begin, "the command's output", deadline)?;
        let (to, after) = self.find(&end, "the command's end", deadline)?;
        let output = self.text[from..to].to_string();
        let status = self.text[to..after]
            .trim_start_matches("KBUILD-END-")
            .parse()
            .unwrap_or(-1);
        Ok((output, status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{Firmware, Media};
    use std::process::{Command, Stdio};

    /// A console on `sh -c script` as the guest, under `accelerator`, that
    /// may stay silent for 300 ms.
    fn console<'a>(script: &str, accelerator: Accelerator, cancel: &'a Cancel) -> Console<'a> {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let acceleration = Acceleration {
            accelerator,
            reason: "test".into(),
        };
        let machine = Machine::attach(child, acceleration, None);
        let request = BootRequest::example(Firmware::Bios, Media::Cdrom);
        let mut console = Console::new(machine, &request, cancel).unwrap();
        if console.silent_grace.is_some() {
            console.silent_grace = Some(Duration::from_millis(300));
        }
        console
    }

    fn wait(console: &mut Console) -> BootError {
        let prompt = Regex::new(LOGIN_PROMPT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        console
            .wait_for(&prompt, "a login prompt", deadline)
            .unwrap_err()
    }

    #[test]
    fn a_silent_console_under_kvm_fails_early_with_a_hint() {
        let cancel = Cancel::default();
        let err = wait(&mut console("exec sleep 30", Accelerator::Kvm, &cancel));
        assert!(matches!(err, BootError::SilentUnderKvm { .. }), "{err}");
        assert!(err.to_string().contains("silent"), "{err}");
        assert!(err.hint().unwrap().contains("--accel tcg"), "{err}");
    }

    #[test]
    fn a_console_that_spoke_or_tcg_waits_to_the_deadline() {
        let cancel = Cancel::default();
        let spoke = "echo SeaBIOS; exec sleep 30";
        let err = wait(&mut console(spoke, Accelerator::Kvm, &cancel));
        assert!(matches!(err, BootError::Timeout { .. }), "{err}");
        let err = wait(&mut console("exec sleep 30", Accelerator::Tcg, &cancel));
        assert!(matches!(err, BootError::Timeout { .. }), "{err}");
    }
}
