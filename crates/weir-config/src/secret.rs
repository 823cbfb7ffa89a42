//! Values that must never reach a log, an error message or a `Debug` dump.

use std::fmt;

/// A secret string (password, key, token, or a URL that embeds one).
///
/// `Debug` and `Display` print `***`; the value is only reachable through
/// [`Secret::expose`], which makes every use that could leak it easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
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
        f.write_str("***")
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
        url::Url::parse(self.full.expose())
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
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

/// Replace the password of a URL (and any `password=` query parameter) by `***`.
/// Anything that does not parse as a URL is hidden whole: it may be a
/// key/value connection string with a password in it.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let hide =
                        k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword");
                    (
                        k.into_owned(),
                        if hide {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            if !pairs.is_empty() {
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) if !raw.contains("password") => raw.to_owned(),
        Err(_) => "***".to_owned(),
    }
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
}
