//! doproxy.yml read as users write it: defaults, paths beside the file,
//! the environment's overrides, and an error naming the key for each value
//! that cannot work.

use std::path::Path;
use std::time::Duration;

use super::checks::{binds_loopback_only, in_clear};
use super::droplets::DropletFeatures;
use super::*;
use crate::digitalocean::Image;

/// The etcd settings of a config with `inventory_backend: etcd`.
fn etcd(config: Config) -> EtcdSettings {
    match config.store {
        StoreSettings::Etcd(settings) => *settings,
        StoreSettings::File(_) => panic!("an etcd inventory"),
    }
}

/// doproxy.yml as the Ruby DOProxy tutorial shipped it.
const ORIGINAL: &str = "\
token: 878a490235d53e34b44369b8e78
ssh_key_ids:           # DigitalOcean ID for your SSH Key
  - 163420
haproxy_cfg_path: /etc/haproxy/haproxy.cfg
haproxy_template_file: haproxy.cfg.tera
inventory_file: inventory
userdata_file: user-data.yml
haproxy_cfg_file: haproxy.cfg
droplet_options:
  hostname_prefix: auto-nginx
  region: nyc3
  size: 1gb
  image: ubuntu-14-04-x64
";

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn original_file_loads_with_paths_beside_it() {
    let config = Config::parse(ORIGINAL, Path::new("/srv/doproxy/doproxy.yml"), no_env).unwrap();
    assert_eq!(config.inventory_file, Path::new("/srv/doproxy/inventory"));
    assert_eq!(
        config.droplets.userdata_file.as_deref(),
        Some(Path::new("/srv/doproxy/user-data.yml"))
    );
    assert_eq!(
        config.haproxy.cfg_path,
        Path::new("/etc/haproxy/haproxy.cfg")
    );
    assert_eq!(config.droplets.ssh_keys, vec![SshKey::Id(163420)]);
    assert_eq!(
        config.token().unwrap().secret(),
        "878a490235d53e34b44369b8e78"
    );
    let spec = config.droplet_spec().unwrap();
    assert_eq!((spec.hostname_prefix, spec.size), ("auto-nginx", "1gb"));
    assert_eq!(spec.image, &Image::Slug("ubuntu-14-04-x64".into()));
    assert_eq!(config.droplets.tags, vec!["doproxy:auto-nginx", "doproxy"]);
    assert_eq!(config.pool_tag(), "doproxy:auto-nginx");
    assert_eq!(config.haproxy.backend_port, 80);
    assert_eq!(config.api.url, "https://api.digitalocean.com");
    assert_eq!(config.api.retry.budget, Duration::from_secs(120));
    let check = HealthCheck {
        path: "/".into(),
        port: 80,
        status: 200,
        ready_timeout: Duration::from_secs(300),
    };
    assert_eq!(config.health_check, check);
}

#[test]
fn environment_token_and_api_url_override_the_file() {
    let env = |name: &str| match name {
        "DIGITALOCEAN_TOKEN" => Some("from-env".to_string()),
        "DIGITALOCEAN_API_URL" => Some("http://127.0.0.1:9/".to_string()),
        _ => None,
    };
    let config = Config::parse(ORIGINAL, Path::new("/x/doproxy.yml"), env).unwrap();
    assert_eq!(config.token().unwrap().secret(), "from-env");
    assert_eq!(config.api.url, "http://127.0.0.1:9");
}

#[test]
fn errors_name_the_key() {
    let err = Config::parse(
        "droplet_options:\n  size: [1]\n",
        Path::new("/x/d.yml"),
        no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("droplet_options.size"), "{err}");
    let err = Config::parse("api_retry_budget: soon\n", Path::new("/x/d.yml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_retry_budget"), "{err}");
    let err = Config::parse("ready_timeout: 500y\n", Path::new("/x/d.yml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ready_timeout") && err.contains("10 years"),
        "{err}"
    );
    let err = Config::parse("haproxy_cfg_pth: x\n", Path::new("/x/d.yml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("haproxy_cfg_pth"), "{err}");
    let config = Config::parse("", Path::new("/x/d.yml"), no_env).unwrap();
    let err = config.droplet_spec().unwrap_err().to_string();
    assert!(err.contains("droplet_options.hostname_prefix"), "{err}");
    let err = config.token().unwrap_err().to_string();
    assert!(err.contains("DIGITALOCEAN_ACCESS_TOKEN"), "{err}");
}

#[test]
fn autoscale_policies_are_checked() {
    let policy = |text: &str| {
        Config::parse(
            &format!("autoscale:\n{text}"),
            Path::new("/x/d.yml"),
            no_env,
        )
    };
    let config = policy(
        "  min: 2\n  max: 8\n  sessions_per_server: 50\n  cpu_percent: 70\n  cooldown: 2m\n",
    )
    .unwrap();
    let autoscale = config.autoscale.unwrap();
    assert_eq!(
        (autoscale.min, autoscale.max, autoscale.targets.len()),
        (2, 8, 2)
    );
    assert_eq!(autoscale.cooldown, Duration::from_secs(120));
    assert_eq!(autoscale.interval, Duration::from_secs(60));
    for (text, needle) in [
        ("  max: 4\n", "at least one target"),
        ("  sessions_per_server: 5\n", "max is missing"),
        ("  min: 5\n  max: 2\n  cpu_percent: 50\n", "must not exceed"),
        ("  max: 2\n  cpu_percent: 150\n", "at most 100"),
        (
            "  max: 2\n  queued_per_server: 0\n",
            "queued_per_server must be a number above 0",
        ),
        (
            "  max: 2\n  cpu_percent: 50\n  cooldown: later\n",
            "autoscale.cooldown",
        ),
        (
            "  max: 2\n  cpu_percent: 50\n  target: 3\n",
            "unknown field `target`",
        ),
    ] {
        let err = format!("{:#}", policy(text).unwrap_err());
        assert!(
            err.contains("autoscale") && err.contains(needle),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn heal_policies_have_defaults_and_are_checked() {
    let heal = |text: &str| {
        Config::parse(&format!("heal:{text}"), Path::new("/x/d.yml"), no_env).map(|c| c.heal)
    };
    assert_eq!(heal(" {}\n").unwrap(), Some(HealPolicy::default()));
    assert_eq!(
        Config::parse("", Path::new("/x/d.yml"), no_env)
            .unwrap()
            .heal,
        None
    );
    let policy = heal(" {grace: 30s, max_share_per_hour: 50, outage_share: 80, interval: 5s}\n")
        .unwrap()
        .unwrap();
    assert_eq!(policy.grace, Duration::from_secs(30));
    assert_eq!((policy.max_share_per_hour, policy.outage_share), (50, 80));
    for (text, needle) in [
        (" {max_share_per_hour: 0}\n", "from 1 to 100"),
        (" {outage_share: 101}\n", "from 0 to 100"),
        (" {interval: 0s}\n", "longer than 0s"),
        (" {grace: soon}\n", "heal.grace"),
        (" {graze: 1m}\n", "heal: unknown field `graze`"),
    ] {
        let err = format!("{:#}", heal(text).unwrap_err());
        assert!(
            err.contains("heal") && err.contains(needle),
            "{text}: {err}"
        );
    }
}

#[test]
fn each_pool_has_its_own_tag_and_explicit_tags_keep_their_meaning() {
    let tags =
        |text: &str| Config::parse(text, Path::new("/x/d.yml"), no_env).map(|c| c.droplets.tags);
    let prefix = |p: &str| format!("droplet_options: {{hostname_prefix: {p}}}\n");
    assert_eq!(
        tags(&prefix("web.example")).unwrap(),
        ["doproxy:web_example", "doproxy"]
    );
    assert_eq!(
        tags(&format!("pool: api-eu\n{}", prefix("web"))).unwrap(),
        ["doproxy:api-eu", "doproxy"]
    );
    assert_eq!(
        tags("droplet_options: {tags: [web, env-prod]}\n").unwrap(),
        ["web", "env-prod"]
    );
    assert_eq!(
        tags("").unwrap(),
        ["doproxy"],
        "no pool named: the shared tag"
    );
    for (text, needle) in [
        ("pool: web\ndroplet_options: {tags: [web]}\n", "keep one"),
        ("pool: web.eu\n", "pool \"web.eu\" in /x/d.yml"),
        ("droplet_options: {tags: []}\n", "is empty"),
        ("droplet_options: {tags: [a b]}\n", "\"a b\""),
        (&prefix(&"w".repeat(250)), "set pool to a shorter name"),
    ] {
        let err = tags(text).unwrap_err().to_string();
        assert!(
            err.contains(needle) && err.contains("/x/d.yml"),
            "{text}: {err}"
        );
    }
}

#[test]
fn each_pool_has_its_own_default_etcd_prefix_and_knows_the_one_it_shared() {
    let prefixes = |text: &str| {
        let text =
            format!("{text}inventory_backend: etcd\netcd_endpoints: [http://127.0.0.1:2379]\n");
        let settings = etcd(Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap());
        (settings.prefix, settings.shared_prefix)
    };
    let shared = Some("/doproxy/doproxy/".to_string());
    assert_eq!(
        prefixes(ORIGINAL),
        ("/doproxy/doproxy:auto-nginx/".to_string(), shared.clone())
    );
    assert_eq!(
        prefixes("pool: web\n"),
        ("/doproxy/doproxy:web/".to_string(), shared)
    );
    assert_eq!(
        prefixes("pool: api\n").0,
        "/doproxy/doproxy:api/",
        "two pools never share keys or a lock"
    );
    // Where the prefix did not move: set, from explicit tags, no pool.
    assert_eq!(
        prefixes(&format!("{ORIGINAL}etcd_prefix: /mine/\n")),
        ("/mine/".to_string(), None)
    );
    assert_eq!(
        prefixes("droplet_options: {tags: [web]}\n"),
        ("/doproxy/web/".to_string(), None)
    );
    assert_eq!(prefixes(""), ("/doproxy/doproxy/".to_string(), None));
}

#[test]
fn failover_keys_have_defaults_and_bounds() {
    let config = Config::parse(ORIGINAL, Path::new("/x/d.yml"), no_env).unwrap();
    let defaults = FailoverSettings {
        reserved_ip: None,
        lease_ttl: Duration::from_secs(10),
        check_interval: Duration::from_secs(1),
        recheck_interval: Duration::from_secs(30),
        min_hold: Duration::from_secs(30),
    };
    assert_eq!(config.failover, defaults);
    let text = format!("{ORIGINAL}reserved_ip: 203.0.113.7\nfailover_min_hold: 0s\n");
    let config = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap();
    assert_eq!(config.failover.reserved_ip, Some([203, 0, 113, 7].into()));
    assert_eq!(config.failover.min_hold, Duration::ZERO);
    for (text, needle) in [
        ("failover_lease_ttl: 2s\n", "at least 3s"),
        ("failover_check_interval: 0s\n", "longer than 0s"),
        ("reserved_ip: 203.0.113\n", "reserved_ip"),
    ] {
        let err = Config::parse(text, Path::new("/x/d.yml"), no_env).unwrap_err();
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}

#[test]
fn new_droplet_options_have_defaults_and_uuids_are_checked() {
    let config = Config::parse(ORIGINAL, Path::new("/x/d.yml"), no_env).unwrap();
    let defaults = DropletFeatures {
        vpc_uuid: None,
        ipv6: false,
        backups: false,
        monitoring: true,
        with_droplet_agent: None,
        project_id: None,
    };
    assert_eq!(config.droplets.features, defaults);
    let text = format!(
        "{ORIGINAL}  vpc_uuid: 760e09ef-dc84-11e8-981e-3cfdfeaae000\n  ipv6: true\n  backups: true\n  monitoring: false\n  with_droplet_agent: false\n  project_id: 4e1bfbc3-dc3e-41f2-a18f-1b4d7ba71679\n"
    );
    let config = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap();
    let features = config.droplets.features;
    assert_eq!(
        features.vpc_uuid.as_deref(),
        Some("760e09ef-dc84-11e8-981e-3cfdfeaae000")
    );
    assert!(features.ipv6 && features.backups && !features.monitoring);
    assert_eq!(features.with_droplet_agent, Some(false));
    assert!(features.project_id.is_some());
    for (line, needle) in [
        (
            "  vpc_uuid: default\n",
            "droplet_options.vpc_uuid \"default\"",
        ),
        ("  project_id: web\n", "doctl projects list"),
    ] {
        let err = Config::parse(&format!("{ORIGINAL}{line}"), Path::new("/x/d.yml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle) && err.contains("/x/d.yml"), "{err}");
    }
}

#[test]
fn port_zero_is_refused() {
    for key in ["backend_port", "health_check_port"] {
        let err = Config::parse(&format!("{key}: 0\n"), Path::new("/x/d.yml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{key} in /x/d.yml is 0")), "{err}");
    }
}

#[test]
fn erb_template_is_refused_with_a_way_out() {
    let text = ORIGINAL.replace("haproxy.cfg.tera", "haproxy.cfg.erb");
    let err = Config::parse(&text, Path::new("/x/d.yml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("remove the key"), "{err}");
}

#[test]
fn token_is_never_printed() {
    let config = Config::parse(ORIGINAL, Path::new("/x/d.yml"), no_env).unwrap();
    assert!(!format!("{config:?}").contains("878a490235d53e34b44369b8e78"));
    let text = format!(
        "{ORIGINAL}inventory_backend: etcd\netcd_endpoints: [http://127.0.0.1:2379]\netcd_username: root\netcd_password: hunter2\n"
    );
    let config = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    assert_eq!(etcd(config).prefix, "/doproxy/doproxy:auto-nginx/");
}

#[test]
fn only_plain_http_to_another_machine_is_in_clear() {
    for url in [
        "http://10.0.0.2:2379",
        "http://api.example.com",
        "http://[2001:db8::1]:2379",
        "http://0.0.0.0:80",
    ] {
        assert!(in_clear(url), "{url}");
    }
    for url in [
        "https://api.digitalocean.com",
        "https://10.0.0.2:2379",
        "http://127.0.0.1:2379",
        "http://127.3.4.5",
        "http://[::1]:2379",
        "http://localhost:2379",
        "HTTP://LOCALHOST",
    ] {
        assert!(!in_clear(url), "{url}");
    }
}

#[test]
fn secrets_go_in_clear_only_when_the_config_says_so() {
    let parse = |text: &str, env: &dyn Fn(&str) -> Option<String>| {
        Config::parse(text, Path::new("/x/d.yml"), env).map(|_| ())
    };
    let remote_api = "token: t\napi_url: http://192.0.2.1:8080\n";
    let err = parse(remote_api, &no_env).unwrap_err().to_string();
    assert!(
        err.starts_with("api_url http://192.0.2.1:8080 is plain http://")
            && err.contains("allow_insecure_http: true in /x/d.yml"),
        "{err}"
    );
    assert!(!err.contains("token: t"), "{err}");
    parse(&format!("{remote_api}allow_insecure_http: true\n"), &no_env).unwrap();
    // No token, nothing to leak; the token from the environment counts.
    parse("api_url: http://192.0.2.1:8080\n", &no_env).unwrap();
    let env_token = |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| "t".to_string());
    parse("api_url: http://192.0.2.1\n", &env_token).unwrap_err();
    let env_url = |name: &str| match name {
        "DIGITALOCEAN_API_URL" => Some("http://192.0.2.1".to_string()),
        "DIGITALOCEAN_TOKEN" => Some("t".to_string()),
        _ => None,
    };
    let err = parse("", &env_url).unwrap_err().to_string();
    assert!(
        err.starts_with("$DIGITALOCEAN_API_URL http://192.0.2.1 "),
        "{err}"
    );

    let etcd = |endpoint: &str, credentials: &str| {
        format!(
            "inventory_backend: etcd\netcd_endpoints: [http://127.0.0.1:2379, {endpoint}]\n{credentials}"
        )
    };
    for credentials in ["etcd_username: u\netcd_password: p\n", "etcd_username: u\n"] {
        let err = parse(&etcd("http://10.0.0.3:2379", credentials), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("etcd endpoint http://10.0.0.3:2379 is plain http://")
                && err.contains("allow_insecure_http"),
            "{err}"
        );
    }
    let password = |name: &str| (name == "DOPROXY_ETCD_PASSWORD").then(|| "p".to_string());
    parse(&etcd("http://10.0.0.3:2379", ""), &password).unwrap_err();
    parse(&etcd("http://10.0.0.3:2379", ""), &no_env).unwrap();
    let credentials = "etcd_username: u\netcd_password: p\n";
    parse(&etcd("https://10.0.0.3:2379", credentials), &no_env).unwrap();
    parse(&etcd("http://localhost:2379", credentials), &no_env).unwrap();
    parse(
        &etcd(
            "http://10.0.0.3:2379",
            &format!("{credentials}allow_insecure_http: true\n"),
        ),
        &no_env,
    )
    .unwrap();
}

#[test]
fn the_stats_page_is_loopback_only_unless_allowed() {
    for bind in [
        "127.0.0.1:8404",
        "[::1]:8404",
        "ipv4@127.0.0.2:8404",
        "localhost:8404",
        "127.0.0.1:8404,[::1]:8404 ssl crt /etc/haproxy/stats.pem",
        "/run/haproxy/stats.sock",
        "unix@/run/haproxy/stats.sock",
    ] {
        assert!(binds_loopback_only(bind), "{bind}");
    }
    for bind in [
        "0.0.0.0:8404",
        ":8404",
        "*:8404",
        "[::]:8404",
        "10.0.0.2:8404",
        "127.0.0.1:8404,10.0.0.2:8404",
        "stats.example.com:8404",
    ] {
        assert!(!binds_loopback_only(bind), "{bind}");
    }
    let stats = |extra: &str| {
        Config::parse(
            &format!("haproxy_stats_bind: \"*:8404\"\n{extra}"),
            Path::new("/x/d.yml"),
            no_env,
        )
    };
    let err = stats("").unwrap_err().to_string();
    assert!(
        err.starts_with("haproxy_stats_bind *:8404 is not a loopback address")
            && err.ends_with("or set metrics_allow_remote: true"),
        "{err}"
    );
    assert_eq!(
        stats("metrics_allow_remote: true\n")
            .unwrap()
            .haproxy
            .stats_bind
            .as_deref(),
        Some("*:8404")
    );
    // The same check as metrics_listen's.
    let err =
        metrics::check_unauthenticated_listener("metrics_listen", "0.0.0.0:9477", false, false)
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("metrics_listen 0.0.0.0:9477 is not a loopback address"));
    metrics::check_unauthenticated_listener("metrics_listen", "0.0.0.0:9477", false, true).unwrap();
}

#[test]
fn values_the_template_prints_stay_on_their_line() {
    for (text, needle) in [
        (
            "frontend_bind: \"1.2.3.4:80\\nglobal\\n  insecure-fork-wanted\"\n",
            "frontend_bind \"1.2.3.4:80\\nglobal",
        ),
        ("health_check_path: \"/a\\r\"\n", "health_check_path"),
        ("health_check_path: /a b\n", "%20"),
        ("haproxy_socket: \"/run/a\\nb\"\n", "haproxy_socket"),
        (
            "haproxy_stats_bind: \"127.0.0.1:1\\nx\"\n",
            "haproxy_stats_bind",
        ),
    ] {
        let err = Config::parse(text, Path::new("/x/d.yml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(needle) && err.contains("/x/d.yml"),
            "{text}: {err}"
        );
    }
}

#[test]
fn haproxy_commands_and_socket_are_bounded() {
    let config = Config::parse(ORIGINAL, Path::new("/x/d.yml"), no_env).unwrap();
    assert_eq!(config.haproxy.check_timeout, Duration::from_secs(60));
    assert_eq!(config.haproxy.reload_timeout, Duration::from_secs(60));
    assert_eq!(config.haproxy.socket_timeout, Duration::from_secs(5));
    let text = format!("{ORIGINAL}haproxy_reload_timeout: 90s\n");
    let config = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap();
    assert_eq!(config.haproxy.reload_timeout, Duration::from_secs(90));
    let text = format!("{ORIGINAL}haproxy_socket_timeout: 0s\n");
    let err = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap_err();
    assert!(err.to_string().contains("longer than 0s"), "{err}");
}
