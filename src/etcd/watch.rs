//! Watches: every change under a prefix from a given revision, one
//! transaction at a time, read from the gateway's stream of JSON lines.

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::client::{Client, read_body};
use super::error::{EtcdError, error_answer, transport_error};
use super::wire::{StreamLine, WatchResponse, encode, prefix_end};
use crate::http::MAX_ANSWER;

/// A watch on the keys under a prefix, read change by change.
pub struct Watch {
    endpoint: String,
    /// The open event stream; `None` once etcd has ended it.
    stream: Option<reqwest::Response>,
    /// Bytes received but not yet split into lines.
    buffer: LineBuffer,
    /// News received but not yet handed out.
    pending: VecDeque<WatchUpdate>,
}

/// What a watch saw next.
pub enum WatchUpdate {
    Changes(ChangeBatch),
    /// etcd had already compacted the revisions the watch should have
    /// started from, so changes were missed; the watch has ended.
    Compacted {
        compact_revision: i64,
    },
}

/// Every key one transaction wrote or deleted, and its revision.
pub struct ChangeBatch {
    pub revision: i64,
    pub changes: Vec<Change>,
}

/// One key a transaction wrote (its new value) or deleted (None).
pub struct Change {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

impl Client {
    /// Watches every key under `prefix`, starting with the changes made at
    /// `start_revision`.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": encode(prefix.as_bytes()),
            "range_end": encode(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let mut tries = self.endpoint_count();
        let (mut watch, mut cancelled) = loop {
            let opened = match self.open_watch(&body).await {
                Ok(mut watch) => watch.confirm_created().await.map(|c| (watch, c)),
                Err(err) => Err(err),
            };
            match opened {
                Err(EtcdError::NoLeader { endpoint }) if tries > 1 => {
                    self.pass_over(&endpoint);
                    tries -= 1;
                }
                Ok((watch, Some(reason))) if reason.contains("no leader") && tries > 1 => {
                    self.pass_over(&watch.endpoint);
                    tries -= 1;
                }
                opened => break opened?,
            }
        };
        // The gateway checks the token only when a watch starts, and reports
        // an expired one as a cancelled watch rather than a 401.
        if cancelled
            .as_deref()
            .is_some_and(|reason| reason.contains("invalid auth token"))
            && self.logs_in()
        {
            self.authenticate().await?;
            watch = self.open_watch(&body).await?;
            cancelled = watch.confirm_created().await?;
        }
        match cancelled {
            Some(reason) => Err(watch.cancelled(reason)),
            None => Ok(watch),
        }
    }

    async fn open_watch(&self, body: &Value) -> Result<Watch, EtcdError> {
        let (endpoint, response) = self.send("/v3/watch", body, None).await?;
        let status = response.status();
        if !status.is_success() {
            let body = read_body(&endpoint, response).await?;
            return Err(error_answer(&endpoint, status, &body));
        }
        Ok(Watch {
            endpoint,
            stream: Some(response),
            buffer: LineBuffer::default(),
            pending: VecDeque::new(),
        })
    }
}

impl Watch {
    /// The next transaction's changes, or the news that the watch missed
    /// changes to compaction. Waits as long as nothing changes.
    pub async fn next(&mut self) -> Result<WatchUpdate, EtcdError> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Ok(update);
            }
            let response = self.next_response().await?;
            if let Some(reason) = self.absorb(response) {
                return Err(self.cancelled(reason));
            }
        }
    }

    /// Reads etcd's first answer, which confirms the watch; returns the
    /// reason if etcd cancelled it instead.
    async fn confirm_created(&mut self) -> Result<Option<String>, EtcdError> {
        let response = self.next_response().await?;
        Ok(self.absorb(response))
    }

    /// Queues what `response` says; returns the reason if etcd cancelled
    /// the watch for anything but compaction.
    fn absorb(&mut self, response: WatchResponse) -> Option<String> {
        if response.canceled {
            self.stream = None;
            if response.compact_revision == 0 {
                return Some(response.cancel_reason);
            }
            self.pending.push_back(WatchUpdate::Compacted {
                compact_revision: response.compact_revision,
            });
            return None;
        }
        // One response may carry several transactions (when catching up
        // from an old revision), but never splits one.
        for events in response
            .events
            .chunk_by(|a, b| a.kv.mod_revision == b.kv.mod_revision)
        {
            self.pending.push_back(WatchUpdate::Changes(ChangeBatch {
                revision: events[0].kv.mod_revision,
                changes: events
                    .iter()
                    .map(|e| Change {
                        key: e.kv.key.clone(),
                        value: (e.kind != "DELETE").then(|| e.kv.value.clone()),
                    })
                    .collect(),
            }));
        }
        None
    }

    fn cancelled(&self, reason: String) -> EtcdError {
        if reason.contains("user name is empty") {
            return EtcdError::AuthRequired {
                endpoint: self.endpoint.clone(),
            };
        }
        EtcdError::refused(&self.endpoint, format!("watch cancelled: {reason}"))
    }

    async fn next_response(&mut self) -> Result<WatchResponse, EtcdError> {
        loop {
            let line = self.buffer.take_line(MAX_ANSWER).map_err(|()| {
                self.stream = None;
                EtcdError::Malformed {
                    endpoint: self.endpoint.clone(),
                    reason: format!(
                        "a line of its watch stream longer than {} MiB, far beyond any real one",
                        MAX_ANSWER >> 20
                    ),
                }
            })?;
            if let Some(line) = line {
                let line: StreamLine<WatchResponse> =
                    serde_json::from_slice(&line).map_err(|err| EtcdError::Malformed {
                        endpoint: self.endpoint.clone(),
                        reason: err.to_string(),
                    })?;
                return match (line.result, line.error) {
                    (Some(response), _) => Ok(response),
                    (None, error) => Err(EtcdError::refused(
                        &self.endpoint,
                        error.map_or("an empty watch answer".to_string(), |e| e.message),
                    )),
                };
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(EtcdError::Disconnected {
                    endpoint: self.endpoint.clone(),
                    reason: "the watch has ended".to_string(),
                });
            };
            match stream.chunk().await {
                Ok(Some(chunk)) => self.buffer.push(&chunk),
                Ok(None) => {
                    self.stream = None;
                    return Err(EtcdError::Disconnected {
                        endpoint: self.endpoint.clone(),
                        reason: "etcd closed the watch".to_string(),
                    });
                }
                Err(err) => {
                    self.stream = None;
                    return Err(transport_error(&self.endpoint, &err));
                }
            }
        }
    }
}

/// The watch stream read so far, handed out line by line.
#[derive(Default)]
struct LineBuffer {
    bytes: Vec<u8>,
    /// The bytes before this hold no line end: each byte is looked at once,
    /// however many chunks a long line comes in.
    searched: usize,
}

impl LineBuffer {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
    }

    /// The first whole line, taken out; None while it is incomplete, and
    /// an error once more than `max` bytes came without a line end.
    fn take_line(&mut self, max: usize) -> Result<Option<Vec<u8>>, ()> {
        let end = self.bytes[self.searched..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|at| self.searched + at);
        match end {
            Some(end) if end <= max => {
                self.searched = 0;
                Ok(Some(self.bytes.drain(..=end).collect()))
            }
            None if self.bytes.len() <= max => {
                self.searched = self.bytes.len();
                Ok(None)
            }
            _ => {
                *self = LineBuffer::default();
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_are_taken_whole_and_bounded() {
        let mut buffer = LineBuffer::default();
        buffer.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(buffer.take_line(16), Ok(Some(b"{\"a\":1}\n".to_vec())));
        assert_eq!(buffer.take_line(16), Ok(None));
        buffer.push(b":2}\n{}\n");
        assert_eq!(buffer.take_line(16), Ok(Some(b"{\"b\":2}\n".to_vec())));
        assert_eq!(buffer.take_line(16), Ok(Some(b"{}\n".to_vec())));
        let mut endless = LineBuffer::default();
        for _ in 0..4 {
            endless.push(b"xxxx");
            assert_eq!(endless.take_line(16), Ok(None));
        }
        endless.push(b"x");
        assert_eq!(endless.take_line(16), Err(()));
        let mut late = LineBuffer::default();
        late.push(&[vec![b'x'; 20], b"\n".to_vec()].concat());
        assert_eq!(late.take_line(16), Err(()));
    }
}
