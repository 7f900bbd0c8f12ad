//! The `notify:` section: webhooks checked into `notify::Hook`s. A hook's
//! URL may hold its secret (Slack's do), so it must not cross the network
//! in clear: https://, or http:// only to this machine, unless
//! allow_insecure_http says nobody else can see that network.

use anyhow::{Result, bail};
use serde::Deserialize;

use super::Values;
use super::checks::in_clear;
use crate::model::{Kind, Severity};
use crate::notify::{Format, Hook};

/// One `notify:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotifyFile {
    url: String,
    format: Option<String>,
    kinds: Option<Vec<String>>,
    min_severity: Option<String>,
    timeout: Option<String>,
    retries: Option<u32>,
}

/// Checks every entry; `insecure_http` is allow_insecure_http.
pub(super) fn hooks(
    section: Vec<NotifyFile>,
    values: &Values,
    insecure_http: bool,
) -> Result<Vec<Hook>> {
    section
        .into_iter()
        .enumerate()
        .map(|(n, entry)| {
            hook(entry, values, insecure_http).map_err(|err| {
                anyhow::anyhow!(
                    "notify entry {} in {} is invalid: {err}",
                    n + 1,
                    values.path.display()
                )
            })
        })
        .collect()
}

fn hook(entry: NotifyFile, values: &Values, insecure_http: bool) -> Result<Hook> {
    let Ok(url) = reqwest::Url::parse(&entry.url) else {
        bail!("url is no URL; write it like https://hooks.example.com/doproxy");
    };
    if !matches!(url.scheme(), "https" | "http") {
        bail!("url must start with https://");
    }
    if !insecure_http && in_clear(url.as_str()) {
        bail!(
            "url is plain http:// to another machine, so the webhook (and any secret in its URL) would cross the network unencrypted; use https://, or set allow_insecure_http: true if nobody else can see that network"
        );
    }
    let format = match entry.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("slack") => Format::Slack,
        Some(other) => bail!("format {other:?} is none of json, slack"),
    };
    let kinds = entry.kinds.unwrap_or_default();
    if let Some(bad) = kinds.iter().find(|kind| !Kind::is_filter(kind)) {
        bail!(
            "kinds names {bad:?}, which is no event kind or family (see docs/events.md), e.g. droplet or heal.refused"
        );
    }
    let min_severity = match entry.min_severity.as_deref() {
        None | Some("info") => Severity::Info,
        Some("warning") => Severity::Warning,
        Some("error") => Severity::Error,
        Some(other) => bail!("min_severity {other:?} is none of info, warning, error"),
    };
    let timeout = values.positive("notify.timeout", entry.timeout, 5)?;
    let retries = entry.retries.unwrap_or(2);
    if retries > 10 {
        bail!("retries is at most 10");
    }
    Ok(Hook {
        url,
        format,
        kinds,
        min_severity,
        timeout,
        retries,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::model::Severity;
    use crate::notify::Format;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, Path::new("/x/d.yml"), |_| None)
    }

    #[test]
    fn webhooks_are_checked_and_default() {
        let config = parse(
            "notify:\n  - url: https://hooks.example.com/x\n  - {url: \"http://127.0.0.1:9/\", format: slack, kinds: [heal, droplet.created], min_severity: warning, timeout: 2s, retries: 0}\n",
        )
        .unwrap();
        let [first, second] = &config.notify[..] else {
            panic!("{:?}", config.notify)
        };
        assert_eq!(
            (first.format, first.min_severity, first.retries),
            (Format::Json, Severity::Info, 2)
        );
        assert_eq!(first.timeout, std::time::Duration::from_secs(5));
        assert_eq!(second.format, Format::Slack);
        assert_eq!(second.kinds, ["heal", "droplet.created"]);
        assert_eq!(second.min_severity, Severity::Warning);
        assert!(config.secrets_in_file, "a webhook URL may hold a secret");

        for (bad, says) in [
            ("http://192.0.2.1/hook", "plain http:// to another machine"),
            ("ftp://example.com/", "must start with https://"),
            ("not a url", "is no URL"),
        ] {
            let err = format!(
                "{:#}",
                parse(&format!("notify:\n  - url: {bad}\n")).unwrap_err()
            );
            assert!(
                err.contains("notify entry 1 in /x/d.yml") && err.contains(says),
                "{err}"
            );
        }
        parse("notify:\n  - url: http://192.0.2.1/hook\nallow_insecure_http: true\n").unwrap();
        for (entry, says) in [
            ("format: xml", "none of json, slack"),
            ("kinds: [droplets]", "no event kind"),
            ("min_severity: loud", "none of info, warning, error"),
            ("retries: 11", "at most 10"),
            ("timeout: 0s", "notify.timeout"),
        ] {
            let text = format!("notify:\n  - url: https://h.example.com/\n    {entry}\n");
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(says), "{entry}: {err}");
        }
    }
}
