//! `weir users` and `weir tokens`: who may sign in to the web UI, and the
//! bearer tokens scripts use for its API. Passwords are read from standard
//! input (`--password-stdin`) or `WEIR_PASSWORD`, never from an argument
//! that `ps` would show.

use std::io::BufRead;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use weir_orchestrate::store::{ts, Role};
use weir_pipeline::access;

use crate::orchestrate::{lifecycle, ProjectArg};
use crate::{project_dir, usage, Failure};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user who can sign in to the web UI.
    Add(UserArgs),
    /// Change a user's password (their sessions end).
    Passwd(UserArgs),
    /// Remove a user, their sessions and API tokens.
    Remove(NameArgs),
    /// List the users and their roles.
    List(ProjectArg),
}

#[derive(Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    pub name: String,
    /// viewer (looks), operator (also runs, retries, backfills), admin (also users and tokens).
    #[arg(long, default_value = "viewer")]
    pub role: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    pub name: String,
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an API token acting as a user; it is printed once.
    Create {
        #[command(flatten)]
        p: ProjectArg,
        /// A name to know the token by (to revoke it).
        name: String,
        /// The user the token acts as (its role applies).
        #[arg(long)]
        user: String,
        /// Days until the token stops working; 0: until revoked.
        #[arg(long, value_name = "DAYS", default_value_t = 90)]
        expires_in_days: u32,
    },
    /// List the API tokens (never the tokens themselves).
    List(ProjectArg),
    /// Revoke an API token.
    Revoke(NameArgs),
}

async fn store(p: &ProjectArg) -> Result<std::sync::Arc<weir_orchestrate::store::Store>, Failure> {
    let ws =
        weir_pipeline::Workspace::open_for_history(&project_dir(&p.project)).map_err(lifecycle)?;
    ws.store().await.map_err(lifecycle)
}

fn password(from_stdin: bool) -> Result<String, Failure> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    std::env::var("WEIR_PASSWORD").map_err(|_| {
        usage(anyhow!(
            "give the password on standard input with --password-stdin, or in WEIR_PASSWORD"
        ))
    })
}

pub async fn users(cmd: UsersCommand) -> Result<(), Failure> {
    match cmd {
        UsersCommand::Add(a) => {
            let role = Role::parse(&a.role).ok_or_else(|| {
                usage(anyhow!(
                    "role `{}` is none of viewer, operator, admin",
                    a.role
                ))
            })?;
            let pw = password(a.password_stdin)?;
            let s = store(&a.p).await?;
            access::add_user(&s, &a.name, role, &pw)
                .await
                .map_err(lifecycle)?;
            say!("user {} added ({})", a.name, role.as_str());
        }
        UsersCommand::Passwd(a) => {
            let pw = password(a.password_stdin)?;
            let s = store(&a.p).await?;
            access::set_password(&s, &a.name, &pw)
                .await
                .map_err(lifecycle)?;
            say!("password of {} changed; their sessions ended", a.name);
        }
        UsersCommand::Remove(a) => {
            let s = store(&a.p).await?;
            access::remove_user(&s, &a.name).await.map_err(lifecycle)?;
            say!("user {} removed", a.name);
        }
        UsersCommand::List(p) => {
            let s = store(&p).await?;
            say!("{:<24}  {:<8}  created", "user", "role");
            for u in s.users().await? {
                say!(
                    "{:<24}  {:<8}  {}",
                    u.name,
                    u.role.as_str(),
                    ts(u.created_at)
                );
            }
        }
    }
    Ok(())
}

pub async fn tokens(cmd: TokensCommand) -> Result<(), Failure> {
    match cmd {
        TokensCommand::Create {
            p,
            name,
            user,
            expires_in_days,
        } => {
            let s = store(&p).await?;
            let valid_for =
                (expires_in_days > 0).then(|| chrono::Duration::days(i64::from(expires_in_days)));
            let token = access::create_api_token(&s, &name, &user, valid_for)
                .await
                .map_err(lifecycle)?;
            // The one place a token is shown: not through `say!`, which would hide it.
            println!("{token}");
            let until = valid_for.map_or_else(
                || "until revoked".to_owned(),
                |d| format!("until {}", ts(chrono::Utc::now() + d)),
            );
            eprintln!(
                "API token {name} acts as {user} {until}; it is shown only now: keep it as a secret"
            );
        }
        TokensCommand::List(p) => {
            let s = store(&p).await?;
            say!(
                "{:<24}  {:<24}  {:<24}  {:<24}  last used",
                "token",
                "user",
                "created",
                "expires"
            );
            for t in s.api_tokens().await? {
                say!(
                    "{:<24}  {:<24}  {:<24}  {:<24}  {}",
                    t.name,
                    t.user,
                    ts(t.created_at),
                    match t.expires_at {
                        None => "never".to_owned(),
                        Some(e) if e <= chrono::Utc::now() => format!("{} (expired)", ts(e)),
                        Some(e) => ts(e),
                    },
                    t.last_used_at.map(ts).unwrap_or_default()
                );
            }
        }
        TokensCommand::Revoke(a) => {
            let s = store(&a.p).await?;
            if !s.revoke_api_token(&a.name).await? {
                return Err(usage(anyhow!("there is no API token `{}`", a.name)));
            }
            say!("API token {} revoked", a.name);
        }
    }
    Ok(())
}
