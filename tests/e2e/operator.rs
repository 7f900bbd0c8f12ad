//! Operator experience: doctor's checks, output fit for cron mail and
//! scripts, completions, the man page and init.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Project, Run, TOKEN, TempDir, doproxy};

/// doctor's lines that start with ✗.
fn failures(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with('✗'))
        .map(str::to_string)
        .collect()
}

#[test]
fn doctor_passes_a_good_setup_and_names_each_broken_item() {
    let mut project = Project::new("doctor");
    let haproxy = project.start_haproxy();
    let good = project.run(&["doctor"]).success();
    assert_eq!(failures(&good), Vec::<String>::new(), "{}", good.stdout);
    for check in [
        "config",
        "secrets",
        "inventory",
        "token",
        "ssh keys",
        "region",
        "size",
        "image",
        "user data",
        "template",
        "reload command",
        "admin socket",
    ] {
        assert!(
            good.stdout.contains(&format!("✓ {check}: ")),
            "no ✓ {check}:\n{}",
            good.stdout
        );
    }
    let requests = project.changing_requests();
    assert_eq!(requests, Vec::<String>::new(), "doctor changed something");

    // Each broken item turns exactly its own line ✗.
    let broken = |project: &Project, args: &[&str], line: &str| {
        let run = project.run(args);
        assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
        let failed = failures(&run);
        assert_eq!(failed.len(), 1, "{line}: {failed:?}");
        assert!(failed[0].starts_with(&format!("✗ {line}: ")), "{failed:?}");
        failed[0].clone()
    };
    let bad_token = crate::support::Run::from_output(
        doproxy()
            .env("DIGITALOCEAN_ACCESS_TOKEN", "wrong")
            .arg("--config")
            .arg(project.path("doproxy.yml"))
            .arg("doctor"),
    );
    assert_eq!(failures(&bad_token).len(), 1, "{}", bad_token.stdout);
    assert!(
        bad_token.stdout.contains("✗ token: "),
        "{}",
        bad_token.stdout
    );
    assert!(bad_token.stdout.contains("- size: needs a working token"));

    project.set(
        "droplet_options",
        Some("{hostname_prefix: x, region: nyc3, size: s-64vcpu-huge, image: ubuntu-24-04-x64}"),
    );
    broken(&project, &["doctor"], "size");
    project.set("droplet_options", None);

    fs::write(project.path("big-user-data.yml"), "#".repeat(70 * 1024)).unwrap();
    project.set("userdata_file", Some("big-user-data.yml"));
    broken(&project, &["doctor"], "user data");
    project.set("userdata_file", None);

    let template =
        fs::read_to_string(crate::support::repo_file("templates/haproxy.cfg.tera")).unwrap();
    fs::write(
        project.path("bad.tera"),
        template.replace("{%- endfor %}", ""),
    )
    .unwrap();
    project.set("haproxy_template_file", Some("bad.tera"));
    broken(&project, &["doctor"], "template");
    project.set("haproxy_template_file", None);

    project.set("token", Some(TOKEN));
    fs::set_permissions(
        project.path("doproxy.yml"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let line = broken(&project, &["doctor"], "secrets");
    assert!(line.contains("chmod 600"), "{line}");
    assert!(!line.contains(TOKEN));
    drop(haproxy);
}

#[test]
fn doctor_reports_a_broken_config_as_its_own_line() {
    let dir = TempDir::new("doctor-config");
    fs::write(dir.path().join("doproxy.yml"), "droplet_options: [\n").unwrap();
    let run = Run::from_output(doproxy().current_dir(dir.path()).arg("doctor"));
    assert_eq!(run.code, 1);
    assert!(run.stdout.starts_with("✗ config: "), "{}", run.stdout);
}

#[test]
fn output_without_a_terminal_is_plain_and_quiet_means_results_only() {
    let project = Project::new("plain");
    let run = project.run(&["create", "--count", "2"]).success();
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r'),
            "control characters in {text:?}"
        );
    }
    assert!(
        run.stderr.lines().all(|l| l.starts_with("20")),
        "log lines carry a timestamp: {}",
        run.stderr
    );
    let quiet = project.run(&["-q", "create"]).success();
    assert_eq!(quiet.stderr, "");
    assert!(
        quiet.stdout.starts_with("Success: ") && quiet.stdout.lines().count() == 1,
        "{}",
        quiet.stdout
    );
}

#[test]
fn completions_man_page_and_help_come_from_the_same_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let run = Run::from_output(doproxy().args(["completions", shell]));
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout.contains("reconcile") && run.stdout.contains("dry-run"),
            "{shell}"
        );
    }
    let man = Run::from_output(doproxy().arg("man"));
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH doproxy"),
        "{}",
        &man.stdout[..200]
    );
    assert!(man.stdout.contains("autoscale") && man.stdout.contains("drain\\-timeout"));
    // Every command's help has an example.
    let help = Run::from_output(doproxy().arg("--help"));
    let commands = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty());
    // Wrapped descriptions continue on lines indented further.
    for line in commands.filter(|l| l.starts_with("  ") && !l.starts_with("   ")) {
        let command = line.split_whitespace().next().unwrap();
        if command == "help" {
            continue;
        }
        let run = Run::from_output(doproxy().args([command, "--help"]));
        assert!(
            run.stdout.contains("Example: doproxy"),
            "{command} --help has no example:\n{}",
            run.stdout
        );
    }
}

#[test]
fn init_writes_a_setup_that_doctor_understands_and_never_overwrites() {
    let dir = TempDir::new("init");
    let folder = dir.path().join("etc");
    let run = Run::from_output(doproxy().arg("init").arg(&folder));
    assert_eq!(run.code, 0, "{}", run.stderr);
    for name in ["doproxy.yml", "user-data.yml"] {
        assert!(folder.join(name).exists(), "{name}");
    }
    let again = Run::from_output(doproxy().arg("init").arg(&folder));
    again.fails(1, "never overwrites");
    let print = Run::from_output(
        doproxy()
            .arg("--config")
            .arg(folder.join("doproxy.yml"))
            .arg("print"),
    );
    assert_eq!(
        print.stdout, "The inventory file is empty. Use the create command.\n",
        "{}",
        print.stderr
    );
}
