//! Live updates over server-sent events. One task per server watches the
//! store's change mark (one small indexed query a second) and wakes every
//! open page through a `watch` channel; a page then fetches what it shows,
//! so nothing polls the whole page and idle pages cost nothing. Log tails
//! follow the file from the byte the page ended at.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::Stream;
use weir_orchestrate::store::Store;

/// How often the store is looked at for changes.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How often a followed log file is looked at.
const TAIL_EVERY: Duration = Duration::from_millis(500);

pub fn watch_changes(store: Arc<Store>) -> tokio::sync::watch::Receiver<String> {
    let (tx, rx) = tokio::sync::watch::channel(String::new());
    tokio::spawn(async move {
        loop {
            match store.change_mark().await {
                Ok(mark) => {
                    tx.send_if_modified(|m| {
                        if *m == mark {
                            false
                        } else {
                            *m = mark;
                            true
                        }
                    });
                }
                Err(e) => tracing::warn!("watching the run history: {e}"),
            }
            if tx.is_closed() {
                break;
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    });
    rx
}

/// `change` events, one each time the history changes.
pub fn changes(
    mut rx: tokio::sync::watch::Receiver<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The current value counts as a change at once, so a page opened in the
    // middle of a run is brought up to date.
    rx.mark_changed();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let mark = rx.borrow_and_update().clone();
        Some((Ok(Event::default().event("change").data(mark)), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `log` events with what is appended to `path` after `offset`, until
/// `done` says the attempt ended and nothing more came.
pub fn tail(
    path: PathBuf,
    offset: u64,
    done: impl Fn() -> futures::future::BoxFuture<'static, bool> + Send + Sync + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let done = Arc::new(done);
    let stream = futures::stream::unfold((offset, false), move |(at, finished)| {
        let path = path.clone();
        let done = done.clone();
        async move {
            if finished {
                return None;
            }
            loop {
                // Look at the end only after reading: what was written just
                // before the attempt ended is sent before `end`.
                let ended = done().await;
                let p = path.clone();
                let read =
                    tokio::task::spawn_blocking(move || crate::logs::appended(&p, at, ended));
                if let Ok(Ok(Some((text, next)))) = read.await {
                    let event = Event::default()
                        .event("log")
                        .id(next.to_string())
                        .data(text);
                    return Some((Ok(event), (next, false)));
                }
                if ended {
                    return Some((Ok(Event::default().event("end").data("")), (at, true)));
                }
                tokio::time::sleep(TAIL_EVERY).await;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
