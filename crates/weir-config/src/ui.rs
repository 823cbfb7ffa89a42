//! The `ui:` section of `weir.yml`: where the web UI listens and the path
//! it is served under behind a reverse proxy.

use std::net::SocketAddr;

use crate::yaml::{At, Reader};

/// Where `weir up` (and `weir worker --ui`) serve the web UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiConfig {
    /// `127.0.0.1:8080` unless set: loopback, so nothing is exposed by default.
    pub listen: SocketAddr,
    /// The path prefix a reverse proxy forwards (`/weir`), or empty.
    pub base_path: String,
    /// Serve the UI with `weir up` (false: `ui: { enabled: false }`).
    pub enabled: bool,
    /// Mark the session cookie `Secure` (the UI is reached over HTTPS, through
    /// a proxy). Off by default, as loopback is plain HTTP.
    pub secure_cookies: bool,
}

pub const DEFAULT_UI_LISTEN: &str = "127.0.0.1:8080";

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            listen: DEFAULT_UI_LISTEN.parse().expect("a socket address"),
            base_path: String::new(),
            enabled: true,
            secure_cookies: false,
        }
    }
}

pub(crate) const KEYS: &[&str] = &["listen", "base_path", "enabled", "secure_cookies"];

/// `/weir/` and `weir` are `/weir`; `/` is empty.
pub fn normalize_base_path(s: &str) -> Result<String, String> {
    let trimmed = s.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let ok = trimmed.split('/').all(|seg| {
        !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    });
    if !ok || trimmed.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!(
            "`{s}` is not a path prefix like /weir (letters, digits, `- _ .` between slashes)"
        ));
    }
    Ok(format!("/{trimmed}"))
}

pub(crate) fn read(r: &mut Reader<'_>, at: At<'_>) -> UiConfig {
    let mut u = UiConfig::default();
    let m = r.mapping(at, KEYS);
    let get = |k: &str| m.get(k).map(|(n, p)| At { node: n, path: p });
    if let Some(a) = get("listen") {
        if let Some(s) = r.string(a) {
            match s.parse::<SocketAddr>() {
                Ok(addr) => u.listen = addr,
                Err(_) => r.error(
                    a.node,
                    a.path,
                    format!("`{s}` is not an address and port (e.g. 127.0.0.1:8080, 0.0.0.0:8080)"),
                ),
            }
        }
    }
    if let Some(a) = get("base_path") {
        if let Some(s) = r.string(a) {
            match normalize_base_path(&s) {
                Ok(p) => u.base_path = p,
                Err(e) => r.error(a.node, a.path, e),
            }
        }
    }
    if let Some(a) = get("enabled") {
        u.enabled = r.bool(a).unwrap_or(true);
    }
    if let Some(a) = get("secure_cookies") {
        u.secure_cookies = r.bool(a).unwrap_or(false);
    }
    u
}
