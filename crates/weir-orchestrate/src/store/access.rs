//! Who may look and act: the web UI's users, their sessions and API tokens,
//! the audit log of what they did, and pausing a DAG's schedule. Secrets are
//! never stored: passwords as Argon2 hashes, session and API tokens as
//! SHA-256 digests (computed by `weir_pipeline::access`).

use chrono::{DateTime, Utc};

use super::{from_ms, ms, Store, StoreError};
use crate::db::{params, Row};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything but secrets; changes nothing.
    Viewer,
    /// Also triggers, retries, clears, marks, backfills, pauses and cancels.
    Operator,
    /// Also manages users and API tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn can_operate(self) -> bool {
        self >= Role::Operator
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub created_at: DateTime<Utc>,
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    /// The token every state-changing form of this session must carry.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One action someone took.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub user: String,
    pub action: String,
    pub run_id: Option<i64>,
    pub task_id: Option<String>,
    pub detail: String,
}

fn user_row(r: &Row, at: usize) -> User {
    User {
        name: r.text(at),
        role: Role::parse(&r.text(at + 1)).unwrap_or(Role::Viewer),
        created_at: from_ms(r.int(at + 2)),
    }
}

impl Store {
    /// Add a user; `false` if the name is taken.
    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = self
            .write(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING",
                params![name, role.as_str(), password_hash, ms(now)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Replace a user's password and end their sessions; `false` if there is no such user.
    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        let n = self
            .write(
                "UPDATE users SET password_hash = $2 WHERE name = $1",
                params![name, password_hash],
            )
            .await?;
        self.write("DELETE FROM sessions WHERE user_name = $1", params![name])
            .await?;
        Ok(n == 1)
    }

    /// Remove a user with their sessions and tokens; `false` if there was none.
    pub async fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        // Children first: SQLite enforces the foreign keys only when asked.
        self.write("DELETE FROM sessions WHERE user_name = $1", params![name])
            .await?;
        self.write("DELETE FROM api_tokens WHERE user_name = $1", params![name])
            .await?;
        let n = self
            .write("DELETE FROM users WHERE name = $1", params![name])
            .await?;
        Ok(n == 1)
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = self
            .read(
                "SELECT name, role, created_at FROM users ORDER BY name",
                params![],
            )
            .await?;
        Ok(rows.iter().map(|r| user_row(r, 0)).collect())
    }

    pub async fn user_count(&self) -> Result<i64, StoreError> {
        let rows = self.read("SELECT COUNT(*) FROM users", params![]).await?;
        Ok(rows.first().map_or(0, |r| r.int(0)))
    }

    /// A user with their password hash, to check a login against.
    pub async fn user_with_hash(&self, name: &str) -> Result<Option<(User, String)>, StoreError> {
        let rows = self
            .read(
                "SELECT name, role, created_at, password_hash FROM users WHERE name = $1",
                params![name],
            )
            .await?;
        Ok(rows.first().map(|r| (user_row(r, 0), r.text(3))))
    }

    pub async fn create_session(
        &self,
        token_hash: &str,
        user: &str,
        csrf: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Expired sessions go as new ones come, so the table stays small.
        self.write(
            "DELETE FROM sessions WHERE expires_at <= $1",
            params![ms(now)],
        )
        .await?;
        self.write(
            "INSERT INTO sessions (token_hash, user_name, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            params![token_hash, user, csrf, ms(now), ms(expires_at)],
        )
        .await
        .map(drop)
    }

    /// The unexpired session with this token digest, with its user.
    pub async fn session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        let rows = self
            .read(
                "SELECT u.name, u.role, u.created_at, s.csrf, s.expires_at
                 FROM sessions s JOIN users u ON u.name = s.user_name
                 WHERE s.token_hash = $1 AND s.expires_at > $2",
                params![token_hash, ms(now)],
            )
            .await?;
        Ok(rows.first().map(|r| Session {
            user: user_row(r, 0),
            csrf: r.text(3),
            expires_at: from_ms(r.int(4)),
        }))
    }

    pub async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.write(
            "DELETE FROM sessions WHERE token_hash = $1",
            params![token_hash],
        )
        .await
        .map(drop)
    }

    /// Record an API token for `user`; `false` if the name is taken by a
    /// token that has not expired.
    pub async fn add_api_token(
        &self,
        name: &str,
        user: &str,
        token_hash: &str,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        // An expired token's name may be given again.
        self.write(
            "DELETE FROM api_tokens WHERE name = $1 AND expires_at IS NOT NULL AND expires_at <= $2",
            params![name, ms(now)],
        )
        .await?;
        let n = self
            .write(
                "INSERT INTO api_tokens (token_hash, name, user_name, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                params![token_hash, name, user, ms(now), expires_at.map(ms)],
            )
            .await?;
        Ok(n == 1)
    }

    /// The user an unexpired API token digest belongs to (and note that it
    /// was used).
    pub async fn api_token_user(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        let rows = self
            .read(
                "SELECT u.name, u.role, u.created_at, t.last_used_at
                 FROM api_tokens t JOIN users u ON u.name = t.user_name
                 WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)",
                params![token_hash, ms(now)],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        // Noted at most once a minute: read-only API traffic should not take
        // the store's write lock on every request.
        if r.opt_int(3).is_none_or(|t| ms(now) - t >= 60_000) {
            self.write(
                "UPDATE api_tokens SET last_used_at = $2 WHERE token_hash = $1",
                params![token_hash, ms(now)],
            )
            .await?;
        }
        Ok(Some(user_row(r, 0)))
    }

    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = self
            .read(
                "SELECT name, user_name, created_at, last_used_at, expires_at FROM api_tokens ORDER BY name",
                params![],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ApiToken {
                name: r.text(0),
                user: r.text(1),
                created_at: from_ms(r.int(2)),
                last_used_at: r.opt_int(3).map(from_ms),
                expires_at: r.opt_int(4).map(from_ms),
            })
            .collect())
    }

    pub async fn revoke_api_token(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .write("DELETE FROM api_tokens WHERE name = $1", params![name])
            .await?;
        Ok(n == 1)
    }

    /// Append to the audit log.
    pub async fn audit(
        &self,
        user: &str,
        action: &str,
        run_id: Option<i64>,
        task_id: Option<&str>,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(
            "INSERT INTO audit (at, user_name, action, run_id, task_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                ms(now),
                user,
                action,
                run_id,
                task_id,
                weir_config::scrub(detail).into_owned()
            ],
        )
        .await
        .map(drop)
    }

    /// The newest `limit` audit entries with an id below `before` (paging back).
    pub async fn audit_log(
        &self,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .read(
                "SELECT id, at, user_name, action, run_id, task_id, detail FROM audit
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
                params![before.unwrap_or(i64::MAX), limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.int(0),
                at: from_ms(r.int(1)),
                user: r.text(2),
                action: r.text(3),
                run_id: r.opt_int(4),
                task_id: r.opt_text(5),
                detail: r.text(6),
            })
            .collect())
    }

    /// Pause or resume the schedule of `dag`: a paused DAG gets no new
    /// scheduled runs (manual runs and backfills still run).
    pub async fn set_paused(
        &self,
        dag: &str,
        paused: bool,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(
            "INSERT INTO dag_controls (dag, paused, changed_by, changed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (dag) DO UPDATE SET paused = excluded.paused,
                 changed_by = excluded.changed_by, changed_at = excluded.changed_at",
            params![dag, i64::from(paused), by, ms(now)],
        )
        .await
        .map(drop)
    }

    pub async fn is_paused(&self, dag: &str) -> Result<bool, StoreError> {
        let rows = self
            .read(
                "SELECT paused FROM dag_controls WHERE dag = $1",
                params![dag],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.int(0) != 0))
    }
}
