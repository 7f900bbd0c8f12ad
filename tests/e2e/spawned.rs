//! Processes the tests start, ended with everything they started: each one
//! runs in a session of its own, and its guard kills the whole session when
//! dropped, a failed assertion's unwinding included (doproxy runs HAProxy
//! commands in process groups of their own, so killing one group is not
//! enough). Every wait is bounded and fails with the command line and the
//! output so far, and when the test binary exits it checks that nothing the
//! suite started is still alive.
//!
//! The test binary is a child subreaper (PR_SET_CHILD_SUBREAPER), so what a
//! killed process leaves behind is re-parented to the binary instead of
//! init. A guard finds its processes by session among the binary's own
//! descendants only, never among other runs' processes.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::ops::Deref;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Run, wait_until};

/// How long one run of a command may take unless a test says otherwise.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long what a process started may take to end after it exited, or
/// after it was killed.
const AFTERLIFE: Duration = Duration::from_secs(10);

/// A process a test started, with its session; dropping it kills all of it.
///
/// It derefs to its `Child` (`id`), but only it reaps the process: its PID,
/// and so its session's ID, stays its own until all of it has ended. It is
/// killed by the kernel when the thread that spawned it ends
/// (PR_SET_PDEATHSIG), so the test binary killed by a signal leaves none
/// running: start it on the test's own thread.
pub struct Spawned {
    child: Child,
    /// The command line, for messages.
    line: String,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
    /// Reaped, its session found empty: nothing left to end.
    ended: bool,
    /// How it exited, once reaped.
    status: Option<ExitStatus>,
}

/// Starts `command` in a session of its own; its piped streams are read as
/// they come (`stdout_so_far`, `stderr_so_far`).
#[track_caller]
pub fn spawn(command: &mut Command) -> Spawned {
    become_subreaper();
    let line = command_line(command);
    // SAFETY: setsid, getsid, getpid and prctl are async-signal-safe and
    // touch nothing of the parent's memory.
    unsafe {
        command.pre_exec(|| {
            // A command spawned twice runs this hook twice.
            if libc::getsid(0) != libc::getpid() && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {line}: {err}"));
    let stdout = child.stdout.take().map(Capture::start);
    let stderr = child.stderr.take().map(Capture::start);
    Spawned {
        child,
        line,
        stdout,
        stderr,
        ended: false,
        status: None,
    }
}

impl Spawned {
    /// Waits for the exit, up to RUN_TIMEOUT; see `wait_within`.
    #[track_caller]
    pub fn wait(self) -> Run {
        self.wait_within(RUN_TIMEOUT)
    }

    /// Waits for the exit, up to `bound`, and for what the process started
    /// to end too. Fails with the command line and the output so far if it
    /// still runs after `bound` (killing all of it), or if what it started
    /// still runs AFTERLIFE after it exited.
    #[track_caller]
    pub fn wait_within(mut self, bound: Duration) -> Run {
        if !self.exits_within(bound) {
            self.end();
            panic!(
                "{} still ran after {bound:?}, so it was killed\n{}",
                self.line,
                self.output_so_far()
            );
        }
        let left = self.left_running();
        if !left.is_empty() {
            self.end();
            panic!(
                "{} exited but left running: {}\n{}",
                self.line,
                left.join("; "),
                self.output_so_far()
            );
        }
        self.end();
        let status = self.status.expect("ended, so reaped");
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        Run::of(status, read_all(stdout), read_all(stderr))
    }

    /// Kills the process alone with SIGKILL, as a crash would: what it
    /// started runs on until the guard is dropped.
    pub fn kill(&mut self) -> io::Result<()> {
        if !self.has_exited() {
            self.signal(libc::SIGKILL);
        }
        Ok(())
    }

    /// Sends `signal` to the process (not to what it started).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid();
        // SAFETY: kill(2) takes plain integers.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "cannot signal {}", self.line);
    }

    /// Kills the process and everything it started, now.
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        let deadline = Instant::now() + AFTERLIFE;
        loop {
            let members = session(self.pid());
            reap_orphans(&members, self.pid());
            let alive: Vec<&Process> = members.iter().filter(|p| !p.zombie).collect();
            if alive.is_empty() {
                break;
            }
            for process in alive {
                // SAFETY: kill(2) takes plain integers.
                unsafe { libc::kill(process.pid, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                eprintln!("e2e: could not end everything {} started", self.line);
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        self.status = self.child.wait().ok();
        self.ended = true;
    }

    /// Everything it wrote to stdout so far (when piped).
    pub fn stdout_so_far(&self) -> String {
        self.stdout.as_ref().map(Capture::text).unwrap_or_default()
    }

    /// Everything it wrote to stderr so far (when piped).
    pub fn stderr_so_far(&self) -> String {
        self.stderr.as_ref().map(Capture::text).unwrap_or_default()
    }

    /// Waits until stderr (piped) holds `needle` `times` times.
    #[track_caller]
    pub fn wait_for_stderr(&self, needle: &str, times: usize) {
        wait_until(
            &format!("{} to log {needle:?}", self.line),
            RUN_TIMEOUT,
            || self.stderr_so_far().matches(needle).count() >= times,
        );
    }

    /// The first line of stderr (piped) holding `needle`, once there is one.
    #[track_caller]
    pub fn stderr_line_with(&self, needle: &str) -> String {
        let find = || {
            self.stderr_so_far()
                .lines()
                .find(|line| line.contains(needle))
                .map(str::to_string)
        };
        self.wait_for_stderr(needle, 1);
        find().expect("stderr holds it")
    }

    /// Its stdin (piped), to write to and close.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        !self.has_exited()
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("PIDs fit in i32")
    }

    fn has_exited(&self) -> bool {
        self.ended || self.exit_status().is_some()
    }

    /// How the process exited, if it has, read without reaping it.
    fn exit_status(&self) -> Option<ExitStatus> {
        if self.ended {
            return self.status;
        }
        // SAFETY: waitid writes only into `info`, a plain C struct, and
        // reads it for a child that has exited.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let waited = libc::waitid(
                libc::P_PID,
                self.child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            );
            if waited != 0 || info.si_pid() == 0 {
                return None;
            }
            // Back to the status word waitpid would give.
            let raw = match info.si_code {
                libc::CLD_EXITED => (info.si_status() & 0xff) << 8,
                _ => info.si_status() & 0x7f,
            };
            Some(ExitStatus::from_raw(raw))
        }
    }

    /// Whether the process exits within `bound` (not reaping it); if not,
    /// it is ended.
    fn exits_within(&mut self, bound: Duration) -> bool {
        if self.has_exited() {
            return true;
        }
        let pid = self.pid();
        let (exited, waited) = mpsc::channel();
        let waiter = thread::spawn(move || {
            wait_without_reaping(pid);
            let _ = exited.send(());
        });
        let exits = waited.recv_timeout(bound).is_ok();
        if !exits {
            self.end();
        }
        let _ = waiter.join();
        exits
    }

    /// What it started that still runs, AFTERLIFE after it exited; each as
    /// `<pid> <command line>`.
    fn left_running(&self) -> Vec<String> {
        let deadline = Instant::now() + AFTERLIFE;
        loop {
            let members = session(self.pid());
            reap_orphans(&members, self.pid());
            let alive: Vec<String> = members
                .iter()
                .filter(|p| !p.zombie && p.pid != self.pid())
                .map(Process::describe)
                .collect();
            if alive.is_empty() || Instant::now() > deadline {
                return alive;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn output_so_far(&self) -> String {
        format!(
            "stdout so far:\n{}\nstderr so far:\n{}",
            self.stdout_so_far(),
            self.stderr_so_far()
        )
    }
}

impl Deref for Spawned {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.child
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.end();
    }
}

/// One stream of a process, read on a thread of its own until it closes.
struct Capture {
    text: Arc<Mutex<Vec<u8>>>,
    closed: mpsc::Receiver<()>,
}

impl Capture {
    fn start(mut stream: impl Read + Send + 'static) -> Capture {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = text.clone();
        let (done, closed) = mpsc::channel();
        thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
            let _ = done.send(());
        });
        Capture { text, closed }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }
}

/// All a stream said, once it closed (or AFTERLIFE passed: something that
/// outlived the process holds it).
fn read_all(capture: Option<Capture>) -> String {
    let Some(capture) = capture else {
        return String::new();
    };
    let _ = capture.closed.recv_timeout(AFTERLIFE);
    capture.text()
}

/// `program arg...`, without the environment (which holds the token).
fn command_line(command: &Command) -> String {
    let words: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy().into_owned())
        .collect();
    format!("`{}`", words.join(" "))
}

fn wait_without_reaping(pid: i32) {
    loop {
        // SAFETY: waitid writes only into `info`, a plain C struct.
        let waited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if waited == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Makes the test binary the reaper of its orphaned descendants, and checks
/// at its exit that none is left; once.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl and atexit take plain values; the handler is an
        // extern "C" function without arguments.
        unsafe {
            assert_eq!(
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1),
                0,
                "cannot become a child subreaper"
            );
            assert_eq!(libc::atexit(nothing_left_at_exit), 0);
        }
    });
}

/// Run when the test binary exits: anything the suite started that still
/// runs is killed and named, and the run fails.
extern "C" fn nothing_left_at_exit() {
    let me = std::process::id() as i32;
    let left: Vec<Process> = descendants(me, &processes())
        .into_iter()
        .filter(|p| !p.zombie)
        .collect();
    if left.is_empty() {
        return;
    }
    let named: Vec<String> = left.iter().map(Process::describe).collect();
    eprintln!(
        "e2e: {} process(es) started by the suite still ran when it ended, and were killed: {}",
        left.len(),
        named.join("; ")
    );
    for process in &left {
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(process.pid, libc::SIGKILL) };
    }
    // SAFETY: _exit ends the process at once, as an exit handler may.
    unsafe { libc::_exit(1) };
}

/// One entry of /proc.
#[derive(Clone, Debug)]
struct Process {
    pid: i32,
    ppid: i32,
    session: i32,
    zombie: bool,
}

impl Process {
    fn read(pid: i32) -> Option<Process> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid pgrp session ...": comm may hold anything.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(Process {
            pid,
            ppid: fields.get(1)?.parse().ok()?,
            session: fields.get(3)?.parse().ok()?,
            zombie: *fields.first()? == "Z",
        })
    }

    /// `<pid> <command line>`.
    fn describe(&self) -> String {
        let cmdline = fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        let words: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        format!("{} `{}`", self.pid, words.join(" "))
    }
}

/// Every process on the machine (its parent and session are all that is
/// read; what is kept is chosen by ancestry, see `descendants`).
fn processes() -> Vec<Process> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter_map(Process::read)
                .collect()
        })
        .unwrap_or_default()
}

/// The descendants of `ancestor` among `all`.
fn descendants(ancestor: i32, all: &[Process]) -> Vec<Process> {
    let mut children: HashMap<i32, Vec<&Process>> = HashMap::new();
    for process in all {
        children.entry(process.ppid).or_default().push(process);
    }
    let mut found = Vec::new();
    let mut next = vec![ancestor];
    while let Some(parent) = next.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            next.push(child.pid);
            found.push(child.clone());
        }
    }
    found
}

/// The test binary's descendants in session `id` (the spawned process and
/// what it started, also once orphaned), with everything below them (a
/// pseudo-terminal's session, say).
fn session(id: i32) -> Vec<Process> {
    let ours = descendants(std::process::id() as i32, &processes());
    let mut members: HashSet<i32> = ours
        .iter()
        .filter(|p| p.session == id)
        .map(|p| p.pid)
        .collect();
    loop {
        let below: Vec<i32> = ours
            .iter()
            .filter(|p| members.contains(&p.ppid) && !members.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
        if below.is_empty() {
            break;
        }
        members.extend(below);
    }
    ours.into_iter()
        .filter(|p| members.contains(&p.pid))
        .collect()
}

/// Reaps the dead `members` re-parented to the test binary; never `root`,
/// whose `Child` reaps it.
fn reap_orphans(members: &[Process], root: i32) {
    let me = std::process::id() as i32;
    for orphan in members
        .iter()
        .filter(|p| p.zombie && p.ppid == me && p.pid != root)
    {
        // SAFETY: waitpid with a null status pointer reaps one known child.
        unsafe { libc::waitpid(orphan.pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
}
