//! What someone who can write where doproxy reads (the etcd prefix, the
//! inventory folder, a droplet's name at DigitalOcean) cannot make it do:
//! put text into the HAProxy config, destroy or tag a droplet that is not
//! the pool's, put a terminal escape on the screen, write through a planted
//! link, send a secret unencrypted; and what doproxy says about secrets
//! others can read. Real HAProxy, real etcd, the simulator.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use doproxy_sim::SimDroplet;
use serde_json::json;

use crate::etcd_server::Etcd;
use crate::support::{Project, Run, TOKEN, free_port};

/// The name from issue 17: it passes `haproxy -c`, and once in the config
/// it adds a server and turns on a global setting (here on loopback).
const INJECTION: &str =
    "web-1\n    server evil 127.0.0.66:80 check\nglobal\n    insecure-fork-wanted";

/// The staged and the live config, to show they are left alone.
fn configs(project: &Project) -> (String, String) {
    let staged = fs::read_to_string(project.path("haproxy.cfg")).unwrap();
    (staged, project.live_config())
}

#[test]
fn an_etcd_entry_smuggling_haproxy_directives_is_refused_and_never_installed() {
    let etcd = Etcd::start();
    let mut project = Project::new("inject-etcd");
    project.use_etcd(&etcd.url());
    let haproxy = project.start_haproxy();
    project.run(&["create"]).success();
    let before = configs(&project);
    let watch = project.spawn(&["watch", "--quiet-period", "200ms"]);
    watch.wait_for_stderr("watching etcd", 1);

    // Beside the droplet create recorded, in the generation readers read.
    let recorded = etcd.keys("/doproxy/");
    let recorded = recorded
        .iter()
        .find(|key| key.contains("/droplets/g"))
        .unwrap_or_else(|| panic!("no droplet key in {recorded:?}"));
    let key = format!("{}{:020}", &recorded[..=recorded.rfind('/').unwrap()], 66);
    let entry = json!({
        "id": 66, "name": INJECTION, "private_ip": "127.0.0.66", "public_ip": null,
        "status": "active", "created_at": "2026-11-28T20:41:06Z"
    });
    etcd.put(&key, &entry.to_string());

    for command in ["generate", "reload", "print"] {
        let run = project.run(&[command]).fails(1, &key);
        assert!(
            run.stderr.contains(r#"name "web-1\n    server evil"#),
            "{}",
            run.stderr
        );
    }
    let refused = watch.stderr_line_with(&key);
    assert!(refused.contains("is not a hostname"), "{refused}");
    assert_eq!(configs(&project), before, "the configs were touched");
    assert!(haproxy.get_many(1)[0].is_ok(), "HAProxy stopped serving");
}

#[test]
fn a_file_inventory_line_with_text_for_a_name_is_refused_naming_its_line() {
    let mut project = Project::new("inject-file");
    let haproxy = project.start_haproxy();
    project.run(&["create"]).success();
    let before = configs(&project);
    // Whitespace ends a field, so no newline fits; a terminal escape does.
    let mut inventory = project.inventory();
    inventory.push_str("66 web-1\u{1b}]2;owned\u{7} 127.0.0.66 - active -\n");
    fs::write(project.path("inventory"), &inventory).unwrap();
    let line = format!(
        "{} is corrupt at line {}: name",
        project.path("inventory").display(),
        inventory.lines().count()
    );
    for command in ["generate", "reload", "print"] {
        let run = project.run(&[command]).fails(1, &line);
        assert!(
            run.stderr
                .contains(r#"web-1\u{1b}]2;owned\u{7}" is not a hostname"#),
            "{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains('\u{1b}'),
            "the escape reached the terminal"
        );
    }
    assert_eq!(configs(&project), before, "the configs were touched");
    assert_eq!(project.inventory(), inventory);
    assert!(haproxy.get_many(1)[0].is_ok(), "HAProxy stopped serving");
}

#[test]
fn a_droplet_the_api_names_with_haproxy_directives_is_refused_when_recorded() {
    let mut project = Project::new("inject-api");
    let haproxy = project.start_haproxy();
    project.run(&["create"]).success();
    let before = configs(&project);
    let inventory = project.inventory();
    // Tagged like the pool's droplets.
    let tags = ["doproxy:auto-nginx".to_string(), "doproxy".to_string()];
    let prefix = format!("{INJECTION}\n#");
    let evil = project.sim.seed_droplets(1, &prefix, &tags, true).remove(0);
    let refused = format!(
        "droplet {} at DigitalOcean cannot be recorded: its name \"web-1\\n    server evil",
        evil.id
    );

    // Listed by its ID alone (a Ruby DOProxy line, filled in from the API).
    let with_id = format!("{inventory}{}\n", evil.id);
    fs::write(project.path("inventory"), &with_id).unwrap();
    for command in ["reload", "generate", "print"] {
        project.run(&[command]).fails(1, &refused);
    }
    assert_eq!(project.inventory(), with_id);
    assert_eq!(configs(&project), before, "the configs were touched");

    // Found by the pool's tag: reconcile neither adopts nor prints it.
    fs::write(project.path("inventory"), &inventory).unwrap();
    project.run(&["reconcile"]).fails(1, &refused);
    project.run(&["reconcile", "--apply"]).fails(1, &refused);
    assert_eq!(project.inventory(), inventory);
    assert!(haproxy.get_many(1)[0].is_ok(), "HAProxy stopped serving");
}

#[test]
fn links_are_never_written_through_nor_silently_replaced() {
    let mut project = Project::new("links");
    project.run(&["create"]).success();
    let victim = project.path("victim");
    fs::write(&victim, "precious\n").unwrap();
    let is_link = |path| fs::symlink_metadata(path).unwrap().file_type().is_symlink();

    // A live config that is a link (to a file HAProxy reads through it):
    // refused with the way out, the link and its target as they were.
    let live = project.path("live/haproxy.cfg");
    let target = project.path("live/real.cfg");
    fs::rename(&live, &target).unwrap();
    symlink("real.cfg", &live).unwrap();
    let installed = fs::read_to_string(&target).unwrap();
    project.set("frontend_bind", Some(&free_port().to_string()));
    let run = project.run(&["reload"]).fails(
        1,
        &format!("{} is a symbolic link (to real.cfg)", live.display()),
    );
    assert!(run.stderr.contains("point the setting at the file itself"));
    assert!(is_link(&live));
    assert_eq!(fs::read_to_string(&target).unwrap(), installed);
    fs::remove_file(&live).unwrap();
    fs::rename(&target, &live).unwrap();

    // A lock file someone replaced with a link is not truncated through it.
    let lock = project.path("haproxy.cfg.lock");
    fs::remove_file(&lock).unwrap();
    symlink(&victim, &lock).unwrap();
    project.run(&["reload"]).fails(
        1,
        &format!("lock file {} is a symbolic link", lock.display()),
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    fs::remove_file(&lock).unwrap();

    // A link planted where the temporary file used to go (named after the
    // PID, which `exec` keeps) is never opened: the config is written in
    // a file of its own.
    let plant = format!(
        "ln -s '{}' '{}/.haproxy.cfg.'$$'.tmp'",
        victim.display(),
        project.dir.path().display(),
    );
    Run::from_output(&mut project.after_shell(&plant, "generate")).success();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!is_link(&project.path("haproxy.cfg")));
    assert!(
        fs::read_to_string(project.path("haproxy.cfg"))
            .unwrap()
            .contains("backend")
    );
}

#[test]
fn secrets_never_cross_the_network_unencrypted_unless_allowed() {
    let mut project = Project::new("in-clear");
    // Refused before anything is sent: nothing here is ever contacted.
    project.set("api_url", Some("http://192.0.2.1:8080"));
    let run = project.run(&["generate"]).fails(
        1,
        "api_url http://192.0.2.1:8080 is plain http:// to another machine, so the API token would cross the network unencrypted",
    );
    assert!(
        run.stderr.contains("allow_insecure_http: true"),
        "{}",
        run.stderr
    );
    project.set("allow_insecure_http", Some("true"));
    project.run(&["generate"]).success();
    project.set("allow_insecure_http", None);
    project.set("api_url", None);

    project.use_etcd("http://192.0.2.1:2379");
    project.set("etcd_username", Some("doproxy"));
    project.set("etcd_password", Some("etcd-secret"));
    let run = project.run(&["generate"]).fails(
        1,
        "etcd endpoint http://192.0.2.1:2379 is plain http:// to another machine",
    );
    assert!(
        run.stderr.contains("allow_insecure_http: true"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("etcd-secret"));
}

#[test]
fn haproxy_stats_where_other_machines_reach_them_need_the_metrics_opt_in() {
    let mut project = Project::new("stats-bind");
    project.set("haproxy_stats_bind", Some("\"*:8404\""));
    project.run(&["generate"]).fails(
        1,
        "haproxy_stats_bind *:8404 is not a loopback address, and what listens there has no authentication; listen on 127.0.0.1 and let Prometheus reach it through a tunnel or a proxy, or set metrics_allow_remote: true",
    );
    project.set("metrics_allow_remote", Some("true"));
    project.run(&["generate"]).success();
    let staged = fs::read_to_string(project.path("haproxy.cfg")).unwrap();
    assert!(staged.contains("    bind *:8404\n"), "{staged}");
}

#[test]
fn every_command_warns_about_a_config_file_others_can_read() {
    let mut project = Project::new("exposed");
    project.set("token", Some(TOKEN));
    let config = project.path("doproxy.yml");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let warning = format!(
        "doproxy: warning: {} holds a secret but its mode is 644, so others can read it; run chmod 600 on it",
        config.display()
    );
    for args in [&["print"][..], &["generate"], &["-q", "print"]] {
        let run = project.run(args).success();
        assert!(run.stderr.contains(&warning), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains(TOKEN), "the token leaked");
    }
    let doctor = project.run(&["doctor"]);
    assert_eq!(doctor.code, 1, "{}", doctor.stdout);
    assert!(doctor.stderr.contains(&warning), "{}", doctor.stderr);
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.contains("secrets:"))
        .unwrap_or_default();
    assert!(line.starts_with("✗ secrets: "), "{}", doctor.stdout);

    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let run = project.run(&["print"]).success();
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

/// A droplet of the account that is not the pool's: named and tagged as
/// another team's.
fn shop_droplet(project: &Project) -> SimDroplet {
    let tags = ["shop".to_string()];
    project.sim.seed_droplets(1, "shop", &tags, true).remove(0)
}

/// The tags droplet `id` has at DigitalOcean now; None once it is gone.
fn tags_at_digitalocean(project: &Project, id: u64) -> Option<Vec<String>> {
    let droplet = project.sim.droplets().into_iter().find(|d| d.id == id)?;
    Some(droplet.tags)
}

/// An inventory line for `droplet` that claims it is the pool's: named
/// like the pool's droplets, built with the pool's tag.
fn claiming_line(droplet: &SimDroplet, status: &str) -> String {
    format!(
        "{} auto-nginx-5 {} - {status} 2026-11-28T20:41:06Z image=ubuntu-24-04-x64 size=s-1vcpu-1gb region=nyc3 user_data=- tags=doproxy:auto-nginx,doproxy vpc=-\n",
        droplet.id, droplet.private_ip
    )
}

#[test]
fn a_file_inventory_line_naming_another_droplet_never_gets_it_destroyed_or_tagged() {
    let mut project = Project::new("foreign-file");
    project.run(&["create"]).success();
    let shop = shop_droplet(&project);
    let mut inventory = project.inventory();
    inventory.push_str(&claiming_line(&shop, "active"));
    fs::write(project.path("inventory"), &inventory).unwrap();
    let refused = format!(
        "droplet {} (shop-0), listed at line {} of inventory file {}, is not pool doproxy:auto-nginx's: DigitalOcean shows it tagged shop, not doproxy:auto-nginx",
        shop.id,
        inventory.lines().count(),
        project.path("inventory").display()
    );
    project.sim.clear_requests();
    let id = shop.id.to_string();
    let args: [&[&str]; 4] = [
        &["delete", "1"],
        &["delete", "--id", &id],
        &["scale", "--to", "0", "--allow-empty"],
        &["reconcile", "--apply"],
    ];
    for args in args {
        project.run(args).fails(1, &refused);
        assert_eq!(project.inventory(), inventory, "{args:?}");
        assert_eq!(tags_at_digitalocean(&project, shop.id).unwrap(), ["shop"]);
    }
    // Without --apply, reconcile names it for a person to settle.
    let reported = project.run(&["reconcile", "--exit-code"]);
    assert_eq!(reported.code, 3, "{}", reported.stderr);
    assert!(
        reported.stdout.contains(&format!(
            "not the pool's: {refused}; doproxy never tags nor destroys it"
        )),
        "{}",
        reported.stdout
    );
    assert!(!reported.stdout.contains("No drift"), "{}", reported.stdout);
    // doctor too.
    let doctor = project.run(&["doctor"]);
    assert!(
        doctor
            .stdout
            .contains(&format!("✗ pool's droplets: {refused}; doproxy never tags")),
        "{}",
        doctor.stdout
    );
    // Off, it is one heal would replace: nothing is paid for it either.
    project.sim.set_power(shop.id, false);
    project.set("heal", Some("{grace: 0s}"));
    let run = project.run(&["heal", "--once"]).fails(1, &refused);
    assert!(
        run.stderr.contains("no droplet was created"),
        "{}",
        run.stderr
    );

    // Marked as a delete cut short, which the next delete or reconcile
    // would finish.
    let destroying = inventory.replace(
        &claiming_line(&shop, "active"),
        &claiming_line(&shop, "destroying"),
    );
    fs::write(project.path("inventory"), &destroying).unwrap();
    for args in [
        &["delete", "0", "--allow-empty"][..],
        &["reconcile", "--apply"],
    ] {
        project.run(args).fails(1, &refused);
        assert_eq!(project.inventory(), destroying, "{args:?}");
    }
    assert_eq!(tags_at_digitalocean(&project, shop.id).unwrap(), ["shop"]);

    // Recorded as a replacement still booting, which a rollout (or heal)
    // destroys once it fails the health check.
    let own = project.ids().into_iter().next().unwrap();
    let booting = claiming_line(&shop, "new").replace(" vpc=-", &format!(" vpc=- replaces={own}"));
    fs::write(
        project.path("inventory"),
        inventory.replace(&claiming_line(&shop, "active"), &booting),
    )
    .unwrap();
    project.sim.set_power(shop.id, true);
    project.sim.set_serving(shop.id, false);
    project.set("ready_timeout", Some("1s"));
    let run = project.run(&["rollout"]).fails(1, &refused);
    assert!(
        run.stderr.contains("so it was not destroyed"),
        "{}",
        run.stderr
    );
    assert_eq!(tags_at_digitalocean(&project, shop.id).unwrap(), ["shop"]);
    assert_eq!(project.changing_requests(), Vec::<String>::new());
    assert_eq!(project.sim.droplets().len(), 2);

    // Without the line, the pool's own droplet goes as before.
    fs::write(
        project.path("inventory"),
        inventory.replace(&claiming_line(&shop, "active"), ""),
    )
    .unwrap();
    project.run(&["delete", "0", "--allow-empty"]).success();
    assert_eq!(project.sim.droplets().len(), 1);
}

#[test]
fn an_etcd_entry_naming_another_droplet_never_gets_it_drained_destroyed_or_tagged() {
    let etcd = Etcd::start();
    let mut project = Project::new("foreign-etcd");
    project.use_etcd(&etcd.url());
    let _haproxy = project.start_haproxy();
    project.run(&["create"]).success();
    let shop = shop_droplet(&project);
    let recorded = etcd.keys("/doproxy/");
    let recorded = recorded
        .iter()
        .find(|key| key.contains("/droplets/g"))
        .unwrap_or_else(|| panic!("no droplet key in {recorded:?}"));
    let key = format!(
        "{}{:020}",
        &recorded[..=recorded.rfind('/').unwrap()],
        shop.id
    );
    let entry = json!({
        "id": shop.id, "name": "auto-nginx-5", "private_ip": shop.private_ip.to_string(),
        "public_ip": null, "status": "active", "created_at": "2026-11-28T20:41:06Z"
    });
    etcd.put(&key, &entry.to_string());
    // It routes traffic there now (what such an entry can do) ...
    project.run(&["reload"]).success();
    let serving = || {
        let health = project.run(&["print", "--health"]).success().stdout;
        let line = health
            .lines()
            .find(|l| l.contains(&format!("id: {}", shop.id)))
            .unwrap_or_else(|| panic!("{health}"))
            .to_string();
        assert!(!line.contains("DRAIN") && !line.contains("MAINT"), "{line}");
    };
    serving();
    // The inventory as listed, without HAProxy's view: a new server may
    // still be rising to full health meanwhile.
    let inventory = || {
        let mut listed = project.run(&["print", "-o", "json"]).success().json();
        for entry in listed.as_array_mut().unwrap() {
            entry.as_object_mut().unwrap().remove("haproxy_state");
        }
        listed
    };
    let listed = inventory();

    // ... but gets nothing drained, destroyed or tagged.
    let refused = format!(
        "droplet {} (shop-0), listed at etcd key {key}, is not pool doproxy:auto-nginx's",
        shop.id
    );
    project.sim.clear_requests();
    let id = shop.id.to_string();
    let args: [&[&str]; 3] = [
        &["delete", "--id", &id],
        &["scale", "--to", "0", "--allow-empty"],
        &["reconcile", "--apply"],
    ];
    for args in args {
        project.run(args).fails(1, &refused);
        assert_eq!(tags_at_digitalocean(&project, shop.id).unwrap(), ["shop"]);
        serving();
    }
    assert_eq!(inventory(), listed);
    assert_eq!(project.changing_requests(), Vec::<String>::new());
    assert_eq!(project.sim.droplets().len(), 2);
}

/// Text with terminal escapes: one retitling the window, one clearing it.
const ESCAPES: &str = "owned\u{1b}]2;pwned\u{7}\u{1b}[2J";
/// How doproxy shows that text instead.
const ESCAPED: &str = r"owned\u{1b}]2;pwned\u{7}\u{1b}[2J";

#[test]
fn terminal_escapes_written_into_etcd_never_reach_the_terminal() {
    let etcd = Etcd::start();
    let mut project = Project::new("escapes");
    project.use_etcd(&etcd.url());
    project.run(&["create"]).success();
    // Nothing listens there: print --health still prints, the leader too.
    project.set("haproxy_socket", Some("admin.sock"));
    project.set("reserved_ip", Some("203.0.113.7"));
    project.set("autoscale", Some("{max: 3, cpu_percent: 70}"));
    let prefix = "/doproxy/doproxy:auto-nginx/";
    let leader = json!({"droplet_id": 7, "name": ESCAPES, "pid": 1, "since": ESCAPES});
    etcd.put(&format!("{prefix}failover/leader"), &leader.to_string());
    let moves = json!([{"at": ESCAPES, "reserved_ip": ESCAPES, "droplet_id": 7, "name": ESCAPES, "previous": null}]);
    etcd.put(&format!("{prefix}failover/history"), &moves.to_string());
    let decisions = json!({"last_scaled": null, "history": [{
        "at": ESCAPES, "readings": [{"metric": "cpu_percent", "target": 70.0, "value": null, "problem": ESCAPES}],
        "current": 1, "serving": 1, "desired": 1, "target": 1, "action": "hold",
        "reason": ESCAPES, "dry_run": false, "outcome": ESCAPES
    }]});
    etcd.put(&format!("{prefix}meta/autoscale"), &decisions.to_string());
    let id = project.ids().into_iter().next().unwrap();
    let rollout = json!({"under_way": {
        "started_at": ESCAPES, "olds": [id], "floor": 1, "step": {"batch": 1},
        "min_healthy": 100, "only_stale": false
    }});
    etcd.put(&format!("{prefix}meta/rollout"), &rollout.to_string());
    // A lock holder describing itself (no lease: it never lets go).
    etcd.put(&format!("{prefix}lock/1"), ESCAPES);

    let runs = [
        project.run(&["print", "--health"]).success(),
        project.run(&["failover", "--history"]).success(),
        project.run(&["autoscale", "--history"]).success(),
        project.run(&["rollout", "--dry-run"]).success(),
        project.run(&["delete", "0", "--lock-timeout", "1s"]).fails(
            1,
            &format!("another doproxy run ({ESCAPED}) still holds etcd lock"),
        ),
    ];
    for (run, shows) in runs.iter().zip([2, 3, 4, 1, 1]) {
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{7}'),
                "an escape reached {stream}: {text:?}"
            );
        }
        let output = format!("{}{}", run.stdout, run.stderr);
        assert!(output.matches(ESCAPED).count() >= shows, "{output}");
    }
}
