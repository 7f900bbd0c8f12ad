//! The pieces of HTTPS working together for real: Pebble (the ACME test
//! CA) validating HTTP-01 through a real HAProxy that answers from a map
//! filled over its runtime API, and the certificate going live with `set
//! ssl cert` without a reload, as curl sees; and what a CA the ACME client
//! cannot trust or reach makes of it. Here because `ops` is where the ACME
//! client and HAProxy meet.

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::acme::{AccountKey, Acme, AcmeError, AcmeSettings, ChallengeAnswers};
use crate::certificate::{CertifiedKey, Domain};
use crate::haproxy::Runtime;

#[path = "../../tests/e2e/pebble.rs"]
mod pebble;

use pebble::{Pebble, Process, free_port};

/// A HAProxy on loopback with a hand-written config: a plain HTTP frontend
/// answering ACME challenges from a map, an HTTPS bind serving `site.pem`,
/// and one serving the certificates of the crt-list `sites.crtlist`.
struct Haproxy {
    /// Killed with its workers when the test ends, however it ends.
    _process: Process,
    socket: PathBuf,
    http_port: u16,
    https_port: u16,
    crt_list_port: u16,
}

impl Haproxy {
    fn start(dir: &Path, certificate: &CertifiedKey) -> Haproxy {
        let (http_port, https_port, crt_list_port) = (free_port(), free_port(), free_port());
        fs::write(dir.join("site.pem"), certificate.bundle_pem()).unwrap();
        fs::write(
            dir.join("sites.crtlist"),
            format!("{}\n", dir.join("site.pem").display()),
        )
        .unwrap();
        fs::write(dir.join("challenges.map"), "").unwrap();
        let d = dir.display();
        let config = format!(
            "global\n\
             \x20 stats socket {d}/admin.sock level admin\n\
             defaults\n\
             \x20 mode http\n\
             \x20 timeout connect 5s\n\
             \x20 timeout client 10s\n\
             \x20 timeout server 10s\n\
             frontend http\n\
             \x20 bind 127.0.0.1:{http_port}\n\
             \x20 http-request return status 200 content-type text/plain lf-string \"%[path,field(4,/),map({d}/challenges.map)]\" if {{ path_beg /.well-known/acme-challenge/ }} {{ path,field(4,/),map({d}/challenges.map) -m found }}\n\
             \x20 http-request return status 404 if {{ path_beg /.well-known/acme-challenge/ }}\n\
             frontend https\n\
             \x20 bind 127.0.0.1:{https_port} ssl crt {d}/site.pem alpn h2,http/1.1\n\
             \x20 bind 127.0.0.1:{crt_list_port} ssl crt-list {d}/sites.crtlist alpn h2,http/1.1\n\
             \x20 http-request return status 200 content-type text/plain string \"hello over https\"\n"
        );
        fs::write(dir.join("haproxy.cfg"), config).unwrap();
        let process = Process::start(
            Command::new("haproxy")
                .arg("-W")
                .arg("-f")
                .arg(dir.join("haproxy.cfg"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "haproxy must be installed (apt-get install haproxy)",
        );
        let haproxy = Haproxy {
            _process: process,
            socket: dir.join("admin.sock"),
            http_port,
            https_port,
            crt_list_port,
        };
        let started = Instant::now();
        while !(haproxy.socket.exists()
            && [http_port, https_port, crt_list_port]
                .iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok()))
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "HAProxy did not start"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        haproxy
    }

    fn runtime(&self) -> Runtime<'_> {
        Runtime::new(&self.socket, Duration::from_secs(5))
    }
}

/// Challenge answers in HAProxy's map, through its runtime API, as doproxy
/// serves them; counts what it published.
struct MapAnswers<'a> {
    runtime: Runtime<'a>,
    map: PathBuf,
    published: Cell<usize>,
}

impl ChallengeAnswers for MapAnswers<'_> {
    async fn publish(&self, token: &str, key_authorization: &str) -> anyhow::Result<()> {
        self.runtime
            .add_map_entry(&self.map, token, key_authorization)
            .await?;
        self.published.set(self.published.get() + 1);
        Ok(())
    }

    async fn withdraw(&self, token: &str) -> anyhow::Result<()> {
        self.runtime.remove_map_entry(&self.map, token).await?;
        Ok(())
    }
}

/// Answers nobody can see: the CA finds nothing at the challenge's URL.
struct NoAnswers;

impl ChallengeAnswers for NoAnswers {
    async fn publish(&self, _: &str, _: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn withdraw(&self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What curl sees at `https://<domain>:<port>/` trusting only `root`: the
/// body, and the serial of the server's certificate (upper case).
fn curl(domain: &str, port: u16, root: &Path) -> (String, String) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "10"])
        .arg("--resolve")
        .arg(format!("{domain}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(root)
        .args(["--write-out", "\n%{certs}"])
        .arg(format!("https://{domain}:{port}/"))
        .output()
        .expect("curl must be installed (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "curl https://{domain}:{port}/ failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body = stdout.lines().next().unwrap_or_default().to_string();
    let serial = stdout
        .lines()
        .find_map(|line| line.strip_prefix("Serial Number:"))
        .expect("curl shows the certificate's serial")
        .to_ascii_uppercase();
    (body, serial)
}

/// A scratch folder, removed when dropped (declared first in a test, so
/// dropped after the processes using it).
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("doproxy-acme-{}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn domains(names: &[&str]) -> Vec<Domain> {
    names
        .iter()
        .map(|name| Domain::parse(name).unwrap())
        .collect()
}

#[tokio::test]
async fn a_certificate_from_a_real_ca_goes_live_in_haproxy_without_a_reload() {
    let scratch = Scratch::new("live");
    let dir = &scratch.0;
    let wanted = domains(&["site.test", "www.site.test"]);
    let haproxy = Haproxy::start(dir, &CertifiedKey::placeholder(&wanted).unwrap());
    let pebble = Pebble::start(haproxy.http_port);
    let runtime = haproxy.runtime();
    let worker = runtime.worker_pid().await.unwrap();
    let settings = AcmeSettings {
        directory_url: pebble.directory_url(),
        contact_email: Some("ops@site.test".into()),
        ca_file: Some(pebble.server_ca_file()),
        timeout: Duration::from_secs(60),
    };
    // The account key as the caller would store and read it back.
    let key = AccountKey::from_pem(&AccountKey::generate().unwrap().to_pem()).unwrap();
    let acme = Acme::connect(&settings, &key).await.unwrap();
    let answers = MapAnswers {
        runtime: haproxy.runtime(),
        map: dir.join("challenges.map"),
        published: Cell::new(0),
    };

    let issued = acme.issue(&wanted, &answers).await.unwrap();
    let facts = issued.facts();
    assert!(
        facts.issuer.contains("Pebble Intermediate CA"),
        "{}",
        facts.issuer
    );
    assert!(facts.covers(&wanted) && !facts.self_signed);
    assert_eq!(answers.published.get(), 2, "one HTTP-01 answer per domain");
    assert_eq!(
        runtime.map_entries(&answers.map).await.unwrap(),
        Vec::new(),
        "every answer is withdrawn"
    );

    let site = dir.join("site.pem");
    runtime
        .replace_certificate(&site, &issued.bundle_pem(), &facts.serial)
        .await
        .unwrap();
    let root = pebble.issuing_root_file();
    for domain in ["site.test", "www.site.test"] {
        assert_eq!(
            curl(domain, haproxy.https_port, &root),
            ("hello over https".to_string(), facts.serial.clone())
        );
    }
    // The bind using a crt-list loaded the same file, so it changed too.
    assert_eq!(
        curl("site.test", haproxy.crt_list_port, &root).1,
        facts.serial
    );

    // A certificate HAProxy never loaded joins the crt-list, live.
    let other_domains = domains(&["other.test"]);
    let other = acme.issue(&other_domains, &answers).await.unwrap();
    let other_file = dir.join("other.pem");
    assert_eq!(runtime.certificate_serial(&other_file).await.unwrap(), None);
    let list = dir.join("sites.crtlist");
    for _ in 0..2 {
        runtime
            .add_certificate(
                &list,
                &other_file,
                &other.bundle_pem(),
                &other.facts().serial,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        curl("other.test", haproxy.crt_list_port, &root).1,
        other.facts().serial
    );
    assert_eq!(
        curl("site.test", haproxy.crt_list_port, &root).1,
        facts.serial
    );

    // A certificate whose key does not match is refused; the old one stays.
    let mismatched = format!("{}{}", issued.chain_pem(), other.key_pem());
    let err = runtime
        .replace_certificate(&site, &mismatched, &facts.serial)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("keeps serving the previous one"),
        "{err:#}"
    );
    assert!(!format!("{err:#}").contains("PRIVATE KEY"));
    assert_eq!(curl("site.test", haproxy.https_port, &root).1, facts.serial);

    assert_eq!(
        runtime.worker_pid().await.unwrap(),
        worker,
        "no reload happened"
    );
}

#[tokio::test]
async fn a_challenge_nobody_answers_fails_naming_the_domain_and_the_cas_reason() {
    let scratch = Scratch::new("unanswered");
    let dir = &scratch.0;
    let wanted = domains(&["site.test"]);
    let placeholder = CertifiedKey::placeholder(&wanted).unwrap();
    let haproxy = Haproxy::start(dir, &placeholder);
    let pebble = Pebble::start(haproxy.http_port);
    let settings = AcmeSettings {
        directory_url: pebble.directory_url(),
        contact_email: None,
        ca_file: Some(pebble.server_ca_file()),
        timeout: Duration::from_secs(60),
    };
    let acme = Acme::connect(&settings, &AccountKey::generate().unwrap())
        .await
        .unwrap();
    let err = acme.issue(&wanted, &NoAnswers).await.unwrap_err();
    match &err {
        AcmeError::ChallengeFailed { domain, problem } => {
            assert_eq!(domain, "site.test");
            assert!(problem.contains("404"), "{problem}");
        }
        other => panic!("expected a failed challenge, got: {other}"),
    }
    assert!(err.to_string().contains("port 80 reaches HAProxy"), "{err}");
    assert_eq!(
        haproxy
            .runtime()
            .certificate_serial(&dir.join("site.pem"))
            .await
            .unwrap(),
        Some(placeholder.facts().serial.clone()),
        "the old certificate stays"
    );
}

#[tokio::test]
async fn an_untrusted_ca_or_no_ca_is_one_sentence() {
    let key = AccountKey::generate().unwrap();
    let pebble = Pebble::start(free_port());
    let mut settings = AcmeSettings {
        directory_url: pebble.directory_url(),
        contact_email: None,
        ca_file: None,
        timeout: Duration::from_secs(10),
    };
    // Pebble's own certificate is not one the system trusts.
    let err = Acme::connect(&settings, &key).await.err().unwrap();
    assert!(
        matches!(&err, AcmeError::Untrusted { reason, .. } if reason.contains("UnknownIssuer")),
        "{err}"
    );
    settings.ca_file =
        Some(std::env::temp_dir().join(format!("doproxy-acme-missing-{}.pem", std::process::id())));
    assert!(matches!(
        Acme::connect(&settings, &key).await.err().unwrap(),
        AcmeError::CaFile { .. }
    ));
    settings.ca_file = Some(pebble.server_ca_file());
    settings.directory_url = format!("https://127.0.0.1:{}/dir", free_port());
    let err = Acme::connect(&settings, &key).await.err().unwrap();
    assert!(
        matches!(&err, AcmeError::Unreachable { reason, .. } if reason.contains("refused")),
        "{err}"
    );
    settings.directory_url = settings.directory_url.replace("https", "http");
    assert!(matches!(
        Acme::connect(&settings, &key).await.err().unwrap(),
        AcmeError::NotHttps(_)
    ));
}
