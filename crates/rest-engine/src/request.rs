//! Parse stage: the proxy's request JSON into a typed `ApiRequest`. Pure.
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::borrowed::Text;
use crate::error::{CallBody, RestError};
use crate::filter::{self, Field, Filter, FilterError, LogicOp};
use crate::prefer::Preferences;

/// The HTTP request as `fluxbase.rest()` receives it, borrowed from its JSON
/// text: `{"method", "path", "query", "headers": {name: value}, "body"}`
/// (header names lower-case; values that are not strings are ignored).
/// No JSON tree is built: strings without escapes are not even copied.
#[derive(Debug, Default)]
pub struct HttpRequest<'a> {
    pub method: Cow<'a, str>,
    pub path: Cow<'a, str>,
    pub query: Cow<'a, str>,
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The headers object as sent: `request.headers` is set to it.
    pub headers_json: &'a str,
    pub body: Option<Cow<'a, str>>,
    /// The proxy's fingerprint of the caller, sent with an `Idempotency-Key`
    /// only: whose key it is.
    pub idempotency_scope: Option<Cow<'a, str>>,
}

/// `Text`, not `Cow<str>`: serde copies a `Cow` inside an `Option`.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    method: Text<'a>,
    #[serde(borrow, default)]
    path: Text<'a>,
    #[serde(borrow, default)]
    query: Text<'a>,
    #[serde(borrow)]
    headers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Text<'a>,
    #[serde(borrow, default)]
    idempotency_scope: Text<'a>,
}

impl<'a> HttpRequest<'a> {
    pub fn from_json(text: &'a str) -> Result<HttpRequest<'a>, serde_json::Error> {
        if !crate::borrowed::is_object(text) {
            return Err(serde::de::Error::custom("the request must be a JSON object"));
        }
        let wire: Wire<'a> = serde_json::from_str(text)?;
        let (headers, headers_json) = match wire.headers {
            Some(raw) if raw.get() != "null" => (serde_json::from_str::<Headers<'a>>(raw.get())?.0, raw.get()),
            _ => (Vec::new(), "{}"),
        };
        Ok(HttpRequest {
            method: wire.method.0.unwrap_or(Cow::Borrowed("GET")),
            path: wire.path.0.unwrap_or_default(),
            query: wire.query.0.unwrap_or_default(),
            headers,
            headers_json,
            body: wire.body.0,
            idempotency_scope: wire.idempotency_scope.0,
        })
    }

    /// A header's value; `name` is lower-case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_ref())
    }
}

/// A JSON object's string members, borrowed where they have no escapes.
struct Headers<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de> Deserialize<'de> for Headers<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Headers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of header names and values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
                    if let Text(Some(value)) = map.next_value::<Text<'de, true>>()? {
                        members.push((name.unwrap_or_default(), value));
                    }
                }
                Ok(Headers(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    Get,
    Head,
    Post,
    Patch,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `GET /rest/v1/`: the OpenAPI description.
    Root,
    Table(String),
    Rpc(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MediaType {
    Json,
    /// `application/vnd.pgrst.object+json`: exactly one row, as an object.
    Object,
    Csv,
    OpenApi,
    /// `application/geo+json`: a FeatureCollection (PostGIS' ST_AsGeoJSON).
    GeoJson,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    Star,
    Field { field: Field, alias: Option<String>, cast: Option<String> },
    Embed(Embed),
    Aggregate(Aggregate),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggregateFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggregateFn {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "count" => AggregateFn::Count,
            "sum" => AggregateFn::Sum,
            "avg" => AggregateFn::Avg,
            "min" => AggregateFn::Min,
            "max" => AggregateFn::Max,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            AggregateFn::Count => "count",
            AggregateFn::Sum => "sum",
            AggregateFn::Avg => "avg",
            AggregateFn::Min => "min",
            AggregateFn::Max => "max",
        }
    }
}

/// `count()`, `col.sum()`, `alias:col::incast.avg()::outcast`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub function: AggregateFn,
    /// `None` for `count()`: count the rows.
    pub field: Option<Field>,
    pub alias: Option<String>,
    /// Cast of the column before aggregating.
    pub input_cast: Option<String>,
    /// Cast of the aggregate's result.
    pub output_cast: Option<String>,
    /// `rel(count)`, the form Supabase documents: allowed even where
    /// aggregates are not (as PostgREST allows it).
    pub legacy: bool,
}

/// Refuses a `select` of more than `max` items, embedded ones counted: a
/// column repeated without bound multiplies the response (`400 PGRST100`).
pub fn check_select_items(select: &[SelectItem], max: usize) -> Result<(), RestError> {
    fn count(select: &[SelectItem]) -> usize {
        select.iter().map(|item| if let SelectItem::Embed(e) = item { 1 + count(&e.select) } else { 1 }).sum()
    }
    let n = count(select);
    if n > max {
        return Err(RestError::InvalidRequest(format!(
            "select has {n} items; at most {max} are allowed (fluxbase.max_select_items)"
        )));
    }
    Ok(())
}

/// Whether a select list uses aggregates (the legacy `rel(count)` aside).
pub fn has_aggregates(select: &[SelectItem]) -> bool {
    select.iter().any(|item| match item {
        SelectItem::Aggregate(a) => !a.legacy,
        SelectItem::Embed(e) => has_aggregates(&e.select),
        _ => false,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Embed {
    /// Table (or hinted relationship) name as written.
    pub name: String,
    pub alias: Option<String>,
    pub hint: Option<String>,
    pub inner: bool,
    pub spread: bool,
    pub select: Vec<SelectItem>,
}

impl Embed {
    /// The name the embed is addressed by in `alias.col=…` parameters and in the output.
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderTerm {
    /// `order=rel(col)`: a column of the to-one embed `rel` (PostgREST 11+).
    pub relation: Option<String>,
    pub field: Field,
    pub descending: bool,
    pub nulls_first: Option<bool>,
}

/// Embed path of a parameter: `[]` for the root, `["posts", "tags"]` for `posts.tags.x=…`.
pub type EmbedPath = Vec<String>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paging {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: Method,
    pub target: Target,
    pub schema: Option<String>,
    pub select: Vec<SelectItem>,
    pub filters: Vec<(EmbedPath, Filter)>,
    pub order: BTreeMap<EmbedPath, Vec<OrderTerm>>,
    pub paging: BTreeMap<EmbedPath, Paging>,
    pub columns: Option<Vec<String>>,
    pub on_conflict: Option<Vec<String>>,
    pub prefer: Preferences,
    pub accept: MediaType,
    pub nulls_stripped: bool,
    /// `If-None-Match` of a read: a matching ETag answers 304.
    pub if_none_match: Option<String>,
    /// `If-Match` of a write: the ETag the rows must still have.
    pub if_match: Option<String>,
    pub body: Option<Value>,
    /// POST to a function with a raw body (`text/plain`, `text/xml`,
    /// `application/octet-stream`): the one unnamed argument of that type.
    /// A bytea body arrives in bytea's text form (`\\x…` hex, as the proxy sends it).
    pub raw_body: Option<(CallBody, String)>,
    /// GET/HEAD on a function: parameters that may be its arguments (the
    /// planner knows the argument names; the rest are filters on the result).
    pub rpc_params: Vec<(String, String)>,
    /// `cursor=`: the opaque position of a keyset page (implies keyset pagination).
    pub cursor: Option<String>,
    /// `Accept: application/vnd.pgrst.plan…`: answer with the query plan.
    pub explain: Option<Explain>,
}

/// `application/vnd.pgrst.plan[+text|+json]; for="…"; options=analyze|verbose|…`
#[derive(Debug, Clone, PartialEq)]
pub struct Explain {
    pub json: bool,
    /// The media type whose query is explained, as given in `for`.
    pub for_media: String,
    /// EXPLAIN options, in PostgREST's order: analyze, verbose, settings, buffers, wal.
    pub options: Vec<&'static str>,
}

impl Explain {
    pub fn content_type(&self) -> String {
        let format = if self.json { "json" } else { "text" };
        let mut ct = format!("application/vnd.pgrst.plan+{format}; for=\"{}\"", self.for_media);
        if !self.options.is_empty() {
            ct.push_str(&format!("; options={}", self.options.join("|")));
        }
        ct.push_str("; charset=utf-8");
        ct
    }
}

fn parse_explain(media: &str, params: &[&str]) -> Option<Result<Explain, String>> {
    let json = match media {
        "application/vnd.pgrst.plan" | "application/vnd.pgrst.plan+text" => false,
        "application/vnd.pgrst.plan+json" => true,
        _ => return None,
    };
    let mut explain = Explain { json, for_media: "application/json".into(), options: vec![] };
    for param in params {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.trim().to_ascii_lowercase().as_str() {
            "for" => explain.for_media = value.trim().trim_matches('"').to_ascii_lowercase(),
            "options" => {
                // `options=` (empty, as some clients send it): no options.
                for option in value.split('|').map(str::trim).filter(|o| !o.is_empty()) {
                    if !["analyze", "verbose", "settings", "buffers", "wal"].contains(&option) {
                        return Some(Err(format!("unknown plan option \"{option}\"")));
                    }
                }
                explain.options = ["analyze", "verbose", "settings", "buffers", "wal"]
                    .into_iter()
                    .filter(|o| value.split('|').any(|v| v.trim() == *o))
                    .collect();
            }
            _ => {}
        }
    }
    Some(Ok(explain))
}

const MAX_SELECT_DEPTH: usize = 16;

pub fn parse(request: &HttpRequest<'_>) -> Result<ApiRequest, RestError> {
    let method = match request.method.as_ref() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PATCH" => Method::Patch,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => return Err(RestError::Method { method: other.to_string() }),
    };
    let path = request.path.trim_matches('/');
    if path.contains('\0') {
        return Err(nul_refused("the path"));
    }
    let target = match path.split('/').collect::<Vec<_>>().as_slice() {
        [""] => Target::Root,
        ["rpc", name] if !name.is_empty() => Target::Rpc(name.to_string()),
        [name] => Target::Table(name.to_string()),
        _ => return Err(RestError::InvalidRequest(format!("invalid path \"/{path}\""))),
    };
    if matches!(target, Target::Rpc(_)) && !matches!(method, Method::Get | Method::Head | Method::Post) {
        return Err(RestError::Method { method: method.as_str().into() });
    }
    let header = |name: &str| request.header(name);
    let schema =
        if method.is_read() { header("accept-profile") } else { header("content-profile") }.map(str::to_string);
    let (accept, nulls_stripped, explain) = parse_accept(header("accept"), &target)?;

    let mut api = ApiRequest {
        method,
        target: target.clone(),
        schema,
        select: vec![SelectItem::Star],
        filters: vec![],
        order: BTreeMap::new(),
        paging: BTreeMap::new(),
        columns: None,
        on_conflict: None,
        prefer: Preferences::parse(header("prefer"))?,
        accept,
        nulls_stripped,
        if_none_match: header("if-none-match").map(str::to_string),
        if_match: header("if-match").map(str::to_string),
        body: None,
        raw_body: None,
        rpc_params: vec![],
        cursor: None,
        explain,
    };
    if let Some(range) = header("range") {
        if method == Method::Get || method == Method::Head {
            api.paging.insert(vec![], parse_range(range)?);
        }
    }
    let query = request.query.as_ref();
    let mut conditions = 0;
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "select" => api.select = parse_select(&value)?,
            "cursor" => api.cursor = Some(value),
            "columns" => api.columns = Some(split_names("columns", &value)?),
            "on_conflict" => api.on_conflict = Some(split_names("on_conflict", &value)?),
            _ => {
                let (path, last) = split_key(&key);
                let negated_logic = path.last().map(String::as_str) == Some("not") && (last == "or" || last == "and");
                let path = if negated_logic { path[..path.len() - 1].to_vec() } else { path };
                match last {
                    "order" => {
                        api.order.insert(path, parse_order(&value)?);
                    }
                    "limit" => api.paging.entry(path).or_default().limit = Some(parse_count("limit", &value)?),
                    "offset" => api.paging.entry(path).or_default().offset = Some(parse_count("offset", &value)?),
                    "or" | "and" => {
                        let op = if last == "or" { LogicOp::Or } else { LogicOp::And };
                        let tree = filter::parse_logic(op, negated_logic, &value)
                            .map_err(|e| filter_error(&key, &value, e))?;
                        api.filters.push((path, tree));
                    }
                    column => {
                        if path.is_empty() && matches!(target, Target::Rpc(_)) && method.is_read() {
                            api.rpc_params.push((key.clone(), value));
                            continue;
                        }
                        conditions += 1;
                        if conditions > filter::MAX_CONDITIONS {
                            return Err(RestError::InvalidRequest(format!(
                                "at most {} filters per request",
                                filter::MAX_CONDITIONS
                            )));
                        }
                        let field = Field::parse(column).map_err(|e| filter_error(&key, &value, e))?;
                        let condition = filter::parse_condition(&value).map_err(|e| filter_error(column, &value, e))?;
                        api.filters.push((path, Filter::Condition { field, condition }));
                    }
                }
            }
        }
    }

    if let Some(body) = request.body.as_deref() {
        let content_type = header("content-type").unwrap_or("application/json");
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media == "text/csv" {
            let rows = crate::csv::to_rows(body)?;
            refuse_nul_keys(&rows)?;
            api.body = Some(rows);
            return Ok(api);
        }
        let raw = match media.as_str() {
            "text/plain" => Some(CallBody::Text),
            "text/xml" => Some(CallBody::Xml),
            "application/octet-stream" => Some(CallBody::Bytea),
            _ => None,
        };
        if let (Some(kind), Target::Rpc(_), Method::Post) = (raw, &target, method) {
            api.raw_body = Some((kind, body.to_string()));
            return Ok(api);
        }
        if !matches!(media.as_str(), "application/json" | "" | "application/vnd.pgrst.object+json") {
            return Err(RestError::ContentType(content_type.to_string()));
        }
        if !body.trim().is_empty() {
            // serde_json's recursion limit (128) bounds nesting depth.
            let parsed: Value = serde_json::from_str(body)
                .map_err(|e| RestError::InvalidBody(format!("Empty or invalid json: {e}")))?;
            refuse_nul_keys(&parsed)?;
            api.body = Some(parsed);
        }
    }
    Ok(api)
}

/// A NUL can be in no identifier, alias, JSON key or text value Postgres
/// takes: refused while parsing (`400 PGRST100`), before it reaches SQL.
fn nul_refused(place: &str) -> RestError {
    RestError::InvalidRequest(format!("{place} must not contain NUL characters"))
}

/// Body keys name columns and arguments: none may hold a NUL.
fn refuse_nul_keys(body: &Value) -> Result<(), RestError> {
    let rows = match body {
        Value::Array(rows) => rows.as_slice(),
        row => std::slice::from_ref(row),
    };
    for row in rows {
        if let Value::Object(members) = row {
            if members.keys().any(|k| k.contains('\0')) {
                return Err(nul_refused("a body key"));
            }
        }
    }
    Ok(())
}

pub(crate) fn filter_error(column: &str, value: &str, e: FilterError) -> RestError {
    match e {
        FilterError::UnknownOperator(operator) => RestError::UnknownOperator { column: column.to_string(), operator },
        FilterError::Malformed(details) => {
            RestError::Parse { param: "filter".into(), value: value.to_string(), details }
        }
    }
}

/// `posts.tags.order` → (`["posts", "tags"]`, `"order"`); JSON arrows stay in the last part.
fn split_key(key: &str) -> (EmbedPath, &str) {
    let arrow = key.find("->").unwrap_or(key.len());
    match key[..arrow].rfind('.') {
        Some(dot) => (key[..dot].split('.').map(str::to_string).collect(), &key[dot + 1..]),
        None => (vec![], key),
    }
}

type Accepted = (MediaType, bool, Option<Explain>);

fn parse_accept(accept: Option<&str>, target: &Target) -> Result<Accepted, RestError> {
    let Some(accept) = accept else {
        return Ok((if *target == Target::Root { MediaType::OpenApi } else { MediaType::Json }, false, None));
    };
    for candidate in accept.split(',') {
        let mut parts = candidate.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<&str> = parts.collect();
        if let Some(explain) = parse_explain(&media, &params) {
            let explain = explain.map_err(|e| RestError::Accept(format!("{accept} ({e})")))?;
            let (inner, nulls_stripped, _) = parse_accept(Some(&explain.for_media), target)?;
            return Ok((inner, nulls_stripped, Some(explain)));
        }
        let nulls_stripped = params.iter().any(|p| p.eq_ignore_ascii_case("nulls=stripped"));
        let found = match media.as_str() {
            "application/json" | "application/*" | "*/*" | "" => {
                Some(if *target == Target::Root { MediaType::OpenApi } else { MediaType::Json })
            }
            "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => Some(MediaType::Object),
            "application/vnd.pgrst.array+json" => Some(MediaType::Json),
            "application/openapi+json" if *target == Target::Root => Some(MediaType::OpenApi),
            "text/csv" => Some(MediaType::Csv),
            "application/geo+json" if *target != Target::Root => Some(MediaType::GeoJson),
            _ => None,
        };
        if let Some(m) = found {
            return Ok((m, nulls_stripped, None));
        }
    }
    Err(RestError::Accept(accept.to_string()))
}

/// `Range: 0-9` (items, inclusive) → offset 0, limit 10; `10-` → offset 10.
fn parse_range(range: &str) -> Result<Paging, RestError> {
    let spec = range.trim().strip_prefix("items=").unwrap_or(range.trim());
    let bad = || RestError::Range(format!("invalid Range header \"{range}\""));
    let (from, to) = spec.split_once('-').ok_or_else(bad)?;
    let from: i64 = from.trim().parse().map_err(|_| bad())?;
    let to = to.trim();
    if to.is_empty() {
        return Ok(Paging { limit: None, offset: Some(from) });
    }
    let to: i64 = to.parse().map_err(|_| bad())?;
    if from < 0 || to < from {
        return Err(bad());
    }
    Ok(Paging { limit: Some(to - from + 1), offset: Some(from) })
}

fn split_names(param: &str, value: &str) -> Result<Vec<String>, RestError> {
    let names: Vec<String> = value.split(',').map(|s| s.trim().trim_matches('"').to_string()).collect();
    if names.iter().any(String::is_empty) {
        return Err(RestError::Parse { param: param.into(), value: value.into(), details: "empty column name".into() });
    }
    Ok(names)
}

fn parse_count(param: &str, value: &str) -> Result<i64, RestError> {
    value.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| RestError::Parse {
        param: param.into(),
        value: value.into(),
        details: "expected a non-negative integer".into(),
    })
}

fn parse_select(value: &str) -> Result<Vec<SelectItem>, RestError> {
    let mut parser = SelectParser { s: value.as_bytes(), pos: 0, whole: value };
    let items = parser.items(0)?;
    if parser.pos != parser.s.len() {
        return Err(parser.error("unexpected \")\""));
    }
    Ok(items)
}

struct SelectParser<'a> {
    s: &'a [u8],
    pos: usize,
    whole: &'a str,
}

impl SelectParser<'_> {
    fn error(&self, details: &str) -> RestError {
        RestError::Parse {
            param: "select".into(),
            value: self.whole.into(),
            details: format!("{details} at position {}", self.pos),
        }
    }

    fn items(&mut self, depth: usize) -> Result<Vec<SelectItem>, RestError> {
        if depth > MAX_SELECT_DEPTH {
            return Err(self.error(&format!("embedding nests at most {MAX_SELECT_DEPTH} levels")));
        }
        let mut items = Vec::new();
        loop {
            items.push(self.item(depth)?);
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                _ => break,
            }
        }
        Ok(items)
    }

    /// A token up to one of `,()` (outside double quotes).
    fn token(&mut self) -> String {
        let start = self.pos;
        let mut quoted = false;
        while let Some(&c) = self.s.get(self.pos) {
            match c {
                b'"' => quoted = !quoted,
                b',' | b'(' | b')' if !quoted => break,
                _ => {}
            }
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).trim().to_string()
    }

    fn item(&mut self, depth: usize) -> Result<SelectItem, RestError> {
        let raw = self.token();
        if self.s.get(self.pos) == Some(&b'(') {
            self.pos += 1;
            let select = if self.s.get(self.pos) == Some(&b')') { vec![] } else { self.items(depth + 1)? };
            if self.s.get(self.pos) != Some(&b')') {
                return Err(self.error("expected \")\""));
            }
            self.pos += 1;
            if select.is_empty() {
                if let Some(aggregate) = self.aggregate(&raw)? {
                    return Ok(SelectItem::Aggregate(aggregate));
                }
            }
            let (spread, raw) = match raw.strip_prefix("...") {
                Some(r) => (true, r.to_string()),
                None => (false, raw),
            };
            let (alias, rest) = split_alias(&raw);
            let mut parts = rest.split('!');
            let name = parts.next().unwrap_or("").trim().to_string();
            if name.is_empty() {
                return Err(self.error("empty embedded resource name"));
            }
            let mut embed = Embed { name, alias, hint: None, inner: false, spread, select };
            for modifier in parts {
                match modifier {
                    "inner" => embed.inner = true,
                    "left" => embed.inner = false,
                    hint if !hint.is_empty() => embed.hint = Some(hint.to_string()),
                    _ => return Err(self.error("empty embedding hint")),
                }
            }
            return Ok(SelectItem::Embed(embed));
        }
        if raw == "*" {
            return Ok(SelectItem::Star);
        }
        if raw.is_empty() {
            return Err(self.error("empty select item"));
        }
        let (alias, rest) = split_alias(&raw);
        let (field, cast) = match rest.split_once("::") {
            Some((f, c)) => (f, Some(self.cast(c)?)),
            None => (rest, None),
        };
        if field.contains('.') && !field.contains("->") {
            return Err(self.error("a column name cannot contain '.' (aggregates are written col.sum())"));
        }
        let field = Field::parse(field.trim().trim_matches('"')).map_err(|_| self.error("malformed column"))?;
        Ok(SelectItem::Field { field, alias, cast })
    }
}

impl SelectParser<'_> {
    /// A type name to cast to, as written (`int`, `double precision`,
    /// `text[]`): letters, digits, `_` and `[]` (and the standard's
    /// multi-word names), so it can go into SQL unquoted, where Postgres'
    /// type-name grammar applies.
    fn cast(&self, raw: &str) -> Result<String, RestError> {
        let cast = raw.trim();
        if cast.is_empty() {
            return Err(self.error("empty cast"));
        }
        // Spaces only inside the SQL standard's multi-word type names.
        const MULTI_WORD: &[&str] = &[
            "double precision",
            "character varying",
            "bit varying",
            "timestamp with time zone",
            "timestamp without time zone",
            "time with time zone",
            "time without time zone",
        ];
        let base = cast.trim_end_matches("[]").to_ascii_lowercase();
        let valid = cast.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ' ' | '[' | ']'))
            && (!base.contains(' ') || MULTI_WORD.contains(&base.as_str()));
        if !valid {
            return Err(self.error(&format!("invalid cast type \"{cast}\"")));
        }
        Ok(cast.to_string())
    }

    /// `[alias:]count()` or `[alias:]col[::cast].fn()`, whose `()` has been
    /// read; then an optional `::cast` of the result. `None`: not an
    /// aggregate (an embed with no columns, `rel()`).
    fn aggregate(&mut self, raw: &str) -> Result<Option<Aggregate>, RestError> {
        let (alias, rest) = split_alias(raw);
        let (field, function) = match rest.rsplit_once('.') {
            Some((field, name)) if !field.is_empty() && !name.contains("->") => match AggregateFn::parse(name) {
                Some(f) => (Some(field), f),
                None => return Ok(None),
            },
            None if rest == "count" => (None, AggregateFn::Count),
            _ => return Ok(None),
        };
        let output_cast = if self.s[self.pos..].starts_with(b"::") {
            self.pos += 2;
            let cast = self.token();
            Some(self.cast(&cast)?)
        } else {
            None
        };
        let (field, input_cast) = match field {
            None => (None, None),
            Some(f) => {
                let (name, cast) = match f.split_once("::") {
                    Some((n, c)) => (n, Some(self.cast(c)?)),
                    None => (f, None),
                };
                let field = Field::parse(name.trim().trim_matches('"')).map_err(|_| self.error("malformed column"))?;
                (Some(field), cast)
            }
        };
        Ok(Some(Aggregate { function, field, alias, input_cast, output_cast, legacy: false }))
    }
}

/// `alias:name` → (Some(alias), name); a `::` cast is not an alias.
fn split_alias(raw: &str) -> (Option<String>, &str) {
    match raw.find(':') {
        Some(i) if raw[i..].starts_with("::") => (None, raw),
        Some(i) => (Some(raw[..i].trim().to_string()), raw[i + 1..].trim()),
        None => (None, raw),
    }
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded as HTML forms encode them.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, RestError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Result<String, RestError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| {
                    RestError::InvalidRequest(format!("invalid percent-encoding in query string near \"{}\"", &s[i..]))
                })?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    if out.contains(&0) {
        return Err(nul_refused("the query string"));
    }
    String::from_utf8(out).map_err(|_| RestError::InvalidRequest("query string is not valid UTF-8".into()))
}

fn parse_order(value: &str) -> Result<Vec<OrderTerm>, RestError> {
    value
        .split(',')
        .map(|term| {
            let bad = |details: String| RestError::Parse { param: "order".into(), value: value.into(), details };
            let arrow = term.rfind("->").map(|i| i + 2).unwrap_or(0);
            let first_dot = term[arrow..].find('.').map(|i| i + arrow).unwrap_or(term.len());
            let (relation, column) = match term[..first_dot].strip_suffix(')').and_then(|t| t.split_once('(')) {
                Some((relation, column)) if !relation.is_empty() => (Some(relation.to_string()), column),
                _ => (None, &term[..first_dot]),
            };
            let field = Field::parse(column).map_err(|_| bad("empty column".into()))?;
            let mut order = OrderTerm { relation, field, descending: false, nulls_first: None };
            for modifier in term[first_dot..].split('.').filter(|m| !m.is_empty()) {
                match modifier {
                    "asc" => order.descending = false,
                    "desc" => order.descending = true,
                    "nullsfirst" => order.nulls_first = Some(true),
                    "nullslast" => order.nulls_first = Some(false),
                    other => return Err(bad(format!("unknown order modifier \"{other}\""))),
                }
            }
            Ok(order)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn parse_json(request: &Value) -> Result<ApiRequest, RestError> {
        let text = request.to_string();
        parse(&HttpRequest::from_json(&text).unwrap())
    }

    #[test]
    fn reads_the_request_without_copying_plain_strings() {
        let text = r#"{"method":"POST","path":"t","query":"a=eq.1","headers":{"accept":"text/csv","x-n":5,"x-o":{"a":[1]},"x-e":"a\"b"},"body":"{}","request_id":"r"}"#;
        let req = HttpRequest::from_json(text).unwrap();
        assert!(matches!(req.path, Cow::Borrowed("t")));
        assert_eq!(req.header("accept"), Some("text/csv"));
        // Values that are not strings are skipped; escaped ones are decoded.
        assert_eq!((req.header("x-n"), req.header("x-o"), req.header("x-e")), (None, None, Some("a\"b")));
        assert_eq!(req.headers_json, r#"{"accept":"text/csv","x-n":5,"x-o":{"a":[1]},"x-e":"a\"b"}"#);
        assert_eq!(req.body.as_deref(), Some("{}"));
        let bare = HttpRequest::from_json(r#"{"path":"t","headers":null,"body":null}"#).unwrap();
        assert_eq!((bare.method.as_ref(), bare.headers_json, bare.body), ("GET", "{}", None));
        assert!(HttpRequest::from_json(r#"{"path":1}"#).is_err());
        assert!(HttpRequest::from_json(r#"["POST","t"]"#).is_err());
    }

    #[test]
    fn parses_related_order_terms() {
        let terms = parse_order("channels(slug).desc.nullslast,id,ch(data->>k)").unwrap();
        assert_eq!(terms[0].relation.as_deref(), Some("channels"));
        assert_eq!(
            (terms[0].field.name.as_str(), terms[0].descending, terms[0].nulls_first),
            ("slug", true, Some(false))
        );
        assert_eq!((terms[1].relation.as_deref(), terms[1].field.name.as_str()), (None, "id"));
        assert_eq!((terms[2].relation.as_deref(), terms[2].field.name.as_str()), (Some("ch"), "data"));
        assert!(parse_order("(slug)").unwrap()[0].relation.is_none());
    }

    #[test]
    fn parses_a_typical_supabase_js_read() {
        let req = json!({"method": "GET", "path": "todos", "query": "select=id%2Ctitle%3Aname&done=is.false&order=id.desc&limit=10"});
        let api = parse_json(&req).unwrap();
        assert_eq!(api.target, Target::Table("todos".into()));
        assert_eq!(api.select.len(), 2);
        let SelectItem::Field { field, alias, .. } = &api.select[1] else { panic!() };
        assert_eq!((field.name.as_str(), alias.as_deref()), ("name", Some("title")));
        assert_eq!(api.filters.len(), 1);
        assert!(api.order[&vec![]][0].descending);
        assert_eq!(api.paging[&vec![]].limit, Some(10));
    }

    #[test]
    fn parses_embeds_with_hints_and_embedded_params() {
        let req = json!({"path": "posts", "query": "select=id,author:users!posts_author_fkey!inner(name),...tags(tag:name),comments()&comments.order=id.desc&comments.limit=2&author.name=eq.ada&not.or=(id.eq.1,id.eq.2)"});
        let api = parse_json(&req).unwrap();
        let SelectItem::Embed(e) = &api.select[1] else { panic!() };
        assert_eq!(
            (e.name.as_str(), e.key(), e.hint.as_deref(), e.inner),
            ("users", "author", Some("posts_author_fkey"), true)
        );
        let SelectItem::Embed(t) = &api.select[2] else { panic!() };
        assert!(t.spread);
        let SelectItem::Embed(c) = &api.select[3] else { panic!() };
        assert!(c.select.is_empty());
        assert_eq!(api.paging[&vec!["comments".to_string()]].limit, Some(2));
        assert_eq!(api.filters[0].0, vec!["author".to_string()]);
        assert!(matches!(api.filters[1].1, Filter::Logic { negated: true, op: LogicOp::Or, .. }));
    }

    /// Hardening: `select=x%00:id` reached SQL and came back as a 500 with
    /// the generated statement in its message.
    #[test]
    fn nul_in_an_identifier_alias_or_json_key_is_refused_while_parsing() {
        let bad = |req: Value| {
            let err = parse_json(&req).unwrap_err();
            assert_eq!((err.status(), err.body()["code"].as_str()), (400, Some("PGRST100")), "{req}");
            assert!(!err.body().to_string().contains("\\u0000"), "the NUL is not echoed: {}", err.body());
        };
        bad(json!({"path": "t", "query": "select=x%00:id"}));
        bad(json!({"path": "t", "query": "select=id,data->a%00b"}));
        bad(json!({"path": "t", "query": "order=i%00d.desc"}));
        bad(json!({"path": "t", "query": "id%00=eq.1"}));
        bad(json!({"path": "t", "query": "id=eq.a%00"}));
        bad(json!({"path": "t", "query": "columns=a,b%00"}));
        bad(json!({"path": "t\u{0}x", "query": ""}));
        bad(json!({"method": "POST", "path": "t", "body": "{\"a\\u0000\": 1}"}));
        bad(json!({"method": "POST", "path": "t", "body": "[{\"a\": 1}, {\"b\\u0000\": 2}]"}));
        // A NUL inside a JSON value is Postgres' to judge, not a name.
        assert!(parse_json(&json!({"method": "POST", "path": "t", "body": "{\"a\": \"x\\u0000\"}"})).is_ok());
    }

    /// Hardening: `select=` repeating a column 400 times made one GET
    /// allocate gigabytes.
    #[test]
    fn select_items_are_capped_embeds_included() {
        let items = |q: &str| parse_json(&json!({"path": "t", "query": q})).unwrap().select;
        assert!(check_select_items(&items("select=a,b,c"), 3).is_ok());
        let err = check_select_items(&items("select=a,b,c,d"), 3).unwrap_err();
        assert_eq!((err.status(), err.body()["code"].as_str()), (400, Some("PGRST100")));
        assert!(err.body()["message"].as_str().unwrap().contains("fluxbase.max_select_items"));
        // The embed counts, and so do its own items.
        assert!(check_select_items(&items("select=a,r(b,c)"), 3).is_err());
        assert!(check_select_items(&items("select=*,r(*)"), 3).is_ok());
        let repeated = format!("select={}", vec!["id"; 400].join(","));
        assert!(check_select_items(&items(&repeated), 100).is_err());
    }

    #[test]
    fn rejects_bad_input_with_codes() {
        let bad = |q: &str| parse_json(&json!({"path": "t", "query": q})).unwrap_err();
        assert!(matches!(bad("id=wat.1"), RestError::UnknownOperator { .. }));
        assert!(matches!(bad("limit=-1"), RestError::Parse { .. }));
        assert!(matches!(bad("order=id.sideways"), RestError::Parse { .. }));
        assert!(matches!(bad("a=%zz"), RestError::InvalidRequest(_)));
        assert!(matches!(bad("a=%ff"), RestError::InvalidRequest(_)));
        assert!(matches!(bad("select=a,b(c"), RestError::Parse { .. }));
        assert!(matches!(bad("select=a)"), RestError::Parse { .. }));
        let deep = format!("select={}x{}", "a(".repeat(40), ")".repeat(40));
        assert!(matches!(bad(&deep), RestError::Parse { .. }));
        assert!(matches!(parse_json(&json!({"method": "TRACE", "path": "t"})).unwrap_err(), RestError::Method { .. }));
        assert!(matches!(
            parse_json(&json!({"method": "POST", "path": "t", "body": "{\"a\":"})).unwrap_err(),
            RestError::InvalidBody(_)
        ));
        let deep_json = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        assert!(matches!(
            parse_json(&json!({"method": "POST", "path": "t", "body": deep_json})).unwrap_err(),
            RestError::InvalidBody(_)
        ));
        assert!(matches!(
            parse_json(&json!({"method": "POST", "path": "t", "body": "{}", "headers": {"content-type": "text/xml"}}))
                .unwrap_err(),
            RestError::ContentType(_)
        ));
        assert!(matches!(
            parse_json(&json!({"path": "t", "headers": {"range": "5-1"}})).unwrap_err(),
            RestError::Range(_)
        ));
        assert!(matches!(
            parse_json(&json!({"path": "t", "headers": {"accept": "text/html"}})).unwrap_err(),
            RestError::Accept(_)
        ));
    }

    #[test]
    fn parses_aggregates_casts_and_plan_media_types() {
        let api =
            parse_json(&json!({"path": "t", "query": "select=total:amount::int.sum()::text,count(),region,posts()"}))
                .unwrap();
        let SelectItem::Aggregate(a) = &api.select[0] else { panic!("{:?}", api.select[0]) };
        assert_eq!(
            (a.function, a.alias.as_deref(), a.input_cast.as_deref(), a.output_cast.as_deref()),
            (AggregateFn::Sum, Some("total"), Some("int"), Some("text"))
        );
        assert!(matches!(
            &api.select[1],
            SelectItem::Aggregate(Aggregate { function: AggregateFn::Count, field: None, .. })
        ));
        assert!(matches!(&api.select[3], SelectItem::Embed(e) if e.select.is_empty()));
        assert!(has_aggregates(&api.select));
        let bad = |q: &str| parse_json(&json!({"path": "t", "query": q})).unwrap_err();
        assert!(matches!(bad("select=a::int);drop"), RestError::Parse { .. }));
        assert!(matches!(bad("select=a::int or true"), RestError::Parse { .. }));
        assert!(parse_json(&json!({"path": "t", "query": "select=a::double precision"})).is_ok());
        let plan = parse_json(&json!({"path": "t", "headers": {"accept": "application/vnd.pgrst.plan+json; for=\"text/csv\"; options=wal|analyze"}})).unwrap();
        assert_eq!(plan.accept, MediaType::Csv);
        let explain = plan.explain.unwrap();
        assert_eq!((explain.json, explain.options), (true, vec!["analyze", "wal"]));
        assert!(matches!(
            parse_json(&json!({"path": "t", "headers": {"accept": "application/vnd.pgrst.plan; options=drop"}}))
                .unwrap_err(),
            RestError::Accept(_)
        ));
        // supabase-js' `.explain()` sends an empty options list (issue 13)
        let empty = parse_json(&json!({"path": "t", "headers": {"accept": "application/vnd.pgrst.plan+json; for=\"application/json\"; options=;"}})).unwrap();
        assert_eq!(empty.explain.unwrap().options, Vec::<&str>::new());
    }

    #[test]
    fn a_raw_body_to_a_function_is_its_one_unnamed_argument() {
        let text = parse_json(
            &json!({"method": "POST", "path": "rpc/f", "body": "a b", "headers": {"content-type": "text/plain"}}),
        )
        .unwrap();
        assert_eq!(text.raw_body, Some((CallBody::Text, "a b".to_string())));
        let bytes = parse_json(&json!({"method": "POST", "path": "rpc/f", "body": "\\x00", "headers": {"content-type": "application/octet-stream"}})).unwrap();
        assert_eq!(bytes.raw_body.map(|b| b.0), Some(CallBody::Bytea));
        // on a table it is still not a media type for writes
        let table =
            parse_json(&json!({"method": "POST", "path": "t", "body": "a", "headers": {"content-type": "text/plain"}}));
        assert!(matches!(table, Err(RestError::ContentType(_))));
    }

    #[test]
    fn casts_json_paths_ranges_and_rpc() {
        let api = parse_json(&json!({"path": "t", "query": "select=id::text,v:data->a->>b&name=eq.a+b&data->>k=eq.1", "headers": {"range": "5-9"}})).unwrap();
        let SelectItem::Field { cast, .. } = &api.select[0] else { panic!() };
        assert_eq!(cast.as_deref(), Some("text"));
        let SelectItem::Field { field, alias, .. } = &api.select[1] else { panic!() };
        assert_eq!((field.json_path.len(), alias.as_deref()), (2, Some("v")));
        let Filter::Condition { field, .. } = &api.filters[1].1 else { panic!() };
        assert_eq!(field.json_path[0].key, "k");
        assert_eq!(api.paging[&vec![]], Paging { limit: Some(5), offset: Some(5) });
        let rpc = parse_json(&json!({"method": "GET", "path": "rpc/add", "query": "a=1&b=2"})).unwrap();
        assert_eq!(rpc.rpc_params.len(), 2);
        assert!(matches!(
            parse_json(&json!({"method": "DELETE", "path": "rpc/add"})).unwrap_err(),
            RestError::Method { .. }
        ));
    }
}

/// Random inputs built from the grammar's own characters: the parser must
/// answer every one with a value or a typed error, never a panic, and in
/// bounded time. (A coverage-guided `cargo fuzz` target needs this parser in
/// a crate of its own; see docs/rest.md.)
#[cfg(test)]
mod robustness {
    use super::tests::parse_json;
    use super::*;
    use serde_json::json;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn string(&mut self, alphabet: &[&str], max: usize) -> String {
            let len = (self.next() % max as u64) as usize;
            (0..len).map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize]).collect()
        }
    }

    const QUERY: &[&str] = &[
        "select=",
        "order=",
        "limit=",
        "offset=",
        "or=",
        "and=",
        "not.",
        "a",
        "b",
        "id",
        "=",
        "&",
        ",",
        ".",
        "(",
        ")",
        "{",
        "}",
        "\"",
        "\\",
        ":",
        "::",
        "!",
        "inner",
        "...",
        "->",
        "->>",
        "eq",
        "in",
        "is",
        "null",
        "like",
        "*",
        "%",
        "%2",
        "%zz",
        "+",
        "fts(english)",
        "(any)",
        "cs",
        "desc",
        "nullslast",
        "0",
        "-1",
        "99999999999999999999",
    ];
    const HEADERS: &[&str] =
        &["0-9", "5-", "x", "-", "items=1-2", "text/csv", "application/json", ";nulls=stripped", ","];

    #[test]
    fn random_requests_never_panic() {
        let mut rng = XorShift(0x5eed_f1ab_ba5e_0001);
        for _ in 0..20_000 {
            let query = rng.string(QUERY, 24);
            let range = rng.string(HEADERS, 4);
            let accept = rng.string(HEADERS, 3);
            let body = rng.string(&["{", "}", "[", "]", "\"a\"", ":", "1", ",", "null", "\n"], 12);
            let method = ["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD"][(rng.next() % 6) as usize];
            let path = ["t", "rpc/f", "", "a/b/c"][(rng.next() % 4) as usize];
            let req = json!({"method": method, "path": path, "query": query, "body": body,
                             "headers": {"range": range, "accept": accept, "prefer": "handling=strict"}});
            let _ = parse_json(&req);
            let _ = crate::filter::parse_logic(LogicOp::Or, false, &query);
            let _ = crate::csv::to_rows(&body);
        }
    }
}
