//! Messages sent from SQL (`realtime.send`, rows inserted into
//! `realtime.messages`) and the changes of tables in the publication
//! `supabase_realtime`, read from this proxy's own logical-decoding slot
//! (pgoutput) where `wal_level` is `logical`: `fluxbase.realtime_emit()`
//! writes each message as a transactional logical message, so it is decoded
//! once its transaction commits, never if it rolls back, in commit order,
//! and without the lock `NOTIFY` takes at commit; table changes arrive the
//! same way, whole transactions in commit order, and go to changes.rs a
//! batch (one read) at a time. The slot is temporary: it goes with this
//! connection, and a proxy that dies leaves nothing behind. Elsewhere the
//! messages come by `NOTIFY` (mod.rs's bridge), and there are no table
//! changes.
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;

use super::changes::{self, Decoder};
use super::pgoutput::{self, Message};
use super::Shared;
use crate::listener::{FIRST_RETRY, LAST_RETRY};
use crate::state::AppState;

/// How long an idle feed waits before it asks the slot again: the most a
/// message from SQL waits beyond its commit.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// Decoded messages one read takes at most (whole transactions: a little
/// more): a batch of changes is checked under RLS in one call per table.
const READ_AT_MOST: i32 = 10_000;
/// A read that returned this many messages means a backlog: the next one
/// moves the slot's restart point first (`p_advance`), at most once a
/// `ADVANCE_EVERY`.
const BUSY_READ: usize = 500;
const ADVANCE_EVERY: Duration = Duration::from_millis(200);

pub async fn run(state: Arc<AppState>, shared: Arc<Shared>, mut pg: tokio_postgres::Config) {
    pg.application_name("fluxbase-realtime-feed");
    let slot = format!("fluxbase_rt_{}", shared.instance.replace('-', ""));
    let mut backoff = FIRST_RETRY;
    let mut lost = false;
    loop {
        match read(&state, &shared, &pg, &slot, &mut backoff, lost).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "realtime feed lost"),
        }
        // Messages committed while the slot was gone are lost, as NOTIFYs
        // sent while a listener reconnects are.
        shared.feed_ready.send_replace(false);
        lost = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LAST_RETRY);
    }
}

/// Reads until the connection fails; `Ok` when this database has no
/// logical decoding (the NOTIFY bridge carries the messages then).
async fn read(
    state: &AppState,
    shared: &Shared,
    pg: &tokio_postgres::Config,
    slot: &str,
    backoff: &mut Duration,
    lost: bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = pg.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    let level: String = client.query_one("SELECT current_setting('wal_level')", &[]).await?.get(0);
    if level != "logical" {
        tracing::info!(wal_level = level, "realtime messages from SQL arrive by NOTIFY (wal_level is not logical)");
        shared.feed_ready.send_replace(true);
        driver.abort();
        return Ok(());
    }
    client.execute("SELECT fluxbase.realtime_feed_prepare()", &[]).await?;
    client.execute("SELECT fluxbase.realtime_feed_open($1)", &[&slot]).await?;
    let next = client.prepare("SELECT fluxbase.realtime_feed_changes($1, $2, $3)").await?;
    tracing::info!(slot, "reading realtime messages and table changes by logical decoding");
    shared.feed_ready.send_replace(true);
    if lost {
        shared.changes.feed_resumed();
    }
    *backoff = FIRST_RETRY;
    let mut decoder = Decoder::default();
    let (mut busy, mut advanced) = (false, std::time::Instant::now());
    loop {
        let advance = busy && advanced.elapsed() >= ADVANCE_EVERY;
        if advance {
            advanced = std::time::Instant::now();
        }
        let rows = client.query(&next, &[&slot, &READ_AT_MOST, &advance]).await?;
        busy = rows.len() >= BUSY_READ;
        for row in &rows {
            match pgoutput::decode(row.get::<_, &[u8]>(0)) {
                Ok(Message::Logical { prefix, content }) if prefix == "fluxbase_realtime" => {
                    match std::str::from_utf8(&content) {
                        Ok(envelope) => shared.deliver(state, envelope),
                        Err(_) => tracing::warn!("a realtime message from SQL is not UTF-8"),
                    }
                }
                Ok(Message::Relation(r)) => {
                    if let Err(e) = decoder.relation(&client, r).await {
                        tracing::warn!(error = %e, "a streamed table's columns could not be read");
                    }
                }
                Ok(m) => decoder.message(m),
                Err(e) => tracing::warn!(error = %e, "an undecodable change was skipped"),
            }
        }
        if !decoder.batch.is_empty() {
            changes::dispatch(state, &shared.changes, std::mem::take(&mut decoder.batch)).await;
        }
        if rows.is_empty() {
            tokio::time::sleep(IDLE_POLL).await;
        }
    }
}
