//! The gateway's JSON, as protobuf's JSON mapping writes it: keys and
//! values in base64, 64-bit integers as strings, fields holding their zero
//! value left out. The requests doproxy makes (compares and writes of a
//! transaction) and the answers it reads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

/// A key and its value, as a range read them.
#[derive(Debug, Deserialize)]
pub struct KeyValue {
    #[serde(deserialize_with = "base64_text")]
    pub key: String,
    #[serde(default, deserialize_with = "base64_bytes")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    pub create_revision: i64,
    /// The lease the key is attached to; 0 for none.
    #[serde(default, deserialize_with = "int64")]
    pub lease: i64,
}

/// The keys under a prefix, all read at one revision.
pub struct Range {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
}

/// A condition a transaction checks before it writes anything.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key exists (its create revision is above zero).
    KeyExists(String),
    /// The key does not exist (its create revision is zero).
    KeyMissing(String),
    /// The key exists and is attached to this lease.
    LeaseIs(String, i64),
    /// The key exists and holds exactly this value.
    ValueIs(String, Vec<u8>),
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Put),
    Delete(String),
    /// Every key starting with this prefix.
    DeletePrefix(String),
    /// Every key from the first (included) to the second (excluded).
    DeleteRange(String, String),
}

/// One key a transaction writes, optionally attached to a lease.
#[derive(Debug, Clone)]
pub struct Put {
    pub key: String,
    pub value: Vec<u8>,
    pub lease: Option<i64>,
}

impl Compare {
    /// The compare as the gateway takes it.
    pub(super) fn to_json(&self) -> Value {
        match self {
            Compare::KeyExists(key) => json!({
                "key": encode(key.as_bytes()),
                "target": "CREATE",
                "result": "GREATER",
                "create_revision": "0",
            }),
            Compare::KeyMissing(key) => json!({
                "key": encode(key.as_bytes()),
                "target": "CREATE",
                "result": "EQUAL",
                "create_revision": "0",
            }),
            Compare::LeaseIs(key, lease) => json!({
                "key": encode(key.as_bytes()),
                "target": "LEASE",
                "result": "EQUAL",
                "lease": lease.to_string(),
            }),
            Compare::ValueIs(key, value) => json!({
                "key": encode(key.as_bytes()),
                "target": "VALUE",
                "result": "EQUAL",
                "value": encode(value),
            }),
        }
    }
}

impl Op {
    /// The write as the gateway takes it, in a transaction's `success` list.
    pub(super) fn to_json(&self) -> Value {
        let delete_range = |from: &str, to: &[u8]| {
            json!({"request_delete_range": {
                "key": encode(from.as_bytes()),
                "range_end": encode(to),
            }})
        };
        match self {
            Op::Put(put) => json!({"request_put": {
                "key": encode(put.key.as_bytes()),
                "value": encode(&put.value),
                "lease": put.lease.unwrap_or(0).to_string(),
            }}),
            Op::Delete(key) => {
                json!({"request_delete_range": {"key": encode(key.as_bytes())}})
            }
            Op::DeletePrefix(prefix) => delete_range(prefix, &prefix_end(prefix)),
            Op::DeleteRange(from, to) => delete_range(from, to.as_bytes()),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub(super) revision: i64,
}

#[derive(Deserialize)]
pub(super) struct RangeResponse {
    pub(super) header: Header,
    #[serde(default)]
    pub(super) kvs: Vec<KeyValue>,
}

#[derive(Deserialize)]
pub(super) struct TxnResponse {
    #[serde(default)]
    pub(super) succeeded: bool,
}

#[derive(Deserialize)]
pub(super) struct LeaseGrantResponse {
    #[serde(rename = "ID", deserialize_with = "int64")]
    pub(super) id: i64,
}

#[derive(Deserialize)]
pub(super) struct LeaseKeepAliveResponse {
    /// Seconds left; absent (zero) when the lease no longer exists.
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(super) ttl: i64,
}

#[derive(Deserialize)]
pub(super) struct LockResponse {
    #[serde(deserialize_with = "base64_text")]
    pub(super) key: String,
}

#[derive(Deserialize)]
pub(super) struct AuthenticateResponse {
    pub(super) token: String,
}

/// One line of a streamed answer: a result, or the error that ended it.
#[derive(Deserialize)]
pub(super) struct StreamLine<T> {
    pub(super) result: Option<T>,
    pub(super) error: Option<StreamError>,
}

#[derive(Deserialize)]
pub(super) struct StreamError {
    pub(super) message: String,
}

#[derive(Deserialize)]
pub(super) struct WatchResponse {
    #[serde(default)]
    pub(super) canceled: bool,
    #[serde(default)]
    pub(super) cancel_reason: String,
    #[serde(default, deserialize_with = "int64")]
    pub(super) compact_revision: i64,
    #[serde(default)]
    pub(super) events: Vec<WatchEvent>,
}

#[derive(Deserialize)]
pub(super) struct WatchEvent {
    /// `DELETE`, or absent for a put (the zero value).
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    pub(super) kv: EventKeyValue,
}

#[derive(Deserialize)]
pub(super) struct EventKeyValue {
    #[serde(deserialize_with = "base64_text")]
    pub(super) key: String,
    #[serde(default, deserialize_with = "base64_bytes")]
    pub(super) value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    pub(super) mod_revision: i64,
}

/// The body of a failed unary request.
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    pub(super) message: String,
}

/// The `range_end` that makes a range cover every key starting with
/// `prefix`: the prefix with its last byte raised by one.
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (or nothing): "\0" means to the end of the keyspace.
    vec![0]
}

/// The gateway's int64 fields, which arrive as JSON strings.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    String::deserialize(deserializer)?
        .parse()
        .map_err(D::Error::custom)
}

/// Bytes as the gateway writes them: standard base64 with padding.
pub(super) fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn base64_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    STANDARD
        .decode(String::deserialize(deserializer)?)
        .map_err(D::Error::custom)
}

fn base64_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let bytes = base64_bytes(deserializer)?;
    String::from_utf8(bytes).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_travel_as_base64() {
        assert_eq!(
            encode(b"/doproxy/web/droplets/"),
            "L2RvcHJveHkvd2ViL2Ryb3BsZXRzLw=="
        );
        let kv: KeyValue = serde_json::from_value(json!({
            "key": "Zm9vYg==", "value": "Zm8=", "create_revision": "7"
        }))
        .unwrap();
        assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("foob", &b"fo"[..]));
        assert_eq!((kv.create_revision, kv.lease), (7, 0));
        let bad = serde_json::from_value::<KeyValue>(json!({"key": "Zm9v!"}));
        assert!(bad.is_err());
    }

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
        assert_eq!(prefix_end(""), [0]);
    }
}
