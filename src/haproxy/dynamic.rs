//! What HAProxy can change without a reload. A config is split into its
//! frame (every line but the `server` lines of backends) and those server
//! lines; between two configs with the same frame, the runtime API's `add
//! server` and `del server` take a running HAProxy from one set of servers
//! to the other. Anything else (a new frame, a server whose line changed, a
//! backend that cannot take servers at run time, a line the admin socket
//! cannot be given) needs a reload, and the reason says why. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

/// A config as the runtime API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The config without the server lines of its backends.
    frame: String,
    /// Backends and listen sections, by name.
    backends: BTreeMap<String, Backend>,
}

/// One backend (or listen section).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Backend {
    servers: BTreeMap<String, ServerLine>,
    /// `default-server` options, those of its defaults section first: HAProxy
    /// applies them to the servers of the config, never to a runtime-added one,
    /// so `add server` is given them explicitly.
    defaults: Vec<String>,
    /// It has a `server-template` line, whose servers HAProxy names itself.
    templated: bool,
    /// Its `balance` algorithm, if it names one.
    balance: Option<String>,
}

/// One `server` line: address and options (comment stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerLine {
    address: String,
    options: Vec<String>,
}

/// One change the runtime API makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `add server <backend>/<server> <address> <options>`, then `enable
    /// health` (with `check`), `enable agent` (with `agent-check`) and
    /// `enable server` (unless `disabled`).
    Add {
        backend: String,
        server: String,
        address: String,
        options: Vec<String>,
    },
    /// `set server ... state maint`, then `del server <backend>/<server>`.
    Remove { backend: String, server: String },
}

/// What HAProxy gives a server of the config but not one added at run time
/// (2.6 leaves the latter without idle connections to reuse, so every
/// request would open a new connection to the droplet): the options of each
/// `add server` start with them, and the config's own can override them.
const CONFIG_SERVER_DEFAULTS: [&str; 4] = ["pool-purge-delay", "5s", "pool-max-conn", "-1"];

/// Characters the admin socket would read differently from the config
/// parser: quoting, escapes, environment variables, command separators.
const UNSAFE: [char; 5] = ['"', '\'', '\\', '$', ';'];

impl Layout {
    pub fn parse(config: &str) -> Layout {
        let mut frame = String::with_capacity(config.len());
        let mut backends: BTreeMap<String, Backend> = BTreeMap::new();
        // default-server options of each named defaults section, and of the
        // last one seen (what a backend without `from` inherits).
        let mut named_defaults: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut last_defaults: Vec<String> = Vec::new();
        enum Section {
            Defaults(Option<String>),
            Backend(String),
            Other,
        }
        let mut section = Section::Other;
        for line in config.split_inclusive('\n') {
            let words = words(line);
            let Some(first) = words.first().map(String::as_str) else {
                frame.push_str(line);
                continue;
            };
            if !line.starts_with([' ', '\t']) {
                let from = words
                    .iter()
                    .position(|w| w == "from")
                    .and_then(|i| words.get(i + 1));
                section = match (first, words.get(1)) {
                    ("defaults", name) => {
                        let name = name.filter(|n| *n != "from").cloned();
                        let inherited = match from {
                            Some(parent) => named_defaults.get(parent).cloned().unwrap_or_default(),
                            None => Vec::new(),
                        };
                        last_defaults = inherited;
                        if let Some(name) = &name {
                            named_defaults.insert(name.clone(), last_defaults.clone());
                        }
                        Section::Defaults(name)
                    }
                    ("backend" | "listen", Some(name)) => {
                        let defaults = match from {
                            Some(parent) => named_defaults.get(parent).cloned().unwrap_or_default(),
                            None => last_defaults.clone(),
                        };
                        backends.insert(
                            name.clone(),
                            Backend {
                                defaults,
                                ..Backend::default()
                            },
                        );
                        Section::Backend(name.clone())
                    }
                    _ => Section::Other,
                };
                frame.push_str(line);
                continue;
            }
            match &section {
                Section::Defaults(name) => {
                    if first == "default-server" {
                        last_defaults.extend(words[1..].iter().cloned());
                        if let Some(name) = name {
                            named_defaults.insert(name.clone(), last_defaults.clone());
                        }
                    }
                }
                Section::Backend(name) => {
                    let backend = backends.get_mut(name).expect("inserted at its start");
                    match (first, words.get(1), words.get(2)) {
                        ("server", Some(server), Some(address)) => {
                            backend.servers.insert(
                                server.clone(),
                                ServerLine {
                                    address: address.clone(),
                                    options: words[3..].to_vec(),
                                },
                            );
                            continue;
                        }
                        ("default-server", _, _) => {
                            backend.defaults.extend(words[1..].iter().cloned())
                        }
                        ("server-template", _, _) => backend.templated = true,
                        ("balance", Some(algorithm), _) => {
                            backend.balance = Some(algorithm.clone())
                        }
                        _ => {}
                    }
                }
                Section::Other => {}
            }
            frame.push_str(line);
        }
        Layout { frame, backends }
    }

    /// The server names of each backend; None for a backend with a
    /// `server-template` line, whose servers HAProxy names itself.
    pub fn server_names(&self) -> BTreeMap<String, Option<BTreeSet<String>>> {
        self.backends
            .iter()
            .map(|(name, backend)| {
                let names = (!backend.templated).then(|| backend.servers.keys().cloned().collect());
                (name.clone(), names)
            })
            .collect()
    }

    /// Whether `other` differs from this config only in which servers its
    /// backends have (a server in both has the same line in both): what a
    /// runtime update changes.
    pub fn differs_only_in_servers(&self, other: &Layout) -> bool {
        self.frame == other.frame && changed_server(self, other).is_none()
    }

    /// The runtime API steps that take a HAProxy running this config to
    /// `wanted`: every addition first, so a backend never runs empty in
    /// between, then every removal. Err says why only a reload can.
    pub fn steps_to(&self, wanted: &Layout) -> Result<Vec<Step>, String> {
        if self.frame != wanted.frame {
            return Err("the config changed beyond its server lines".to_string());
        }
        if let Some((backend, server)) = changed_server(self, wanted) {
            return Err(format!(
                "the line of server {server} in backend {backend} changed"
            ));
        }
        let mut adds = Vec::new();
        let mut removes = Vec::new();
        for (name, backend) in &wanted.backends {
            let running = &self.backends[name];
            let added: Vec<(&String, &ServerLine)> = backend
                .servers
                .iter()
                .filter(|(server, _)| !running.servers.contains_key(*server))
                .collect();
            let removed: Vec<&String> = running
                .servers
                .keys()
                .filter(|server| !backend.servers.contains_key(*server))
                .collect();
            if added.is_empty() && removed.is_empty() {
                continue;
            }
            if let Some(algorithm) = backend.balance.as_deref().filter(|a| *a == "static-rr") {
                return Err(format!(
                    "backend {name} uses balance {algorithm}, which cannot take servers at run time"
                ));
            }
            for (server, line) in added {
                let options: Vec<String> = CONFIG_SERVER_DEFAULTS
                    .iter()
                    .map(|o| o.to_string())
                    .chain(backend.defaults.iter().chain(&line.options).cloned())
                    .collect();
                if std::iter::once(&line.address)
                    .chain(&options)
                    .any(|word| word.contains(UNSAFE))
                {
                    return Err(format!(
                        "server {server} in backend {name} has quotes, escapes or variables in its options, which the runtime API would read differently"
                    ));
                }
                adds.push(Step::Add {
                    backend: name.clone(),
                    server: server.clone(),
                    address: line.address.clone(),
                    options,
                });
            }
            removes.extend(removed.into_iter().map(|server| Step::Remove {
                backend: name.clone(),
                server: server.clone(),
            }));
        }
        adds.extend(removes);
        Ok(adds)
    }
}

/// A server both configs have, with different lines: (backend, server).
fn changed_server<'a>(a: &'a Layout, b: &Layout) -> Option<(&'a str, &'a str)> {
    a.backends.iter().find_map(|(name, backend)| {
        let other = b.backends.get(name)?;
        backend
            .servers
            .iter()
            .find(|(server, line)| other.servers.get(*server).is_some_and(|o| o != *line))
            .map(|(server, _)| (name.as_str(), server.as_str()))
    })
}

/// The words of a config line, without its comment (`#` outside quotes).
fn words(line: &str) -> Vec<String> {
    let mut quote = None;
    let mut escaped = false;
    let mut end = line.len();
    for (i, c) in line.char_indices() {
        match (c, quote) {
            _ if escaped => escaped = false,
            ('\\', _) => escaped = true,
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(open)) if c == open => quote = None,
            ('#', None) => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    line[..end].split_whitespace().map(str::to_string).collect()
}

impl Step {
    /// `backend/server`, as the admin socket names a server.
    pub fn target(&self) -> String {
        match self {
            Step::Add {
                backend, server, ..
            }
            | Step::Remove { backend, server } => format!("{backend}/{server}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
global
    stats socket /run/haproxy/admin.sock level admin
defaults
    mode http
frontend www-http
    bind *:80
    default_backend www-backend
backend www-backend
    balance roundrobin
    default-server inter 2s fall 2 rise 1 port 8081
    server www-1 10.0.0.1:80 check # id:1, hostname:web-0
    server www-2 10.0.0.2:80 check # id:2, hostname:web-1
    # server www-9 10.0.0.9:80 check
backend dynamic
    server-template app 3 10.0.0.5:80
";

    fn with(servers: &[(u64, &str)]) -> String {
        let lines: String = servers
            .iter()
            .map(|(id, comment)| {
                format!("    server www-{id} 10.0.0.{id}:80 check # id:{id}, {comment}\n")
            })
            .collect();
        CONFIG.replace(
            "    server www-1 10.0.0.1:80 check # id:1, hostname:web-0\n    server www-2 10.0.0.2:80 check # id:2, hostname:web-1\n",
            &lines,
        )
    }

    #[test]
    fn servers_are_read_per_backend() {
        let names = Layout::parse(CONFIG).server_names();
        let expected: BTreeSet<String> = ["www-1", "www-2"].map(String::from).into();
        assert_eq!(names["www-backend"], Some(expected));
        assert_eq!(names["dynamic"], None);
        assert!(!names.contains_key("www-http"));
    }

    #[test]
    fn added_servers_carry_the_default_server_options_and_come_first() {
        let running = Layout::parse(CONFIG);
        let wanted = Layout::parse(&with(&[(2, "b"), (3, "c")]));
        let steps = running.steps_to(&wanted).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Add {
                    backend: "www-backend".into(),
                    server: "www-3".into(),
                    address: "10.0.0.3:80".into(),
                    options: "pool-purge-delay 5s pool-max-conn -1 inter 2s fall 2 rise 1 port 8081 check"
                        .split(' ')
                        .map(String::from)
                        .collect(),
                },
                Step::Remove {
                    backend: "www-backend".into(),
                    server: "www-1".into(),
                },
            ]
        );
        assert_eq!(steps[1].target(), "www-backend/www-1");
        assert!(running.differs_only_in_servers(&wanted));
        assert_eq!(running.steps_to(&running), Ok(vec![]));
    }

    #[test]
    fn comments_are_no_change_but_the_frame_and_server_lines_are() {
        let running = Layout::parse(CONFIG);
        let renamed = Layout::parse(&with(&[(1, "x"), (2, "y")]));
        assert_eq!(running.steps_to(&renamed), Ok(vec![]));
        let moved = Layout::parse(&CONFIG.replace("bind *:80", "bind *:81"));
        assert_eq!(
            running.steps_to(&moved).unwrap_err(),
            "the config changed beyond its server lines"
        );
        assert!(!running.differs_only_in_servers(&moved));
        let readdressed = Layout::parse(&CONFIG.replace("10.0.0.2:80", "10.0.0.7:80"));
        assert_eq!(
            running.steps_to(&readdressed).unwrap_err(),
            "the line of server www-2 in backend www-backend changed"
        );
        assert!(!running.differs_only_in_servers(&readdressed));
        let options = Layout::parse(&CONFIG.replace("fall 2", "fall 3"));
        assert!(
            running.steps_to(&options).is_err(),
            "default-server is frame"
        );
    }

    #[test]
    fn backends_and_lines_the_runtime_api_cannot_take_need_a_reload() {
        let static_rr = CONFIG.replace("balance roundrobin", "balance static-rr");
        let err = Layout::parse(&static_rr)
            .steps_to(&Layout::parse(&static_rr.replace(
                "    server www-2 10.0.0.2:80 check # id:2, hostname:web-1\n",
                "",
            )))
            .unwrap_err();
        assert!(err.contains("balance static-rr"), "{err}");
        let quoted = CONFIG.replace("port 8081", "port \"${PORT}\"");
        let err = Layout::parse(&quoted.replace(
            "    server www-2 10.0.0.2:80 check # id:2, hostname:web-1\n",
            "",
        ))
        .steps_to(&Layout::parse(&quoted))
        .unwrap_err();
        assert!(err.contains("server www-2"), "{err}");
    }

    #[test]
    fn default_server_options_follow_the_defaults_section_a_backend_uses() {
        let config = "\
defaults base
    default-server maxconn 10
defaults
    default-server weight 5
backend a from base
    default-server check
    server s1 10.0.0.1:80
backend b
    server s2 10.0.0.2:80 # a comment with 'quotes'
listen c
    server s3 10.0.0.3:80 backup
";
        let empty = Layout::parse(
            &config
                .lines()
                .filter(|l| !l.trim_start().starts_with("server "))
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        );
        let steps = empty.steps_to(&Layout::parse(config)).unwrap();
        let options: Vec<(String, String)> = steps
            .iter()
            .map(|s| match s {
                Step::Add {
                    server, options, ..
                } => (
                    server.clone(),
                    options[CONFIG_SERVER_DEFAULTS.len()..].join(" "),
                ),
                Step::Remove { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(
            options,
            [
                ("s1".to_string(), "maxconn 10 check".to_string()),
                ("s2".to_string(), "weight 5".to_string()),
                ("s3".to_string(), "weight 5 backup".to_string()),
            ]
        );
    }
}
