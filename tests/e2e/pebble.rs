//! A real ACME CA for tests: Debian's `pebble` (Let's Encrypt's test CA)
//! with `pebble-challtestsrv` as its DNS, every name resolving to
//! 127.0.0.1, both on free loopback ports, killed and removed when dropped.
//! Pebble validates HTTP-01 for real, on the port the test names (where its
//! HAProxy listens), never with PEBBLE_VA_ALWAYS_VALID. Debian ships no
//! certificate for Pebble's own HTTPS, so one is made here with openssl.
//!
//! Standard library only: the e2e tests and the doproxy crate's own tests
//! (through `#[path]`) share this file.

use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long Pebble may take to start: it makes its root and intermediate
/// keys first, which is slow on a busy machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Pebble {
    dir: PathBuf,
    /// pebble-challtestsrv, then pebble.
    processes: Vec<Child>,
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
        make_server_certificate(&pebble.dir);
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
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args([
                "-management",
                &format!("127.0.0.1:{challtestsrv_management}"),
            ])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv must be installed (apt-get install pebble)");
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
        let pebble = Command::new("pebble")
            .args(["-config", "pebble.json", "-strict=false"])
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .current_dir(&self.dir)
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble must be installed (apt-get install pebble)");
        self.processes.push(pebble);
        self.wait_for(&[self.listen_port, self.management_port])
    }

    /// Waits until every port accepts connections with every process still
    /// running; false as soon as one has exited.
    fn wait_for(&mut self, ports: &[u16]) -> bool {
        let started = Instant::now();
        loop {
            if self
                .processes
                .iter_mut()
                .any(|child| child.try_wait().unwrap().is_some())
            {
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
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--cacert"])
            .arg(self.server_ca_file())
            .arg(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .arg("--output")
            .arg(self.issuing_root_file())
            .output()
            .expect("curl must be installed (apt-get install curl)");
        assert!(
            output.status.success(),
            "cannot fetch Pebble's root: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn stop(&mut self) {
        for mut child in self.processes.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// A CA (`ca.pem`) and, signed by it, the certificate Pebble serves its
/// directory with (`server.pem`, `server.key`, for 127.0.0.1).
fn make_server_certificate(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (apt-get install openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=doproxy test CA for Pebble",
            ],
            &new_key[..],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &[
            &["req", "-subj", "/CN=pebble"],
            &new_key[..],
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
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
