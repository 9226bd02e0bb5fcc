//! Postgres changes: the `postgres_changes` bindings of this proxy's
//! channels, and the delivery of each committed change of a table in the
//! publication `supabase_realtime` to the channels that may see it, in
//! commit order, in Supabase Realtime's payload shape.
//!
//! feed.rs decodes the slot's pgoutput messages (pgoutput.rs) into a batch
//! of changes (`Decoder`), then `dispatch` delivers the batch:
//! 1. bindings are matched by schema, table and event, and each distinct
//!    filter is evaluated once per change (filter.rs);
//! 2. subscribers are grouped by (role, claims) and, per table of the batch,
//!    one call of `fluxbase.realtime_visible` checks the whole batch for
//!    every group: one statement per group as that group, under the
//!    table's policies (service_role skips it; tables without RLS only need
//!    the role's SELECT privilege). Deletes are not checked (the row is
//!    gone), as on Supabase: with RLS on, their `old_record` carries only
//!    the primary key;
//! 3. the payload (`data`) is written once per change and queued to each
//!    channel with that channel's binding ids.
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::filter::{Filter, Kind};
use super::hub::{Outgoing, SocketId};
use super::pgoutput::{self, Value as Cell};
use crate::jwt::Caller;
use crate::state::AppState;

const INSERT: u8 = 1;
const UPDATE: u8 = 2;
const DELETE: u8 = 4;

/// A binding of a channel, as the join asked for it.
pub struct Binding {
    pub id: u32,
    events: u8,
    /// `None`: every schema (`*`).
    schema: Option<String>,
    /// `None`: every table of the schema.
    table: Option<String>,
    filter: Option<Arc<Filter>>,
    /// `select`: the columns `record` and `old_record` are trimmed to.
    select: Option<Arc<[String]>>,
    /// The binding as the join sent it, to check it again for a new role.
    request: Value,
}

/// Who a channel's changes are checked for.
struct Viewer {
    /// Role and claims (without `exp`, `iat`, `nbf`) as one text: channels
    /// with the same key are checked together.
    group: Arc<str>,
    claims: Arc<Value>,
    /// service_role: sees every row.
    bypass: bool,
    expires: Option<Instant>,
}

impl Viewer {
    fn of(caller: &Caller, expires: Option<Instant>) -> Viewer {
        let mut claims = match &*caller.claims {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        for volatile in ["exp", "iat", "nbf"] {
            claims.remove(volatile);
        }
        let claims = Value::Object(claims);
        Viewer {
            group: claims.to_string().into(),
            bypass: caller.role() == "service_role",
            claims: Arc::new(claims),
            expires,
        }
    }
}

/// A channel with `postgres_changes` bindings.
pub struct Channel {
    vsn: super::protocol::Vsn,
    topic: Arc<str>,
    join_ref: Option<Arc<str>>,
    tx: mpsc::Sender<Outgoing>,
    kill: CancellationToken,
    bindings: Vec<Binding>,
    viewer: Mutex<Viewer>,
    /// Left (unsubscribed): nothing more is queued to it.
    closed: std::sync::atomic::AtomicBool,
    /// `Some(n)` while its socket's queue is too full to take changes: `n`
    /// were dropped, and it is told so once the queue has room again.
    lag: Mutex<Option<u64>>,
}

/// The channels of this proxy with `postgres_changes` bindings.
#[derive(Default)]
pub struct Registry {
    channels: Mutex<HashMap<(SocketId, String), Arc<Channel>>>,
    next_id: AtomicU32,
    /// One parsed filter per distinct (schema, table, filter text).
    filters: Mutex<HashMap<(String, String, String), std::sync::Weak<Filter>>>,
}

/// A binding as the join asked for it, validated.
#[derive(Debug)]
pub struct Requested {
    pub event: String,
    pub schema: String,
    pub table: Option<String>,
    pub filter: Option<String>,
    /// realtime-js's `select`: a column list.
    pub select: Option<Vec<String>>,
}

impl Requested {
    /// `config.postgres_changes[i]`; an error is the join's refusal reason.
    pub fn parse(v: &Value) -> Result<Requested, String> {
        let text = |k: &str| match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{k}` must be a string")),
        };
        let event = text("event")?.ok_or("`event` is required (INSERT, UPDATE, DELETE or *)")?;
        if events(&event).is_none() {
            return Err(format!("unknown event `{event}`: expected INSERT, UPDATE, DELETE or *"));
        }
        let schema = text("schema")?.filter(|s| !s.is_empty()).ok_or("`schema` is required")?;
        let table = text("table")?.filter(|s| !s.is_empty() && s != "*");
        let filter = text("filter")?.filter(|s| !s.is_empty());
        if filter.is_some() && (table.is_none() || schema == "*") {
            return Err("a filter needs a table".into());
        }
        let select = match v.get("select") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|c| c.as_str().map(str::to_string).ok_or("`select` must be a list of column names"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err("`select` must be a list of column names".into()),
        };
        if select.is_some() && (table.is_none() || schema == "*") {
            return Err("a column list (`select`) needs a table".into());
        }
        Ok(Requested { event, schema, table, filter, select })
    }

    /// The join reply's entry, echoing what the client sent (realtime-js
    /// compares them) with the id it is to match payloads by.
    pub fn reply(&self, id: u32) -> Value {
        let mut r = json!({ "id": id, "event": self.event, "schema": self.schema });
        if let Some(t) = &self.table {
            r["table"] = Value::String(t.clone());
        }
        if let Some(f) = &self.filter {
            r["filter"] = Value::String(f.clone());
        }
        if let Some(s) = &self.select {
            r["select"] = json!(s);
        }
        r
    }
}

fn events(event: &str) -> Option<u8> {
    Some(match event.to_ascii_uppercase().as_str() {
        "*" => INSERT | UPDATE | DELETE,
        "INSERT" => INSERT,
        "UPDATE" => UPDATE,
        "DELETE" => DELETE,
        _ => return None,
    })
}

impl Registry {
    /// A binding with a new id, its filter parsed (and shared with equal
    /// filters) against `columns`.
    pub fn binding(&self, r: &Requested, columns: Option<&HashMap<String, String>>) -> Result<Binding, String> {
        let filter = match &r.filter {
            None => None,
            Some(text) => {
                let key = (r.schema.clone(), r.table.clone().unwrap_or_default(), text.clone());
                let mut filters = self.filters.lock().unwrap_or_else(|e| e.into_inner());
                match filters.get(&key).and_then(std::sync::Weak::upgrade) {
                    Some(f) => Some(f),
                    None => {
                        let f = Arc::new(
                            Filter::parse(text, columns).map_err(|e| format!("Error parsing `filter` params: {e}"))?,
                        );
                        filters.retain(|_, w| w.strong_count() > 0);
                        filters.insert(key, Arc::downgrade(&f));
                        Some(f)
                    }
                }
            }
        };
        if let (Some(select), Some(columns)) = (&r.select, columns) {
            if let Some(unknown) = select.iter().find(|c| !columns.contains_key(*c)) {
                return Err(format!("column `{unknown}` of `select` does not exist"));
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) % 100_000_000 + 1;
        Ok(Binding {
            id,
            events: events(&r.event).unwrap_or(0),
            schema: (r.schema != "*").then(|| r.schema.clone()),
            table: r.table.clone(),
            filter,
            select: r.select.as_ref().map(|s| s.clone().into()),
            request: r.reply(id),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &self,
        socket: SocketId,
        vsn: super::protocol::Vsn,
        key: &str,
        topic: &str,
        join_ref: Option<Arc<str>>,
        tx: mpsc::Sender<Outgoing>,
        kill: CancellationToken,
        bindings: Vec<Binding>,
        caller: &Caller,
        expires: Option<Instant>,
    ) {
        let channel = Channel {
            vsn,
            topic: topic.into(),
            join_ref,
            tx,
            kill,
            bindings,
            viewer: Mutex::new(Viewer::of(caller, expires)),
            closed: false.into(),
            lag: Mutex::new(None),
        };
        self.lock().insert((socket, key.to_string()), Arc::new(channel));
    }

    pub fn unsubscribe(&self, socket: SocketId, key: &str) {
        if let Some(c) = self.lock().remove(&(socket, key.to_string())) {
            c.closed.store(true, Ordering::Release);
        }
    }

    /// A new token for the channel: its changes are checked as its caller
    /// from now on (a batch being checked for the previous caller is not
    /// delivered to it unless the claims are the same). False if the
    /// channel has no bindings.
    pub fn set_caller(&self, socket: SocketId, key: &str, caller: &Caller, expires: Option<Instant>) -> bool {
        match self.lock().get(&(socket, key.to_string())) {
            Some(c) => {
                *c.viewer.lock().unwrap_or_else(|e| e.into_inner()) = Viewer::of(caller, expires);
                true
            }
            None => false,
        }
    }

    /// The channel's bindings as its join sent them.
    pub fn requested(&self, socket: SocketId, key: &str) -> Vec<Value> {
        let channels = self.lock();
        let Some(c) = channels.get(&(socket, key.to_string())) else { return vec![] };
        c.bindings
            .iter()
            .map(|b| {
                let mut r = b.request.clone();
                if let Some(o) = r.as_object_mut() {
                    o.remove("id");
                }
                r
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SocketId, String), Arc<Channel>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The feed was lost and is back: changes committed meanwhile were not
    /// delivered, and every channel is told so (a `system` message) rather
    /// than left to believe it saw everything.
    pub fn feed_resumed(&self) {
        for c in self.lock().values() {
            let channel = c.topic.strip_prefix("realtime:").unwrap_or(&c.topic);
            let system = json!({ "extension": "postgres_changes", "status": "error", "channel": channel,
                "message": "PostgresChangesInterrupted: the change feed was interrupted (the database restarted or \
                            the connection was lost); changes committed meanwhile were not delivered" });
            let frame = super::protocol::encode(c.vsn, c.join_ref.as_deref(), None, &c.topic, "system", &system);
            if c.tx.try_send(Outgoing::Text(frame)).is_err() {
                c.kill.cancel();
            }
        }
    }
}

/// A column of a streamed table.
struct Column {
    name: String,
    /// How its values are written in JSON: 'b', 'n', 'j' or 's'.
    json: u8,
    kind: Kind,
}

/// A streamed table, from pgoutput's relation message and
/// `fluxbase.realtime_relation`.
pub struct Relation {
    id: u32,
    schema: String,
    table: String,
    columns: Vec<Column>,
    /// Positions of the primary key's columns.
    pk: Vec<usize>,
    /// Row level security was on when the table was last read (a batch
    /// that is checked asks again).
    rls: bool,
    /// `[{name, type}]`, written once.
    columns_json: String,
    /// The relation message it was made from, to tell a changed table.
    source: pgoutput::Relation,
}

pub struct Change {
    relation: Arc<Relation>,
    event: u8,
    commit_time: i64,
    new: Option<Vec<Cell>>,
    old: Option<Vec<Cell>>,
}

/// The feed's decoding state: tables seen, the current transaction's commit
/// time, the changes decoded since the last dispatch.
#[derive(Default)]
pub struct Decoder {
    relations: HashMap<u32, Arc<Relation>>,
    commit_time: i64,
    pub batch: Vec<Change>,
}

impl Decoder {
    /// A relation message: kept as it is unless the table changed, in
    /// which case its key and types are read again.
    pub async fn relation(&mut self, client: &tokio_postgres::Client, r: pgoutput::Relation) -> Result<(), String> {
        if self.relations.get(&r.id).is_some_and(|known| known.source == r) {
            return Ok(());
        }
        let row = client
            .query_one("SELECT fluxbase.realtime_relation($1::oid)", &[&r.id])
            .await
            .map_err(|e| e.to_string())?;
        let meta: Value = row.get(0);
        let pk_names: Vec<&str> = meta["pk"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut listed = Vec::with_capacity(r.columns.len());
        let columns: Vec<Column> = r
            .columns
            .iter()
            .map(|c| {
                let t = &meta["types"][&c.name];
                let typname = t[0].as_str().unwrap_or("text");
                listed.push(json!({ "name": c.name, "type": typname }));
                let json = t[1].as_str().and_then(|k| k.bytes().next()).unwrap_or(b's');
                Column { kind: Kind::of(typname), name: c.name.clone(), json }
            })
            .collect();
        let pk = pk_names.iter().filter_map(|n| columns.iter().position(|c| c.name == *n)).collect();
        let relation = Relation {
            id: r.id,
            schema: r.schema.clone(),
            table: r.table.clone(),
            columns,
            pk,
            rls: meta["rls"].as_bool() != Some(false),
            columns_json: Value::Array(listed).to_string(),
            source: r,
        };
        self.relations.insert(relation.id, Arc::new(relation));
        Ok(())
    }

    /// Adds a decoded message to the batch (changes), or notes its commit time.
    pub fn message(&mut self, m: pgoutput::Message) {
        use pgoutput::Message::*;
        let (relation, event, new, old) = match m {
            Begin { commit_time } => return self.commit_time = commit_time,
            Insert { relation, new } => (relation, INSERT, Some(new), None),
            Update { relation, old, new } => (relation, UPDATE, Some(new), old),
            Delete { relation, old } => (relation, DELETE, None, Some(old)),
            _ => return,
        };
        let Some(relation) = self.relations.get(&relation).cloned() else {
            return tracing::warn!(relation, "a change of a table whose relation message was not seen");
        };
        self.batch.push(Change { relation, event, commit_time: self.commit_time, new, old });
    }
}

/// `µs since 2000-01-01` as Supabase writes `commit_timestamp`:
/// `2024-05-01T12:00:00.123Z`.
fn timestamp(pg_micros: i64) -> String {
    let micros = pg_micros + 946_684_800_000_000;
    let (secs, ms) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000) / 1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A value as JSON: numbers and booleans as such, JSON as JSON, the rest
/// as the text Postgres prints (realtime-js converts by `columns`' types).
fn write_value(out: &mut String, json_kind: u8, text: &str) {
    match json_kind {
        b'b' => out.push_str(if text == "t" { "true" } else { "false" }),
        b'n' if text.parse::<f64>().is_ok_and(f64::is_finite) && !text.contains(['I', 'N', 'i', 'n']) => {
            out.push_str(text)
        }
        b'j' if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => out.push_str(text),
        _ => out.push_str(&Value::String(text.to_string()).to_string()),
    }
}

/// `{column: value}` of a tuple; `only`: the positions to keep.
fn write_record(out: &mut String, rel: &Relation, tuple: &[Cell], fallback: Option<&[Cell]>, only: Option<&[usize]>) {
    out.push('{');
    let mut first = true;
    for (i, col) in rel.columns.iter().enumerate() {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let cell = match tuple.get(i) {
            Some(Cell::Unchanged) => fallback.and_then(|f| f.get(i)).unwrap_or(&Cell::Unchanged),
            Some(c) => c,
            None => continue,
        };
        if matches!(cell, Cell::Unchanged) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&Value::String(col.name.clone()).to_string());
        out.push(':');
        match cell {
            Cell::Text(t) => write_value(out, col.json, t),
            _ => out.push_str("null"),
        }
    }
    out.push('}');
}

impl Change {
    /// The payload's `data`, as Supabase Realtime sends it; `select`: the
    /// columns `record` and `old_record` keep (a binding's column list).
    fn data(&self, rls: bool, select: Option<&[String]>) -> String {
        let rel = &self.relation;
        let mut out = String::with_capacity(256);
        out.push_str("{\"schema\":");
        out.push_str(&Value::String(rel.schema.clone()).to_string());
        out.push_str(",\"table\":");
        out.push_str(&Value::String(rel.table.clone()).to_string());
        out.push_str(",\"commit_timestamp\":\"");
        out.push_str(&timestamp(self.commit_time));
        out.push_str("\",\"type\":\"");
        out.push_str(match self.event {
            INSERT => "INSERT",
            UPDATE => "UPDATE",
            _ => "DELETE",
        });
        out.push_str("\",\"columns\":");
        out.push_str(&rel.columns_json);
        let selected: Option<Vec<usize>> = select
            .map(|names| (0..rel.columns.len()).filter(|i| names.iter().any(|n| *n == rel.columns[*i].name)).collect());
        if let Some(new) = &self.new {
            out.push_str(",\"record\":");
            write_record(&mut out, rel, new, self.old.as_deref(), selected.as_deref());
        }
        if self.event != INSERT {
            out.push_str(",\"old_record\":");
            match &self.old {
                // A delete's row cannot be checked against policies: with
                // RLS on only its key is sent, as Supabase does.
                Some(old) if self.event == DELETE && rls => {
                    let key: Vec<usize> =
                        rel.pk.iter().copied().filter(|i| selected.as_ref().is_none_or(|s| s.contains(i))).collect();
                    write_record(&mut out, rel, old, None, Some(&key))
                }
                Some(old) => write_record(&mut out, rel, old, None, selected.as_deref()),
                None => out.push_str("{}"),
            }
        }
        out.push_str(",\"errors\":null}");
        out
    }

    /// The values filters read: the new row, or a delete's old one.
    fn cells(&self) -> &[Cell] {
        self.new.as_deref().or(self.old.as_deref()).unwrap_or(&[])
    }

    fn passes(&self, filter: &Filter) -> bool {
        let rel = &self.relation;
        let cells = self.cells();
        filter.passes(|name| {
            let i = rel.columns.iter().position(|c| c.name == name)?;
            match cells.get(i)? {
                Cell::Null => Some((None, rel.columns[i].kind)),
                Cell::Text(t) => Some((Some(t.as_str()), rel.columns[i].kind)),
                Cell::Unchanged => match self.old.as_deref().and_then(|o| o.get(i)) {
                    Some(Cell::Text(t)) => Some((Some(t.as_str()), rel.columns[i].kind)),
                    _ => None,
                },
            }
        })
    }

    /// `{pk column: text}` of the row, for the visibility check.
    fn key(&self) -> Option<Value> {
        let rel = &self.relation;
        let cells = self.new.as_deref()?;
        let mut key = Map::new();
        for &i in &rel.pk {
            match cells.get(i)? {
                Cell::Text(t) => key.insert(rel.columns[i].name.clone(), Value::String(t.clone())),
                _ => return None,
            };
        }
        (!rel.pk.is_empty()).then_some(Value::Object(key))
    }
}

/// What a channel gets of one change: the ids of its bindings that want
/// it, and their column list (bindings with different lists get a frame each).
type Wanted = (usize, Select, Arc<[u32]>);
/// A binding's column list (`None`: every column).
type Select = Option<Arc<[String]>>;

/// One channel's part in a batch: the changes it gets, with its binding ids.
struct Recipient {
    channel: Arc<Channel>,
    /// Index into the batch's groups; `None`: sees every row (service_role).
    group: Option<usize>,
    /// In commit order.
    wants: Vec<Wanted>,
}

/// The TOAST-ed values an UPDATE did not change are not in the WAL (pgoutput
/// sends `u`) unless the old row is (`REPLICA IDENTITY FULL`): they are read
/// from the table by primary key, one call per table of the batch that has
/// such updates, and put in the change. A row deleted since keeps them
/// missing (left out of `record`, as before).
async fn fill_unchanged(state: &AppState, batch: &mut [Change]) {
    let missing = |c: &Change, i: usize| {
        matches!(c.new.as_deref().and_then(|n| n.get(i)), Some(Cell::Unchanged))
            && !matches!(c.old.as_deref().and_then(|o| o.get(i)), Some(Cell::Text(_) | Cell::Null))
    };
    let mut tables: Vec<Arc<Relation>> = vec![];
    for c in batch.iter() {
        if c.event == UPDATE
            && (0..c.relation.columns.len()).any(|i| missing(c, i))
            && !tables.iter().any(|r| Arc::ptr_eq(r, &c.relation))
        {
            tables.push(c.relation.clone());
        }
    }
    for rel in tables {
        let at: Vec<usize> = (0..batch.len())
            .filter(|j| Arc::ptr_eq(&batch[*j].relation, &rel) && batch[*j].event == UPDATE)
            .filter(|j| (0..rel.columns.len()).any(|i| missing(&batch[*j], i)))
            .collect();
        let columns: Vec<usize> =
            (0..rel.columns.len()).filter(|i| at.iter().any(|j| missing(&batch[*j], *i))).collect();
        let names: Vec<&str> = columns.iter().map(|i| rel.columns[*i].name.as_str()).collect();
        let (keyed, keys): (Vec<usize>, Vec<Value>) = at.iter().filter_map(|j| Some((*j, batch[*j].key()?))).unzip();
        let sql = "SELECT idx, vals FROM fluxbase.realtime_unchanged($1::oid, $2::jsonb, $3::text[])";
        let rows = match super::query(state, sql, &[&rel.id, &Value::Array(keys), &names]).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, relation = rel.id, "unchanged TOAST-ed values not read: left out");
                continue;
            }
        };
        for row in rows {
            let (idx, vals): (i32, Vec<Option<String>>) = (row.get(0), row.get(1));
            let Some(&j) = keyed.get(idx as usize - 1) else { continue };
            let Some(new) = batch[j].new.as_mut() else { continue };
            for (i, v) in columns.iter().zip(vals) {
                if matches!(new.get(*i), Some(Cell::Unchanged)) {
                    new[*i] = v.map_or(Cell::Null, Cell::Text);
                }
            }
        }
    }
}

/// Delivers a batch of changes, in order, to the channels that may see them.
pub async fn dispatch(state: &AppState, registry: &Registry, mut batch: Vec<Change>) {
    let channels: Vec<Arc<Channel>> = registry.lock().values().cloned().collect();
    if channels.is_empty() || batch.is_empty() {
        return;
    }
    fill_unchanged(state, &mut batch).await;
    let now = Instant::now();
    // The batch's tables, and each change's table among them.
    let mut relations: Vec<Arc<Relation>> = vec![];
    let table_of: Vec<usize> = batch
        .iter()
        .map(|c| match relations.iter().position(|r| Arc::ptr_eq(r, &c.relation)) {
            Some(t) => t,
            None => {
                relations.push(c.relation.clone());
                relations.len() - 1
            }
        })
        .collect();
    // 1. bindings, events and filters (each distinct filter once a change).
    let mut groups: Vec<(Arc<str>, Arc<Value>)> = vec![];
    let mut recipients = vec![];
    let mut verdicts: HashMap<(usize, usize), bool> = HashMap::new();
    for channel in channels {
        let (group, claims, bypass, live) = {
            let v = channel.viewer.lock().unwrap_or_else(|e| e.into_inner());
            (v.group.clone(), v.claims.clone(), v.bypass, v.expires.is_none_or(|at| at > now))
        };
        if !live {
            continue;
        }
        // Which of the channel's bindings name each table of the batch.
        let on_table: Vec<Vec<&Binding>> = relations
            .iter()
            .map(|rel| {
                channel
                    .bindings
                    .iter()
                    .filter(|b| {
                        b.schema.as_deref().is_none_or(|s| s == rel.schema)
                            && b.table.as_deref().is_none_or(|t| t == rel.table)
                    })
                    .collect()
            })
            .collect();
        if on_table.iter().all(Vec::is_empty) {
            continue;
        }
        let mut wants: Vec<Wanted> = vec![];
        for (i, change) in batch.iter().enumerate() {
            let mut by_select: Vec<(Select, Vec<u32>)> = vec![];
            for b in &on_table[table_of[i]] {
                if b.events & change.event != 0
                    && b.filter.as_ref().is_none_or(|f| {
                        *verdicts.entry((i, Arc::as_ptr(f) as usize)).or_insert_with(|| change.passes(f))
                    })
                {
                    match by_select.iter_mut().find(|(s, _)| *s == b.select) {
                        Some((_, ids)) => ids.push(b.id),
                        None => by_select.push((b.select.clone(), vec![b.id])),
                    }
                }
            }
            wants.extend(by_select.into_iter().map(|(select, ids)| (i, select, ids.into())));
        }
        if wants.is_empty() {
            continue;
        }
        let group = (!bypass).then(|| match groups.iter().position(|(g, _)| *g == group) {
            Some(g) => g,
            None => {
                groups.push((group, claims));
                groups.len() - 1
            }
        });
        recipients.push(Recipient { channel, group, wants });
    }
    if recipients.is_empty() {
        return;
    }
    // 2. visibility: per table, every group's check of the batch in one call.
    // visible[group][change]
    let mut visible = vec![vec![false; batch.len()]; groups.len()];
    let mut rls: Vec<Option<bool>> = vec![None; relations.len()];
    for (t, rel) in relations.iter().enumerate() {
        // The groups with a channel that wants a change of this table.
        let mut asking: Vec<usize> = recipients
            .iter()
            .filter(|r| r.wants.iter().any(|(i, _, _)| table_of[*i] == t))
            .filter_map(|r| r.group)
            .collect();
        asking.sort_unstable();
        asking.dedup();
        if asking.is_empty() {
            rls[t] = Some(rel.rls);
            continue;
        }
        let keyed: Vec<(usize, Value)> = (0..batch.len())
            .filter(|i| table_of[*i] == t && batch[*i].event != DELETE)
            .filter_map(|i| Some((i, batch[i].key()?)))
            .collect();
        let keys = Value::Array(keyed.iter().map(|(_, k)| k.clone()).collect());
        let claims = Value::Array(asking.iter().map(|g| (*groups[*g].1).clone()).collect());
        let sql = "SELECT grp, idx FROM fluxbase.realtime_visible($1::oid, $2::jsonb, $3::jsonb)";
        match super::query(state, sql, &[&rel.id, &keys, &claims]).await {
            Ok(rows) => {
                for row in rows {
                    let (g, i): (i32, i32) = (row.get(0), row.get(1));
                    if g == 0 {
                        rls[t] = Some(i == 1);
                    } else if let (Some(group), Some((change, _))) =
                        (asking.get(g as usize - 1), keyed.get(i as usize - 1))
                    {
                        visible[*group][*change] = true;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, relation = rel.id, "postgres changes not checked: not delivered"),
        }
    }
    // The checks took time: a channel that left, whose token expired, or
    // whose new token is another caller's meanwhile gets none of the batch.
    let now = Instant::now();
    recipients.retain(|r| {
        let v = r.channel.viewer.lock().unwrap_or_else(|e| e.into_inner());
        !r.channel.closed.load(Ordering::Acquire)
            && v.expires.is_none_or(|at| at > now)
            && match r.group {
                None => v.bypass,
                Some(g) => !v.bypass && v.group == groups[g].0,
            }
    });
    // 3. payloads, once a change (and column list), queued in commit order.
    let mut data: HashMap<(usize, usize), Arc<str>> = HashMap::new();
    let mut next = vec![0usize; recipients.len()];
    for (i, change) in batch.iter().enumerate() {
        // Unchecked (the check failed): delivered to service_role only.
        let checked = rls[table_of[i]];
        for (r, at) in recipients.iter().zip(next.iter_mut()) {
            while let Some((j, select, ids)) = r.wants.get(*at) {
                if *j != i {
                    break;
                }
                *at += 1;
                let may = match (r.group, checked) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(_), Some(_)) if change.event == DELETE => true,
                    (Some(g), Some(_)) => visible[g][i],
                };
                if may {
                    let slot = select.as_ref().map_or(0, |s| Arc::as_ptr(s) as *const u8 as usize);
                    let data = data
                        .entry((i, slot))
                        .or_insert_with(|| change.data(checked.unwrap_or(true), select.as_deref()).into())
                        .clone();
                    send(state, &r.channel, ids.clone(), data);
                }
            }
        }
    }
}

/// A socket whose queue stays this full for this long is closed
/// (`SlowConsumer`) after all.
const LAG_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(30);

/// Queues a change to a channel. A full queue does not close the socket:
/// the channel's changes are dropped (and counted) until the queue has room
/// for half its size again; then a `system` message tells the channel how
/// many it missed, and changes follow again. Memory stays the queue's.
fn send(state: &AppState, channel: &Arc<Channel>, ids: Arc<[u32]>, data: Arc<str>) {
    let mut lag = channel.lag.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dropped) = lag.as_mut() {
        *dropped += 1;
        return state.metrics.realtime_changes_dropped(1);
    }
    let out = Outgoing::Change { join_ref: channel.join_ref.clone(), topic: channel.topic.clone(), ids, data };
    if let Err(mpsc::error::TrySendError::Full(_)) = channel.tx.try_send(out) {
        *lag = Some(1);
        drop(lag);
        state.metrics.realtime_changes_dropped(1);
        tokio::spawn(catch_up(channel.clone()));
    }
}

/// Waits until a lagging channel's queue has room, then tells it what it
/// missed (in Supabase's `system` shape) and lets changes through again.
async fn catch_up(channel: Arc<Channel>) {
    let started = Instant::now();
    let room = channel.tx.max_capacity() / 2;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if channel.tx.is_closed() || channel.closed.load(Ordering::Acquire) {
            return;
        }
        if started.elapsed() > LAG_GIVE_UP {
            return channel.kill.cancel();
        }
        if channel.tx.capacity() < room {
            continue;
        }
        let mut lag = channel.lag.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = lag.take().unwrap_or(0);
        let name = channel.topic.strip_prefix("realtime:").unwrap_or(&channel.topic);
        let system = json!({ "extension": "postgres_changes", "status": "error", "channel": name,
            "message": format!("PostgresChangesLagging: {dropped} changes were not delivered: the client did not \
                                read its messages fast enough (refetch what you show)") });
        let frame =
            super::protocol::encode(channel.vsn, channel.join_ref.as_deref(), None, &channel.topic, "system", &system);
        if channel.tx.try_send(Outgoing::Text(frame)).is_err() {
            channel.kill.cancel();
        }
        return;
    }
}

/// The frame of a change for a socket of `vsn`.
pub fn encode(vsn: super::protocol::Vsn, join_ref: Option<&str>, topic: &str, ids: &[u32], data: &str) -> String {
    let ids = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let join_ref = serde_json::to_string(&join_ref).expect("a string serialises");
    let topic = serde_json::to_string(topic).expect("a string serialises");
    match vsn {
        super::protocol::Vsn::V2 => {
            format!("[{join_ref},null,{topic},\"postgres_changes\",{{\"ids\":[{ids}],\"data\":{data}}}]")
        }
        super::protocol::Vsn::V1 => format!(
            "{{\"join_ref\":{join_ref},\"ref\":null,\"topic\":{topic},\"event\":\"postgres_changes\",\"payload\":{{\"ids\":[{ids}],\"data\":{data}}}}}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_timestamps_are_supabases_iso_form() {
        assert_eq!(timestamp(0), "2000-01-01T00:00:00.000Z");
        // 2024-02-29T13:14:15.678901 UTC
        let unix = 1_709_212_455_678_901i64;
        assert_eq!(timestamp(unix - 946_684_800_000_000), "2024-02-29T13:14:15.678Z");
    }

    #[test]
    fn values_are_json_by_type() {
        let mut out = String::new();
        write_value(&mut out, b'n', "12.50");
        out.push(' ');
        write_value(&mut out, b'n', "NaN");
        out.push(' ');
        write_value(&mut out, b'b', "t");
        out.push(' ');
        write_value(&mut out, b'j', r#"{"a": [1]}"#);
        out.push(' ');
        write_value(&mut out, b's', "say \"hi\"");
        assert_eq!(out, r#"12.50 "NaN" true {"a": [1]} "say \"hi\"""#);
    }

    #[test]
    fn bindings_are_validated_and_echoed() {
        let r = Requested::parse(&json!({"event": "INSERT", "schema": "public", "table": "todos"})).unwrap();
        assert_eq!(r.reply(7), json!({"id": 7, "event": "INSERT", "schema": "public", "table": "todos"}));
        assert!(Requested::parse(&json!({"event": "TRUNCATE", "schema": "public"}))
            .unwrap_err()
            .contains("unknown event"));
        assert!(Requested::parse(&json!({"event": "*"})).unwrap_err().contains("schema"));
        assert!(Requested::parse(&json!({"event": "*", "schema": "public", "filter": "id=eq.1"}))
            .unwrap_err()
            .contains("needs a table"));
    }

    #[test]
    fn frames_splice_the_shared_data() {
        let v2 = encode(super::super::protocol::Vsn::V2, Some("1"), "realtime:t", &[3, 4], r#"{"type":"INSERT"}"#);
        let v: Value = serde_json::from_str(&v2).unwrap();
        assert_eq!(
            v,
            json!(["1", null, "realtime:t", "postgres_changes", {"ids": [3, 4], "data": {"type": "INSERT"}}])
        );
        let v1 = encode(super::super::protocol::Vsn::V1, None, "realtime:t", &[3], "{}");
        let v: Value = serde_json::from_str(&v1).unwrap();
        assert_eq!(v["payload"], json!({"ids": [3], "data": {}}));
    }
}
