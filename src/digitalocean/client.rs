//! The DigitalOcean API v2 client: bearer auth, timeouts, retries for reads and
//! deletes, pagination, and creates that are never blindly repeated.
//!
//! DigitalOcean has no idempotency key, so a create whose answer was lost may
//! or may not have made a droplet. Such a create is followed by a lookup of
//! the droplet's unique name among the pool's tagged droplets before anything
//! is sent again.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::droplet::{CreateRequest, Droplet};
use super::error::ApiError;
use super::pages::list_requests;
use super::retry::RetryPolicy;
use super::values::Token;
use crate::http::BodyError;

/// The largest page the API serves.
pub(super) const PER_PAGE: u32 = 200;
/// How long a create whose answer was lost is looked for before it is sent
/// again: a list may miss a droplet for a while right after its create.
const LOST_CREATE_LOOKUP: Duration = Duration::from_secs(30);
/// The pause between those lookups.
const LOOKUP_PAUSE: Duration = Duration::from_secs(1);

/// The API's part of doproxy.yml: where it is, and how long one request
/// may keep being retried. The token comes apart, asked for only when a
/// client is made.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Without a trailing `/`.
    pub url: String,
    pub retry: RetryPolicy,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api_url: String,
    token: Token,
    retry: RetryPolicy,
    observer: Arc<dyn Observer>,
}

/// Who hears of every request the client sends and every retry, so that
/// the caller can count them; the client keeps no count itself.
pub trait Observer: Send + Sync {
    /// One request and the HTTP status of its answer (None: no answer came).
    fn request(&self, method: &str, status: Option<u16>);
    /// One request about to be sent again after a transient failure.
    fn retry(&self);
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Now,
    /// 404: somebody (or an earlier run) destroyed it already.
    AlreadyGone,
}

/// The droplets a create made, and whether they were found by lookup after
/// the API's answer was lost.
#[derive(Debug)]
pub struct CreateOutcome {
    pub droplets: Vec<Droplet>,
    pub recovered: bool,
}

#[derive(Deserialize)]
struct OneDroplet {
    droplet: Droplet,
}

#[derive(Deserialize)]
pub(super) struct ManyDroplets {
    pub(super) droplets: Vec<Droplet>,
    #[serde(default)]
    pub(super) links: Links,
    #[serde(default)]
    pub(super) meta: Option<Meta>,
}

#[derive(Deserialize)]
pub(super) struct Meta {
    pub(super) total: Option<usize>,
}

#[derive(Default, Deserialize)]
pub(super) struct Links {
    #[serde(default)]
    pub(super) pages: Pages,
}

#[derive(Default, Deserialize)]
pub(super) struct Pages {
    pub(super) next: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

impl Client {
    /// A client of the API `settings` name, telling `observer` of each
    /// request and retry.
    pub fn new(
        settings: &ApiSettings,
        token: Token,
        observer: Arc<dyn Observer>,
    ) -> anyhow::Result<Client> {
        let http = crate::http::api_builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|err| anyhow::anyhow!("cannot set up the HTTPS client: {err}"))?;
        Ok(Client {
            http,
            api_url: settings.url.clone(),
            token,
            retry: settings.retry,
            observer,
        })
    }

    /// Tells the observer of a request sent again by a caller that retries
    /// on its own (an assign only a confirmed leader may send).
    pub(super) fn retrying(&self) {
        self.observer.retry();
    }

    /// Any read, as JSON (doctor's account, SSH key, region, size and image
    /// lookups).
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value, ApiError> {
        self.with_retries(path, || async {
            parse(&self.send(Method::GET, path, query, None).await?)
        })
        .await
    }

    /// A POST whose effect does not depend on how often it arrives
    /// (assigning a reserved IP to a droplet, droplets to a project), so it
    /// is retried like a read.
    pub async fn post_idempotent(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let body = serde_json::to_vec(body).map_err(|err| ApiError::Malformed(err.to_string()))?;
        self.with_retries(path, || async {
            parse(&self.send(Method::POST, path, &[], Some(&body)).await?)
        })
        .await
    }

    /// POSTs once, without retrying, for a caller that checks something
    /// before every attempt (an assign only a confirmed leader may send).
    pub async fn post_once(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let body = serde_json::to_vec(body).map_err(|err| ApiError::Malformed(err.to_string()))?;
        parse(&self.send(Method::POST, path, &[], Some(&body)).await?)
    }

    pub async fn get_droplet(&self, id: u64) -> Result<Droplet, ApiError> {
        let path = format!("/v2/droplets/{id}");
        self.with_retries(&path, || async {
            let body = self.send(Method::GET, &path, &[], None).await?;
            Ok(parse::<OneDroplet>(&body)?.droplet)
        })
        .await
    }

    /// Every droplet tagged `tag` (one paginated list), plus each droplet of
    /// `known` that is missing from it but still exists, looked up by ID: a
    /// list may miss a droplet for a while after its create, and Ruby
    /// DOProxy's droplets carry no tag. A droplet the API no longer knows
    /// (404) is left out, so "gone" is always confirmed by ID.
    pub async fn list_pool(&self, tag: &str, known: &[u64]) -> Result<Vec<Droplet>, ApiError> {
        let mut droplets = self.list_droplets(tag).await?;
        let listed: HashSet<u64> = droplets.iter().map(|d| d.id).collect();
        let missing: Vec<u64> = known
            .iter()
            .copied()
            .filter(|id| !listed.contains(id))
            .collect();
        droplets.extend(self.get_existing(&missing).await?);
        Ok(droplets)
    }

    /// Droplets `ids` as DigitalOcean shows them now, leaving out those it
    /// no longer knows: through one list of the droplets tagged `tag` (plus
    /// a look-up of each not in it) or one look-up each, whichever takes
    /// fewer requests for a pool of about `pool_size` droplets.
    pub async fn look_up(
        &self,
        tag: &str,
        ids: &[u64],
        pool_size: usize,
    ) -> Result<Vec<Droplet>, ApiError> {
        if !list_is_cheaper(ids.len(), pool_size) {
            return self.get_existing(ids).await;
        }
        let mut droplets = self.list_pool(tag, ids).await?;
        let wanted: HashSet<u64> = ids.iter().copied().collect();
        droplets.retain(|d| wanted.contains(&d.id));
        Ok(droplets)
    }

    /// Droplets `ids`, one look-up each, without those the API no longer
    /// knows (404).
    async fn get_existing(&self, ids: &[u64]) -> Result<Vec<Droplet>, ApiError> {
        let mut droplets = Vec::with_capacity(ids.len());
        for &id in ids {
            match self.get_droplet(id).await {
                Ok(droplet) => droplets.push(droplet),
                Err(ApiError::NotFound) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(droplets)
    }

    pub async fn delete_droplet(&self, id: u64) -> Result<Deleted, ApiError> {
        let path = format!("/v2/droplets/{id}");
        self.with_retries(&path, || async {
            match self.send(Method::DELETE, &path, &[], None).await {
                Ok(_) => Ok(Deleted::Now),
                Err(ApiError::NotFound) => Ok(Deleted::AlreadyGone),
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// Deletes droplets `ids` concurrently; each one's outcome, in order.
    pub async fn delete_droplets(&self, ids: &[u64]) -> Vec<(u64, Result<Deleted, ApiError>)> {
        let mut deletes = tokio::task::JoinSet::new();
        for (position, &id) in ids.iter().enumerate() {
            let client = self.clone();
            deletes.spawn(async move { (position, id, client.delete_droplet(id).await) });
        }
        let mut outcomes = Vec::with_capacity(ids.len());
        while let Some(joined) = deletes.join_next().await {
            outcomes.push(joined.expect("a delete task panicked"));
        }
        outcomes.sort_by_key(|(position, _, _)| *position);
        outcomes
            .into_iter()
            .map(|(_, id, outcome)| (id, outcome))
            .collect()
    }

    /// Puts `tag` on droplets `ids` (creating the tag if needed). Both calls
    /// are idempotent, so they are retried like reads.
    pub async fn tag_droplets(&self, tag: &str, ids: &[u64]) -> Result<(), ApiError> {
        let create = serde_json::to_vec(&serde_json::json!({ "name": tag })).expect("static JSON");
        self.with_retries("/v2/tags", || async {
            match self
                .send(Method::POST, "/v2/tags", &[], Some(&create))
                .await
            {
                // 422 means the tag exists already.
                Ok(_) | Err(ApiError::Rejected { status: 422, .. }) => Ok(()),
                Err(err) => Err(err),
            }
        })
        .await?;
        let resources: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({ "resource_id": id.to_string(), "resource_type": "droplet" }))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "resources": resources }))
            .expect("static JSON");
        let path = format!("/v2/tags/{tag}/resources");
        self.with_retries(&path, || async {
            self.send(Method::POST, &path, &[], Some(&body))
                .await
                .map(drop)
        })
        .await
    }

    /// Moves droplets `ids` into project `project_id` (`do:droplet:<id>`
    /// URNs). Assigning again changes nothing, so it is retried like a read.
    pub async fn assign_to_project(&self, project_id: &str, ids: &[u64]) -> Result<(), ApiError> {
        let urns: Vec<String> = ids.iter().map(|id| format!("do:droplet:{id}")).collect();
        let path = format!("/v2/projects/{project_id}/resources");
        self.post_idempotent(&path, &serde_json::json!({ "resources": urns }))
            .await
            .map(drop)
    }

    /// Creates the droplets of `request`, which must carry `tag` and names no
    /// other droplet of that tag has. Retried only when the failed attempt
    /// certainly made nothing, or a lookup by name shows it made nothing.
    pub async fn create_droplets(
        &self,
        request: &CreateRequest<'_>,
        tag: &str,
    ) -> Result<CreateOutcome, ApiError> {
        let body =
            serde_json::to_vec(request).map_err(|err| ApiError::Malformed(err.to_string()))?;
        let started = Instant::now();
        for attempt in 1.. {
            let err = match self
                .send(Method::POST, "/v2/droplets", &[], Some(&body))
                .await
            {
                Ok(answer) => {
                    let droplets = match request.name {
                        Some(_) => vec![parse::<OneDroplet>(&answer)?.droplet],
                        None => parse::<ManyDroplets>(&answer)?.droplets,
                    };
                    return Ok(CreateOutcome {
                        droplets,
                        recovered: false,
                    });
                }
                Err(err) if !err.is_transient() => return Err(err),
                Err(err) => err,
            };
            if !err.had_no_effect() {
                tracing::warn!(
                    "the answer to a droplet create was lost ({err}); looking the droplets up by name for up to {} before sending it again",
                    humantime::format_duration(LOST_CREATE_LOOKUP)
                );
                let found = self.find_created(tag, &request.droplet_names()).await?;
                if !found.is_empty() {
                    return Ok(CreateOutcome {
                        droplets: found,
                        recovered: true,
                    });
                }
            }
            self.wait_before_retry("POST /v2/droplets", err, attempt, started)
                .await?;
        }
        unreachable!("the retry loop only ends by returning")
    }

    /// The droplets named `names` among those tagged `tag`, looked for until
    /// all are found or LOST_CREATE_LOOKUP has passed (a droplet may be
    /// missing from lists for a while right after its create); empty if
    /// none turned up.
    async fn find_created(&self, tag: &str, names: &[&str]) -> Result<Vec<Droplet>, ApiError> {
        let started = Instant::now();
        let names: HashSet<&str> = names.iter().copied().collect();
        loop {
            let found: Vec<Droplet> = self
                .list_droplets(tag)
                .await?
                .into_iter()
                .filter(|d| names.contains(d.name.as_str()))
                .collect();
            if found.len() >= names.len() || started.elapsed() >= LOST_CREATE_LOOKUP {
                return Ok(found);
            }
            tokio::time::sleep(LOOKUP_PAUSE).await;
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the retry budget ends.
    pub(super) async fn with_retries<T, F, Fut>(&self, what: &str, op: F) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let started = Instant::now();
        for attempt in 1.. {
            match op().await {
                Err(err) if err.is_transient() => {
                    self.wait_before_retry(what, err, attempt, started).await?
                }
                result => return result,
            }
        }
        unreachable!("the retry loop only ends by returning")
    }

    /// Sleeps before the next attempt, saying so on stderr, or hands `err`
    /// back when the retry budget is spent.
    async fn wait_before_retry(
        &self,
        what: &str,
        err: ApiError,
        attempt: u32,
        started: Instant,
    ) -> Result<(), ApiError> {
        let Some(delay) = self.retry.next_delay(
            attempt,
            started.elapsed(),
            err.retry_after(),
            fastrand::f64(),
        ) else {
            return Err(err);
        };
        tracing::warn!(
            "{what}: {err}; retrying in {:.1}s (attempt {})",
            delay.as_secs_f64(),
            attempt + 1
        );
        self.observer.retry();
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// One HTTP exchange; the body of a 2xx answer, or the error it means.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}{path}", self.api_url);
        tracing::debug!("{method} {url}");
        let label = method.to_string();
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.token.secret())
            .query(query);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_vec());
        }
        let response = request.send().await;
        self.observer
            .request(&label, response.as_ref().ok().map(|r| r.status().as_u16()));
        let response = response.map_err(|err| ApiError::from_transport(&url, &err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match crate::http::read_body(response).await {
            Ok(bytes) => bytes,
            Err(BodyError::Transport(err)) => return Err(ApiError::from_transport(&url, &err)),
            Err(BodyError::TooLarge) => {
                return Err(ApiError::Malformed(format!(
                    "{} to {label} {url}",
                    crate::http::TOO_LARGE
                )));
            }
        };
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.message)
            .unwrap_or_else(|_| {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            });
        Err(match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::TOO_MANY_REQUESTS => ApiError::RateLimited {
                retry_after: rate_limit_wait(&headers, SystemTime::now()),
            },
            s if s.is_server_error() => ApiError::Server {
                status: s.as_u16(),
                message,
            },
            s => ApiError::Rejected {
                status: s.as_u16(),
                message,
            },
        })
    }
}

/// Whether listing a pool of `pool_size` droplets (a request per page)
/// takes fewer requests than looking up `wanted` droplets one by one.
fn list_is_cheaper(wanted: usize, pool_size: usize) -> bool {
    wanted > list_requests(pool_size)
}

pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::Malformed(err.to_string()))
}

/// How long a 429 asks us to wait: `Retry-After` seconds, else the time until
/// `RateLimit-Reset` (epoch seconds) when no requests remain.
fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    if let Some(seconds) = number("retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    if number("ratelimit-remaining") != Some(0) {
        return None;
    }
    // A reset beyond what the clock holds means "not in this budget".
    let reset = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(number("ratelimit-reset")?));
    Some(reset.map_or(Duration::MAX, |reset| {
        reset.duration_since(now).unwrap_or(Duration::ZERO)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn retry_after_and_rate_limit_reset_are_honoured() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        let reset = headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "1005")]);
        assert_eq!(rate_limit_wait(&reset, now), Some(Duration::from_secs(5)));
        let plenty = headers(&[("ratelimit-remaining", "10"), ("ratelimit-reset", "1005")]);
        assert_eq!(rate_limit_wait(&plenty, now), None);
    }

    #[test]
    fn absurd_rate_limit_headers_cannot_overflow() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let max = u64::MAX.to_string();
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", &max)]), now),
            Some(Duration::from_secs(u64::MAX))
        );
        let reset = headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", &max)]);
        assert_eq!(rate_limit_wait(&reset, now), Some(Duration::MAX));
        let past = headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "0")]);
        assert_eq!(rate_limit_wait(&past, now), Some(Duration::ZERO));
        // ... and the retry policy waits no longer than its budget for them.
        let policy = RetryPolicy::default();
        let wait = policy.next_delay(1, Duration::from_millis(10), Some(Duration::MAX), 0.5);
        assert_eq!(wait, None);
    }

    #[test]
    fn a_few_droplets_are_looked_up_one_by_one_and_many_through_the_pools_list() {
        assert!(!list_is_cheaper(1, 0));
        assert!(!list_is_cheaper(1, 150));
        assert!(list_is_cheaper(2, 150));
        assert!(!list_is_cheaper(3, 450), "three pages");
        assert!(list_is_cheaper(4, 450));
    }
}
