//! Several proxies, one pool: the etcd inventory, `watch`, and moving an
//! inventory between the file and etcd. Real etcd, real HAProxy, simulator.

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use doproxy_sim::{SimConfig, Simulator};

use crate::etcd_server::{Certificates, Etcd};
use crate::support::{Haproxy, Project, Run, two_proxies, wait_until};

/// The pages `haproxy` answers with over a few requests.
fn pages(haproxy: &Haproxy) -> BTreeSet<String> {
    haproxy
        .get_many(6)
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

#[test]
fn a_change_on_one_proxy_reaches_the_other_through_watch() {
    let etcd = Etcd::start();
    let (mut a, mut b) = two_proxies("watch", &etcd);
    let (haproxy_a, haproxy_b) = (a.start_haproxy(), b.start_haproxy());
    let _watch_a = a.watch();
    let _watch_b = b.watch();
    a.run(&["create"]).success();
    let first = a.sim.droplets()[0].id;
    let run = a.run(&["create"]).success();
    let second = run
        .stdout
        .split(' ')
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap();

    // Created on A: B routes to it within 2 s.
    wait_until(
        "B to route to the droplet A created",
        Duration::from_secs(2),
        || pages(&haproxy_b).contains(&a.page(second)),
    );
    assert_eq!(a.ids(), b.ids());

    // Deleted on B: A stops routing to it.
    let gone = a.page(second);
    b.run(&["delete", "--id", &second.to_string()]).success();
    wait_until(
        "A to stop routing to the droplet B deleted",
        Duration::from_secs(2),
        || !a.live_config().contains(&format!("www-{second}")),
    );
    let answered = pages(&haproxy_a);
    assert!(
        !answered.contains(&gone),
        "A still routes to a deleted droplet"
    );
    assert!(answered.contains(&a.page(first)));
}

#[test]
fn batches_on_two_proxies_at_once_lose_no_update() {
    let etcd = Etcd::start();
    let (a, b) = two_proxies("race", &etcd);
    let batch = ["create", "--count", "5"];
    let (run_a, run_b) = (a.spawn(&batch), b.spawn(&batch));
    Run::wait(run_a).success();
    Run::wait(run_b).success();
    let droplets = a.sim.droplets();
    assert_eq!(droplets.len(), 10);
    let names: BTreeSet<String> = droplets.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names.len(), 10, "duplicate names: {names:?}");
    let all: BTreeSet<u64> = droplets.iter().map(|d| d.id).collect();
    assert_eq!(a.ids(), all);
    assert_eq!(b.ids(), all);
}

#[test]
fn losing_etcd_mid_command_leaves_nothing_half_done() {
    let mut etcd = Etcd::start();
    let (a, mut b) = two_proxies("outage", &etcd);
    let haproxy_b = b.start_haproxy();
    a.run(&["create"]).success();
    let _watch_b = b.watch();
    let first = a.sim.droplets()[0].id;
    wait_until(
        "B to route to the first droplet",
        Duration::from_secs(5),
        || pages(&haproxy_b).contains(&a.page(first)),
    );
    a.sim.set_boot_delay(Duration::from_secs(2));
    let live_a = a.live_config();

    // etcd dies while the create waits for its droplet to boot.
    let create = a.spawn(&["create"]);
    wait_until(
        "the create to record its droplet",
        Duration::from_secs(5),
        || a.ids().len() == 2,
    );
    etcd.stop();
    let out = create.wait();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach etcd"), "{}", out.stderr);
    assert_eq!(
        a.live_config(),
        live_a,
        "the live config must stay as it was"
    );
    assert!(
        pages(&haproxy_b).contains(&a.page(first)),
        "B keeps serving while etcd is down"
    );
    assert!(b.live_config().contains(&format!("www-{first}")));

    // etcd returns: the recorded droplet is settled and B's watch catches up.
    etcd.restart();
    let second = a.sim.droplets()[1].id;
    let drift = a.run(&["reconcile"]).success().stdout;
    assert!(
        drift.contains(&format!("booted: {second} ")),
        "the entry was recorded whole: {drift}"
    );
    a.run(&["reconcile", "--apply"]).success();
    assert_eq!(
        a.run(&["reconcile"]).success().stdout,
        "No drift: the inventory matches DigitalOcean.\n"
    );
    wait_until("B's watch to catch up", Duration::from_secs(15), || {
        pages(&haproxy_b).contains(&a.page(second))
    });
}

#[test]
fn an_inventory_moves_from_file_to_etcd_intact() {
    let etcd = Etcd::start();
    let sim = Arc::new(Simulator::spawn(SimConfig {
        boot_delay: Duration::from_millis(300),
        ..SimConfig::default()
    }));
    let file = Project::with_sim("move-file", sim.clone());
    file.run(&["create", "--count", "3"]).success();
    let exported = file.run(&["inventory", "export"]).success().stdout;
    fs::write(file.path("exported"), &exported).unwrap();

    let mut into = Project::with_sim("move-etcd", sim);
    into.use_etcd(&etcd.url());
    into.run(&[
        "inventory",
        "import",
        file.path("exported").to_str().unwrap(),
    ])
    .success();
    assert_eq!(
        into.run(&["print"]).success().stdout,
        file.run(&["print"]).success().stdout
    );
    assert_eq!(
        into.run(&["print", "-o", "json"]).success().stdout,
        file.run(&["print", "-o", "json"]).success().stdout
    );
    assert_eq!(
        into.run(&["inventory", "export"]).success().stdout,
        exported
    );
    into.run(&[
        "inventory",
        "import",
        file.path("exported").to_str().unwrap(),
    ])
    .fails(1, "--replace");
}

#[test]
fn etcd_credentials_are_used_and_a_wrong_password_is_explained() {
    let etcd = Etcd::start();
    etcd.enable_auth("s3cret");
    let mut project = Project::new("auth");
    project.use_etcd(&etcd.url());
    project.set("etcd_username", Some("root"));
    project.set("etcd_password", Some("s3cret"));
    project.run(&["create"]).success();
    assert_eq!(project.run(&["print"]).success().stdout.lines().count(), 1);
    project.set("etcd_password", Some("wrong"));
    let run = project.run(&["print"]).fails(1, "etcd_password");
    assert!(
        !run.stderr.contains("wrong"),
        "the password leaked: {}",
        run.stderr
    );
}

#[test]
fn etcd_over_tls_with_a_client_certificate() {
    let certs = Certificates::new();
    let etcd = Etcd::start_tls(&certs.dir);
    let mut project = Project::new("tls");
    let file = |name: &str| certs.dir.join(name).display().to_string();
    project.use_etcd(&etcd.tls_url());
    project.set("etcd_ca_file", Some(&file("ca.pem")));
    project.set("etcd_cert_file", Some(&file("client.pem")));
    project.set("etcd_key_file", Some(&file("client.key")));
    project.run(&["create"]).success();
    assert_eq!(project.run(&["print"]).success().stdout.lines().count(), 1);

    project.set("etcd_cert_file", None);
    project.set("etcd_key_file", None);
    project.run(&["print"]).fails(1, "TLS");
}
