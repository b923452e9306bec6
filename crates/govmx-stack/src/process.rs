//! Supervised child processes: own process group, output to a log file, stopped on drop.
//!
//! Stopping sends SIGTERM to the whole process group, waits up to [`STOP_GRACE`], then SIGKILLs it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::{Result, StackError};

/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Lines of log shown when a start fails or a test panics.
pub const LOG_TAIL_LINES: usize = 40;

/// A running child process in its own process group.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Supervised {
    /// Spawns `command` in a new process group with stdin closed and stdout/stderr appended to `log_path`.
    pub fn spawn(name: impl Into<String>, command: Command, log_path: &Path) -> Result<Supervised> {
        use std::os::unix::process::CommandExt;
        let name = name.into();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(StackError::io("opening log", log_path))?;
        let log2 = log
            .try_clone()
            .map_err(StackError::io("opening log", log_path))?;
        let mut command = with_parent_death_signal(command);
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        let child = command.spawn().map_err(|error| StackError::StartFailed {
            component: name.clone(),
            reason: format!("cannot run {:?}: {error}", command.get_program()),
            log: log_path.to_owned(),
            tail: String::new(),
        })?;
        tracing::debug!(component = %name, pid = child.id(), log = %log_path.display(), "started");
        Ok(Supervised {
            name,
            child: Some(child),
            log_path: log_path.to_owned(),
        })
    }

    /// The component name, e.g. `synapse agency`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file with the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id (also the process group id), if still owned.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the child has exited (reaps it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::util::tail(&self.log_path, lines)
    }

    /// A [`StackError::StartFailed`] for this child with the tail of its log.
    pub fn start_failed(&self, reason: impl Into<String>) -> StackError {
        StackError::StartFailed {
            component: self.name.clone(),
            reason: reason.into(),
            log: self.log_path.clone(),
            tail: self.log_tail(LOG_TAIL_LINES),
        }
    }

    /// Sends SIGTERM to the process group (no wait); see [`Supervised::wait_or_kill`].
    pub fn terminate(&mut self) {
        self.signal(Signal::TERM);
    }

    /// Waits until `deadline` for the child to exit, then SIGKILLs its group and reaps it.
    pub fn wait_or_kill(&mut self, deadline: Instant) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    // No group-wide SIGKILL after the leader is reaped: its id may be reused.
                    tracing::debug!(component = %self.name, %status, "stopped");
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        tracing::warn!(component = %self.name, "did not stop after SIGTERM, sending SIGKILL");
        self.signal_pid(child.id(), Signal::KILL);
        let _ = child.wait();
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub fn stop(&mut self) {
        self.terminate();
        self.wait_or_kill(Instant::now() + STOP_GRACE);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            self.signal_pid(pid, signal);
        }
    }

    fn signal_pid(&self, pid: u32, signal: Signal) {
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            // ESRCH (group already gone) is the normal case after a clean exit.
            let _ = kill_process_group(pid, signal);
        }
    }
}

/// Wraps `command` in `setpriv --pdeathsig TERM` (util-linux) when available, so children also
/// stop when the parent is killed without running destructors (SIGKILL, a test-harness timeout).
///
/// `setpriv` execs the program in place: pid, process group and the drop-time stop are unchanged.
/// The signal fires when the spawning *thread* exits; spawns happen on the runtime's long-lived
/// threads (never on `spawn_blocking` ones).
fn with_parent_death_signal(command: Command) -> Command {
    let Some(setpriv) = crate::prereq::find_in_path("setpriv") else {
        return command;
    };
    let mut wrapped = Command::new(setpriv);
    wrapped
        .args(["--pdeathsig", "TERM", "--"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_terminates_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut command = Command::new("sh");
        // The child ignores nothing; its grandchild `sleep` is in the same group and must die too.
        command.args(["-c", "echo started; sleep 60 & wait"]);
        let mut process = Supervised::spawn("sh", command, &log).unwrap();
        let pid = process.pid().unwrap();
        assert!(process.exit_status().is_none());
        let started = Instant::now();
        drop(process);
        assert!(started.elapsed() < STOP_GRACE, "SIGTERM was enough");
        let group = Pid::from_raw(pid as i32).unwrap();
        // The orphaned `sleep` is killed at once but reaped by init on its own time; until then
        // the group still exists. Poll (bounded) instead of expecting it gone at this instant.
        let deadline = Instant::now() + Duration::from_secs(5);
        while rustix::process::test_kill_process_group(group).is_ok() {
            assert!(Instant::now() < deadline, "group is gone within 5 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn parent_death_wrapper_keeps_program_args_env_and_dir() {
        let mut command = Command::new("python3");
        command
            .args(["-m", "x"])
            .env("A", "1")
            .env_remove("B")
            .current_dir("/tmp");
        let wrapped = with_parent_death_signal(command);
        if wrapped.get_program() == "python3" {
            return; // no setpriv on this machine: the command is used as is
        }
        let args: Vec<_> = wrapped.get_args().collect();
        assert_eq!(args, ["--pdeathsig", "TERM", "--", "python3", "-m", "x"]);
        let envs: Vec<_> = wrapped.get_envs().collect();
        assert!(envs.contains(&("A".as_ref(), Some("1".as_ref()))));
        assert!(envs.contains(&("B".as_ref(), None)));
        assert_eq!(wrapped.get_current_dir(), Some(Path::new("/tmp")));
    }

    #[test]
    fn start_failure_carries_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("false.log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo line-one; echo line-two >&2; exit 3"]);
        let mut process = Supervised::spawn("demo", command, &log).unwrap();
        let status = loop {
            if let Some(status) = process.exit_status() {
                break status;
            }
        };
        let message = process
            .start_failed(format!("exited with {status}"))
            .to_string();
        assert!(
            message.starts_with("demo failed to start: exited with exit status: 3"),
            "{message}"
        );
        assert!(message.contains("line-one\nline-two"), "{message}");
    }
}
