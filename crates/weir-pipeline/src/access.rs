//! Users, sessions and API tokens, as `weir users` and the web UI manage
//! them. Passwords are hashed with Argon2 (the `password-auth` crate, with
//! its recommended parameters); session and API tokens are 256 random bits
//! from the operating system, of which the store keeps only a SHA-256 digest,
//! so a copy of the store lets no one in.

use chrono::{DateTime, Duration, Utc};
use sha2::Digest;
use weir_orchestrate::store::{Role, Session, Store, User};

use crate::LifecycleError;

/// A session lasts this long from sign-in.
pub const SESSION_TTL: Duration = Duration::hours(12);

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

/// A new random token, as 64 hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex(&bytes)
}

/// The digest under which a token is stored.
pub fn digest(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn check_name(name: &str) -> Result<(), LifecycleError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(LifecycleError::usage(format!(
            "user name `{name}`: use 1 to 64 letters, digits, `_ - . @`"
        )))
    }
}

fn check_password(password: &str) -> Result<(), LifecycleError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(LifecycleError::usage(format!(
            "the password is too short: at least {MIN_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Hashing is slow on purpose: off the async threads.
async fn hash(password: &str) -> String {
    let p = password.to_owned();
    tokio::task::spawn_blocking(move || password_auth::generate_hash(p))
        .await
        .expect("hashing a password does not panic")
}

pub async fn add_user(
    store: &Store,
    name: &str,
    role: Role,
    password: &str,
) -> Result<(), LifecycleError> {
    check_name(name)?;
    check_password(password)?;
    let h = hash(password).await;
    if !store.add_user(name, role, &h, Utc::now()).await? {
        return Err(LifecycleError::usage(format!(
            "there is a user `{name}` already; `weir users passwd` changes a password"
        )));
    }
    Ok(())
}

pub async fn set_password(store: &Store, name: &str, password: &str) -> Result<(), LifecycleError> {
    check_password(password)?;
    let h = hash(password).await;
    if !store.set_password(name, &h).await? {
        return Err(no_user(name));
    }
    Ok(())
}

pub async fn remove_user(store: &Store, name: &str) -> Result<(), LifecycleError> {
    if !store.remove_user(name).await? {
        return Err(no_user(name));
    }
    Ok(())
}

fn no_user(name: &str) -> LifecycleError {
    LifecycleError::usage(format!(
        "there is no user `{name}`; `weir users list` lists them"
    ))
}

/// The user these credentials belong to, or `None`. An unknown name costs
/// as much as a wrong password, so timing tells nothing about which names exist.
pub async fn verify_login(
    store: &Store,
    name: &str,
    password: &str,
) -> Result<Option<User>, LifecycleError> {
    let found = store.user_with_hash(name).await?;
    // A hash of a password no one has, checked when the user is unknown.
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let (user, h) = match found {
        Some((u, h)) => (Some(u), h),
        None => (
            None,
            DECOY
                .get_or_init(|| password_auth::generate_hash(random_token()))
                .clone(),
        ),
    };
    let p = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || password_auth::verify_password(p, &h).is_ok())
        .await
        .unwrap_or(false);
    Ok(user.filter(|_| ok))
}

/// A new session for `user`: the token for its cookie and the session.
pub async fn start_session(
    store: &Store,
    user: &User,
    now: DateTime<Utc>,
) -> Result<(String, Session), LifecycleError> {
    let token = random_token();
    let csrf = random_token();
    let expires_at = now + SESSION_TTL;
    store
        .create_session(&digest(&token), &user.name, &csrf, now, expires_at)
        .await?;
    Ok((
        token,
        Session {
            user: user.clone(),
            csrf,
            expires_at,
        },
    ))
}

pub async fn session(store: &Store, token: &str) -> Result<Option<Session>, LifecycleError> {
    Ok(store.session(&digest(token), Utc::now()).await?)
}

pub async fn end_session(store: &Store, token: &str) -> Result<(), LifecycleError> {
    Ok(store.end_session(&digest(token)).await?)
}

/// A new API token named `name` acting as `user` for `valid_for` (`None`:
/// until revoked); the token is shown once.
pub async fn create_api_token(
    store: &Store,
    name: &str,
    user: &str,
    valid_for: Option<chrono::Duration>,
) -> Result<String, LifecycleError> {
    check_name(name)?;
    if store.user_with_hash(user).await?.is_none() {
        return Err(no_user(user));
    }
    let token = format!("weir_{}", random_token());
    if !store
        .add_api_token(
            name,
            user,
            &digest(&token),
            Utc::now(),
            valid_for.map(|d| Utc::now() + d),
        )
        .await?
    {
        return Err(LifecycleError::usage(format!(
            "there is an API token `{name}` already"
        )));
    }
    Ok(token)
}

/// The user a bearer token acts as.
pub async fn token_user(store: &Store, token: &str) -> Result<Option<User>, LifecycleError> {
    Ok(store.api_token_user(&digest(token), Utc::now()).await?)
}
