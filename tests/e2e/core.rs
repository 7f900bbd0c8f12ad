//! The five DOProxy commands, end to end: the real binary, the simulator, a
//! real HAProxy routing real requests to the droplets' pages.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use doproxy_sim::{SimConfig, Simulator};

use crate::support::{Project, Run, assert_haproxy_accepts, doproxy, wait_until};

fn created_id(stdout: &str) -> u64 {
    let id = stdout
        .strip_prefix("Success: ")
        .and_then(|rest| rest.strip_suffix(" created and added to backend.\n"))
        .unwrap_or_else(|| panic!("not the original success line: {stdout:?}"));
    id.parse().unwrap()
}

/// How many of `count` requests each page answered; panics on a failure.
fn spread(haproxy: &crate::support::Haproxy, count: usize) -> HashMap<String, usize> {
    let mut pages = HashMap::new();
    for answer in haproxy.get_many(count) {
        let body = answer.unwrap_or_else(|err| panic!("a request through HAProxy failed: {err}"));
        *pages.entry(body).or_insert(0) += 1;
    }
    pages
}

#[test]
fn create_print_generate_reload_delete_behind_a_real_haproxy() {
    let mut project = Project::new("story");
    let haproxy = project.start_haproxy();

    let ids: Vec<u64> = (0..3)
        .map(|_| created_id(&project.run(&["create"]).success().stdout))
        .collect();
    let droplets = project.sim.droplets();
    assert_eq!(droplets.len(), 3);
    assert!(
        droplets
            .iter()
            .all(|d| d.tags == ["doproxy:auto-nginx", "doproxy"])
    );

    // print: the original's lines, byte for byte.
    let expected: String = droplets
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "{i}) auto-nginx-{i}  (pvt ip: {}, status: active, id: {})\n",
                d.private_ip, ids[i]
            )
        })
        .collect();
    assert_eq!(project.run(&["print"]).success().stdout, expected);
    let json = project.run(&["print", "-o", "json"]).success().json();
    assert_eq!(json[1]["id"], ids[1]);
    assert_eq!(json[1]["name"], "auto-nginx-1");
    assert_eq!(json[1]["private_ip"], droplets[1].private_ip.to_string());
    assert_eq!(json[1]["public_ip"], droplets[1].public_ip.to_string());
    assert_eq!(json[1]["status"], "active");

    // generate: one server line per droplet, accepted by HAProxy itself.
    project.run(&["generate"]).success();
    let generated = fs::read_to_string(project.path("haproxy.cfg")).unwrap();
    for (i, d) in droplets.iter().enumerate() {
        let line = format!(
            "server www-{} {}:{} check # id:{}, hostname:auto-nginx-{i}\n",
            d.id,
            d.private_ip,
            project.sim.droplet_port(),
            d.id
        );
        assert!(
            generated.contains(&line),
            "missing {line:?} in:\n{generated}"
        );
    }
    assert_haproxy_accepts(&project.path("haproxy.cfg"));
    project.run(&["reload"]).success();
    assert_eq!(project.live_config(), generated);
    assert_haproxy_accepts(&project.path("live/haproxy.cfg"));

    // HAProxy round-robins across the three pages.
    let pages: Vec<String> = ids.iter().map(|&id| project.page(id)).collect();
    wait_until(
        "HAProxy to route to all three droplets",
        Duration::from_secs(10),
        || spread(&haproxy, 6).len() == 3,
    );
    let counts = spread(&haproxy, 30);
    for page in &pages {
        assert_eq!(
            counts.get(page),
            Some(&10),
            "uneven round robin: {counts:?}"
        );
    }

    // delete by line: gone from the API, and HAProxy never routes to it again.
    let run = project.run(&["delete", "1"]).success();
    assert_eq!(
        run.stdout,
        format!("Success: {} deleted and removed from backend.\n", ids[1])
    );
    assert!(project.sim.droplets().iter().all(|d| d.id != ids[1]));
    let counts = spread(&haproxy, 40);
    assert!(
        !counts.contains_key(&pages[1]),
        "routed to a deleted droplet: {counts:?}"
    );
    assert_eq!(counts.len(), 2);
    assert!(!project.live_config().contains(&format!("www-{}", ids[1])));

    // delete by name and by ID, then the original's empty-inventory sentence.
    project.run(&["delete", "--name", "auto-nginx-2"]).success();
    let run = project
        .run(&["delete", "--id", &ids[0].to_string(), "--allow-empty"])
        .success();
    assert_eq!(
        run.stdout,
        format!("Success: {} deleted and removed from backend.\n", ids[0])
    );
    assert!(project.sim.droplets().is_empty());
    assert_eq!(
        project.run(&["print"]).success().stdout,
        "The inventory file is empty. Use the create command.\n"
    );
    assert_haproxy_accepts(&project.path("live/haproxy.cfg"));
}

#[test]
fn names_are_never_reused_while_taken() {
    let project = Project::new("names");
    for _ in 0..3 {
        project.run(&["create"]).success();
    }
    project.run(&["delete", "0"]).success();
    project.run(&["create"]).success();
    let names: Vec<String> = project.sim.droplets().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["auto-nginx-1", "auto-nginx-2", "auto-nginx-0"]);
}

#[test]
fn an_original_doproxy_setup_loads_after_changing_only_the_template_key() {
    let sim = Simulator::spawn(SimConfig::default());
    let droplets = sim.seed_droplets(2, "auto-nginx", &[], false);
    let project = Project::with_sim("original", std::sync::Arc::new(sim));
    // The Ruby DOProxy's doproxy.yml, word for word but the template key, and
    // its inventory of bare IDs.
    let original = format!(
        "token: {token}\nssh_key_ids:\n  - 163420\nhaproxy_cfg_path: live/haproxy.cfg\n\
         haproxy_template_file: haproxy.cfg.tera\ninventory_file: inventory\nuserdata_file: user-data.yml\n\
         droplet_options:\n  hostname_prefix: auto-nginx\n  region: nyc3\n  size: 1gb\n  image: ubuntu-14-04-x64\n",
        token = crate::support::TOKEN
    );
    fs::write(project.path("doproxy.yml"), original).unwrap();
    fs::copy(
        crate::support::repo_file("templates/haproxy.cfg.tera"),
        project.path("haproxy.cfg.tera"),
    )
    .unwrap();
    fs::write(
        project.path("inventory"),
        format!("{}\n{}\n", droplets[0].id, droplets[1].id),
    )
    .unwrap();

    // Run from another folder, as cron does, with the token only in the file.
    let print = || {
        Run::from_output(
            doproxy()
                .current_dir("/")
                .env("DIGITALOCEAN_API_URL", project.sim.url())
                .arg("--config")
                .arg(project.path("doproxy.yml"))
                .arg("print"),
        )
        .success()
        .stdout
    };
    let expected = format!(
        "0) {}  (pvt ip: {}, status: active, id: {})\n1) {}  (pvt ip: {}, status: active, id: {})\n",
        droplets[0].name,
        droplets[0].private_ip,
        droplets[0].id,
        droplets[1].name,
        droplets[1].private_ip,
        droplets[1].id
    );
    assert_eq!(print(), expected);
    // Filled in once and written back in the richer form...
    let inventory = project.inventory();
    assert!(inventory.contains(&format!(
        "{} {} {}",
        droplets[0].id, droplets[0].name, droplets[0].private_ip
    )));
    // ...so the next print makes no API call.
    project.sim.clear_requests();
    assert_eq!(print(), expected);
    assert!(
        project.sim.requests().is_empty(),
        "{:?}",
        project.sim.requests()
    );
}

#[test]
fn every_command_speaks_json_and_a_failed_reload_leaves_the_live_config() {
    let mut project = Project::new("json");
    let created = project.run(&["create", "-o", "json"]).success().json();
    assert_eq!(created["created"][0]["status"], "active");
    assert_eq!(created["haproxy"]["servers"], 1);
    assert_eq!(created["haproxy"]["reloaded"], true);
    let generated = project.run(&["generate", "-o", "json"]).success().json();
    assert_eq!(generated["servers"], 1);
    let reloaded = project.run(&["-o", "json", "reload"]).success().json();
    assert_eq!(
        (reloaded["changed"].clone(), reloaded["reloaded"].clone()),
        (false.into(), true.into())
    );

    let live = project.live_config();
    project.set(
        "haproxy_reload_command",
        Some("'echo cannot reload >&2; exit 1'"),
    );
    project.run(&["create"]).fails(1, "cannot reload");
    assert_eq!(
        project.live_config(),
        live,
        "a failed reload must put the old config back"
    );
    project.set("haproxy_reload_command", None);
    let deleted = project
        .run(&["delete", "0", "1", "--allow-empty", "-o", "json"])
        .success()
        .json();
    assert_eq!(deleted["deleted"].as_array().unwrap().len(), 2);
}

#[test]
fn the_frontend_binds_the_public_address_from_the_metadata_service() {
    let mut project = Project::new("metadata");
    project.omit("frontend_bind");
    project.run(&["generate"]).success();
    let generated = fs::read_to_string(project.path("haproxy.cfg")).unwrap();
    assert!(generated.contains("    bind 127.0.0.1:80\n"), "{generated}");
    let asked = project
        .sim
        .requests()
        .iter()
        .any(|r| r.path_and_query == "/metadata/v1/interfaces/public/0/ipv4/address");
    assert!(asked);
}
