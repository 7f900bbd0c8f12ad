//! HAProxy's runtime API on its admin socket (`stats socket ... level admin`):
//! add and remove servers without a reload, take a server out of rotation
//! before its droplet dies, and read what HAProxy sees (state, sessions,
//! queue, request rate). Every exchange is
//! bounded as a whole (haproxy_socket_timeout), so a socket that accepts and
//! then never answers, or answers forever, cannot hold doproxy and its locks;
//! and an answer is read up to the cap on any answer (16 MiB, thousands of
//! servers' `show stat`), so one without end cannot use up the memory.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::command::{Unread, read_capped};
use super::dynamic::Step;
use super::settings::Settings;
use crate::http::{MAX_ANSWER, TOO_LARGE};
use crate::text::Printable;

/// One server (or backend) row of `show stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStat {
    pub backend: String,
    pub server: String,
    /// UP, DOWN, DRAIN, MAINT, NOLB, "no check", possibly with a suffix
    /// such as "UP 1/2" while a check is in transition.
    pub status: String,
    /// Current sessions.
    pub sessions: u64,
    /// Requests waiting in this server's queue.
    pub queued: u64,
    /// Sessions per second over the last second.
    pub rate: u64,
    /// Average response time in ms over the last 1,024 requests (`rtime`;
    /// None without the column, HTTP mode only).
    pub response_ms: Option<u64>,
    /// The last health check's result (`L7OK`, `L4CON`, `INI` before the
    /// first, `* ` in front while one runs); empty without checks.
    pub check_status: String,
    /// Seconds since the server last changed between UP and DOWN.
    pub last_change: Option<u64>,
}

impl ServerStat {
    /// The status in words for people (print --health): HAProxy's, except
    /// for a server UP but not yet at full health (`UP 1/2`), which HAProxy
    /// shows alike whether it is new or failing. It reads `rising (UP 1/2)`
    /// while its checks pass or none has run yet (a new server, one back
    /// from DOWN) and `failing (UP 1/2)` once one failed; a plain `UP` means
    /// fully up.
    pub fn health(&self) -> String {
        let Some(counts) = self.status.strip_prefix("UP ") else {
            return self.status.clone();
        };
        let check = self.check_status.trim_start_matches("* ");
        let passing = check.is_empty()
            || matches!(check, "INI" | "UNK")
            || check.ends_with("OK")
            || check.ends_with("OKC");
        let trend = if passing { "rising" } else { "failing" };
        format!("{trend} (UP {counts})")
    }
}

/// The states `set server ... state` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Normal service.
    Ready,
    /// No new sessions; existing ones finish.
    Drain,
    /// No traffic at all, health checks stopped.
    Maint,
}

/// A connection point to HAProxy's admin socket.
pub struct Runtime<'a> {
    socket: &'a Path,
    /// Longest one exchange may take.
    timeout: Duration,
}

impl<'a> Runtime<'a> {
    /// The admin socket at `socket`; one exchange may take `timeout`.
    pub fn new(socket: &'a Path, timeout: Duration) -> Runtime<'a> {
        Runtime { socket, timeout }
    }

    /// The admin socket of `config`, if haproxy_socket is set.
    pub fn of(settings: &'a Settings) -> Option<Runtime<'a>> {
        Some(Runtime::new(
            settings.socket.as_deref()?,
            settings.socket_timeout,
        ))
    }

    /// Every server row of `show stat`.
    pub async fn servers(&self) -> Result<Vec<ServerStat>> {
        parse_show_stat(&self.command("show stat").await?)
    }

    /// The PID of the worker answering on the socket; it changes once a
    /// reload has handed the socket to a new worker.
    pub async fn worker_pid(&self) -> Result<u32> {
        let info = self.command("show info").await?;
        info.lines()
            .find_map(|line| line.strip_prefix("Pid: "))
            .and_then(|pid| pid.trim().parse().ok())
            .context("HAProxy's `show info` answer has no Pid line")
    }

    /// Sets servers `targets` (backend, server) to `state`, on one
    /// connection; a refusal is an error quoting HAProxy.
    pub async fn set_state(&self, targets: &[(String, String)], state: AdminState) -> Result<()> {
        let state = match state {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        };
        let commands: Vec<(String, &str)> = targets
            .iter()
            .map(|(backend, server)| (format!("set server {backend}/{server} state {state}"), ""))
            .collect();
        self.batch(&commands).await
    }

    /// Takes the steps of a runtime update, in order, on one connection:
    /// 1,000 servers are some 3,000 commands, which one connection each
    /// would make thousands of round trips. Every command's answer is
    /// checked; the first that is not the one HAProxy gives on success is
    /// an error quoting it (see `batch`).
    pub async fn take(&self, steps: &[Step]) -> Result<()> {
        let commands: Vec<(String, &str)> = steps.iter().flat_map(step_commands).collect();
        self.batch(&commands).await
    }

    /// Sends `commands` on one connection in interactive mode (`prompt`),
    /// BATCH at a time, each on its own line, and checks each answer
    /// against its expected one (compared trimmed). Each batch is bounded
    /// by the timeout and the answer cap like a single command. After a
    /// refusal no further batch is sent; the rest of its own batch has been
    /// taken already, which a runtime update's fallback (a reload of the
    /// whole new config) makes good, and which HAProxy refuses itself where
    /// it depends on the refused command (`del server` of a server not in
    /// maintenance).
    pub(super) async fn batch(&self, commands: &[(String, &str)]) -> Result<()> {
        if commands.is_empty() {
            return Ok(());
        }
        let mut stream = self
            .bounded("prompt", async {
                let mut stream = UnixStream::connect(self.socket)
                    .await
                    .map_err(Unread::Failed)?;
                stream
                    .write_all(b"prompt\n")
                    .await
                    .map_err(Unread::Failed)?;
                read_answers(&mut stream, 1).await?;
                Ok(stream)
            })
            .await?;
        for chunk in commands.chunks(BATCH) {
            let lines: String = chunk
                .iter()
                .map(|(command, _)| format!("{}\n", command.trim_end()))
                .collect();
            let label = match chunk {
                [(only, _)] => only.trim_end().to_string(),
                [(first, _), rest @ ..] => {
                    format!("{} and {} more commands", first.trim_end(), rest.len())
                }
                [] => unreachable!("chunks are never empty"),
            };
            let answers = self
                .bounded(&label, async {
                    stream
                        .write_all(lines.as_bytes())
                        .await
                        .map_err(Unread::Failed)?;
                    read_answers(&mut stream, chunk.len()).await
                })
                .await?;
            for ((command, success), answer) in chunk.iter().zip(&answers) {
                if answer.trim() != *success {
                    bail!(
                        "HAProxy refused `{}`: {}",
                        command.trim_end(),
                        answer.trim()
                    );
                }
            }
        }
        // Leaving interactive mode closes the connection; an error here
        // changes nothing that was done.
        let _ = stream.write_all(b"quit\n").await;
        Ok(())
    }

    /// Sends one command and reads the whole answer (the socket closes after
    /// one command when not in interactive mode), all within the timeout and
    /// up to MAX_ANSWER.
    pub(super) async fn command(&self, command: &str) -> Result<String> {
        self.exchange(command, command).await
    }

    /// `command`, named `label` in errors: a command carrying a payload
    /// (a private key) is never quoted whole.
    pub(super) async fn exchange(&self, command: &str, label: &str) -> Result<String> {
        self.bounded(label, async {
            let mut stream = UnixStream::connect(self.socket)
                .await
                .map_err(Unread::Failed)?;
            stream
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(Unread::Failed)?;
            let answer = read_capped(Some(stream), MAX_ANSWER).await?;
            String::from_utf8(answer).map_err(|err| {
                Unread::Failed(std::io::Error::new(std::io::ErrorKind::InvalidData, err))
            })
        })
        .await
    }

    /// Runs one exchange on the socket (named `label` in errors) within the
    /// timeout, turning its failures into sentences that say what to do.
    async fn bounded<T>(
        &self,
        label: &str,
        exchange: impl Future<Output = Result<T, Unread>>,
    ) -> Result<T> {
        let fix = format!(
            "check that HAProxy runs with `stats socket {} level admin`, or unset haproxy_socket",
            self.socket.display()
        );
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(Unread::TooMuch)) => bail!(
                "HAProxy's admin socket gave {TOO_LARGE}, to `{label}` on {}; {fix}",
                self.socket.display()
            ),
            Ok(Err(Unread::Failed(err))) => Err(err).with_context(|| {
                format!(
                    "cannot talk to HAProxy's admin socket {}; {fix}",
                    self.socket.display()
                )
            }),
            Err(_) => bail!(
                "HAProxy's admin socket {} did not answer `{label}` within {} (haproxy_socket_timeout); {fix}",
                self.socket.display(),
                humantime::format_duration(self.timeout)
            ),
        }
    }
}

/// Commands sent before their answers are read: small enough that the
/// answers fit the socket's buffers (so neither side waits on the other),
/// large enough that 1,000 servers take a few round trips.
const BATCH: usize = 200;

/// What ends each answer in interactive mode: the prompt on a new line.
const PROMPT: &str = "\n> ";

/// The admin socket commands of one step, each with the answer HAProxy
/// gives on success.
fn step_commands(step: &Step) -> Vec<(String, &'static str)> {
    let target = step.target();
    match step {
        Step::Add {
            address, options, ..
        } => {
            let has = |word: &str| options.iter().any(|o| o == word);
            let mut commands = vec![(
                format!("add server {target} {address} {}", options.join(" ")),
                "New server registered.",
            )];
            if has("check") {
                commands.push((format!("enable health {target}"), ""));
            }
            if has("agent-check") {
                commands.push((format!("enable agent {target}"), ""));
            }
            if !has("disabled") {
                commands.push((format!("enable server {target}"), ""));
            }
            commands
        }
        Step::Remove { .. } => vec![
            (format!("set server {target} state maint"), ""),
            (format!("del server {target}"), "Server deleted."),
        ],
    }
}

/// Reads until `count` more answers have come (each ends with the prompt),
/// up to MAX_ANSWER; the answers.
async fn read_answers(stream: &mut UnixStream, count: usize) -> Result<Vec<String>, Unread> {
    let mut received = Vec::new();
    let mut buffer = [0; 8192];
    loop {
        // HAProxy waits for the next line only after a prompt.
        if received.ends_with(PROMPT.as_bytes())
            && let Some(answers) = answers(&String::from_utf8_lossy(&received), count)
        {
            return Ok(answers);
        }
        let read = stream.read(&mut buffer).await.map_err(Unread::Failed)?;
        if read == 0 {
            return Err(Unread::Failed(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "HAProxy closed the connection before answering every command",
            )));
        }
        received.extend_from_slice(&buffer[..read]);
        if received.len() > MAX_ANSWER {
            return Err(Unread::TooMuch);
        }
    }
}

/// The first `count` answers of interactive mode's output, once all have
/// come: each is what precedes a prompt. HAProxy 2.6 ends most answers with
/// an empty line before the prompt, but not every one (`del server`), so
/// the prompt is what separates them.
fn answers(output: &str, count: usize) -> Option<Vec<String>> {
    let answers: Vec<String> = output
        .split_inclusive(PROMPT)
        .filter(|part| part.ends_with(PROMPT))
        .take(count)
        .map(|part| part.trim_end_matches(PROMPT).to_string())
        .collect();
    (answers.len() == count).then_some(answers)
}

/// Server and backend rows of `show stat` CSV output (a backend's row has
/// server name `BACKEND`; frontends are skipped).
fn parse_show_stat(csv: &str) -> Result<Vec<ServerStat>> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .context("HAProxy's `show stat` answer has no header line")?;
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .with_context(|| format!("HAProxy's `show stat` answer has no {name} column"))
    };
    let (pxname, svname, status) = (column("pxname")?, column("svname")?, column("status")?);
    let (scur, qcur, rate) = (column("scur")?, column("qcur")?, column("rate")?);
    // Only what print --health and heal show; rows read without them.
    let (check_status, lastchg) = (column("check_status").ok(), column("lastchg").ok());
    // Only for the response_time_ms autoscale metric.
    let rtime = column("rtime").ok();
    let mut servers = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        let optional = |i: Option<usize>| i.map_or("", field);
        let number = |i: usize| field(i).parse::<u64>().unwrap_or(0);
        if field(svname) == "FRONTEND" {
            continue;
        }
        servers.push(ServerStat {
            backend: field(pxname).to_string(),
            server: field(svname).to_string(),
            // Shown to people as it is (print --health): nothing in it may
            // act on their terminal.
            status: Printable::new(field(status)).to_string(),
            sessions: number(scur),
            queued: number(qcur),
            rate: number(rate),
            response_ms: rtime.map(|i| field(i).parse().unwrap_or(0)),
            check_status: Printable::new(optional(check_status)).to_string(),
            last_change: optional(lastchg).parse().ok(),
        });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_stat_server_rows_are_read_by_column_name() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax,status,lastchg,rate,check_status,\n\
                   www-http,FRONTEND,,,3,5,OPEN,,7,,\n\
                   www-backend,www-17,2,0,4,9,DRAIN,75,6,* L7OK,\n\
                   www-backend,www-18,0,0,0,1,UP 1/2,0,0,INI,\n\
                   www-backend,BACKEND,0,0,4,9,UP,75,6,,\n\n";
        let servers = parse_show_stat(csv).unwrap();
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[2].server, "BACKEND");
        assert_eq!(
            servers[0],
            ServerStat {
                backend: "www-backend".into(),
                server: "www-17".into(),
                status: "DRAIN".into(),
                sessions: 4,
                queued: 2,
                rate: 6,
                response_ms: None,
                check_status: "* L7OK".into(),
                last_change: Some(75),
            }
        );
        assert_eq!(servers[1].status, "UP 1/2");
        assert_eq!(servers[1].check_status, "INI");
        assert!(parse_show_stat("Unknown command\n").is_err());
        let without = parse_show_stat("# pxname,svname,qcur,scur,status,rate\nb,www-1,0,0,UP,0\n");
        let without = without.unwrap();
        assert_eq!(
            (without[0].last_change, without[0].response_ms),
            (None, None)
        );
        let timed =
            parse_show_stat("# pxname,svname,qcur,scur,status,rate,rtime\nb,www-1,0,1,UP,2,350\n");
        assert_eq!(timed.unwrap()[0].response_ms, Some(350));
        let odd = parse_show_stat(
            "# pxname,svname,qcur,scur,status,rate,check_status\nb,www-1,0,0,UP\u{1b}[2J,0,L7OK\u{202e}\n",
        )
        .unwrap();
        assert_eq!(
            (odd[0].status.as_str(), odd[0].check_status.as_str()),
            ("UP\\u{1b}[2J", "L7OK\\u{202e}"),
            "what would act on a terminal is shown escaped"
        );
    }

    #[test]
    fn interactive_answers_are_split_at_the_prompts() {
        // As HAProxy 2.6 answered `prompt`, `add server`, `enable health`,
        // a duplicate `add server`, `set server ... state maint`, `del
        // server` (no empty line before its prompt) and an unknown command.
        let output = "\n> New server registered.\n\n> \n> Already exists a server with the same name in backend.\n\n> \n> Server deleted.\n> Unknown command, but maybe one of the following ones is a better match:\n  quit : disconnect\n\n> ";
        let answers = answers(output, 7).unwrap();
        let trimmed: Vec<&str> = answers.iter().map(|a| a.trim()).collect();
        assert_eq!(
            trimmed[..6],
            [
                "",
                "New server registered.",
                "",
                "Already exists a server with the same name in backend.",
                "",
                "Server deleted."
            ]
        );
        assert!(trimmed[6].starts_with("Unknown command"));
        // Until every answer has come there is nothing to check.
        assert_eq!(super::answers(output, 8), None);
        assert_eq!(super::answers("\n> New server registered.\n", 2), None);
    }

    #[test]
    fn each_step_is_its_commands_with_their_answers_on_success() {
        let add = Step::Add {
            backend: "b".into(),
            server: "www-1".into(),
            address: "10.0.0.1:80".into(),
            options: vec!["check".into(), "agent-check".into()],
        };
        assert_eq!(
            step_commands(&add),
            [
                (
                    "add server b/www-1 10.0.0.1:80 check agent-check".to_string(),
                    "New server registered."
                ),
                ("enable health b/www-1".to_string(), ""),
                ("enable agent b/www-1".to_string(), ""),
                ("enable server b/www-1".to_string(), ""),
            ]
        );
        let remove = Step::Remove {
            backend: "b".into(),
            server: "www-1".into(),
        };
        assert_eq!(
            step_commands(&remove),
            [
                ("set server b/www-1 state maint".to_string(), ""),
                ("del server b/www-1".to_string(), "Server deleted."),
            ]
        );
    }

    #[test]
    fn a_server_short_of_full_health_reads_rising_or_failing() {
        let health = |status: &str, check: &str| {
            ServerStat {
                status: status.into(),
                check_status: check.into(),
                ..ServerStat::default()
            }
            .health()
        };
        // New: HAProxy starts it one check short of full health.
        assert_eq!(health("UP 1/2", "INI"), "rising (UP 1/2)");
        assert_eq!(health("UP 1/3", "* L7OK"), "rising (UP 1/3)");
        assert_eq!(health("UP 1/2", "L4CON"), "failing (UP 1/2)");
        assert_eq!(health("UP 2/3", "L7STS"), "failing (UP 2/3)");
        for plain in ["UP", "DOWN", "DOWN 1/2", "DRAIN", "MAINT", "no check"] {
            assert_eq!(health(plain, "L7OK"), plain);
        }
    }
}
