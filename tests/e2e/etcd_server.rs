//! A real etcd for tests (Debian's etcd-server, 3.4): one single-member
//! cluster per test on free loopback ports, its data in a scratch folder,
//! killed and removed when dropped. Admin calls doproxy does not make
//! (turning on authentication) go straight to etcd's JSON gateway.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Value, json};

use crate::pebble::make_certificates;
use crate::support::{Spawned, free_port, spawn, wait_until};

/// How long etcd may take to elect itself leader and answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Etcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// A second client port serving TLS, when started with `start_tls`.
    tls_port: Option<u16>,
    extra_args: Vec<String>,
    process: Option<Spawned>,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_on(Vec::new(), false)
    }

    /// Also serving TLS, with client certificates required, on `tls_url`:
    /// `certs` holds `ca.pem`, `server.pem` and `server.key`. Plain HTTP
    /// stays on `url` for the helper's own calls.
    pub fn start_tls(certs: &Path) -> Etcd {
        let file = |name: &str| certs.join(name).display().to_string();
        let args = [
            "--cert-file",
            &file("server.pem"),
            "--key-file",
            &file("server.key"),
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend([
            "--trusted-ca-file".to_string(),
            file("ca.pem"),
            "--client-cert-auth".to_string(),
        ]);
        Etcd::start_on(args, true)
    }

    fn start_on(extra_args: Vec<String>, tls: bool) -> Etcd {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("doproxy-etcd-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut etcd = Etcd {
            dir,
            client_port: 0,
            peer_port: 0,
            tls_port: None,
            extra_args,
            process: None,
        };
        // A free port can be taken by someone else before etcd binds it;
        // then etcd exits, and fresh ports are tried.
        for _ in 0..3 {
            etcd.client_port = free_port().port();
            etcd.peer_port = free_port().port();
            etcd.tls_port = tls.then(|| free_port().port());
            if etcd.launch() {
                return etcd;
            }
        }
        panic!("etcd did not start:\n{}", etcd.log());
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The TLS client URL, e.g. `https://127.0.0.1:40124`.
    pub fn tls_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.tls_port.expect("started with start_tls")
        )
    }

    /// Kills etcd at once, as a crash or a power cut would.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.launch(), "etcd did not restart:\n{}", self.log());
    }

    /// The client address, for a test standing between doproxy and etcd.
    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.client_port).into()
    }

    /// Replaces etcd with a new, empty one on the same ports, as an operator
    /// rebuilding a lost cluster would: its revisions start again from 1.
    pub fn rebuild_empty(&mut self) {
        self.stop();
        fs::remove_dir_all(self.dir.join("data")).unwrap();
        assert!(self.launch(), "etcd did not start again:\n{}", self.log());
    }

    /// Revokes every lease, as `etcdctl lease revoke` would, so every lock
    /// held through one is lost; returns how many there were.
    pub fn revoke_leases(&self) -> usize {
        let leases = self.post("/v3/lease/leases", json!({}));
        let ids: Vec<Value> = leases["leases"]
            .as_array()
            .map(|leases| leases.iter().map(|lease| lease["ID"].clone()).collect())
            .unwrap_or_default();
        for id in &ids {
            self.post("/v3/lease/revoke", json!({ "ID": id }));
        }
        ids.len()
    }

    /// Waits until etcd has renewed one of the leases it holds now, as the
    /// keepalive of a run holding a lock does every third of the lease's
    /// TTL: proof that the lock outlives the TTL it was granted with.
    #[track_caller]
    pub fn wait_for_a_lease_renewal(&self) {
        let leases = self.post("/v3/lease/leases", json!({}));
        let first: Vec<(Value, i64)> = leases["leases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|lease| Some((lease["ID"].clone(), self.lease_left(&lease["ID"])?)))
            .collect();
        assert!(!first.is_empty(), "etcd holds no lease");
        let since = Instant::now();
        // Without a renewal the seconds left only go down (give or take
        // one for rounding).
        wait_until("a lease to be renewed", Duration::from_secs(40), || {
            let passed = since.elapsed().as_secs() as i64;
            first.iter().any(|(id, left)| {
                self.lease_left(id)
                    .is_some_and(|now| now > left - passed + 1)
            })
        });
    }

    /// The seconds lease `id` has left, as `etcdctl lease timetolive` says;
    /// None once it is gone.
    fn lease_left(&self, id: &Value) -> Option<i64> {
        let answer = self.post("/v3/lease/timetolive", json!({ "ID": id }));
        let left: i64 = answer["TTL"].as_str()?.parse().ok()?;
        (left > 0).then_some(left)
    }

    /// Adds user `root` with `password` and turns authentication on, as
    /// `etcdctl user add root:<password>` and `etcdctl auth enable` do.
    pub fn enable_auth(&self, password: &str) {
        self.post(
            "/v3/auth/user/add",
            json!({"name": "root", "password": password}),
        );
        self.post(
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        );
        self.post("/v3/auth/enable", json!({}));
    }

    /// Writes `value` under `key`, as `etcdctl put` does.
    pub fn put(&self, key: &str, value: &str) {
        self.post(
            "/v3/kv/put",
            json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())}),
        );
    }

    /// The keys starting with `prefix`, in key order, as `etcdctl get
    /// --prefix --keys-only` lists them.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a prefix") += 1;
        let range = self.post(
            "/v3/kv/range",
            json!({"key": base64(prefix.as_bytes()), "range_end": base64(&end), "keys_only": true}),
        );
        range["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| String::from_utf8(unbase64(kv["key"].as_str().unwrap())).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One unauthenticated gateway call; panics unless etcd answers 200.
    fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = http(self.client_port, "POST", path, &body.to_string())
            .unwrap_or_else(|err| panic!("etcd {path}: {err}"));
        assert_eq!(status, 200, "etcd {path}: {answer}");
        serde_json::from_str(&answer).unwrap()
    }

    /// Runs etcd and waits until it answers; false if it exited instead.
    fn launch(&mut self) -> bool {
        let mut client_url = self.url();
        if self.tls_port.is_some() {
            client_url = format!("{client_url},{}", self.tls_url());
        }
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = fs::File::create(self.dir.join("etcd.log")).unwrap();
        let process = self.process.insert(spawn(
            Command::new("etcd")
                .args(["--name", "test"])
                .arg("--data-dir")
                .arg(self.dir.join("data"))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("test={peer_url}")])
                // A lone member elects itself after one election timeout: 100 ms
                // instead of 1 s makes startup take tens of milliseconds.
                .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
                .args([
                    "--logger",
                    "zap",
                    "--log-outputs",
                    "stderr",
                    "--log-level",
                    "error",
                ])
                .args(&self.extra_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        ));
        let started = Instant::now();
        while started.elapsed() < STARTUP_TIMEOUT {
            if !process.is_running() {
                self.process = None;
                return false;
            }
            if let Ok((200, body)) = http(self.client_port, "GET", "/health", "")
                && body.contains(r#""health":"true""#)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A three-member etcd cluster on loopback, for what a lone member cannot
/// show: a member cut off from the others has no leader.
pub struct Cluster {
    dir: PathBuf,
    /// (client port, member process) of each member.
    members: Vec<(u16, Option<Spawned>)>,
}

impl Cluster {
    pub fn start() -> Cluster {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("doproxy-etcd-cluster-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| (free_port().port(), free_port().port()))
            .collect();
        let initial_cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, peer))| {
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let process = spawn(
                    Command::new("etcd")
                        .args(["--name", &format!("m{i}")])
                        .arg("--data-dir")
                        .arg(dir.join(format!("m{i}")))
                        .args(["--listen-client-urls", &client_url])
                        .args(["--advertise-client-urls", &client_url])
                        .args(["--listen-peer-urls", &peer_url])
                        .args(["--initial-advertise-peer-urls", &peer_url])
                        .args(["--initial-cluster", &initial_cluster.join(",")])
                        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
                        .args(["--log-level", "error"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                );
                (client, Some(process))
            })
            .collect();
        let cluster = Cluster { dir, members };
        let started = Instant::now();
        while !(0..3).all(|i| cluster.healthy(i)) {
            assert!(
                started.elapsed() < STARTUP_TIMEOUT,
                "the etcd cluster did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster
    }

    /// Member `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].0)
    }

    /// Kills member `i`, as a crash would.
    pub fn kill(&mut self, i: usize) {
        self.members[i].1 = None;
    }

    /// Whether member `i` knows a leader, as `etcdctl endpoint status` says.
    pub fn has_leader(&self, i: usize) -> bool {
        let Ok((200, body)) = http(self.members[i].0, "POST", "/v3/maintenance/status", "{}")
        else {
            return false;
        };
        let status: Value = serde_json::from_str(&body).unwrap_or_default();
        status["leader"]
            .as_str()
            .is_some_and(|leader| leader != "0")
    }

    fn healthy(&self, i: usize) -> bool {
        matches!(http(self.members[i].0, "GET", "/health", ""), Ok((200, body)) if body.contains(r#""health":"true""#))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Standard base64, as etcd's gateway takes keys and values.
fn base64(bytes: &[u8]) -> String {
    BASE64_STANDARD.encode(bytes)
}

fn unbase64(text: &str) -> Vec<u8> {
    BASE64_STANDARD
        .decode(text)
        .unwrap_or_else(|err| panic!("etcd sent {text:?}, not base64: {err}"))
}

/// One HTTP/1.0 exchange (so the answer is never chunked and ends with the
/// connection): the status and the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with the openssl command; removed when dropped.
pub struct Certificates {
    pub dir: PathBuf,
}

impl Certificates {
    pub fn new() -> Certificates {
        let dir = std::env::temp_dir().join(format!("doproxy-etcd-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // etcd 3.4's gateway presents the server certificate to etcd itself,
        // so with client certificates required it needs clientAuth too.
        make_certificates(
            &dir,
            "test-ca",
            &[
                ("server", "serverAuth,clientAuth"),
                ("client", "clientAuth"),
            ],
        );
        Certificates { dir }
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
