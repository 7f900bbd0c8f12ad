//! Keeping the pool current: every droplet records what it was built from,
//! `print` marks those that no longer match droplet_options, the new
//! droplet options reach the API, and `rollout` replaces droplets under load
//! without a failed request or a dip below the capacity floor, resuming
//! where a killed run stopped.

use std::fs;

use crate::support::{Project, repo_file};

const OPTIONS: &str =
    "{hostname_prefix: auto-nginx, region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}";

/// droplet_options with `image` instead of the test default.
fn options_with_image(image: &str) -> String {
    OPTIONS.replace("ubuntu-24-04-x64", image)
}

/// `sha256:` and the first 16 hex digits of the file's SHA-256, as
/// `sha256sum` prints it.
fn sha256_prefix(path: &std::path::Path) -> String {
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    format!("sha256:{}", &text[..16])
}

#[test]
fn print_marks_droplets_built_from_other_options_and_keeps_the_others_lines() {
    let mut project = Project::new("stale");
    project.run(&["create", "--count", "2"]).success();
    let digest = sha256_prefix(&repo_file("user-data.yml"));
    let inventory = project.inventory();
    assert_eq!(
        inventory
            .lines()
            .filter(|l| l.ends_with(&format!(
                " image=ubuntu-24-04-x64 size=s-1vcpu-1gb region=nyc3 user_data={digest} tags=doproxy:auto-nginx,doproxy vpc=-"
            )))
            .count(),
        2,
        "{inventory}"
    );
    let droplets = project.sim.droplets();
    let original = |line: usize, id: u64, ip: std::net::Ipv4Addr| {
        format!("{line}) auto-nginx-{line}  (pvt ip: {ip}, status: active, id: {id})")
    };
    let expected: Vec<String> = droplets
        .iter()
        .enumerate()
        .map(|(i, d)| original(i, d.id, d.private_ip))
        .collect();
    let print = project.run(&["print"]).success();
    assert_eq!(print.stdout.lines().collect::<Vec<_>>(), expected);
    let json = project.run(&["print", "-o", "json"]).success().json();
    assert_eq!(json[0]["stale"], serde_json::json!([]));
    assert_eq!(json[0]["build"]["image"], "ubuntu-24-04-x64");

    // A new image: both are stale, and say why.
    project.set(
        "droplet_options",
        Some(&options_with_image("debian-12-x64")),
    );
    let print = project.run(&["print"]).success();
    for (line, expected) in print.stdout.lines().zip(&expected) {
        assert_eq!(line, format!("{expected} [stale: image]"));
    }
    fs::write(
        project.path("user-data.yml"),
        "#cloud-config\nruncmd: [true]\n",
    )
    .unwrap();
    let json = project.run(&["print", "-o", "json"]).success().json();
    assert_eq!(json[1]["stale"], serde_json::json!(["image", "user_data"]));

    // Droplets from before builds were recorded are neither marked nor
    // passed for current: their staleness is unknown.
    project.write_inventory(&droplets);
    let print = project.run(&["print"]).success();
    assert_eq!(print.stdout.lines().collect::<Vec<_>>(), expected);
    let json = project.run(&["print", "-o", "json"]).success().json();
    assert_eq!(json[0]["stale"], serde_json::Value::Null);
}

#[test]
fn new_droplet_options_reach_the_api_and_a_failed_project_assignment_keeps_the_droplet() {
    let mut project = Project::new("options");
    let web = project.sim.add_project("web");
    let vpc = "760e09ef-dc84-11e8-981e-3cfdfeaae000";
    let options = |project_id: &str| {
        OPTIONS.replace(
            '}',
            &format!(
                ", vpc_uuid: {vpc}, ipv6: true, backups: true, monitoring: false, with_droplet_agent: false, project_id: {project_id}}}"
            ),
        )
    };
    project.set("droplet_options", Some(&options(&web)));
    project.run(&["create"]).success();
    let droplet = project.sim.droplets().remove(0);
    assert_eq!(droplet.vpc_uuid, vpc);
    assert_eq!(droplet.features, ["backups", "ipv6", "private_networking"]);
    assert_eq!(droplet.project_id.as_deref(), Some(web.as_str()));
    assert!(
        project.inventory().contains(&format!(" vpc={vpc}")),
        "{}",
        project.inventory()
    );

    // A project the account lacks: the droplet is made, recorded and
    // serves all the same; the run says what went wrong (exit 1).
    project.set(
        "droplet_options",
        Some(&options("4e1bfbc3-dc3e-41f2-a18f-1b4d7ba71679")),
    );
    project
        .run(&["create"])
        .fails(1, "could not be assigned to project 4e1bfbc3");
    let second = project
        .sim
        .droplets()
        .into_iter()
        .find(|d| d.id != droplet.id)
        .unwrap();
    assert_eq!(second.project_id, None);
    assert!(project.ids().contains(&second.id));
    assert!(
        project
            .live_config()
            .contains(&format!("server www-{} ", second.id))
    );
}
