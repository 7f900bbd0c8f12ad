//! The Debian package and the binary in it, as an operator meets them:
//! scripts/package builds the package from the test binary, lintian finds
//! nothing wrong with it, and it installs, runs and purges cleanly in a
//! throw-away root, where systemd-analyze accepts every unit as installed
//! and polkit lets user doproxy reload HAProxy and do nothing else.
//! The throw-away root is this machine's own root under a writable overlay,
//! in a mount namespace of its own: nothing reaches the machine itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::{
    Run, Spawned, TempDir, doproxy, repo_file, running_as_root, spawn, wait_until,
};

/// How long building or checking the package may take on a busy machine.
const SLOW: Duration = Duration::from_secs(300);

const UNITS: [&str; 4] = [
    "doproxy-watch.service",
    "doproxy-autoscale.service",
    "doproxy-heal.service",
    "doproxy-failover.service",
];

/// The package of the test binary, built once for all tests here.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| pack("package"))
}

/// Packs the test binary into a fresh folder `name` of the tests' scratch space.
fn pack(name: &str) -> PathBuf {
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&folder);
    let run = Run::within(
        Command::new(repo_file("scripts/package"))
            .args(["--binary", env!("CARGO_BIN_EXE_doproxy"), "--out"])
            .arg(&folder),
        SLOW,
    );
    let deb = PathBuf::from(succeeded("scripts/package", run).trim());
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("doproxy_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
    );
    deb
}

#[test]
fn the_same_binary_packs_to_the_same_bytes() {
    let first = fs::read(package()).unwrap();
    // A second later, so file times would differ if they came from the clock.
    std::thread::sleep(Duration::from_millis(1100));
    let again = fs::read(pack("package-again")).unwrap();
    assert!(first == again, "two packages of one binary differ");
}

/// stdout of a run that must have exited 0.
#[track_caller]
fn succeeded(what: &str, run: Run) -> String {
    assert_eq!(
        run.code, 0,
        "{what} failed:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run.stdout
}

#[test]
fn lintian_finds_no_error_or_warning_in_the_package() {
    let deb = package();
    // lintian leaves files in TMPDIR; they go with this folder.
    let scratch = TempDir::new("lintian");
    let run = Run::within(
        Command::new("lintian")
            .arg(deb)
            .env("TMPDIR", scratch.path())
            .current_dir(scratch.path()),
        SLOW,
    );
    let tags: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        run.code == 0 && tags.is_empty(),
        "lintian (exit {}):\n{}{}",
        run.code,
        run.stdout,
        run.stderr
    );
}

#[test]
fn the_package_runs_on_debian_12_and_ubuntu_22_04() {
    let run = Run::from_output(
        Command::new("dpkg-deb")
            .args(["--field"])
            .arg(package())
            .arg("Depends"),
    );
    let depends = succeeded("dpkg-deb --field", run);
    // libc6 (>= 2.34): the newest glibc symbol version the binary uses.
    let glibc = depends
        .split(", ")
        .find_map(|d| d.strip_prefix("libc6 (>= ")?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no libc6 dependency: {depends}"));
    let version: Vec<u32> = glibc.split('.').map(|n| n.parse().unwrap()).collect();
    assert!(
        version <= vec![2, 35],
        "needs glibc {glibc}: Ubuntu 22.04 has 2.35, Debian 12 2.36"
    );
    // The HTTPS client loads the system's trust store when it starts.
    for dependency in [
        "haproxy",
        "adduser",
        "ca-certificates",
        "polkitd | policykit-1",
    ] {
        assert!(
            depends.split(", ").any(|d| d.trim() == dependency),
            "{depends}"
        );
    }
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let line = succeeded(
        "doproxy --version",
        Run::from_output(doproxy().arg("--version")),
    );
    // doproxy 0.1.0 (commit 0123456789ab, built 2026-12-07)
    let rest = line
        .trim()
        .strip_prefix(concat!("doproxy ", env!("CARGO_PKG_VERSION"), " (commit "))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{line}"));
    let head = Run::from_output(
        Command::new("sh")
            .args([
                "-c",
                "command -v git >/dev/null && git rev-parse --short=12 HEAD",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    match head.code {
        0 => assert_eq!(commit, head.stdout.trim()),
        _ => assert_eq!(commit, "unknown", "no git here"),
    }
    let fields: Vec<&str> = date.split('-').collect();
    assert!(
        fields.len() == 3
            && fields[0].len() == 4
            && fields.iter().all(|f| f.parse::<u32>().is_ok())
            && (1..=12).contains(&fields[1].parse::<u32>().unwrap())
            && (1..=31).contains(&fields[2].parse::<u32>().unwrap()),
        "{line}"
    );
}

#[test]
fn the_package_installs_runs_and_purges_cleanly_in_a_throwaway_root() {
    let root = ThrowawayRoot::new();
    let deb = root.copy_in(package());
    root.dpkg(&["--install", &deb]);

    // The binary is where the units and cron jobs run it.
    let host_version = Run::from_output(doproxy().arg("--version"));
    assert_eq!(
        root.run(&["doproxy", "--version"]),
        succeeded("doproxy --version", host_version)
    );

    // Every unit as installed: its drop-in, binary and manual page.
    let mut verify = vec!["systemd-analyze", "verify"];
    let paths: Vec<String> = UNITS
        .iter()
        .map(|u| format!("/lib/systemd/system/{u}"))
        .collect();
    verify.extend(paths.iter().map(String::as_str));
    let verified = root.output(&verify);
    assert!(
        verified.code == 0 && verified.stderr.is_empty(),
        "systemd-analyze verify: {}",
        verified.stderr
    );
    // ... and the drop-in applies to each: it runs as doproxy, hardened.
    for unit in UNITS {
        let report = root.run(&[
            "systemd-analyze",
            "security",
            "--offline=yes",
            &format!("/lib/systemd/system/{unit}"),
        ]);
        let exposure: f64 = report
            .split(&format!("Overall exposure level for {unit}: "))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{report}"));
        assert!(
            report.contains("✓ User=/DynamicUser=") && exposure < 2.5,
            "{unit}: {report}"
        );
    }
    // None is enabled before the pool is configured.
    let wanted = root.run(&["ls", "/etc/systemd/system/multi-user.target.wants"]);
    assert!(!wanted.contains("doproxy"), "{wanted}");

    // The user, in group haproxy for HAProxy's admin socket.
    let groups = root.run(&["id", "-nG", "doproxy"]);
    assert_eq!(
        groups.split_whitespace().collect::<Vec<_>>(),
        ["doproxy", "haproxy"]
    );
    // Owners and modes: secrets for doproxy alone, state it may write,
    // /etc/haproxy writable by group doproxy.
    for (path, expected) in [
        ("/etc/doproxy/secrets.env", "doproxy doproxy 600"),
        ("/etc/doproxy/doproxy.yml", "root root 644"),
        ("/var/lib/doproxy", "doproxy doproxy 750"),
        ("/etc/haproxy", "root doproxy 775"),
        ("/etc/cron.d/doproxy", "root root 644"),
    ] {
        assert_eq!(root.owner_and_mode(path), expected, "{path}");
    }
    // The shipped configuration loads as the services and cron jobs run it,
    // and doproxy may write its state and HAProxy's config folder.
    assert_eq!(
        root.run_as_doproxy(&["doproxy", "print"]),
        "The inventory file is empty. Use the create command.\n"
    );
    root.run_as_doproxy(&["doproxy", "inventory", "import", "/dev/null"]);
    root.run_as_doproxy(&["touch", "/etc/haproxy/written-by-doproxy"]);
    root.run(&["rm", "/etc/haproxy/written-by-doproxy"]);

    // The polkit rule: doproxy may reload HAProxy through systemctl, and
    // that is all (asked of a real polkitd on a D-Bus of the root's own).
    assert_eq!(
        root.run(&["sh", "-c", POLKIT_VERDICTS]),
        "doproxy reload haproxy.service: yes\n\
         doproxy restart haproxy.service: no\n\
         doproxy reload ssh.service: no\n\
         nobody reload haproxy.service: no\n"
    );

    // Installing again (as an upgrade does) puts the secrets' mode back;
    // removing keeps the configuration, purging takes everything.
    root.run(&["chmod", "644", "/etc/doproxy/secrets.env"]);
    root.dpkg(&["--install", &deb]);
    assert_eq!(
        root.owner_and_mode("/etc/doproxy/secrets.env"),
        "doproxy doproxy 600"
    );
    root.dpkg(&["--remove", "doproxy"]);
    root.run(&["test", "-f", "/etc/doproxy/doproxy.yml"]);
    root.run(&["test", "!", "-e", "/usr/bin/doproxy"]);
    root.dpkg(&["--purge", "doproxy"]);
    // Nothing of the package is left (the user stays, as Debian does; man
    // keeps its own cache), and /etc/haproxy is haproxy's again.
    root.run(&["rm", &deb]);
    let left: Vec<String> = root
        .changed()
        .into_iter()
        .filter(|p| p.contains("doproxy") && !p.starts_with("var/cache/man/"))
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert_eq!(root.owner_and_mode("/etc/haproxy"), "root root 755");
    assert_eq!(
        root.run(&["dpkg-statoverride", "--list"])
            .matches("/etc/haproxy")
            .count(),
        0
    );
}

/// Starts a system D-Bus and polkitd in the root, then asks polkit what
/// `systemctl` would ask for a process of user doproxy and one of nobody:
/// may it reload or restart haproxy.service, or reload ssh.service? Ends
/// every process it started; none leaves its session (the bus does not
/// fork), so the guard of a run cut short ends them all.
const POLKIT_VERDICTS: &str = r#"set -e
mkdir -p /run/dbus
rm -f /run/dbus/test-bus.address
dbus-daemon --system --nofork --nopidfile --print-address=3 3>/run/dbus/test-bus.address &
pids=$!
trap 'kill $pids 2>/dev/null || true' EXIT
tries=300
until [ -s /run/dbus/test-bus.address ]; do
  tries=$((tries - 1))
  [ "$tries" -gt 0 ] || { echo "the system bus never listened" >&2; exit 1; }
  sleep 0.1
done
/usr/lib/polkit-1/polkitd --no-debug >/dev/null 2>&1 &
pids="$pids $!"
setpriv --reuid=doproxy --regid=doproxy --init-groups sleep 300 &
doproxy=$!
setpriv --reuid=nobody --regid=nogroup --clear-groups sleep 300 &
nobody=$!
pids="$pids $doproxy $nobody"
tries=300
until dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.PolicyKit1 2>/dev/null | grep -q 'boolean true'; do
  tries=$((tries - 1))
  [ "$tries" -gt 0 ] || { echo "polkitd never took its name on the bus" >&2; exit 1; }
  sleep 0.1
done
ask() {
  if pkcheck --action-id org.freedesktop.systemd1.manage-units --process "$2" \
      --detail unit "$3" --detail verb "$4" >/dev/null 2>&1; then verdict=yes; else verdict=no; fi
  echo "$1 $4 $3: $verdict"
}
ask doproxy "$doproxy" haproxy.service reload
ask doproxy "$doproxy" haproxy.service restart
ask doproxy "$doproxy" ssh.service reload
ask nobody "$nobody" haproxy.service reload
"#;

/// This machine's root under a writable overlay kept in a tmpfs, with /proc
/// and /dev, in a mount namespace held open by a process that waits on its
/// stdin: dropping the root ends that process (its guard's), and the
/// namespace, overlay and tmpfs go with it once the last command run in the
/// namespace has ended (each run's own guard ends it). Mounting needs root,
/// or sudo without a password.
struct ThrowawayRoot {
    _holder: Spawned,
    pid: String,
    root: PathBuf,
    upper: PathBuf,
    _dir: TempDir,
}

impl ThrowawayRoot {
    fn new() -> ThrowawayRoot {
        let dir = TempDir::new("root");
        let root = dir.path().join("root");
        let layers = dir.path().join("layers");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&layers).unwrap();
        let script = r#"set -e
mount -t tmpfs tmpfs "$2"
mkdir "$2/upper" "$2/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$2/upper,workdir=$2/work" "$1"
mount -t proc proc "$1/proc"
mount --rbind /dev "$1/dev"
echo $$
exec cat >/dev/null"#;
        let mut holder = spawn(
            privileged("unshare")
                .args([
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                ])
                .arg(&root)
                .arg(&layers)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        wait_until("the throw-away root", Duration::from_secs(30), || {
            holder.stdout_so_far().contains('\n') || !holder.is_running()
        });
        let pid = holder.stdout_so_far().trim().to_string();
        assert!(
            pid.parse::<u32>().is_ok(),
            "no throw-away root: mounting an overlay of / in a mount namespace \
             needs root, or sudo without a password:\n{}",
            holder.stderr_so_far()
        );
        ThrowawayRoot {
            _holder: holder,
            pid,
            root,
            upper: layers.join("upper"),
            _dir: dir,
        }
    }

    /// `program` inside the root's mount namespace, not yet in the root.
    /// Entering a mount namespace resets the root directory to the
    /// namespace's own: --root keeps the holder's, for tests that run in a
    /// chroot themselves.
    fn in_namespace(&self, program: &str) -> Command {
        let mut command = privileged("nsenter");
        command
            .args([
                "--target", &self.pid, "--mount", "--root", "--wd", "--", program,
            ])
            .stdin(Stdio::null());
        command
    }

    /// dpkg, run chrooted in the root like everything else: `dpkg --root`
    /// from outside would resolve the users and groups of stat overrides on
    /// this machine, which has no user doproxy.
    fn dpkg(&self, args: &[&str]) {
        let run = Run::within(
            self.in_namespace("chroot")
                .arg(&self.root)
                .arg("dpkg")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            SLOW,
        );
        succeeded(&format!("dpkg {args:?}"), run);
    }

    /// Copies `file` from this machine into the root's /tmp; its path there.
    fn copy_in(&self, file: &Path) -> String {
        let run = Run::from_output(self.in_namespace("cp").arg(file).arg(self.root.join("tmp")));
        succeeded("cp", run);
        format!("/tmp/{}", file.file_name().unwrap().to_str().unwrap())
    }

    /// `command` run chrooted in the root.
    #[track_caller]
    fn output(&self, command: &[&str]) -> Run {
        Run::from_output(
            self.in_namespace("chroot")
                .arg(&self.root)
                .args(command)
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        )
    }

    /// stdout of `command` run chrooted in the root; it must succeed.
    #[track_caller]
    fn run(&self, command: &[&str]) -> String {
        succeeded(&command.join(" "), self.output(command))
    }

    /// stdout of `command` run in the root as the services run: user
    /// doproxy, the packaged configuration.
    #[track_caller]
    fn run_as_doproxy(&self, command: &[&str]) -> String {
        let chroot = ["chroot", "--userspec=doproxy:doproxy", "/", "env"];
        let config = ["DOPROXY_CONFIG=/etc/doproxy/doproxy.yml"];
        self.run(&[&chroot[..], &config, command].concat())
    }

    /// `owner group mode` of `path` in the root.
    #[track_caller]
    fn owner_and_mode(&self, path: &str) -> String {
        self.run(&["stat", "-c", "%U %G %a", path])
            .trim()
            .to_string()
    }

    /// Every path the overlay holds: what changed since the root was made.
    fn changed(&self) -> Vec<String> {
        let run = Run::from_output(self.in_namespace("find").arg(&self.upper).args([
            "-mindepth",
            "1",
            "-printf",
            "%P\\n",
        ]));
        succeeded("find", run).lines().map(str::to_string).collect()
    }
}

/// `program` as root: directly when this test runs as root, else through
/// `sudo -n`.
fn privileged(program: &str) -> Command {
    if running_as_root() {
        return Command::new(program);
    }
    let mut command = Command::new("sudo");
    command.args(["-n", program]);
    command
}
