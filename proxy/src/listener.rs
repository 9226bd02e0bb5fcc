//! `NOTIFY pgrst, '…'` (PostgREST's channel, so existing migrations keep
//! working) and the same payloads on `fluxbase`:
//! - `reload schema` (or an empty payload): bump the schema version, so every
//!   backend rebuilds its schema cache on its next request;
//! - `reload config`: replace the pool's connections, so new sessions read
//!   the settings `ALTER ROLE authenticator SET …` changed.
//!
//! One dedicated connection (`application_name` `fluxbase-listener`); lost,
//! it is re-established with backoff (0.1 s doubling to 10 s).
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Reconnect backoff of the proxy's dedicated connections: doubling from
/// the first to the last.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
pub const LAST_RETRY: Duration = Duration::from_secs(10);

pub async fn run(state: Arc<AppState>, mut pg: tokio_postgres::Config, shutdown: CancellationToken) {
    pg.application_name("fluxbase-listener");
    let mut backoff = FIRST_RETRY;
    let mut reconnect = false;
    loop {
        match listen(&state, &pg, &shutdown, reconnect, &mut backoff).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "NOTIFY listener lost"),
        }
        reconnect = true;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(LAST_RETRY);
    }
}

/// Listens until shutdown (`Ok`) or until the connection fails. After a
/// reconnect, notifications sent meanwhile are lost: reload both anyway.
async fn listen(
    state: &AppState,
    pg: &tokio_postgres::Config,
    shutdown: &CancellationToken,
    reconnect: bool,
    backoff: &mut Duration,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = pg.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message? {
                AsyncMessage::Notification(n) => {
                    let _ = tx.send(n.payload().to_string());
                }
                _ => continue,
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    client.batch_execute("LISTEN pgrst; LISTEN fluxbase").await?;
    *backoff = FIRST_RETRY;
    if reconnect {
        client.execute("SELECT fluxbase.reload_schema()", &[]).await?;
        state.reload_config();
    }
    tracing::info!("listening for NOTIFY pgrst / fluxbase");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                driver.abort();
                return Ok(());
            }
            payload = rx.recv() => match payload {
                Some(payload) => match payload.trim() {
                    "" | "reload schema" => {
                        client.execute("SELECT fluxbase.reload_schema()", &[]).await?;
                        tracing::info!("schema cache reload requested by NOTIFY");
                    }
                    "reload config" => {
                        state.reload_config();
                        tracing::info!("configuration reload requested by NOTIFY: pool connections replaced");
                    }
                    other => tracing::debug!(payload = other, "ignored NOTIFY payload"),
                },
                // The driver ended: the connection is gone.
                None => {
                    return match driver.await {
                        Ok(Err(e)) => Err(e),
                        _ => client.batch_execute("SELECT 1").await,
                    }
                }
            }
        }
    }
}

/// A service's own channel on its own connection (`application_name`
/// `fluxbase-<channel>`), for payloads that must not wait behind a schema
/// reload: every payload goes to `on_payload` in arrival order. `ready` is
/// true while LISTEN is in effect, false while reconnecting (payloads sent
/// meanwhile are lost: the service decides what that means). Runs for the
/// life of the process.
pub async fn run_channel(
    mut pg: tokio_postgres::Config,
    channel: &'static str,
    on_payload: impl Fn(&str) + Send + 'static,
    ready: tokio::sync::watch::Sender<bool>,
) {
    pg.application_name(format!("fluxbase-{channel}"));
    let mut backoff = FIRST_RETRY;
    loop {
        let result: Result<(), tokio_postgres::Error> = async {
            let (client, mut connection) = pg.connect(NoTls).await?;
            let listening = async {
                client.batch_execute(&format!("LISTEN {channel}")).await?;
                tracing::info!(channel, "listening for NOTIFY");
                ready.send_replace(true);
                std::future::pending::<Result<(), tokio_postgres::Error>>().await
            };
            let driving = async {
                while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                    if let AsyncMessage::Notification(n) = message? {
                        on_payload(n.payload());
                    }
                }
                Ok(())
            };
            tokio::select! {
                r = listening => r,
                r = driving => r,
            }
        }
        .await;
        // It was listening: the connection broke, it did not fail to open.
        if ready.send_replace(false) {
            backoff = FIRST_RETRY;
        }
        match result {
            Ok(()) => tracing::warn!(channel, "NOTIFY connection closed by the server"),
            Err(e) => {
                tracing::warn!(channel, error = %e, retry_in_ms = backoff.as_millis() as u64, "NOTIFY listener lost")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LAST_RETRY);
    }
}
