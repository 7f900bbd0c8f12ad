//! What a new user meets first, and small defects that mislead: `init`'s
//! config safe to run (admin socket on, an SSH key placeholder doctor
//! flags, the built-in template unless asked for a copy); long lists
//! in log lines cut to a few names and a count; HAProxy's view in `print
//! --health` (new servers rising, not failing; the inventory even when
//! HAProxy is down); heal's dry run counting the time a droplet has been
//! DOWN as HAProxy does; `init`'s SSH key placeholder refused before a
//! create is paid for; files that are not UTF-8 named so; answers read
//! with a cap.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::scaling_faults::WAITING_FOR_LOCK;
use crate::support::{Project, Run, TOKEN, TempDir, doproxy, repo_file, server_stat, wait_until};

/// Generous: the machine is shared by several builds.
const WAIT: Duration = Duration::from_secs(120);

#[test]
fn a_log_line_names_a_few_servers_and_counts_the_rest() {
    let mut project = Project::new("few-names");
    let _haproxy = project.start_haproxy();
    // The first update reloads (nothing records what HAProxy loaded yet);
    // the next ones go through the runtime API, all servers in one line.
    project.run(&["create"]).success();
    let grown = project.run(&["create", "--count", "8"]).success();
    let shrunk = project.run(&["scale", "--to", "1"]).success();
    for (run, summary) in [
        (&grown, "added 8 server(s): www-"),
        (&shrunk, "removed 8 server(s): www-"),
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("without a reload"))
            .unwrap_or_else(|| panic!("no runtime update logged:\n{}", run.stderr));
        assert!(
            line.contains(summary) && line.ends_with(" and 5 more"),
            "{line}"
        );
        for line in run.stderr.lines() {
            assert!(line.matches("www-").count() <= 4, "{line}");
        }
    }
}

#[test]
fn print_health_tells_new_servers_from_failing_ones_and_survives_a_dead_haproxy() {
    let mut project = Project::new("health-words");
    // Checks every hour: the servers stay where HAProxy starts them, one
    // check short of full health (`UP 1/2`), for the whole test.
    let template = fs::read_to_string(repo_file("templates/haproxy.cfg.tera")).unwrap();
    let template = template.replace("inter 2s", "inter 1h");
    fs::write(project.path("slow-checks.tera"), template).unwrap();
    project.set("haproxy_template_file", Some("slow-checks.tera"));
    let mut haproxy = project.start_haproxy();
    project.run(&["create", "--count", "2"]).success();
    let ids: Vec<u64> = project.ids().into_iter().collect();
    for id in &ids {
        assert_eq!(
            server_stat(&haproxy.socket, *id).map(|s| s.status),
            Some("UP 1/2".to_string())
        );
    }
    let health = project.run(&["print", "--health"]).success();
    assert_eq!(
        health.stdout.matches("haproxy: rising (UP 1/2))").count(),
        2,
        "{}",
        health.stdout
    );
    // JSON keeps HAProxy's own word for scripts.
    let json = project.run(&["print", "-o", "json"]).success().json();
    assert_eq!(json[0]["haproxy_state"], "UP 1/2");

    haproxy.kill();
    let run = project.run(&["print", "--health"]).success();
    assert_eq!(
        run.stdout.matches("haproxy: unknown)").count(),
        2,
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("printing the inventory without HAProxy's view"),
        "{}",
        run.stderr
    );
}

#[test]
fn heals_dry_run_counts_the_time_down_as_haproxy_does() {
    let mut project = Project::new("heal-dry-grace");
    project.set("heal", Some("{grace: 1h}"));
    let haproxy = project.start_haproxy();
    project.run(&["create", "--count", "2"]).success();
    let sick = project.sim.droplets()[0].id;
    project.sim.set_serving(sick, false);
    wait_until("HAProxy to report the server DOWN for 2s", WAIT, || {
        server_stat(&haproxy.socket, sick)
            .is_some_and(|s| s.status == "DOWN" && s.last_change.is_some_and(|secs| secs >= 2))
    });
    // No pass has recorded it: the dry run has HAProxy's word only.
    let plan = project
        .run(&["heal", "--dry-run", "-o", "json"])
        .success()
        .json();
    let why = plan["decision"]["waiting"][0]["why"].as_str().unwrap();
    let (down, rest) = why
        .strip_prefix("DOWN in HAProxy for ")
        .and_then(|w| w.split_once(", "))
        .unwrap_or_else(|| panic!("{why}"));
    let left = rest
        .strip_suffix(" left of the 1h grace period")
        .unwrap_or_else(|| panic!("{why}"));
    let down = humantime::parse_duration(down).unwrap();
    let left = humantime::parse_duration(left).unwrap();
    assert!(down >= Duration::from_secs(2), "{why}");
    assert_eq!(down + left, Duration::from_secs(3600), "{why}");
    assert!(
        !project.path("inventory.heal").exists(),
        "a dry run records nothing"
    );
}

#[test]
fn rollouts_dry_run_gives_each_droplet_its_own_reason() {
    let project = Project::new("rollout-why");
    project.run(&["create", "--count", "2"]).success();
    let whys = |args: &[&str]| -> Vec<(u64, String)> {
        let mut command = vec!["rollout", "--dry-run", "-o", "json"];
        command.extend(args);
        let plan = project.run(&command).success().json();
        plan["replace"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_u64().unwrap(), r["why"].as_str().unwrap().into()))
            .collect()
    };
    // Built as the options say: replaced only because every droplet is.
    let every = whys(&[]);
    assert_eq!(every.len(), 2);
    for (_, why) in &every {
        assert_eq!(
            why,
            "matches droplet_options, but a rollout without --only-stale replaces every droplet"
        );
    }
    assert_eq!(whys(&["--only-stale"]), vec![]);
    // Lines without a build (an older doproxy), one of them unready: that
    // one goes first, and says so.
    let droplets = project.sim.droplets();
    project.write_inventory(&droplets);
    let unready = droplets[1].id;
    let text: String = project
        .inventory()
        .lines()
        .map(|line| {
            if line.starts_with(&unready.to_string()) {
                format!("{}\n", line.replace(" active ", " unready "))
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    fs::write(project.path("inventory"), text).unwrap();
    let stale = whys(&["--only-stale"]);
    assert_eq!(stale.len(), 2);
    assert_eq!(stale[0].0, unready);
    assert!(
        stale[0].1.starts_with("its build is unknown")
            && stale[0]
                .1
                .ends_with("; it serves nothing (unready), so it goes first"),
        "{stale:?}"
    );
    assert!(
        stale[1].1.starts_with("its build is unknown") && !stale[1].1.contains("serves nothing"),
        "{stale:?}"
    );
}

/// The value of `doproxy_pool_droplets{status="<status>"}` in the textfile.
fn pool_gauge(textfile: &str, status: &str) -> Option<f64> {
    let prefix = format!("doproxy_pool_droplets{{status=\"{status}\"}} ");
    textfile
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

#[test]
fn the_textfiles_destroying_gauge_drops_after_a_finished_scale_in() {
    let mut project = Project::new("gauge-destroying");
    project.set("metrics_textfile", Some("doproxy.prom"));
    project.run(&["create", "--count", "3"]).success();
    project.run(&["scale", "--to", "1"]).success();
    let textfile = fs::read_to_string(project.path("doproxy.prom")).unwrap();
    assert_eq!(pool_gauge(&textfile, "active"), Some(1.0), "{textfile}");
    assert!(
        pool_gauge(&textfile, "destroying").is_none_or(|n| n == 0.0),
        "{textfile}"
    );
}

#[test]
fn config_mistakes_are_named_with_the_likely_key_and_the_duplicates_line() {
    let mut project = Project::new("config-words");
    project.set("haproxy_cfg_pth", Some("x"));
    let run = project
        .run(&["print"])
        .fails(1, "unknown field `haproxy_cfg_pth` at line ");
    assert!(
        run.stderr
            .contains("; did you mean `haproxy_cfg_path`?; fix that key and retry"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("expected one of"), "{}", run.stderr);
    project.set("haproxy_cfg_pth", None);
    project.set("heal", Some("\n  graze: 1m"));
    project
        .run(&["print"])
        .fails(1, "heal: unknown field `graze` at line ")
        .fails(1, "did you mean `grace`?");
    project.set("heal", None);

    let config = project.path("doproxy.yml");
    let text = fs::read_to_string(&config).unwrap();
    let first = 1 + text
        .lines()
        .position(|l| l.starts_with("backend_port:"))
        .unwrap();
    let again = text.lines().count() + 2;
    fs::write(&config, format!("{text}# once more\nbackend_port: 81\n")).unwrap();
    project.run(&["print"]).fails(
        1,
        &format!("duplicate field `backend_port` at line {again} (first at line {first})"),
    );
}

#[test]
fn an_inventory_that_is_not_utf8_is_named_so() {
    let project = Project::new("latin1");
    // A name typed in Latin-1: café.
    fs::write(
        project.path("inventory"),
        b"# doproxy inventory\n4202645 caf\xe9 - - new -\n",
    )
    .unwrap();
    let run = project.run(&["print"]).fails(
        1,
        "is not UTF-8 text: line 2 holds bytes that are not UTF-8",
    );
    assert!(!run.stderr.contains("permissions"), "{}", run.stderr);
}

#[test]
fn a_config_file_that_is_not_utf8_is_named_so() {
    let project = Project::new("latin1-config");
    let config = project.path("doproxy.yml");
    let mut text = fs::read(&config).unwrap();
    // A comment typed in Latin-1: café.
    text.extend_from_slice(b"# caf\xe9\n");
    let line = text.iter().filter(|b| **b == b'\n').count();
    fs::write(&config, &text).unwrap();
    let run = project.run(&["print"]).fails(
        1,
        &format!(
            "config file {} is not UTF-8 text: line {line} holds bytes that are not UTF-8",
            config.display()
        ),
    );
    assert!(!run.stderr.contains("check the path"), "{}", run.stderr);
}

#[test]
fn create_refuses_the_ssh_key_placeholder_before_paying() {
    let mut project = Project::new("placeholder-key");
    project.set("ssh_key_ids", Some("[163420, your-ssh-key-id]"));
    let refused = format!(
        "no droplet was created: ssh_key_ids in {} holds the placeholder your-ssh-key-id that doproxy init wrote, which DigitalOcean refuses; put your SSH key's ID or fingerprint in ssh_key_ids instead (doctl compute ssh-key list)",
        project.path("doproxy.yml").display()
    );
    for args in [&["create"][..], &["scale", "--to", "2"]] {
        project.run(args).fails(1, &refused);
    }
    assert_eq!(project.changing_requests(), Vec::<String>::new());
    assert!(project.sim.droplets().is_empty());
    assert!(project.ids().is_empty());
}

#[test]
fn the_manual_page_describes_every_command_instead_of_pointing_to_missing_pages() {
    let page = Run::from_output(doproxy().arg("man")).success().stdout;
    assert_eq!(page.matches(".TH ").count(), 1, "one page");
    assert!(
        !page.contains("(1)"),
        "a reference to another page:\n{page}"
    );
    for command in [
        "print",
        "create",
        "delete",
        "scale",
        "rollout",
        "heal",
        "reconcile",
        "autoscale",
        "watch",
        "failover",
        "history",
        "inventory export",
        "inventory import",
        "generate",
        "reload",
        "doctor",
        "init",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!(".SS \"doproxy {command}\"\n")),
            "no section for {command}"
        );
    }
}

#[test]
fn init_writes_a_config_safe_to_run_that_doctor_checks() {
    let project = Project::new("init-safe");
    let dir = TempDir::new("init-safe");
    let folder = dir.path().join("etc");
    Run::from_output(doproxy().arg("init").arg(&folder)).success();
    let config = folder.join("doproxy.yml");
    let text = fs::read_to_string(&config).unwrap();
    assert!(!text.contains("Copy to doproxy.yml"), "{text}");
    assert!(text.contains("\nhaproxy_socket: /run/haproxy/admin.sock\n"));
    assert!(text.contains("\n# haproxy_template_file: "), "{text}");
    assert!(
        !folder.join("haproxy.cfg.tera").exists(),
        "no pinned template"
    );
    // Nothing beyond loopback: the simulator's API, a fixed frontend.
    fs::write(
        &config,
        format!("{text}frontend_bind: 127.0.0.1:8080\nhaproxy_check_command: 'true'\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Run::from_output(
            doproxy()
                .env("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
                .env("DIGITALOCEAN_API_URL", project.sim.url())
                .arg("--config")
                .arg(&config)
                .args(args),
        )
    };
    run(&["generate"]).success();
    let generated = fs::read_to_string(folder.join("haproxy.cfg")).unwrap();
    assert!(
        generated.contains("stats socket /run/haproxy/admin.sock mode 660 level admin"),
        "{generated}"
    );
    let doctor = run(&["doctor"]);
    assert!(
        doctor.stdout.contains(&format!(
            "✗ ssh keys: ssh_key_ids in {} holds the placeholder your-ssh-key-id that doproxy init wrote",
            config.display()
        )),
        "{}",
        doctor.stdout
    );
    assert_eq!(doctor.code, 1);

    let pinned = dir.path().join("pinned");
    Run::from_output(doproxy().args(["init", "--template"]).arg(&pinned)).success();
    let text = fs::read_to_string(pinned.join("doproxy.yml")).unwrap();
    assert!(
        text.contains("\nhaproxy_template_file: haproxy.cfg.tera\n"),
        "{text}"
    );
    assert_eq!(
        fs::read_to_string(pinned.join("haproxy.cfg.tera")).unwrap(),
        fs::read_to_string(repo_file("templates/haproxy.cfg.tera")).unwrap()
    );
}

/// A shell command for doproxy.yml (single-quoted YAML) that replaces
/// `path` with a folder (or a folder with a file), so the next write or
/// read of it fails, then says `says` on stderr and fails.
fn sabotage(path: &Path, replace_with_folder: bool, says: &str) -> String {
    let path = path.display();
    let replace = if replace_with_folder {
        format!("rm -rf {path}; mkdir {path}")
    } else {
        format!("rm -rf {path}; touch {path}")
    };
    format!("'{replace}; echo {says} >&2; exit 1'")
}

#[test]
fn a_failed_restore_of_the_live_config_keeps_the_failed_reload_as_the_error() {
    let mut project = Project::new("restore-fails");
    project.run(&["create"]).success();
    // The next create's reload fails and takes the live folder with it, so
    // the previous config cannot be put back either.
    let command = sabotage(&project.path("live"), false, "reload-broke");
    project.set("haproxy_reload_command", Some(&command));
    let run = project.run(&["create"]).fails(1, "reload-broke");
    assert!(
        run.stderr
            .contains("could not be put back as it was either ("),
        "{}",
        run.stderr
    );
}

#[test]
fn a_failed_roll_back_of_a_delete_keeps_the_first_failure_as_the_error() {
    let mut project = Project::new("rollback-fails");
    project.run(&["create", "--count", "2"]).success();
    // The check fails and takes the inventory with it, so the roll-back
    // cannot write the statuses back either.
    let command = sabotage(&project.path("inventory"), true, "check-broke");
    project.set("haproxy_check_command", Some(&command));
    let run = project.run(&["delete", "0"]).fails(1, "check-broke");
    assert!(
        run.stderr
            .contains("nothing was deleted (putting them back failed too ("),
        "{}",
        run.stderr
    );
}

#[test]
fn a_decision_that_cannot_be_recorded_keeps_the_failed_scale_out_as_the_error() {
    let mut project = Project::new("record-fails");
    project.set("autoscale", Some("{min: 1, max: 2, cpu_percent: 50}"));
    let command = sabotage(&project.path("inventory.autoscale"), true, "check-broke");
    project.set("haproxy_check_command", Some(&command));
    let run = project
        .run(&["autoscale", "--once"])
        .fails(1, "check-broke");
    assert!(
        run.stderr.contains("the decision could not be recorded ("),
        "{}",
        run.stderr
    );
}

#[test]
fn a_create_whose_haproxy_update_fails_still_reports_the_droplets_it_destroyed() {
    let mut project = Project::new("create-earlier");
    project.sim.set_boot_delay(Duration::from_secs(3600));
    // Passes the check before the create (on the `.precheck` file), fails
    // the update after it.
    project.set(
        "haproxy_check_command",
        Some("'case {file} in *.precheck) exit 0;; esac; echo check-broke >&2; exit 1'"),
    );
    let run = project
        .run(&["create", "--timeout", "1s"])
        .fails(1, "check-broke");
    assert!(
        run.stderr
            .contains("did not become active within 1s, so they were destroyed; then: "),
        "{}",
        run.stderr
    );
}

#[test]
fn generate_takes_the_update_lock_and_apply_installs_what_it_rendered() {
    let mut project = Project::new("update-lock");
    // A run updating HAProxy holds the lock: generate waits for it.
    let lock = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(project.path("haproxy.cfg.lock"))
        .unwrap();
    lock.lock().unwrap();
    let generate = project.spawn(&["generate"]);
    generate.wait_for_stderr(WAITING_FOR_LOCK, 1);
    assert!(
        !project.path("haproxy.cfg").exists(),
        "written while locked"
    );
    drop(lock);
    generate.wait_within(WAIT).success();
    assert!(project.path("haproxy.cfg").exists());

    // Whatever happens to the staged file after it was rendered (here the
    // check command itself writes to it), the rendered text goes live.
    project.set(
        "haproxy_check_command",
        Some("'echo \"# not rendered\" >> {file}'"),
    );
    project.run(&["create"]).success();
    let staged = fs::read_to_string(project.path("haproxy.cfg")).unwrap();
    assert!(staged.ends_with("# not rendered\n"), "{staged}");
    let live = project.live_config();
    assert!(live.contains("server www-"), "{live}");
    assert!(!live.contains("# not rendered"), "{live}");
}

/// A thread that serves each connection `accept` takes with `serve`,
/// until dropped; dropping it connects once (`wake`) so that the accept it
/// waits in returns, and joins it.
struct Serving {
    stop: Arc<AtomicBool>,
    wake: Box<dyn Fn()>,
    accepting: Option<thread::JoinHandle<()>>,
}

impl Serving {
    fn start<S: Send + 'static>(
        mut accept: impl FnMut() -> std::io::Result<S> + Send + 'static,
        serve: impl Fn(S) + Send + 'static,
        wake: impl Fn() + 'static,
    ) -> Serving {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let accepting = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(connection) = accept()
                    && !stopped.load(Ordering::Relaxed)
                {
                    serve(connection);
                }
            }
        });
        Serving {
            stop,
            wake: Box::new(wake),
            accepting: Some(accepting),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        (self.wake)();
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

/// A loopback HTTP server playing a broken peer: every request gets
/// `answer(path)` (head and body as one byte string), then the connection
/// closes. Stopped when dropped.
struct FakeServer {
    address: SocketAddr,
    _serving: Serving,
}

impl FakeServer {
    fn start(answer: fn(&str) -> Vec<u8>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let serving = Serving::start(
            move || listener.accept().map(|(stream, _)| stream),
            // Each ends when its client hangs up, at the latest.
            move |stream| drop(thread::spawn(move || answer_request(stream, answer))),
            move || drop(TcpStream::connect(address)),
        );
        FakeServer {
            address,
            _serving: serving,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

/// Reads one request from `stream` and sends `answer(path)`.
fn answer_request(stream: TcpStream, answer: fn(&str) -> Vec<u8>) {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
        request.push_str(&line);
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let path = request.split(' ').nth(1).unwrap_or("/").to_string();
    // The client may hang up once it has read enough.
    let _ = reader.get_mut().write_all(&answer(&path));
}

/// An admin socket at `path` playing a HAProxy whose every answer is
/// `answer`; stopped when dropped.
fn fake_admin_socket(path: PathBuf, answer: Vec<u8>) -> Serving {
    let listener = UnixListener::bind(&path).unwrap();
    Serving::start(
        move || listener.accept().map(|(stream, _)| stream),
        move |mut stream| {
            let mut command = String::new();
            let _ = BufReader::new(&stream).read_line(&mut command);
            // doproxy may hang up once it has read enough.
            let _ = stream.write_all(&answer);
        },
        move || drop(UnixStream::connect(&path)),
    )
}

/// Far past the 16 MiB doproxy reads of an answer.
const HUGE: usize = 17 * 1024 * 1024;

#[test]
fn an_api_answer_past_the_cap_is_refused_with_a_clear_error() {
    // Valid JSON, a droplet list padded with spaces: read whole, it would
    // pass for an empty pool.
    let server = FakeServer::start(|_| {
        let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"droplets\": [".to_vec();
        answer.resize(answer.len() + HUGE, b' ');
        answer.extend_from_slice(b"], \"links\": {}, \"meta\": {\"total\": 0}}");
        answer
    });
    let mut project = Project::new("huge-answer");
    project.set("api_url", Some(&server.url()));
    project
        .run(&["print", "--refresh"])
        .fails(1, "an answer larger than 16 MiB, far beyond any real one");
}

#[test]
fn a_watch_line_past_the_cap_is_refused_with_a_clear_error() {
    let server = FakeServer::start(|path| {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
        let mut answer = head.as_bytes().to_vec();
        if path == "/v3/watch" {
            answer.extend_from_slice(
                b"{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n",
            );
            answer.resize(answer.len() + HUGE, b'x');
        } else {
            answer
                .extend_from_slice(b"{\"header\":{\"revision\":\"5\"},\"kvs\":[],\"count\":\"0\"}");
        }
        answer
    });
    let mut project = Project::new("huge-watch-line");
    project.use_etcd(&server.url());
    let watch = project.spawn(&["watch"]);
    watch.wait_for_stderr("a line of its watch stream longer than 16 MiB", 1);
}

#[test]
fn a_haproxy_command_that_prints_past_the_cap_fails_with_a_clear_error() {
    let mut project = Project::new("loud-check");
    project.set("haproxy_check_command", Some("'head -c 2000000 /dev/zero'"));
    project
        .run(&["reload"])
        .fails(1, "printed more than 1 MiB, so it was killed");
}

#[test]
fn an_admin_socket_answer_past_the_cap_is_refused_with_a_clear_error() {
    let mut project = Project::new("huge-socket-answer");
    project.run(&["create"]).success();
    // A `show stat` answer that parses, padded past the cap: read whole,
    // it would pass for a HAProxy without servers.
    let mut answer = b"# pxname,svname,qcur,scur,status,rate,\n".to_vec();
    answer.resize(answer.len() + HUGE, b'\n');
    let _socket = fake_admin_socket(project.path("admin.sock"), answer);
    project.set("haproxy_socket", Some("admin.sock"));
    let run = project.run(&["print", "--health"]).success();
    assert!(run.stdout.contains("haproxy: unknown)"), "{}", run.stdout);
    assert!(
        run.stderr.contains(
            "HAProxy's admin socket gave an answer larger than 16 MiB, far beyond any real one, to `show stat`"
        ),
        "{}",
        run.stderr
    );
}
