//! Values that must never reach a log, an error message or a `Debug` dump.
//!
//! Two lines of defence:
//! - the types: [`Secret`] and [`SecretUrl`] print `***` in place of the
//!   secret, so formatting them is safe;
//! - [`scrub`]: every string Weir prints, logs or stores (errors, attempt
//!   logs, the run history) passes through it. It hides the value of every
//!   secret this process has seen (each `Secret` and each URL's password is
//!   registered when made) and the user-info part of anything that looks like
//!   a URL, so a secret that reached a message some other way (a driver that
//!   echoes its input, a URL that did not parse) is still hidden.

use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Secrets shorter than this are not scrubbed from free text (hiding every
/// "a" in a message helps nobody); inside URLs they are still hidden.
const MIN_SCRUBBED_LEN: usize = 3;

static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remember `value` so that [`scrub`] hides it from now on.
pub fn register_secret(value: &str) {
    if value.chars().count() < MIN_SCRUBBED_LEN {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    if !known.iter().any(|k| k == value) {
        known.push(value.to_owned());
        // Longest first, so a secret that contains another is hidden whole.
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// `text` with every registered secret and every URL's password (or whole
/// user info, when it cannot tell the two apart) replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    {
        let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
        for k in known.iter() {
            if out.contains(k.as_str()) {
                out = Cow::Owned(out.replace(k.as_str(), MASK));
            }
        }
    }
    if out.contains("://") {
        let scrubbed = redact_urls_in(&out);
        if scrubbed != out {
            out = Cow::Owned(scrubbed);
        }
    }
    out
}

/// Redact the user info of every `scheme://…@` in free text: a URL ends at
/// whitespace or a quote.
fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        // The scheme: the letters, digits, `+ - .` just before `://`.
        let scheme_start = rest[..pos]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(pos, |(i, _)| i);
        out.push_str(&rest[..scheme_start]);
        let after = &rest[pos + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(after.len());
        let url = &rest[scheme_start..pos + 3 + end];
        out.push_str(&redact_url(url));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// An error and its causes as one line (`outer: inner: root`, a cause
/// already in the text said once), scrubbed: the form in which errors are
/// shown and stored.
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    scrub(&out).into_owned()
}

/// A secret string (password, key, token, or a URL that embeds one).
///
/// `Debug` and `Display` print `***`; the value is only reachable through
/// [`Secret::expose`], which makes every use that could leak it easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register_secret(&value);
        Secret(value)
    }

    /// The secret value, for handing to a driver. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// A database or storage URL that may carry a password.
///
/// It displays with the password replaced by `***`, so it can be logged and
/// put in errors; [`SecretUrl::expose`] gives the full URL to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    full: Secret,
    redacted: String,
}

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        let full = url.into();
        let redacted = redact_url(&full);
        if let Some(p) = url_password(&full) {
            register_secret(&p);
            // The form a driver may echo: percent-decoded.
            if let Ok(decoded) = percent_decode(&p) {
                register_secret(&decoded);
            }
        }
        for (_, v) in secret_params(&full) {
            register_secret(&v);
        }
        SecretUrl {
            full: Secret(full),
            redacted,
        }
    }

    pub fn expose(&self) -> &str {
        self.full.expose()
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The password embedded in the URL, if any (for tests that scan output).
    pub fn password(&self) -> Option<String> {
        url_password(self.full.expose())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Where the user info of `scheme://userinfo@host…` is, as byte offsets of
/// the text between `://` and the **last** `@`. Taking the last `@` (and not
/// parsing) is what keeps a password with unescaped `@ : / # ?` whole: a URL
/// parser would end the authority at the first `/` or `#` and take the rest
/// of the password for a host, a port or a path.
fn userinfo_span(raw: &str) -> Option<(usize, usize)> {
    let start = raw.find("://")? + 3;
    let at = raw[start..].rfind('@')? + start;
    Some((start, at))
}

/// The password: what follows the first `:` of the user info.
fn url_password(raw: &str) -> Option<String> {
    let (start, at) = userinfo_span(raw)?;
    let info = &raw[start..at];
    info.split_once(':').map(|(_, p)| p.to_owned())
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// Query parameters that hold secrets (`password=`, `sslpassword=`, tokens).
fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "password"
        || k == "sslpassword"
        || k == "pass"
        || k == "pwd"
        || k.ends_with("token")
        || k.ends_with("secret")
        || k.contains("access_key")
        || k == "sig"
        || k == "signature"
}

/// Each `key=value` that follows a `?` or `&`, with where its value is.
fn params(raw: &str) -> Vec<(&str, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = raw[from..].find(['?', '&']).map(|i| i + from) {
        let start = i + 1;
        let end = raw[start..]
            .find(['&', '#'])
            .map_or(raw.len(), |e| e + start);
        if let Some(eq) = raw[start..end].find('=') {
            out.push((&raw[start..start + eq], start + eq + 1..end));
        }
        from = end;
    }
    out
}

/// `(key, value)` of every secret query parameter (`?password=…&…`).
fn secret_params(raw: &str) -> Vec<(String, String)> {
    params(raw)
        .into_iter()
        .filter(|(k, _)| is_secret_param(k))
        .map(|(k, v)| (k.to_owned(), raw[v].to_owned()))
        .collect()
}

/// `raw` with the value of every secret query parameter replaced by `***`.
fn redact_params(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut copied = 0;
    for (k, v) in params(raw) {
        if is_secret_param(k) {
            out.push_str(&raw[copied..v.start]);
            out.push_str(MASK);
            copied = v.end;
        }
    }
    out.push_str(&raw[copied..]);
    out
}

/// Replace the password of a URL (and any `password=` query parameter) by
/// `***`. The user info is found without parsing (see [`userinfo_span`]), so
/// a URL that does not parse is redacted the same way. Anything that is not
/// a URL is hidden whole when it mentions a password: it may be a key/value
/// connection string.
pub fn redact_url(raw: &str) -> String {
    if !raw.contains("://") {
        return if raw.to_ascii_lowercase().contains("password") {
            MASK.to_owned()
        } else {
            raw.to_owned()
        };
    }
    let mut out = raw.to_owned();
    if let Some((start, at)) = userinfo_span(raw) {
        let info = &raw[start..at];
        if let Some((user, _)) = info.split_once(':') {
            out = format!("{}{user}:{MASK}{}", &raw[..start], &raw[at..]);
        }
    }
    // Secret query parameters, wherever a `?` or `&` starts one: also when
    // an `@` after the query hid where the user info ends.
    redact_params(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_formats() {
        let url =
            SecretUrl::new("postgres://app:hunter2@db:5432/shop?sslmode=require&password=hunter2");
        for shown in [
            format!("{url}"),
            format!("{url:?}"),
            url.redacted().to_owned(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("app"), "{shown}");
            assert!(shown.contains("sslmode=require"), "{shown}");
        }
        assert_eq!(url.password().as_deref(), Some("hunter2"));
        assert!(url.expose().contains("hunter2"));
        assert_eq!(format!("{:?}", Secret::new("k")), "Secret(***)");
    }

    #[test]
    fn key_value_strings_with_password_are_hidden_whole() {
        assert_eq!(redact_url("host=db password=x"), "***");
        assert_eq!(redact_url("host=db"), "host=db");
    }

    /// Regression: a password with unescaped `@ : / #` made the URL fail to
    /// parse (or parse into a wrong host and path), and the whole URL was
    /// then shown as it was.
    #[test]
    fn unparseable_urls_lose_their_password() {
        for (raw, shown) in [
            (
                "postgres://u:Zq!p@ss:w/rd#1@host/db",
                "postgres://u:***@host/db",
            ),
            (
                "postgres://u:12/ss@host:5432/db",
                "postgres://u:***@host:5432/db",
            ),
            ("postgres://u:a?b=c@host/db", "postgres://u:***@host/db"),
            ("postgres://u@host/db", "postgres://u@host/db"),
            (
                "postgres://host/db?password=x&a=1",
                "postgres://host/db?password=***&a=1",
            ),
            ("gs://bucket/prefix", "gs://bucket/prefix"),
            // An `@` after the query: the password parameter is still found.
            (
                "postgres://u@host/db?application_name=a@b&password=hunter2",
                "postgres://u@host/db?application_name=a@b&password=***",
            ),
            (
                "postgres://host/db?password=x&user=me@corp",
                "postgres://host/db?password=***&user=me@corp",
            ),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
            let url = SecretUrl::new(raw);
            assert_eq!(url.to_string(), shown);
        }
        assert_eq!(
            SecretUrl::new("postgres://u:Zq!p@ss:w/rd#1@host/db")
                .password()
                .as_deref(),
            Some("Zq!p@ss:w/rd#1")
        );
    }

    #[test]
    fn scrub_hides_registered_secrets_and_urls_in_free_text() {
        let _ = SecretUrl::new("postgres://u:Xy9%40secret@host/db");
        let text = "error: cannot connect: password Xy9@secret rejected (raw Xy9%40secret)";
        let s = scrub(text);
        assert!(!s.contains("Xy9"), "{s}");
        let s = scrub("failed at mysql://root:t0ps3cr3t/x@10.0.0.1/db, see log");
        assert_eq!(s, "failed at mysql://root:***@10.0.0.1/db, see log");
        let _ = Secret::new("tok-123456");
        assert_eq!(scrub("Bearer tok-123456 refused"), "Bearer *** refused");
        // Short secrets are left in free text (hiding every "a" helps nobody).
        let _ = Secret::new("ab");
        assert_eq!(scrub("a cab"), "a cab");
        assert_eq!(scrub("nothing to hide"), Cow::Borrowed("nothing to hide"));
    }
}
