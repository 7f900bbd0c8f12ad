//! What every end-to-end test needs: a scratch folder with a doproxy.yml
//! pointing at an in-process simulator, the real doproxy binary run with the
//! user's own configuration stripped from its environment, a real HAProxy on
//! loopback, and a tiny HTTP client to send traffic through it.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use doproxy_sim::{SimConfig, SimDroplet, SimGuard, Simulator};

use crate::etcd_server::Etcd;

pub const TOKEN: &str = "sim-token";

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

/// The result of one doproxy run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `command` to completion.
    pub fn from_output(command: &mut Command) -> Run {
        Run::from(command.output().unwrap())
    }

    /// Waits for a run started with `Project::spawn`.
    pub fn wait(child: Child) -> Run {
        Run::from(child.wait_with_output().unwrap())
    }

    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the run exited 0.
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(
            self.code, 0,
            "doproxy failed:\nstdout: {}\nstderr: {}",
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
    for name in [
        "DIGITALOCEAN_ACCESS_TOKEN",
        "DIGITALOCEAN_TOKEN",
        "DIGITALOCEAN_API_URL",
        "DOPROXY_CONFIG",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
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

    /// Runs doproxy with this project's config and the simulator's token.
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

    /// A run started but not waited for, its output captured.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
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
        Background(
            self.command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Starts a real HAProxy (master-worker) on this project's live config,
    /// and points haproxy_reload_command and haproxy_socket at it.
    pub fn start_haproxy(&mut self) -> Haproxy {
        self.set("haproxy_socket", Some("admin.sock"));
        self.run(&["generate"]).success();
        fs::copy(self.path("haproxy.cfg"), self.path("live/haproxy.cfg")).unwrap();
        let child = Command::new("haproxy")
            .arg("-W")
            .arg("-f")
            .arg(self.path("live/haproxy.cfg"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy must be installed (apt-get install haproxy)");
        let haproxy = Haproxy {
            child,
            frontend: self.frontend,
            socket: self.path("admin.sock"),
        };
        wait_until("HAProxy to listen", Duration::from_secs(10), || {
            TcpStream::connect(self.frontend).is_ok() && haproxy.socket.exists()
        });
        self.set(
            "haproxy_reload_command",
            Some(&format!("kill -USR2 {}", haproxy.child.id())),
        );
        haproxy
    }
}

/// Sends SIGTERM to a child, as `systemctl stop` does.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
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

/// A process killed when dropped.
pub struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A HAProxy master process, stopped when dropped.
pub struct Haproxy {
    child: Child,
    pub frontend: SocketAddr,
    pub socket: PathBuf,
}

impl Haproxy {
    /// Kills the master with SIGKILL, as a crash would; its workers follow.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `count` requests through the frontend; the body of each answer
    /// (or the error, for a failed request).
    pub fn get_many(&self, count: usize) -> Vec<Result<String, String>> {
        (0..count).map(|_| http_get(self.frontend, "/")).collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SIGTERM stops the master and its workers at once.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// Requests sent from a few threads through a frontend, each on a new
/// connection, until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(frontend: SocketAddr, threads: usize, path: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match http_get(frontend, path) {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(err) => {
                                failures.lock().unwrap().push(err);
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// Stops the traffic and asserts that no request failed and that there
    /// was enough of it to prove something.
    #[track_caller]
    pub fn finish_without_failures(self) {
        let (ok, failures) = self.finish();
        assert_eq!(
            failures,
            Vec::<String>::new(),
            "{} failed of {}",
            failures.len(),
            ok + failures.len()
        );
        assert!(ok > 50, "too little load to prove anything: {ok} requests");
    }

    /// Stops the traffic; (successful requests, failures).
    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failures.lock().unwrap().clone(),
        )
    }
}

/// GET `path` over HTTP/1.1; the body of a 200 answer, else an error naming
/// what came back.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    http_get_within(addr, path, Duration::from_secs(10))
}

/// `http_get`, waiting up to `patience` for the answer (a slow page).
pub fn http_get_within(addr: SocketAddr, path: &str, patience: Duration) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
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
    let output = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "haproxy -c rejected {}: {stderr}",
        path.display()
    );
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A file shipped at the top of the repository.
pub fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}
