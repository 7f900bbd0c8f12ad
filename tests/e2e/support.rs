//! What every end-to-end test needs: a scratch folder with a doproxy.yml
//! pointing at an in-process simulator, the real doproxy binary run with the
//! user's own configuration stripped from its environment (every run bounded
//! in time and ended with all it started, see `spawned`), a real HAProxy on
//! loopback, and a tiny HTTP client to send traffic through it.
//!
//! Also the fixtures that stand in for the world around doproxy, each ending
//! its threads when dropped: load that records what answered (`Traffic`,
//! `InFlight`), a network that breaks on cue (`Relay`), an address that
//! refuses connections (`Refusing`), and a point where a shell command waits
//! for the test (`Gate`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use doproxy_sim::{SimConfig, SimDroplet, SimGuard, Simulator};

use crate::etcd_server::Etcd;
pub use crate::spawned::{Spawned, spawn};

pub const TOKEN: &str = "sim-token";

/// What doproxy logs once it has noticed SIGTERM or SIGINT.
pub const SIGNAL_NOTICED: &str = "received: finishing the current step";

/// A folder under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("doproxy-e2e-{}-{label}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The result of one run of a command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `command` to completion, at most RUN_TIMEOUT, its streams
    /// captured.
    #[track_caller]
    pub fn from_output(command: &mut Command) -> Run {
        Run::within(command, crate::spawned::RUN_TIMEOUT)
    }

    /// Runs `command` to completion, at most `bound`, its streams captured.
    #[track_caller]
    pub fn within(command: &mut Command, bound: Duration) -> Run {
        spawn(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .wait_within(bound)
    }

    /// Waits for a run started with `Project::spawn`, at most RUN_TIMEOUT.
    #[track_caller]
    pub fn wait(spawned: Spawned) -> Run {
        spawned.wait()
    }

    pub fn of(status: ExitStatus, stdout: String, stderr: String) -> Run {
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }

    /// Panics with both streams unless the run exited 0.
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(
            self.code, 0,
            "the run failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts exit `code` and that stderr's error is one line naming `needle`.
    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(
            self.code, code,
            "wrong exit code:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        if code == 1 {
            let errors: Vec<&str> = self
                .stderr
                .lines()
                .filter(|l| l.starts_with("doproxy: error:"))
                .collect();
            assert_eq!(errors.len(), 1, "expected one error line:\n{}", self.stderr);
        }
        assert!(
            !self.stderr.contains(TOKEN) && !self.stdout.contains(TOKEN),
            "the token leaked"
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// A `doproxy` command with the user's configuration removed from the
/// environment, so a developer's own token or config never leaks into a test.
pub fn doproxy() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_doproxy"));
    without_user_config(&mut command);
    command.stdin(Stdio::null());
    command
}

/// Removes the user's own doproxy settings from `command`'s environment.
fn without_user_config(command: &mut Command) {
    for name in [
        "DIGITALOCEAN_ACCESS_TOKEN",
        "DIGITALOCEAN_TOKEN",
        "DIGITALOCEAN_API_URL",
        "DOPROXY_CONFIG",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
}

/// `program args` that runs doproxy (through a shell, say) with the
/// simulator's token in its environment and none of the user's settings.
fn with_token(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    without_user_config(&mut command);
    command
        .args(args)
        .env("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
        .stdin(Stdio::null());
    command
}

/// Whether the tests run as root (who may write anywhere).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// One proxy's folder: doproxy.yml, inventory, templates and HAProxy files,
/// in front of a simulator.
pub struct Project {
    pub dir: TempDir,
    /// Shared by the projects of one test that play several proxies.
    pub sim: Arc<SimGuard>,
    /// Keys of doproxy.yml that differ from the test defaults (None: left
    /// out); `set` and `omit` rewrite the file.
    settings: HashMap<String, Option<String>>,
    pub frontend: SocketAddr,
    /// HAProxy ran for this project before: a restart keeps its port.
    haproxy_started: bool,
}

impl Project {
    /// A project whose droplets boot in 300 ms.
    pub fn new(label: &str) -> Project {
        let sim = Simulator::spawn(SimConfig {
            boot_delay: Duration::from_millis(300),
            ..SimConfig::default()
        });
        Project::with_sim(label, Arc::new(sim))
    }

    pub fn with_sim(label: &str, sim: Arc<SimGuard>) -> Project {
        let dir = TempDir::new(label);
        fs::copy(repo_file("user-data.yml"), dir.path().join("user-data.yml")).unwrap();
        let project = Project {
            dir,
            sim,
            settings: HashMap::new(),
            frontend: free_port(),
            haproxy_started: false,
        };
        project.write_config();
        project
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sets a top-level key of doproxy.yml; `None` puts back the test default.
    pub fn set(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self
                .settings
                .insert(key.to_string(), Some(value.to_string())),
            None => self.settings.remove(key),
        };
        self.write_config();
    }

    /// Keeps the inventory in etcd at `endpoint`.
    pub fn use_etcd(&mut self, endpoint: &str) {
        self.set("inventory_backend", Some("etcd"));
        self.set("etcd_endpoints", Some(&format!("[{endpoint}]")));
    }

    /// Leaves a key out of doproxy.yml, so doproxy's own default applies.
    pub fn omit(&mut self, key: &str) {
        self.settings.insert(key.to_string(), None);
        self.write_config();
    }

    fn write_config(&self) {
        let mut settings: Vec<(String, String)> = [
            ("api_url", self.sim.url()),
            ("metadata_url", self.sim.url()),
            ("ssh_key_ids", "[163420]".to_string()),
            ("userdata_file", "user-data.yml".to_string()),
            ("haproxy_cfg_file", "haproxy.cfg".to_string()),
            ("haproxy_cfg_path", "live/haproxy.cfg".to_string()),
            ("inventory_file", "inventory".to_string()),
            ("frontend_bind", self.frontend.to_string()),
            ("backend_port", self.sim.droplet_port().to_string()),
            ("haproxy_reload_command", "'true'".to_string()),
            (
                "droplet_options",
                "{hostname_prefix: auto-nginx, region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .filter(|(k, _)| !self.settings.contains_key(k))
        .collect();
        settings.extend(
            self.settings
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?))),
        );
        let text: String = settings
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        fs::create_dir_all(self.path("live")).unwrap();
        fs::write(self.path("doproxy.yml"), text).unwrap();
    }

    /// Runs doproxy with this project's config and the simulator's token,
    /// at most RUN_TIMEOUT.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from_output(&mut self.command(args))
    }

    /// doproxy with this project's config and the simulator's token.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = doproxy();
        command
            .env("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
            .arg("--config")
            .arg(self.path("doproxy.yml"))
            .args(args);
        command
    }

    /// doproxy `args` (shell words) with this project's config, under a
    /// pseudo-terminal (util-linux `script`): its stdin and stderr are a
    /// TTY, and everything the terminal shows comes out on stdout, raw.
    pub fn on_a_terminal(&self, args: &str) -> Command {
        let line = format!(
            "{} --config {} {args}",
            env!("CARGO_BIN_EXE_doproxy"),
            self.path("doproxy.yml").display()
        );
        with_token("script", &["-qec", &line, "/dev/null"])
    }

    /// doproxy `args` (shell words) with this project's config, run by
    /// `sh -c` after the shell commands `before` succeeded (`exec`, so it
    /// keeps the shell's PID).
    pub fn after_shell(&self, before: &str, args: &str) -> Command {
        let line = format!(
            "{before} && exec '{}' --config '{}' {args}",
            env!("CARGO_BIN_EXE_doproxy"),
            self.path("doproxy.yml").display()
        );
        with_token("sh", &["-c", &line])
    }

    /// A run started but not waited for, its output captured as it comes;
    /// killed with all it started when dropped.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        spawn(
            self.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    }

    /// The droplet IDs in the inventory, as `print -o json` reports them.
    pub fn ids(&self) -> BTreeSet<u64> {
        let json = self.run(&["print", "-o", "json"]).success().json();
        json.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    }

    /// The page droplet `id` serves, as the tutorial's user-data wrote it.
    pub fn page(&self, id: u64) -> String {
        let d = self
            .sim
            .droplets()
            .into_iter()
            .find(|d| d.id == id)
            .unwrap();
        format!(
            "Droplet: {}, ID: {}, IP Address: {}\n",
            d.name, d.id, d.private_ip
        )
    }

    pub fn inventory(&self) -> String {
        fs::read_to_string(self.path("inventory")).unwrap_or_default()
    }

    /// Asserts that HAProxy runs what the inventory says: doctor's live
    /// config check passes and reconcile finds no drift.
    #[track_caller]
    pub fn assert_haproxy_in_step(&self) {
        let doctor = self.run(&["doctor"]).success();
        assert!(
            doctor.stdout.contains("✓ live config: "),
            "{}",
            doctor.stdout
        );
        assert_eq!(
            self.run(&["reconcile"]).success().stdout,
            "No drift: the inventory matches DigitalOcean.\n"
        );
    }

    /// Writes an inventory of `droplets`, each active.
    pub fn write_inventory(&self, droplets: &[SimDroplet]) {
        let lines: String = droplets
            .iter()
            .map(|d| {
                format!(
                    "{} {} {} {} active -\n",
                    d.id, d.name, d.private_ip, d.public_ip
                )
            })
            .collect();
        fs::write(self.path("inventory"), lines).unwrap();
    }

    pub fn live_config(&self) -> String {
        fs::read_to_string(self.path("live/haproxy.cfg")).unwrap_or_default()
    }

    /// API requests that change something (POST, PUT, DELETE) so far.
    pub fn changing_requests(&self) -> Vec<String> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path_and_query))
            .collect()
    }

    /// Starts `doproxy watch` for this project; it stops when dropped.
    pub fn watch(&self) -> Background {
        self.background(&["watch", "--quiet-period", "200ms"])
    }

    /// Starts a long-running doproxy command; it stops when dropped.
    pub fn background(&self, args: &[&str]) -> Background {
        Background {
            _process: spawn(
                self.command(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            ),
        }
    }

    /// Starts a real HAProxy (master-worker) on this project's live config,
    /// and points haproxy_reload_command and haproxy_socket at it.
    ///
    /// The frontend's port was free when the project was made, but someone
    /// may have bound it since: a first start then tries fresh ports. A
    /// restart keeps the port, which forwarders may point at.
    pub fn start_haproxy(&mut self) -> Haproxy {
        self.set("haproxy_socket", Some("admin.sock"));
        let socket = self.path("admin.sock");
        for attempt in 1.. {
            self.run(&["generate"]).success();
            fs::copy(self.path("haproxy.cfg"), self.path("live/haproxy.cfg")).unwrap();
            let mut process = spawn(
                Command::new("haproxy")
                    .arg("-W")
                    .arg("-f")
                    .arg(self.path("live/haproxy.cfg"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped()),
            );
            let mut exited = false;
            wait_until("HAProxy to listen", Duration::from_secs(10), || {
                exited = !process.is_running();
                exited || (TcpStream::connect(self.frontend).is_ok() && socket.exists())
            });
            if !exited {
                self.set(
                    "haproxy_reload_command",
                    Some(&format!("kill -USR2 {}", process.id())),
                );
                self.haproxy_started = true;
                return Haproxy {
                    process,
                    frontend: self.frontend,
                    socket,
                };
            }
            assert!(
                attempt < 3 && !self.haproxy_started,
                "HAProxy did not start on {}:\n{}",
                self.frontend,
                process.stderr_so_far()
            );
            self.frontend = free_port();
            self.write_config();
        }
        unreachable!("the loop returns or panics")
    }
}

/// Sends SIGTERM to a child (a `Spawned` derefs to one), as `systemctl
/// stop` does.
pub fn terminate(child: &Child) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes plain integers.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGTERM) },
        0,
        "kill -TERM failed"
    );
}

/// Two proxy folders sharing one simulator and one etcd.
pub fn two_proxies(label: &str, etcd: &Etcd) -> (Project, Project) {
    let sim = Arc::new(Simulator::spawn(SimConfig {
        boot_delay: Duration::from_millis(300),
        ..SimConfig::default()
    }));
    let proxy = |name: &str| {
        let mut project = Project::with_sim(&format!("{label}-{name}"), sim.clone());
        project.use_etcd(&etcd.url());
        project
    };
    (proxy("a"), proxy("b"))
}

/// A long-running process, killed with all it started when dropped.
pub struct Background {
    _process: Spawned,
}

/// A HAProxy master process and its workers, killed when dropped.
pub struct Haproxy {
    process: Spawned,
    pub frontend: SocketAddr,
    pub socket: PathBuf,
}

impl Haproxy {
    /// Kills the master and its workers with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.end();
    }

    /// Sends `count` requests through the frontend; the body of each answer
    /// (or the error, for a failed request).
    pub fn get_many(&self, count: usize) -> Vec<Result<String, String>> {
        (0..count).map(|_| http_get(self.frontend, "/")).collect()
    }

    /// The sessions droplet `id`'s server has open now, as `show stat` on
    /// the admin socket says (0 while the socket does not answer).
    pub fn sessions_on(&self, id: u64) -> u64 {
        server_stat(&self.socket, id).map_or(0, |server| server.sessions)
    }
}

/// One command on the HAProxy admin socket at `socket`; its answer, or the
/// error while the socket does not answer (a reload hands it over).
pub fn admin(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// One server of HAProxy's backend, as a row of `show stat` gives it.
#[derive(Clone, Debug)]
pub struct ServerStat {
    /// `www-<droplet id>`.
    pub name: String,
    /// `address:port`.
    pub addr: String,
    /// HAProxy's word: `UP`, `UP 1/2`, `DOWN`, `DRAIN`, `MAINT`...
    pub status: String,
    /// Sessions open now.
    pub sessions: u64,
    /// Seconds since the status last changed.
    pub last_change: Option<u64>,
}

/// The servers of HAProxy's backend, as `show stat` on the admin socket at
/// `socket` lists them; None while the socket does not answer.
pub fn show_stat(socket: &Path) -> Option<Vec<ServerStat>> {
    admin(socket, "show stat")
        .ok()
        .map(|csv| backend_servers(&csv))
}

/// Droplet `id`'s server in HAProxy's backend; None while the socket does
/// not answer or the backend has no such server.
pub fn server_stat(socket: &Path, id: u64) -> Option<ServerStat> {
    let name = format!("www-{id}");
    show_stat(socket)?
        .into_iter()
        .find(|server| server.name == name)
}

/// The rows of the built-in template's backend in `show stat` CSV, its
/// BACKEND summary left out.
fn backend_servers(csv: &str) -> Vec<ServerStat> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let field = |name: &str| {
                let at = header.iter().position(|column| *column == name)?;
                fields.get(at).copied()
            };
            let number = |name: &str| field(name)?.parse().ok();
            let name = field("svname")?;
            (field("pxname")? == "www-backend" && name != "BACKEND").then(|| ServerStat {
                name: name.to_string(),
                addr: field("addr").unwrap_or_default().to_string(),
                status: field("status").unwrap_or_default().to_string(),
                sessions: number("scur").unwrap_or(0),
                last_change: number("lastchg"),
            })
        })
        .collect()
}

/// Requests sent from a few threads through a frontend, each on a new
/// connection, until finished or dropped; what came back is counted in a
/// `Record`.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// What a `Traffic` saw: bounded, whatever the load.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Requests answered 200.
    pub ok: usize,
    /// Requests that failed.
    pub failed: usize,
    /// The first failures, each with when its request was sent.
    pub failures: Vec<(SystemTime, String)>,
    /// When the request of the last failure was sent.
    pub last_failure: Option<SystemTime>,
    /// How many requests each page (each droplet's) answered.
    pub answered: HashMap<String, usize>,
}

/// How many failures a `Record` keeps in full.
const FAILURES_KEPT: usize = 20;

impl Record {
    fn add(&mut self, sent: SystemTime, answer: Result<String, String>) {
        match answer {
            Ok(page) => {
                self.ok += 1;
                *self.answered.entry(page).or_default() += 1;
            }
            Err(err) => {
                self.failed += 1;
                self.last_failure = Some(sent);
                if self.failures.len() < FAILURES_KEPT {
                    self.failures.push((sent, err));
                }
            }
        }
    }

    /// How many requests `page` (a droplet's, see `Project::page`) answered.
    pub fn answered_by(&self, page: &str) -> usize {
        self.answered.get(page).copied().unwrap_or(0)
    }

    /// Asserts that no request failed.
    #[track_caller]
    pub fn assert_no_failure(&self) {
        assert_eq!(
            self.failed,
            0,
            "{} of {} requests failed; the first: {:?}",
            self.failed,
            self.ok + self.failed,
            self.failures
        );
    }

    /// Asserts that each of `pages` answered at least `count` requests, so
    /// the load reached every droplet it claims to prove something about.
    #[track_caller]
    pub fn assert_each_answered(&self, pages: &[String], count: usize) {
        for page in pages {
            assert!(
                self.answered_by(page) >= count,
                "{page:?} answered {} requests, fewer than {count}; all answers: {:?}",
                self.answered_by(page),
                self.answered
            );
        }
    }
}

impl Traffic {
    pub fn start(frontend: SocketAddr, threads: usize, path: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, record) = (stop.clone(), record.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = SystemTime::now();
                        let answer = http_get(frontend, path);
                        let failed = answer.is_err();
                        record.lock().unwrap().add(sent, answer);
                        if failed {
                            // A refused connection fails at once: no spinning.
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            record,
            threads,
        }
    }

    /// What came back so far.
    pub fn record(&self) -> Record {
        self.record.lock().unwrap().clone()
    }

    /// Stops the traffic and asserts that no request failed.
    #[track_caller]
    pub fn finish_without_failures(self) -> Record {
        let record = self.finish();
        record.assert_no_failure();
        record
    }

    /// Stops the traffic; what came back.
    pub fn finish(mut self) -> Record {
        self.stop_threads();
        self.record()
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Requests sent at once through a frontend, each on its own connection and
/// thread, to have them in flight while something happens; their
/// connections are closed and their threads joined when dropped.
pub struct InFlight {
    requests: Vec<Request>,
}

/// One request in flight: its thread (the answer's body, or the error),
/// and its connection once open.
type Request = (
    thread::JoinHandle<Result<String, String>>,
    Arc<Mutex<Option<TcpStream>>>,
);

impl InFlight {
    /// `count` requests for `path`, each waiting up to `patience` for its
    /// answer.
    pub fn start(frontend: SocketAddr, count: usize, path: &str, patience: Duration) -> InFlight {
        let requests = (0..count)
            .map(|_| {
                let open: Arc<Mutex<Option<TcpStream>>> = Arc::default();
                let (path, registered) = (path.to_string(), open.clone());
                let thread = thread::spawn(move || {
                    let stream = connect(frontend)?;
                    *registered.lock().unwrap() = stream.try_clone().ok();
                    exchange(stream, &path, patience)
                });
                (thread, open)
            })
            .collect();
        InFlight { requests }
    }

    /// Waits for every answer; the errors of the requests that failed.
    pub fn failures(mut self) -> Vec<String> {
        self.requests
            .drain(..)
            .filter_map(|(thread, _)| thread.join().unwrap().err())
            .collect()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for (thread, open) in self.requests.drain(..) {
            if let Some(stream) = open.lock().unwrap().take() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            let _ = thread.join();
        }
    }
}

/// GET `path` over HTTP/1.1; the body of a 200 answer, else an error naming
/// what came back.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    http_get_within(addr, path, Duration::from_secs(10))
}

/// `http_get`, waiting up to `patience` for the answer (a slow page).
pub fn http_get_within(addr: SocketAddr, path: &str, patience: Duration) -> Result<String, String> {
    exchange(connect(addr)?, path, patience)
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())
}

/// One request on `stream`; the body of a 200 answer, else an error.
fn exchange(mut stream: TcpStream, path: &str, patience: Duration) -> Result<String, String> {
    stream.set_read_timeout(Some(patience)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let status = answer.split(' ').nth(1).unwrap_or("none");
    if status != "200" {
        return Err(format!(
            "status {status}: {}",
            answer.lines().next().unwrap_or("")
        ));
    }
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Polls `condition` until it holds, failing the test after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Asserts that the real HAProxy accepts the config at `path`.
#[track_caller]
pub fn assert_haproxy_accepts(path: &Path) {
    let run = Run::from_output(Command::new("haproxy").arg("-c").arg("-f").arg(path));
    assert_eq!(
        run.code,
        0,
        "haproxy -c rejected {}: {}",
        path.display(),
        run.stderr
    );
}

/// A loopback port nothing listens on right now; whoever binds it later
/// must try another if that fails (someone may have taken it meanwhile).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A loopback address held by a socket that is bound but never listens:
/// every connection to it is refused, and nothing else can take it while
/// this lives. The "dead" address for a test, instead of a closed port that
/// someone may open.
pub struct Refusing {
    _socket: OwnedFd,
    pub addr: SocketAddr,
}

impl Refusing {
    pub fn new() -> Refusing {
        // SAFETY: socket, bind and getsockname get valid pointers to
        // sockaddr_in values of the size passed; the descriptor is owned at
        // once.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(fd, (&raw const addr).cast(), len);
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            libc::getsockname(fd, (&raw mut addr).cast(), &mut len);
            Refusing {
                _socket: socket,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, u16::from_be(addr.sin_port))),
            }
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A point a shell command waits at until the test opens it. It marks that
/// it got there, then waits for the test; after GATE_LIMIT it gives up and
/// fails, so a test that never opens it leaves nothing waiting.
pub struct Gate {
    reached: PathBuf,
    opened: PathBuf,
}

/// How long a gate waits before it fails on its own.
const GATE_LIMIT: Duration = Duration::from_secs(60);

impl Gate {
    /// A gate whose marker files are `<name>-reached` and `<name>-open` in
    /// `folder`.
    pub fn new(folder: &Path, name: &str) -> Gate {
        Gate {
            reached: folder.join(format!("{name}-reached")),
            opened: folder.join(format!("{name}-open")),
        }
    }

    /// Shell commands that stop at the gate; exit 1 if it never opens.
    pub fn shell(&self) -> String {
        let polls = GATE_LIMIT.as_millis() / 50;
        format!(
            "touch {}; i=0; while [ ! -e {} ]; do [ $i -lt {polls} ] || exit 1; i=$((i+1)); sleep 0.05; done",
            self.reached.display(),
            self.opened.display()
        )
    }

    /// Whether a command got to the gate.
    pub fn is_reached(&self) -> bool {
        self.reached.exists()
    }

    /// Waits until a command gets to the gate.
    #[track_caller]
    pub fn wait_reached(&self, timeout: Duration) {
        wait_until("a command to reach the gate", timeout, || self.is_reached());
    }

    /// Lets the commands at the gate (and any that come) go on.
    pub fn open(&self) {
        fs::write(&self.opened, "").unwrap();
    }
}

/// A loopback TCP relay to `target` that a test can break as a network
/// does: `stall` makes the connections open now go silent (whatever is sent
/// either way is dropped, with no FIN or RST), `cut` also holds new ones
/// silent until `heal`; or as a dying server does: `die_at` closes every
/// connection the moment a chosen request is sent, and new ones at once
/// until `heal`. Its connections close and its threads end when dropped.
pub struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<RelayState>>,
    stop: Arc<AtomicBool>,
    accepting: Option<thread::JoinHandle<()>>,
}

#[derive(Default)]
struct RelayState {
    /// Connections from before the last stall are silent.
    generation: usize,
    cut: bool,
    /// Connections accepted while cut, held open and never answered.
    held: Vec<TcpStream>,
    /// Every relayed stream, to close when the relay goes.
    open: Vec<TcpStream>,
    pumps: Vec<thread::JoinHandle<()>>,
    /// Connections relayed so far.
    forwarded: usize,
    /// Reads dropped on silent connections, and connections held: what
    /// the break has swallowed.
    swallowed: usize,
    /// The start of the request the relay dies at, and how many more of
    /// them it lets through plus one.
    death: Option<(&'static [u8], usize)>,
    /// Died: every connection was closed, new ones are closed at once.
    dead: bool,
}

impl RelayState {
    /// Whether `chunk`, on its way to the target, holds the request the
    /// relay dies at; if so it dies, closing every connection.
    fn dies_at(&mut self, chunk: &[u8]) -> bool {
        let Some((request, left)) = &mut self.death else {
            return false;
        };
        let sent = chunk
            .windows(request.len())
            .filter(|w| w == request)
            .count();
        if sent < *left {
            *left -= sent;
            return false;
        }
        self.death = None;
        self.dead = true;
        for stream in &self.open {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        true
    }
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(RelayState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (state.clone(), stop.clone());
        let accepting = thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let mut state = shared.lock().unwrap();
                if state.dead {
                    continue;
                }
                if state.cut {
                    state.swallowed += 1;
                    state.held.push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                state.forwarded += 1;
                let born = state.generation;
                for stream in [&client, &server] {
                    state.open.extend(stream.try_clone());
                }
                let pairs = [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (server, client, false),
                ];
                for (from, to, upstream) in pairs {
                    let shared = shared.clone();
                    let pump = thread::spawn(move || pump(from, to, born, upstream, &shared));
                    state.pumps.push(pump);
                }
            }
        });
        Relay {
            addr,
            state,
            stop,
            accepting: Some(accepting),
        }
    }

    /// `http://<address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every connection open now goes silent; new ones pass.
    pub fn stall(&self) {
        self.state.lock().unwrap().generation += 1;
    }

    /// A partition: open connections go silent, new ones are accepted but
    /// get nowhere.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.generation += 1;
        state.cut = true;
    }

    /// Dies, as if the target had, when the `n`th request (from 1)
    /// starting with `request` from now on is sent: that request never
    /// arrives, every open connection is closed, and new ones are closed at
    /// once until `heal`.
    pub fn die_at(&self, request: &'static [u8], n: usize) {
        assert!(n > 0, "requests are counted from 1");
        self.state.lock().unwrap().death = Some((request, n));
    }

    /// Whether it died (`die_at`).
    pub fn is_dead(&self) -> bool {
        self.state.lock().unwrap().dead
    }

    /// New connections pass again; the ones held are closed.
    pub fn heal(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = false;
        state.dead = false;
        state.death = None;
        state.held.clear();
    }

    /// Connections relayed so far.
    pub fn forwarded(&self) -> usize {
        self.state.lock().unwrap().forwarded
    }

    /// What the breaks have swallowed so far: reads dropped, connections
    /// held.
    pub fn swallowed(&self) -> usize {
        self.state.lock().unwrap().swallowed
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
        let pumps = {
            let mut state = self.state.lock().unwrap();
            state.held.clear();
            for stream in state.open.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            std::mem::take(&mut state.pumps)
        };
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

/// Copies `from` to `to` until either closes; once the connection's
/// generation has passed it stays open but carries nothing more. What goes
/// `upstream` (to the target) may be what the relay dies at.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    born: usize,
    upstream: bool,
    state: &Mutex<RelayState>,
) {
    let mut buffer = [0u8; 16 * 1024];
    let live = || {
        let mut state = state.lock().unwrap();
        let live = state.generation == born;
        if !live {
            state.swallowed += 1;
        }
        live
    };
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if upstream && state.lock().unwrap().dies_at(&buffer[..n]) {
            break;
        }
        if live() && to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    if state.lock().unwrap().generation == born {
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
}

/// A Prometheus text exposition (a scrape, a textfile) that Prometheus'
/// own checker accepts, read into its samples for tests to assert on.
pub struct Metrics {
    /// Each family's type, from its `# TYPE` line.
    types: HashMap<String, String>,
    /// Each sample: its name, labels and value.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// How strictly `Metrics::check` judges an exposition.
#[derive(Clone, Copy, PartialEq)]
pub enum Lint {
    /// doproxy's own: Prometheus' naming and HELP conventions hold too
    /// (promtool finds no problem at all).
    Strict,
    /// Another program's (HAProxy's exporter): it only has to parse.
    ParseOnly,
}

impl Metrics {
    /// Checks `text` with `promtool check metrics` (Debian's prometheus
    /// package) and reads it. promtool exits 1 when the text does not
    /// parse, 3 when it parses but breaks a convention (a counter without
    /// `_total`, a family without HELP...); either fails the test, with
    /// what promtool said, unless `lint` lets conventions pass.
    #[track_caller]
    pub fn check(text: &str, lint: Lint) -> Metrics {
        let mut promtool = spawn(
            Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let mut input = promtool.take_stdin().expect("piped");
        // promtool reads all of it before it judges; an early exit is
        // judged below.
        let _ = input.write_all(text.as_bytes());
        drop(input);
        let run = promtool.wait();
        let accepted = run.code == 0 || (run.code == 3 && lint == Lint::ParseOnly);
        assert!(
            accepted,
            "promtool check metrics refused it (exit {}): {}{}\n{text}",
            run.code, run.stdout, run.stderr
        );
        Metrics::read(text)
    }

    /// Reads a checked exposition: `# TYPE` lines and samples, `name` or
    /// `name{label="value",...}`, then the value (and maybe a timestamp).
    fn read(text: &str) -> Metrics {
        let mut metrics = Metrics {
            types: HashMap::new(),
            samples: Vec::new(),
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared.split_once(' ').expect("checked");
                metrics
                    .types
                    .insert(name.to_string(), kind.trim().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).expect("checked");
            let (name, mut rest) = line.split_at(name_end);
            let mut labels = BTreeMap::new();
            if let Some(inside) = rest.strip_prefix('{') {
                rest = read_labels(inside, &mut labels);
            }
            let value = rest.split_whitespace().next().expect("checked");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                number => number.parse().expect("checked"),
            };
            metrics.samples.push((name.to_string(), labels, value));
        }
        metrics
    }

    /// The value of `name` with exactly `labels`, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, value)| *value)
    }

    /// The values of every sample of `name`, whatever its labels, added up.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, value)| value)
            .sum()
    }

    /// The type `name` is declared with (`counter`, `gauge`...).
    #[track_caller]
    pub fn kind(&self, name: &str) -> &str {
        self.types
            .get(name)
            .unwrap_or_else(|| panic!("no # TYPE of {name}"))
    }
}

/// Reads `label="value",...}` (escapes in values undone) into `labels`;
/// what follows the closing brace.
fn read_labels<'a>(mut text: &'a str, labels: &mut BTreeMap<String, String>) -> &'a str {
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return rest;
        }
        let (name, rest) = text.split_once("=\"").expect("checked");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("checked") {
                (at, '"') => break at,
                (_, '\\') => match chars.next().expect("checked").1 {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim().to_string(), value);
        text = &rest[end + 1..];
    }
}

/// A file shipped at the top of the repository.
pub fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}
