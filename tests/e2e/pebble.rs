//! A real ACME CA for tests: Debian's `pebble` (Let's Encrypt's test CA)
//! with `pebble-challtestsrv` as its DNS, every name resolving to
//! 127.0.0.1, both on free loopback ports, killed and removed when dropped.
//! Pebble validates HTTP-01 for real, on the port the test names (where its
//! HAProxy listens), never with PEBBLE_VA_ALWAYS_VALID. Debian ships no
//! certificate for Pebble's own HTTPS, so one is made here with openssl.
//!
//! Also the certificates a test CA on loopback needs, made with openssl
//! (`make_certificates`, which the e2e tests' etcd uses too).
//!
//! The standard library and libc only: the e2e tests and the doproxy
//! crate's own tests (through `#[path]`) share this file, so it cannot use
//! the e2e harness. It keeps the harness' promises on its own: every
//! process runs in a process group of its own that is killed when its
//! guard is dropped (and by the kernel when the test's thread ends), and
//! every command it waits for is bounded in time.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long Pebble may take to start: it makes its root and intermediate
/// keys first, which is slow on a busy machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one openssl or curl command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Pebble {
    dir: PathBuf,
    /// pebble-challtestsrv, then pebble.
    processes: Vec<Process>,
    listen_port: u16,
    management_port: u16,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 challenges on port `http_port` of
    /// 127.0.0.1.
    pub fn start(http_port: u16) -> Pebble {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("doproxy-pebble-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut pebble = Pebble {
            dir,
            processes: Vec::new(),
            listen_port: 0,
            management_port: 0,
        };
        make_certificates(
            &pebble.dir,
            "doproxy test CA for Pebble",
            &[("server", "serverAuth")],
        );
        // A free port can be taken by someone else before Pebble binds it;
        // then it exits, and fresh ports are tried.
        for _ in 0..3 {
            if pebble.launch(http_port) {
                pebble.fetch_issuing_root();
                return pebble;
            }
            pebble.stop();
        }
        panic!(
            "Pebble did not start:\n{}\n{}",
            pebble.log("challtestsrv.log"),
            pebble.log("pebble.log")
        );
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen_port)
    }

    /// The CA that signed Pebble's own HTTPS certificate (its directory):
    /// what an ACME client must trust to talk to it.
    pub fn server_ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The root Pebble issues certificates under (new at every start): what
    /// a client of those certificates trusts (`curl --cacert`).
    pub fn issuing_root_file(&self) -> PathBuf {
        self.dir.join("issuing-root.pem")
    }

    /// Starts both programs on fresh ports; false when either exited (a
    /// port was taken) before answering.
    fn launch(&mut self, http_port: u16) -> bool {
        let dns_port = free_udp_and_tcp_port();
        let challtestsrv_management = free_port();
        let dir = self.dir.clone();
        let log = |name: &str| fs::File::create(dir.join(name)).unwrap();
        let challtestsrv = Process::start(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args([
                    "-management",
                    &format!("127.0.0.1:{challtestsrv_management}"),
                ])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .stdout(log("challtestsrv.log"))
                .stderr(Stdio::null()),
            "pebble-challtestsrv must be installed (apt-get install pebble)",
        );
        self.processes.push(challtestsrv);
        if !self.wait_for(&[dns_port, challtestsrv_management]) {
            return false;
        }

        self.listen_port = free_port();
        self.management_port = free_port();
        let config = format!(
            r#"{{"pebble": {{
                "listenAddress": "127.0.0.1:{}",
                "managementListenAddress": "127.0.0.1:{}",
                "certificate": "server.pem",
                "privateKey": "server.key",
                "httpPort": {http_port},
                "tlsPort": {},
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }}}}"#,
            self.listen_port,
            self.management_port,
            free_port()
        );
        fs::write(self.dir.join("pebble.json"), config).unwrap();
        let pebble = Process::start(
            Command::new("pebble")
                .args(["-config", "pebble.json", "-strict=false"])
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env_remove("PEBBLE_VA_ALWAYS_VALID")
                .current_dir(&self.dir)
                .stdout(log("pebble.log"))
                .stderr(Stdio::null()),
            "pebble must be installed (apt-get install pebble)",
        );
        self.processes.push(pebble);
        self.wait_for(&[self.listen_port, self.management_port])
    }

    /// Waits until every port accepts connections with every process still
    /// running; false as soon as one has exited.
    fn wait_for(&self, ports: &[u16]) -> bool {
        let started = Instant::now();
        loop {
            if self.processes.iter().any(Process::has_exited) {
                return false;
            }
            if ports
                .iter()
                .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
            {
                return true;
            }
            assert!(
                started.elapsed() < STARTUP_TIMEOUT,
                "Pebble did not answer within {STARTUP_TIMEOUT:?}:\n{}",
                self.log("pebble.log")
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Saves Pebble's issuing root, from its management interface.
    fn fetch_issuing_root(&self) {
        run(
            Command::new("curl")
                .args(["--silent", "--show-error", "--fail", "--cacert"])
                .arg(self.server_ca_file())
                .arg(format!(
                    "https://127.0.0.1:{}/roots/0",
                    self.management_port
                ))
                .arg("--output")
                .arg(self.issuing_root_file()),
            "curl (apt-get install curl), fetching Pebble's root",
        );
    }

    /// Kills both programs.
    fn stop(&mut self) {
        self.processes.clear();
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A CA (`ca.pem`, `ca.key`, with subject `ca_name`) in `dir`, and signed
/// by it, for each of `leaves` (a name and its extendedKeyUsage), a key
/// and certificate for 127.0.0.1: `<name>.key`, `<name>.pem`.
pub fn make_certificates(dir: &Path, ca_name: &str, leaves: &[(&str, &str)]) {
    let openssl = |args: &[&str]| {
        run(
            Command::new("openssl").args(args).current_dir(dir),
            "openssl (apt-get install openssl)",
        );
    };
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_subject = format!("/CN={ca_name}");
    openssl(
        &[
            &["req", "-x509", "-days", "1", "-subj", &ca_subject],
            &new_key[..],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    for (name, usage) in leaves {
        let ext = format!("{name}.ext");
        fs::write(
            dir.join(&ext),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &[
                &["req", "-subj", &format!("/CN={name}")],
                &new_key[..],
                &["-keyout", &key, "-out", &csr],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
    }
}

/// A process in a process group of its own (Pebble's, and the crate tests'
/// HAProxy), killed with its group when dropped, and by the kernel when the thread that started it ends. Only
/// `end` reaps it, after killing its group: until then the group's ID
/// cannot pass to another.
pub struct Process {
    child: Child,
    /// How it exited, once reaped.
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `command`; `missing` says what to install when it cannot.
    pub fn start(command: &mut Command, missing: &str) -> Process {
        command.process_group(0);
        // SAFETY: prctl takes plain values and is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("{missing}: {err}"));
        Process {
            child,
            status: None,
        }
    }

    /// Whether it has exited (not reaping it).
    fn has_exited(&self) -> bool {
        if self.status.is_some() {
            return true;
        }
        // SAFETY: waitid writes only into `info`, a plain C struct.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let waited = libc::waitid(
                libc::P_PID,
                self.child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            );
            waited == 0 && info.si_pid() != 0
        }
    }

    /// Kills its group, whatever is left of it; how the process exited.
    fn end(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let group = -i32::try_from(self.child.id()).expect("PIDs fit in i32");
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let status = self.child.wait().expect("a child of this process");
        self.status = Some(status);
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.end();
    }
}

/// Runs `command` (`what` names it in messages) to completion, at most
/// COMMAND_TIMEOUT; it must exit 0.
#[track_caller]
fn run(command: &mut Command, what: &str) {
    let mut process = Process::start(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        what,
    );
    let mut stderr = process.child.stderr.take().unwrap();
    let said = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    while !process.has_exited() && started.elapsed() < COMMAND_TIMEOUT {
        thread::sleep(Duration::from_millis(10));
    }
    let in_time = process.has_exited();
    let status = process.end();
    let said = said.join().unwrap_or_default();
    assert!(
        in_time,
        "{what} did not finish within {COMMAND_TIMEOUT:?}: {said}"
    );
    assert!(status.success(), "{what} failed ({status}): {said}");
}

/// A loopback TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port free for both UDP and TCP right now (a DNS server's).
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
