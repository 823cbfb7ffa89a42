//! Notifications: events (a task failed, retries ran out, a task recovered)
//! are written to the store's outbox in the same transaction as the state
//! change that raised them, then sent by [`dispatch`] and marked sent. An
//! event is keyed by what happened, so raising it again after a restart does
//! not queue it twice; one that was sent is never sent again. Delivery is at
//! least once: a process killed between the POST and recording it sends that
//! event again, so the body carries the key as `id` for receivers to drop
//! repeats.

use std::time::Duration;

use chrono::Utc;
use weir_config::NotifyConfig;

use crate::store::{Event, Store, StoreError};

/// Send every unsent event; returns how many were sent. Each is claimed
/// first (for a minute), so two processes never send the same one; one whose
/// delivery failed is tried again by the next call after that.
pub async fn dispatch(store: &Store, cfg: &NotifyConfig, owner: &str) -> Result<usize, StoreError> {
    if cfg.webhook.is_none() && cfg.command.is_none() {
        return Ok(0);
    }
    let mut sent = 0;
    for e in store
        .claim_events(owner, Duration::from_secs(60), Utc::now())
        .await?
    {
        match deliver(cfg, &e).await {
            Ok(()) => {
                store.mark_sent(&e.key, Utc::now()).await?;
                sent += 1;
            }
            Err(msg) => {
                tracing::warn!(event = %e.key, "notification not delivered (will retry): {msg}");
                store.release_event(&e.key).await?;
            }
        }
    }
    Ok(sent)
}

async fn deliver(cfg: &NotifyConfig, e: &Event) -> Result<(), String> {
    if let Some(url) = &cfg.webhook {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .post(url.expose())
            .header("content-type", "application/json")
            .body(e.body.to_string())
            .send()
            .await
            // reqwest's errors carry the URL; show the redacted one instead.
            .map_err(|err| format!("POST {}: {}", shown(url.expose()), err.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!(
                "POST {}: HTTP {}",
                shown(url.expose()),
                resp.status()
            ));
        }
    }
    if let Some(command) = &cfg.command {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("WEIR_EVENT", &e.kind)
            .env("WEIR_EVENT_RUN_ID", e.run_id.to_string())
            .env("WEIR_EVENT_TASK_ID", e.task_id.clone().unwrap_or_default())
            .env(
                "WEIR_EVENT_TEXT",
                e.body.get("text").and_then(|t| t.as_str()).unwrap_or(""),
            )
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot start the notify command: {err}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(e.body.to_string().as_bytes()).await;
        }
        let status = child.wait().await.map_err(|err| err.to_string())?;
        if !status.success() {
            return Err(format!("the notify command exited with {status}"));
        }
    }
    Ok(())
}

/// A webhook URL as it may be shown: scheme and host only, since services
/// like Slack put the secret in the path.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")),
        Err(_) => "(the webhook URL)".to_owned(),
    }
}
