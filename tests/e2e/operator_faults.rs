//! What operators meet around the commands: the terminal's status line and
//! log lines, `-v`, proxies in the environment, file permissions, the cron
//! file and the manual's cron examples.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::etcd_server::Etcd;
use crate::support::{Project, Refusing, Run, TOKEN, assert_haproxy_accepts, http_get, repo_file};

/// Runs `doproxy args` under a pseudo-terminal, so stderr is a TTY;
/// everything the terminal received, raw.
fn on_a_terminal(project: &Project, args: &str) -> String {
    let run = Run::from_output(&mut project.on_a_terminal(args));
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

#[test]
fn log_lines_on_a_terminal_start_on_their_own_line() {
    let project = Project::new("tty");
    let screen = on_a_terminal(&project, "create --count 2");
    assert!(
        screen.contains('⠋'),
        "no status line was drawn:\n{screen:?}"
    );
    // A status line is "\r\x1b[2K<frame> <what> (<n>s)" with no newline; the
    // next thing on that line must be another status line or an erase,
    // never a log line.
    for drawn in screen.split("\r\x1b[2K").skip(1) {
        if drawn.starts_with(|c: char| ('⠀'..='⣿').contains(&c)) {
            assert!(
                after_elapsed(drawn).is_some_and(str::is_empty),
                "a log line continued the status line: {drawn:?}"
            );
        }
    }
    assert!(screen.contains("INFO"), "{screen:?}");
}

/// What follows the status line's closing "(<n>s)".
fn after_elapsed(line: &str) -> Option<&str> {
    line.match_indices(" (").find_map(|(at, _)| {
        let rest = &line[at + 2..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        (digits > 0 && rest[digits..].starts_with("s)")).then(|| &rest[digits + 2..])
    })
}

#[test]
fn verbose_shows_doproxy_detail_without_library_noise() {
    let project = Project::new("verbose");
    project.run(&["create"]).success();
    let run = project.run(&["-v", "print", "--refresh"]).success();
    assert!(
        run.stderr.contains("GET http"),
        "-v shows doproxy's requests:\n{}",
        run.stderr
    );
    for noise in ["starting new connection", "connecting to", "pooling idle"] {
        assert!(
            !run.stderr.contains(noise),
            "-v shows library noise ({noise}):\n{}",
            run.stderr
        );
    }
}

#[test]
fn readiness_metadata_and_etcd_go_direct_whatever_http_proxy_says() {
    let mut project = Project::new("proxy-env");
    // The API may need the operator's proxy; the droplets' private
    // addresses and the metadata service never do.
    let metadata = project.sim.url().replace("127.0.0.1", "localhost");
    project.set("metadata_url", Some(&metadata));
    project.omit("frontend_bind");
    project.set("ready_timeout", Some("20s"));
    let dead = Refusing::new();
    let behind_a_dead_proxy = |project: &Project, args: &[&str]| {
        Run::from_output(
            project
                .command(args)
                .env("HTTP_PROXY", dead.url())
                .env("http_proxy", dead.url())
                .env("ALL_PROXY", dead.url())
                .env("NO_PROXY", "127.0.0.1")
                .env("no_proxy", "127.0.0.1"),
        )
        .success()
    };
    let run = behind_a_dead_proxy(&project, &["create"]);
    assert!(run.stdout.starts_with("Success: "), "{}", run.stdout);
    assert!(
        project.live_config().contains("bind 127.0.0.1:80"),
        "the metadata service was not reached:\n{}",
        project.live_config()
    );

    let etcd = Etcd::start();
    let endpoint = etcd.url().replace("127.0.0.1", "localhost");
    project.use_etcd(&endpoint);
    let run = behind_a_dead_proxy(&project, &["print"]);
    assert_eq!(
        run.stdout,
        "The inventory file is empty. Use the create command.\n"
    );
}

#[test]
fn new_files_get_their_modes_whatever_the_umask() {
    // State and the live config for doproxy and HAProxy's group; what other
    // services read as their own user (node-exporter's textfile, the
    // staged config) for everyone; lock files for the owner alone.
    for umask in ["000", "077"] {
        let mut project = Project::new("modes");
        project.set("metrics_textfile", Some("doproxy.prom"));
        Run::from_output(&mut project.after_shell(&format!("umask {umask}"), "create")).success();
        for (file, mode) in [
            ("inventory", 0o640),
            ("inventory.lock", 0o600),
            ("haproxy.cfg", 0o644),
            ("live/haproxy.cfg", 0o640),
            ("doproxy.prom", 0o644),
            ("doproxy.prom.lock", 0o600),
        ] {
            let found = fs::metadata(project.path(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(found, mode, "umask {umask}: {file} is {found:o}");
        }
    }
}

/// contrib/cron/doproxy: the environment it sets, and its jobs, each a
/// commented example (`#<schedule> <user> <command>`).
struct CronFile {
    env: Vec<(String, String)>,
    /// (user, command)
    jobs: Vec<(String, String)>,
}

fn cron_lines() -> CronFile {
    let text = fs::read_to_string(repo_file("contrib/cron/doproxy")).unwrap();
    let mut env = Vec::new();
    let mut jobs = Vec::new();
    for line in text.lines() {
        if let Some(job) = line
            .strip_prefix('#')
            .filter(|j| j.starts_with(|c: char| c.is_ascii_digit() || c == '*'))
        {
            // minute hour day month weekday user command...
            let fields: Vec<&str> = job.split_whitespace().collect();
            jobs.push((fields[5].to_string(), fields[6..].join(" ")));
        } else if let Some((name, value)) = line.split_once('=')
            && !line.starts_with('#')
            && !name.contains(' ')
        {
            env.push((name.to_string(), value.to_string()));
        }
    }
    CronFile { env, jobs }
}

#[test]
fn the_cron_file_runs_with_the_token_from_its_secrets_file() {
    let project = Project::new("cron");
    let secrets = project.path("secrets.env");
    fs::write(&secrets, format!("DIGITALOCEAN_ACCESS_TOKEN={TOKEN}\n")).unwrap();
    // The jobs find doproxy on cron's PATH, and hand it to systemd-cat for
    // the journal, which this machine may not run: a stand-in checks its
    // arguments and runs the command with its output in a file.
    let bin = project.path("bin");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_doproxy"), bin.join("doproxy")).unwrap();
    let journal = project.path("journal");
    fs::write(
        bin.join("systemd-cat"),
        format!(
            "#!/bin/sh\n[ \"$1 $2 $3\" = '-t doproxy --stderr-priority=err' ] || \
             {{ echo \"systemd-cat $*\" >&2; exit 64; }}\nshift 3\nexec \"$@\" >>{} 2>&1\n",
            journal.display()
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("systemd-cat"), fs::Permissions::from_mode(0o755)).unwrap();
    let CronFile { env, jobs } = cron_lines();
    assert!(!jobs.is_empty());
    for (user, command) in jobs {
        assert_eq!(user, "doproxy", "{command}");
        let command = command.replace("/etc/doproxy/secrets.env", &secrets.display().to_string());
        // cron's environment: its PATH and what the file sets.
        let mut cron = Command::new("/bin/sh");
        cron.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["-c", &command]);
        for (name, value) in &env {
            match name.as_str() {
                "PATH" => cron.env(name, format!("{}:{value}", bin.display())),
                _ => cron.env(name, value),
            };
        }
        cron.env("DOPROXY_CONFIG", project.path("doproxy.yml"));
        let run = Run::from_output(&mut cron);
        assert_eq!(run.code, 0, "{command}: {}", run.stderr);
    }
    assert_eq!(
        project.sim.droplets().len(),
        2,
        "the last scale line keeps two"
    );
    let logged = fs::read_to_string(&journal).unwrap();
    assert!(logged.contains("Success:"), "{logged}");
}

#[test]
fn no_cron_example_creates_a_droplet_on_every_run() {
    // Inline code in the manual may wrap; cron lines do not.
    let mut manual = fs::read_to_string(repo_file("README.md")).unwrap();
    for page in fs::read_dir(repo_file("docs")).unwrap() {
        manual.push_str(&fs::read_to_string(page.unwrap().path()).unwrap());
    }
    let manual = manual.replace('\n', " ");
    let cron = fs::read_to_string(repo_file("contrib/cron/doproxy")).unwrap();
    for example in manual.split('`').chain(cron.lines()) {
        let schedule = example.contains("* * *") || example.contains("*/");
        assert!(
            !(schedule && example.contains(" create")),
            "a cron line that creates a droplet each time it runs: {example}"
        );
    }
}

#[test]
fn a_metadata_hiccup_leaves_the_frontend_where_it_was() {
    let mut project = Project::new("metadata-hiccup");
    project.omit("frontend_bind");
    project.run(&["create"]).success();
    assert!(project.live_config().contains("    bind 127.0.0.1:80\n"));

    // The metadata service stops answering: the frontend stays.
    let dead = Refusing::new();
    project.set("metadata_url", Some(&dead.url()));
    let run = project.run(&["reload"]).success();
    assert!(
        project.live_config().contains("    bind 127.0.0.1:80\n"),
        "{}",
        project.live_config()
    );
    assert!(
        run.stderr.contains("keeping the frontend on 127.0.0.1"),
        "{}",
        run.stderr
    );
}

#[test]
fn with_a_reserved_ip_the_frontend_also_binds_the_anchor_address() {
    let mut project = Project::new("anchor");
    project.omit("frontend_bind");
    project.set("reserved_ip", Some("203.0.113.7"));
    let sim: SocketAddr = project
        .sim
        .url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let anchor = http_get(sim, "/metadata/v1/interfaces/public/0/anchor_ipv4/address").unwrap();
    let bind = format!("    bind 127.0.0.1:80,{}:80\n", anchor.trim());
    project.run(&["generate"]).success();
    let generated = fs::read_to_string(project.path("haproxy.cfg")).unwrap();
    assert!(generated.contains(&bind), "{generated}");
    assert_haproxy_accepts(&project.path("haproxy.cfg"));

    // Remembered like the public address when the service fails.
    let dead = Refusing::new();
    project.set("metadata_url", Some(&dead.url()));
    project.run(&["generate"]).success();
    let generated = fs::read_to_string(project.path("haproxy.cfg")).unwrap();
    assert!(generated.contains(&bind), "{generated}");
}
