//! Runs one command of a fuzz case as a child process, fenced in: its address space limited to
//! 4 GiB (`RLIMIT_AS`, so that a huge allocation fails instead of passing by luck), one rayon
//! thread, its own process group (killed whole with SIGKILL at the wall-clock limit, or at a
//! chosen moment), and classifies what came out: success, a clean error, or a bug.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The address-space limit of every child.
pub const ADDRESS_SPACE: u64 = 4 << 30;

/// The default wall-clock limit of one command.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The `vaezoo` binary under test.
pub fn vaezoo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vaezoo")
}

/// One command line to run.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub timeout: Duration,
    /// SIGKILL the child's process group at this moment (a fault injected on purpose).
    pub kill_after: Option<Duration>,
}

impl Cmd {
    /// `vaezoo ARGS…`.
    pub fn vaezoo<S: AsRef<str>>(args: &[S]) -> Self {
        Self {
            program: vaezoo_bin().to_string(),
            args: args.iter().map(|a| a.as_ref().to_string()).collect(),
            timeout: TIMEOUT,
            kill_after: None,
        }
    }

    /// `PROGRAM ARGS…` (e.g. `unshare`).
    pub fn other<S: AsRef<str>>(program: &str, args: &[S]) -> Self {
        Self {
            program: program.to_string(),
            ..Self::vaezoo(args)
        }
    }

    /// A shell line reproducing the command, run from the repository root.
    pub fn shell_line(&self) -> String {
        let mut line = format!(
            "(ulimit -v {}; RAYON_NUM_THREADS=1 {}",
            ADDRESS_SPACE >> 10,
            quote(&self.program)
        );
        for a in &self.args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        line.push(')');
        if let Some(k) = self.kill_after {
            line.push_str(&format!("  # SIGKILLed after {} ms", k.as_millis()));
        }
        line
    }
}

/// `s` quoted for a POSIX shell where it needs quoting.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What one command did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Killed by us at the wall-clock limit.
    pub timed_out: bool,
    /// Killed by us at `kill_after`.
    pub killed_by_us: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// For a command run by a shell: an exit code above 128 is the death of its command by the
    /// signal `code - 128`.
    pub fn through_shell(mut self) -> Self {
        if let Some(c) = self.code.filter(|&c| c > 128 && c < 128 + 65) {
            self.code = None;
            self.signal = Some(c - 128);
        }
        self
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit, in words.
    pub fn status_text(&self) -> String {
        match (self.code, self.signal) {
            _ if self.timed_out => format!("killed at the {} s limit", self.elapsed.as_secs()),
            (Some(c), _) => format!("exit code {c} after {} ms", self.elapsed.as_millis()),
            (None, Some(s)) => {
                format!("killed by signal {s} after {} ms", self.elapsed.as_millis())
            }
            (None, None) => "unknown exit".into(),
        }
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `cmd` from the repository root and waits for it (or kills it).
pub fn run(cmd: &Cmd) -> Outcome {
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .current_dir(crate::common::repo())
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (setrlimit, setpgid) between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE as libc::rlim_t,
                rlim_max: ADDRESS_SPACE as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 || libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", cmd.program));
    let pid = child.id() as libc::pid_t;
    let (out, err) = (reader(child.stdout.take()), reader(child.stderr.take()));
    // The group is killed only while its leader is not reaped, so the id is still ours.
    let kill_group = || unsafe {
        libc::kill(-pid, libc::SIGKILL);
    };
    let (mut timed_out, mut killed_by_us) = (false, false);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        let elapsed = start.elapsed();
        if let Some(at) = cmd.kill_after.filter(|_| !killed_by_us) {
            if elapsed >= at {
                kill_group();
                killed_by_us = true;
                continue;
            }
        }
        if elapsed >= cmd.timeout {
            kill_group();
            timed_out = true;
            break child.wait().expect("wait for the killed child");
        }
        let pending_kill = cmd.kill_after.is_some() && !killed_by_us;
        std::thread::sleep(Duration::from_millis(if pending_kill { 1 } else { 5 }));
    };
    let elapsed = start.elapsed();
    let text = |h: JoinHandle<Vec<u8>>| String::from_utf8_lossy(&h.join().unwrap()).into_owned();
    Outcome {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        killed_by_us: killed_by_us && status.signal() == Some(libc::SIGKILL),
        stdout: text(out),
        stderr: text(err),
        elapsed,
    }
}

/// What a command's outcome says about vaezoo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    CleanError,
    /// Killed by us on purpose (fault injection), not at the time limit.
    Killed,
    Panic,
    Signal,
    Hang,
    Unclear,
}

/// Training's plain status lines (`step 3/24 epoch 1 loss …`), which may precede an error.
fn is_status_line(line: &str) -> bool {
    line.strip_prefix("step ")
        .and_then(|rest| rest.split_whitespace().next())
        .is_some_and(|n| n.contains('/'))
}

/// Whether stderr is one `error:` line, perhaps followed by one `hint:` line. The one
/// error of several lines is a spec's list of problems, `error: N problem(s) in the spec:`
/// and then exactly N lines, one per problem (as `vaezoo validate` prints them).
pub fn is_clean_error_text(stderr: &str) -> bool {
    let mut lines: Vec<&str> = stderr.lines().filter(|l| !is_status_line(l)).collect();
    if lines.last().is_some_and(|l| l.starts_with("hint: ")) {
        lines.pop();
    }
    let Some(first) = lines.first().and_then(|l| l.strip_prefix("error: ")) else {
        return false;
    };
    let listed = first
        .strip_suffix(" problem(s) in the spec:")
        .and_then(|n| n.parse::<usize>().ok());
    match listed {
        Some(n) => n > 0 && lines.len() == n + 1 && lines[1..].iter().all(|l| !l.trim().is_empty()),
        None => lines.len() == 1,
    }
}

/// Classifies an outcome. `validate`: the command is `vaezoo validate`, whose problems are
/// lines on stdout (exit 1, nothing on stderr).
pub fn classify(o: &Outcome, validate: bool) -> Verdict {
    let all = format!("{}{}", o.stdout, o.stderr);
    if o.timed_out {
        return Verdict::Hang;
    }
    if o.killed_by_us {
        return Verdict::Killed;
    }
    if o.code == Some(101) || all.contains("panicked") || all.contains("internal error") {
        return Verdict::Panic;
    }
    if o.signal.is_some() {
        return Verdict::Signal;
    }
    match o.code {
        Some(0) => Verdict::Success,
        Some(1) if validate && o.stderr.is_empty() && !o.stdout.trim().is_empty() => {
            Verdict::CleanError
        }
        Some(1 | 2) if is_clean_error_text(&o.stderr) => Verdict::CleanError,
        _ => Verdict::Unclear,
    }
}
