//! Certificates and maps through HAProxy's runtime API (verified against
//! Debian's 2.6): a renewed certificate goes live with `set ssl cert` and
//! `commit ssl cert`, a new one with `new ssl cert` and `add ssl crt-list`,
//! all without a reload; ACME challenge answers go in and out of a map.
//! What is sent is checked first: a space, `;` or newline in a name, or a
//! blank line in a PEM payload, would make HAProxy run the rest as another
//! admin command.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::runtime::Runtime;

impl Runtime<'_> {
    /// Serves `pem` (chain, then key) from `file`, a certificate HAProxy has
    /// loaded (a bind's `crt`, or one in a crt-list or crt directory),
    /// without a reload; returns once HAProxy shows `serial` for it. A
    /// failed commit is aborted, so HAProxy keeps serving the old one.
    pub async fn replace_certificate(&self, file: &Path, pem: &str, serial: &str) -> Result<()> {
        let file = path_word("certificate file", file)?;
        let payload = pem_payload(pem)?;
        // HAProxy 2.6 keeps one certificate transaction at a time, and a
        // `set ssl cert` for another file while one is open lands in the
        // open one: never start while someone else's is open.
        if let Some(open) = open_transaction(&self.command("show ssl cert").await?)
            && open != file
        {
            bail!(
                "HAProxy has a certificate transaction open for {open} (another doproxy run or an operator); let it finish or end it with `abort ssl cert {open}`, then retry"
            );
        }
        let label = format!("set ssl cert {file}");
        let answer = self
            .exchange(&format!("{label} <<\n{payload}"), &label)
            .await?;
        let answer = answer.trim();
        if answer != format!("Transaction created for certificate {file}!")
            && answer != format!("Transaction updated for certificate {file}!")
        {
            // One opened in between by someone else now holds our payload.
            if let Some(other) = answer
                .strip_prefix("Transaction updated for certificate ")
                .and_then(|rest| rest.strip_suffix('!'))
            {
                self.abort(other).await;
            }
            bail!("HAProxy refused `{label}`: {}", one_line(answer));
        }
        let answer = self.command(&format!("commit ssl cert {file}")).await?;
        if !answer.lines().any(|line| line.trim() == "Success!") {
            self.abort(file).await;
            bail!(
                "HAProxy refused the certificate for {file} (`commit ssl cert`): {}; it keeps serving the previous one",
                one_line(&answer)
            );
        }
        match self.certificate_serial(Path::new(file)).await? {
            Some(live) if live == serial => Ok(()),
            live => bail!(
                "HAProxy serves serial {} from {file} after committing {serial}; check `show ssl cert {file}` on its admin socket",
                live.as_deref().unwrap_or("none")
            ),
        }
    }

    /// Adds a certificate HAProxy has not loaded, to be served from `file`
    /// on the binds using `list` (a crt-list file, or a directory given to
    /// `crt`), without a reload: `new ssl cert`, as `replace_certificate`,
    /// then `add ssl crt-list` unless `list` holds `file` already. (The
    /// built-in template serves one certificate with `crt`; a crt-list of
    /// several is for later.)
    #[cfg(test)]
    pub async fn add_certificate(
        &self,
        list: &Path,
        file: &Path,
        pem: &str,
        serial: &str,
    ) -> Result<()> {
        let list_word = path_word("crt-list", list)?;
        let list_word = list_word.strip_suffix('/').unwrap_or(list_word);
        let file_word = path_word("certificate file", file)?;
        let answer = self.command(&format!("new ssl cert {file_word}")).await?;
        let answer = answer.trim();
        if answer != format!("New empty certificate store '{file_word}'!")
            && answer != format!("Certificate '{file_word}' already exists!")
        {
            bail!(
                "HAProxy refused `new ssl cert {file_word}`: {}",
                one_line(answer)
            );
        }
        self.replace_certificate(file, pem, serial).await?;
        let listed = self
            .command(&format!("show ssl crt-list {list_word}"))
            .await?;
        if crt_list_files(&listed)?.contains(&file_word) {
            return Ok(());
        }
        let command = format!("add ssl crt-list {list_word} {file_word}");
        let answer = self.command(&command).await?;
        if !answer.lines().any(|line| line.trim() == "Success!") {
            bail!("HAProxy refused `{command}`: {}", one_line(&answer));
        }
        Ok(())
    }

    /// The serial of the certificate HAProxy serves from `file`; None when
    /// it has none from there.
    pub async fn certificate_serial(&self, file: &Path) -> Result<Option<String>> {
        let file = path_word("certificate file", file)?;
        let answer = self.command(&format!("show ssl cert {file}")).await?;
        if !answer.starts_with("Filename:") {
            return Ok(None);
        }
        answer
            .lines()
            .find_map(|line| line.strip_prefix("Serial: "))
            .map(|serial| Some(serial.trim().to_string()))
            .with_context(|| format!("HAProxy's `show ssl cert {file}` answer has no Serial line"))
    }

    /// Adds `key` → `value` to the map HAProxy loaded from `map`.
    pub async fn add_map_entry(&self, map: &Path, key: &str, value: &str) -> Result<()> {
        let command = format!(
            "add map {} {} {}",
            path_word("map file", map)?,
            word("map key", key)?,
            word("map value", value)?
        );
        let answer = self.command(&command).await?;
        if !answer.trim().is_empty() {
            bail!("HAProxy refused `{command}`: {}", one_line(&answer));
        }
        Ok(())
    }

    /// Removes every entry for `key` from `map`; false when it had none.
    pub async fn remove_map_entry(&self, map: &Path, key: &str) -> Result<bool> {
        let command = format!(
            "del map {} {}",
            path_word("map file", map)?,
            word("map key", key)?
        );
        match self.command(&command).await?.trim() {
            "" => Ok(true),
            "Key not found." => Ok(false),
            answer => bail!("HAProxy refused `{command}`: {}", one_line(answer)),
        }
    }

    /// The entries (key, value) of `map`, in HAProxy's order.
    #[cfg(test)]
    pub async fn map_entries(&self, map: &Path) -> Result<Vec<(String, String)>> {
        let command = format!("show map {}", path_word("map file", map)?);
        let answer = self.command(&command).await?;
        // Each line: the entry's reference, its key, its value.
        answer
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let mut fields = line.splitn(3, ' ');
                match (fields.next(), fields.next(), fields.next()) {
                    (Some(reference), Some(key), Some(value)) if reference.starts_with("0x") => {
                        Ok((key.to_string(), value.to_string()))
                    }
                    _ => bail!("HAProxy refused `{command}`: {}", one_line(&answer)),
                }
            })
            .collect()
    }

    /// Ends the certificate transaction on `file`; failing, it is left to
    /// time and the operator (the error that led here says more).
    async fn abort(&self, file: &str) {
        if let Err(err) = self.command(&format!("abort ssl cert {file}")).await {
            tracing::warn!("could not abort HAProxy's transaction for {file}: {err:#}");
        }
    }
}

/// `text` if HAProxy's CLI reads it as one word: not empty, and without
/// white space, control characters, `;` (ends a command), `\` and quotes.
fn word<'t>(what: &str, text: &'t str) -> Result<&'t str> {
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ';' | '\\' | '"' | '\''))
    {
        bail!(
            "{what} {text:?} cannot go to HAProxy's admin socket: it must be one word without spaces, `;`, `\\` or quotes"
        );
    }
    Ok(text)
}

fn path_word<'p>(what: &str, path: &'p Path) -> Result<&'p str> {
    let text = path
        .to_str()
        .with_context(|| format!("{what} {} is not UTF-8 text", path.display()))?;
    word(what, text)
}

/// `pem` as the payload of a command: every line a PEM boundary or
/// base64, no blank line (a blank line ends the payload and the rest would
/// run as commands), ending with a newline.
fn pem_payload(pem: &str) -> Result<String> {
    let mut payload = String::new();
    for line in pem.lines().map(|line| line.trim_end_matches('\r')) {
        let boundary = (line.starts_with("-----BEGIN ") || line.starts_with("-----END "))
            && line.ends_with("-----")
            && line
                .trim_matches('-')
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == ' ' || c.is_ascii_digit());
        let base64 = line
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if line.is_empty() || !(boundary || base64) {
            bail!(
                "the certificate for HAProxy holds a line that is not PEM ({:?}); give PEM certificates and a key only",
                line.chars().take(40).collect::<String>()
            );
        }
        payload.push_str(line);
        payload.push('\n');
    }
    if payload.is_empty() {
        bail!("the certificate for HAProxy is empty");
    }
    Ok(payload)
}

/// The file of the certificate transaction `show ssl cert` lists as open.
fn open_transaction(show_ssl_cert: &str) -> Option<String> {
    let mut lines = show_ssl_cert.lines();
    lines.find(|line| line.trim() == "# transaction")?;
    lines
        .next()
        .and_then(|line| line.trim().strip_prefix('*'))
        .map(str::to_string)
}

/// The certificate files of a `show ssl crt-list <list>` answer (each line
/// a file, then its options or SNI filters, if any).
#[cfg(test)]
fn crt_list_files(answer: &str) -> Result<Vec<&str>> {
    let mut lines = answer.lines().filter(|line| !line.trim().is_empty());
    match lines.next() {
        Some(header) if header.starts_with("# ") => {}
        _ => bail!(
            "HAProxy does not know the crt-list: {}; name a crt-list file or a crt directory HAProxy loaded",
            one_line(answer)
        ),
    }
    Ok(lines
        .filter_map(|line| line.split_whitespace().next())
        .collect())
}

/// HAProxy's answer on one line, for an error message.
fn one_line(answer: &str) -> String {
    let lines: Vec<&str> = answer
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        "no answer".to_string()
    } else {
        lines.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_words_reach_the_socket() {
        assert_eq!(word("map key", "AbC-_09.xyz").unwrap(), "AbC-_09.xyz");
        for bad in [
            "",
            "a b",
            "a;show info",
            "a\nshow info",
            "a\\",
            "a\"b",
            "a\tb",
        ] {
            assert!(word("map key", bad).is_err(), "{bad:?}");
        }
        assert!(path_word("map file", Path::new("/etc/haproxy/acme challenge.map")).is_err());
    }

    #[test]
    fn a_pem_payload_has_no_blank_line_and_nothing_but_pem() {
        let pem = "-----BEGIN CERTIFICATE-----\r\nMIIB+/==\r\n-----END CERTIFICATE-----\r\n\
                   -----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(
            pem_payload(pem).unwrap(),
            "-----BEGIN CERTIFICATE-----\nMIIB+/==\n-----END CERTIFICATE-----\n\
             -----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
        );
        for bad in [
            "",
            "-----BEGIN CERTIFICATE-----\nAAAA\n\nshow info\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAA AA\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA;\n-----END CERTIFICATE-----\n",
            "Proc-Type: 4,ENCRYPTED\n",
            "-----BEGIN x; show info-----\n",
        ] {
            assert!(pem_payload(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn show_ssl_cert_tells_the_open_transaction() {
        // As HAProxy 2.6.12 answers, with and without one.
        let open =
            "# transaction\n*/tmp/hx/site.pem\n# filename\n/tmp/hx/other.pem\n/tmp/hx/site.pem\n\n";
        assert_eq!(open_transaction(open).as_deref(), Some("/tmp/hx/site.pem"));
        assert_eq!(open_transaction("# filename\n/tmp/hx/site.pem\n\n"), None);
    }

    #[test]
    fn show_ssl_crt_list_lists_its_files() {
        let answer =
            "# /tmp/hx/list.crtlist\n/tmp/hx/site.pem\n/tmp/hx/other.pem [alpn h2] other.test\n\n";
        assert_eq!(
            crt_list_files(answer).unwrap(),
            ["/tmp/hx/site.pem", "/tmp/hx/other.pem"]
        );
        assert!(crt_list_files("didn't find the specified filename\n\n").is_err());
    }
}
