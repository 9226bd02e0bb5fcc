//! Plan stage: resolve names against the catalog (the schema cache) into
//! typed plans: reads (with embedded resources), writes and function calls.
//! Pure.
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{fuzzy, Catalog, Function, Relationship, Table};
use crate::error::{CallBody, MissingFunction, MissingRelationship, RestError};
use crate::filter::{Condition, Field, Filter, LogicOp};
use crate::keyset::{self, KeyColumn, Keyset};
use crate::prefer::{Resolution, Return};
use crate::request::{
    has_aggregates, Aggregate, AggregateFn, ApiRequest, Embed, EmbedPath, Method, OrderTerm, Paging, SelectItem, Target,
};

#[derive(Debug, Clone)]
pub enum Projection {
    Star,
    Column {
        field: Field,
        key: String,
        cast: Option<String>,
    },
    Embed(Box<EmbedPlan>),
    /// An aggregate; the level's other columns become its GROUP BY.
    Aggregate {
        aggregate: Aggregate,
        key: String,
    },
}

#[derive(Debug, Clone)]
pub struct EmbedPlan {
    pub key: String,
    pub relationship: Relationship,
    pub inner: bool,
    pub spread: bool,
    pub plan: ReadPlan,
}

impl EmbedPlan {
    pub fn to_one(&self) -> bool {
        self.relationship.cardinality.is_to_one()
    }
}

#[derive(Debug, Clone)]
pub enum PlannedFilter {
    Condition { field: Field, type_name: String, condition: Condition },
    Logic { op: LogicOp, negated: bool, children: Vec<PlannedFilter> },
}

#[derive(Debug, Clone)]
pub struct PlannedOrder {
    /// The key of the to-one embed whose column this orders by (`rel(col)`).
    pub relation: Option<String>,
    pub field: Field,
    pub descending: bool,
    pub nulls_first: Option<bool>,
}

/// What a read level selects from.
#[derive(Debug, Clone)]
pub enum Source {
    Table {
        schema: String,
        name: String,
    },
    /// The rows a write returned (`pgrst_source`).
    Written,
    /// The rows of a function call (`FROM fn(...)`).
    Call,
}

#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub source: Source,
    /// Table name, for messages and the root alias.
    pub name: String,
    pub columns: Vec<String>,
    pub projection: Vec<Projection>,
    pub filters: Vec<PlannedFilter>,
    pub order: Vec<PlannedOrder>,
    pub paging: Paging,
    /// `fluxbase.max_rows` lowered (or set) the limit: a full page may be truncated.
    pub capped: Option<i64>,
    /// Keyset pagination of the root level.
    pub keyset: Option<Keyset>,
    /// The computed fields this level uses, called explicitly.
    pub computed: Vec<ComputedField>,
}

/// A computed field, written `"s"."fn"(alias::"s"."table")` rather than
/// `alias.fn`: the cast lets it apply to rows that are records of the table
/// (a write's `RETURNING`), as PostgREST casts a computed relationship's argument.
#[derive(Debug, Clone)]
pub struct ComputedField {
    pub name: String,
    /// The function, quoted and qualified.
    pub function: String,
    /// The table's row type, quoted and qualified.
    pub row_type: String,
}

/// The computed fields (names that are not columns) of a level's select, filters and order.
fn computed_fields(
    catalog: &Catalog,
    table: &Table,
    projection: &[Projection],
    filters: &[PlannedFilter],
    order: &[PlannedOrder],
) -> Vec<ComputedField> {
    // No allocation unless a name is not a column (the common read has none).
    let mut out: Vec<ComputedField> = Vec::new();
    if !catalog.row_functions {
        return out;
    }
    let mut consider = |name: &str| {
        if table.column(name).is_some() || out.iter().any(|c| c.name == name) {
            return;
        }
        if let Some(f) = catalog.computed_field(table, name) {
            out.push(ComputedField {
                name: name.to_string(),
                function: crate::sql::qualified_name(&f.schema, &f.name),
                row_type: crate::sql::qualified_name(&table.schema, &table.name),
            });
        }
    };
    fn filter_fields(f: &PlannedFilter, consider: &mut dyn FnMut(&str)) {
        match f {
            PlannedFilter::Condition { field, .. } => consider(&field.name),
            PlannedFilter::Logic { children, .. } => children.iter().for_each(|c| filter_fields(c, consider)),
        }
    }
    for p in projection {
        match p {
            Projection::Column { field, .. } => consider(&field.name),
            Projection::Aggregate { aggregate: Aggregate { field: Some(field), .. }, .. } => consider(&field.name),
            _ => {}
        }
    }
    filters.iter().for_each(|f| filter_fields(f, &mut consider));
    order.iter().filter(|o| o.relation.is_none()).for_each(|o| consider(&o.field.name));
    out
}

#[derive(Debug, Clone)]
pub struct Payload {
    /// JSON array of objects, as text: the only parameter of the write.
    pub json: String,
    pub columns: Vec<String>,
    pub rows: usize,
    /// `missing=default`: (column, default expression) for keys a row may lack.
    pub defaults: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum WriteKind {
    Insert { on_conflict: Option<(Vec<String>, Resolution)> },
    Update,
    Delete,
}

#[derive(Debug, Clone)]
pub struct WritePlan {
    pub schema: String,
    pub table: String,
    pub kind: WriteKind,
    pub payload: Option<Payload>,
    pub filters: Vec<PlannedFilter>,
    pub primary_key: Vec<String>,
    pub returning: Return,
    /// Projection of the returned rows (representation / headers-only).
    pub read: ReadPlan,
    /// With `If-Match`: the read whose ETag must still match (the GET of
    /// the same filters and `select`), run with the rows locked.
    pub precondition: Option<ReadPlan>,
    /// PATCH/DELETE of the first rows in an order (`limit`, `offset`).
    pub limited: Option<Limited>,
}

#[derive(Debug, Clone)]
pub struct Limited {
    pub order: Vec<PlannedOrder>,
    pub paging: Paging,
}

#[derive(Debug, Clone)]
pub struct CallPlan {
    pub function: Function,
    /// (name, type) of the arguments passed, read from `args_json` by `json_to_record`.
    pub args: Vec<(String, String)>,
    pub args_json: String,
    /// The function takes one unnamed json/jsonb argument: the whole body.
    pub whole_body: bool,
    pub read: Option<ReadPlan>,
    /// `limit`/`offset` of a set of scalars (rows are paged by `read`).
    pub paging: Paging,
}

/// One per request, never in a collection: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Plan {
    Read(ReadPlan),
    Write(Box<WritePlan>),
    Call(CallPlan),
}

pub fn resolve_schema(requested: Option<&str>, exposed: &[String]) -> Result<String, RestError> {
    match requested {
        None => Ok(exposed.first().cloned().unwrap_or_else(|| "public".into())),
        Some(s) if exposed.iter().any(|e| e == s) => Ok(s.to_string()),
        Some(s) => Err(RestError::Schema { schema: s.to_string(), exposed: exposed.to_vec() }),
    }
}

pub fn plan(api: &ApiRequest, schema: &str, catalog: &Catalog, max_rows: i32) -> Result<Plan, RestError> {
    match &api.target {
        Target::Root => Err(RestError::InvalidRequest("the OpenAPI description is served by the proxy".into())),
        Target::Table(name) => {
            let table = catalog.table(schema, name).ok_or_else(|| RestError::Table {
                schema: schema.into(),
                table: name.clone(),
                hint: table_hint(catalog, schema, name),
            })?;
            if api.method.is_read() {
                let mut read =
                    read_plan(api, catalog, table, Source::Table { schema: schema.into(), name: name.clone() })?;
                cap(&mut read, max_rows);
                if api.prefer.keyset || api.cursor.is_some() {
                    plan_keyset(api, table, &mut read)?;
                }
                Ok(Plan::Read(read))
            } else {
                write_plan(api, catalog, table).map(|w| Plan::Write(Box::new(w)))
            }
        }
        Target::Rpc(name) => call_plan(api, schema, catalog, name, max_rows).map(Plan::Call),
    }
}

/// Orders by the requested columns plus the primary key, and resumes after
/// the cursor's row when one is given.
fn plan_keyset(api: &ApiRequest, table: &Table, read: &mut ReadPlan) -> Result<(), RestError> {
    let refuse = |details: String| RestError::Parse { param: "cursor".into(), value: String::new(), details };
    if read.paging.offset.is_some() {
        return Err(refuse("keyset pagination and offset do not mix".into()));
    }
    let mut columns = Vec::new();
    for o in &read.order {
        let col = column(table, &o.field.name)?;
        if !o.field.json_path.is_empty() || col.nullable {
            return Err(refuse(format!("keyset pagination orders by NOT NULL columns; '{}' is not one", o.field.name)));
        }
        columns.push(KeyColumn { name: col.name.clone(), type_name: col.type_name.clone(), descending: o.descending });
    }
    if table.primary_key.is_empty() {
        return Err(refuse(format!("keyset pagination needs a primary key on '{}'", table.name)));
    }
    for pk in &table.primary_key {
        if !columns.iter().any(|c| c.name == *pk) {
            let col = column(table, pk)?;
            columns.push(KeyColumn { name: pk.clone(), type_name: col.type_name.clone(), descending: false });
        }
    }
    let selected = |name: &str| {
        read.projection.iter().any(|p| match p {
            Projection::Star => true,
            Projection::Column { field, key, cast: None } => {
                field.json_path.is_empty() && field.name == name && key == name
            }
            _ => false,
        })
    };
    if let Some(missing) = columns.iter().find(|c| !selected(&c.name)) {
        return Err(refuse(format!(
            "keyset pagination needs the order and key columns in select: add '{}'",
            missing.name
        )));
    }
    read.order = columns
        .iter()
        .map(|c| PlannedOrder {
            relation: None,
            field: Field { name: c.name.clone(), json_path: vec![] },
            descending: c.descending,
            nulls_first: None,
        })
        .collect();
    let after = api.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| keyset::decode(&columns, c)).transpose()?;
    read.keyset = Some(Keyset { columns, after });
    Ok(())
}

fn cap(read: &mut ReadPlan, max_rows: i32) {
    let max = max_rows as i64;
    if max > 0 && read.paging.limit.is_none_or(|l| l > max) {
        read.paging.limit = Some(max);
        read.capped = Some(max);
    }
}

fn column<'a>(table: &'a Table, name: &str) -> Result<&'a crate::catalog::Column, RestError> {
    table.column(name).ok_or_else(|| RestError::Column { table: table.name.clone(), column: name.to_string() })
}

/// The type of `name` on `table`: a column's, or a computed field's (a
/// function of the table's row type, `table.name` in SQL), as PostgREST
/// lets both appear in `select`, filters and `order`.
fn field_type<'a>(catalog: &'a Catalog, table: &'a Table, name: &str) -> Result<&'a str, RestError> {
    match table.column(name) {
        Some(col) => Ok(&col.type_name),
        None => catalog
            .computed_field(table, name)
            .map(|f| f.return_type.as_str())
            .ok_or_else(|| RestError::Column { table: table.name.clone(), column: name.to_string() }),
    }
}

/// A read over `table`: the root level plus its embedded resources.
fn read_plan(api: &ApiRequest, catalog: &Catalog, table: &Table, source: Source) -> Result<ReadPlan, RestError> {
    let mut used_paths = BTreeSet::new();
    let plan = read_level(api, catalog, table, source, &api.select, &[], &mut used_paths)?;
    // Parameters addressed to embeds that are not in `select` are errors, not ignored.
    let addressed =
        api.filters.iter().map(|(p, _)| p).chain(api.order.keys()).chain(api.paging.keys()).filter(|p| !p.is_empty());
    for path in addressed {
        if !used_paths.contains(path) {
            return Err(RestError::EmbedFilter(path.join(".")));
        }
    }
    Ok(plan)
}

/// One level of a read: `table`'s part of the select tree at `path` (the
/// root is `[]`), with the filters, order and paging addressed to that path.
/// Embedded resources are levels of their own, planned recursively.
fn read_level(
    api: &ApiRequest,
    catalog: &Catalog,
    table: &Table,
    source: Source,
    select: &[SelectItem],
    path: &[String],
    used_paths: &mut BTreeSet<EmbedPath>,
) -> Result<ReadPlan, RestError> {
    // An unknown column of an embedded level is named by the alias
    // PostgREST's query gives that level (`orders_1`): Postgres' message
    // names it so, for columns and aggregates alike.
    let aliased = |e: RestError| match e {
        RestError::Column { table: t, column } if !path.is_empty() && t == table.name => {
            RestError::Column { table: format!("{t}_{}", path.len()), column }
        }
        other => other,
    };
    let projection = select
        .iter()
        .map(|item| plan_select_item(api, catalog, table, item, path, used_paths))
        .collect::<Result<Vec<_>, _>>()
        .map_err(aliased)?;
    let filters = api
        .filters
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, f)| plan_filter(catalog, table, f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(aliased)?;
    let order = api
        .order
        .get(path)
        .map(|terms| {
            terms
                .iter()
                .map(|t| match &t.relation {
                    Some(relation) => related_order(table, &projection, relation, t),
                    None => plan_order(catalog, table, t),
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(aliased)?
        .unwrap_or_default();
    let computed = computed_fields(catalog, table, &projection, &filters, &order);
    Ok(ReadPlan {
        source,
        name: table.name.clone(),
        columns: table.columns.iter().map(|c| c.name.clone()).collect(),
        projection,
        filters,
        order,
        paging: api.paging.get(path).cloned().unwrap_or_default(),
        capped: None,
        keyset: None,
        computed,
    })
}

/// What one item of a level's `select` projects from `table`.
fn plan_select_item(
    api: &ApiRequest,
    catalog: &Catalog,
    table: &Table,
    item: &SelectItem,
    path: &[String],
    used_paths: &mut BTreeSet<EmbedPath>,
) -> Result<Projection, RestError> {
    Ok(match item {
        SelectItem::Star => Projection::Star,
        // `rel(count)`: Supabase's documented row count of an embed (a
        // column named `count`, where there is one, is that column).
        SelectItem::Field { field, alias, cast: None }
            if field.name == "count" && field.json_path.is_empty() && table.column("count").is_none() =>
        {
            Projection::Aggregate {
                aggregate: Aggregate {
                    function: AggregateFn::Count,
                    field: None,
                    alias: alias.clone(),
                    input_cast: None,
                    output_cast: None,
                    legacy: true,
                },
                key: alias.clone().unwrap_or_else(|| "count".into()),
            }
        }
        SelectItem::Aggregate(aggregate) => {
            if let Some(field) = &aggregate.field {
                field_type(catalog, table, &field.name)?;
            }
            let key = aggregate.alias.clone().unwrap_or_else(|| aggregate.function.name().to_string());
            Projection::Aggregate { aggregate: aggregate.clone(), key }
        }
        SelectItem::Field { field, alias, cast } => {
            field_type(catalog, table, &field.name)?;
            let key = alias.clone().unwrap_or_else(|| field.output_name().to_string());
            Projection::Column { field: field.clone(), key, cast: cast.clone() }
        }
        SelectItem::Embed(embed) => plan_embed(api, catalog, table, embed, path, used_paths)?,
    })
}

/// An embedded resource: the relationship from `table` that `embed` names
/// (by target and hint) and the target's own level of the read.
fn plan_embed(
    api: &ApiRequest,
    catalog: &Catalog,
    table: &Table,
    embed: &Embed,
    path: &[String],
    used_paths: &mut BTreeSet<EmbedPath>,
) -> Result<Projection, RestError> {
    let relationship =
        catalog.relationship(&table.schema, &table.name, &embed.name, embed.hint.as_deref()).map_err(|candidates| {
            if candidates.is_empty() {
                RestError::NoRelationship(Box::new(MissingRelationship {
                    schema: table.schema.clone(),
                    table: table.name.clone(),
                    target: embed.name.clone(),
                    hint: embed.hint.clone(),
                    suggestion: crate::catalog::no_relationship_hint(catalog, &table.schema, &table.name, &embed.name),
                }))
            } else {
                RestError::AmbiguousRelationship {
                    table: table.name.clone(),
                    target: embed.name.clone(),
                    candidates: candidates.iter().map(Relationship::summary).collect(),
                }
            }
        })?;
    let target =
        catalog.table(&relationship.target_schema, &relationship.target_table).ok_or_else(|| RestError::Table {
            schema: relationship.target_schema.clone(),
            table: relationship.target_table.clone(),
            hint: None,
        })?;
    if embed.spread && !relationship.cardinality.is_to_one() && has_aggregates(&embed.select) {
        return Err(RestError::NotImplemented(
            "Aggregates are not implemented for one-to-many or many-to-many spreads.".into(),
        ));
    }
    let mut child_path = path.to_vec();
    child_path.push(embed.key().to_string());
    used_paths.insert(child_path.clone());
    let source = Source::Table { schema: target.schema.clone(), name: target.name.clone() };
    let plan = read_level(api, catalog, target, source, &embed.select, &child_path, used_paths)?;
    Ok(Projection::Embed(Box::new(EmbedPlan {
        key: embed.key().to_string(),
        relationship,
        inner: embed.inner,
        spread: embed.spread,
        plan,
    })))
}

fn plan_filter(catalog: &Catalog, table: &Table, filter: &Filter) -> Result<PlannedFilter, RestError> {
    Ok(match filter {
        Filter::Condition { field, condition } => {
            let field_type = field_type(catalog, table, &field.name)?;
            let type_name = match field.json_path.last() {
                None => field_type.to_string(),
                Some(step) if step.as_text => "text".into(),
                Some(_) => "jsonb".into(),
            };
            PlannedFilter::Condition { field: field.clone(), type_name, condition: condition.clone() }
        }
        Filter::Logic { op, negated, children } => PlannedFilter::Logic {
            op: *op,
            negated: *negated,
            children: children.iter().map(|c| plan_filter(catalog, table, c)).collect::<Result<_, _>>()?,
        },
    })
}

fn plan_order(catalog: &Catalog, table: &Table, term: &OrderTerm) -> Result<PlannedOrder, RestError> {
    if let Some(relation) = &term.relation {
        return Err(RestError::EmbedFilter(relation.clone()));
    }
    field_type(catalog, table, &term.field.name)?;
    Ok(PlannedOrder {
        relation: None,
        field: term.field.clone(),
        descending: term.descending,
        nulls_first: term.nulls_first,
    })
}

/// `order=rel(col)`: `rel` must be a to-one embed of this level (by alias or
/// name), as PostgREST's addRelatedOrders checks; its column is left to
/// Postgres, which names a missing one.
fn related_order(
    table: &Table,
    projection: &[Projection],
    relation: &str,
    term: &OrderTerm,
) -> Result<PlannedOrder, RestError> {
    let embed = projection
        .iter()
        .find_map(|p| match p {
            Projection::Embed(e) if e.key == relation => Some(e),
            _ => None,
        })
        .ok_or_else(|| RestError::EmbedFilter(relation.to_string()))?;
    if !embed.to_one() {
        return Err(RestError::RelatedOrder { origin: table.name.clone(), target: relation.to_string() });
    }
    Ok(PlannedOrder {
        relation: Some(relation.to_string()),
        field: term.field.clone(),
        descending: term.descending,
        nulls_first: term.nulls_first,
    })
}

fn write_plan(api: &ApiRequest, catalog: &Catalog, table: &Table) -> Result<WritePlan, RestError> {
    if table.is_view() && table.primary_key.is_empty() && api.method == Method::Put {
        return Err(RestError::Put("PUT needs a table with a primary key".into()));
    }
    // Limited PATCH/DELETE (as PostgREST 10–12 had it): only with an order,
    // so that which rows change is never left to chance.
    let limited = match api.paging.get(&vec![]) {
        Some(paging) if paging.limit.is_some() || paging.offset.is_some() => {
            if !matches!(api.method, Method::Patch | Method::Delete) {
                return Err(RestError::InvalidRequest(format!("limit/offset do not apply to {}", api.method.as_str())));
            }
            let order = api.order.get(&vec![]).filter(|o| !o.is_empty()).ok_or(RestError::LimitWithoutOrder)?;
            if table.is_view() && table.primary_key.is_empty() {
                return Err(RestError::InvalidRequest(format!(
                    "a limited {} on a view needs the view to show a primary key",
                    api.method.as_str()
                )));
            }
            let order = order.iter().map(|t| plan_order(catalog, table, t)).collect::<Result<Vec<_>, _>>()?;
            Some(Limited { order, paging: paging.clone() })
        }
        _ => None,
    };
    let filters = api
        .filters
        .iter()
        .filter(|(p, _)| p.is_empty())
        .map(|(_, f)| plan_filter(catalog, table, f))
        .collect::<Result<Vec<_>, _>>()?;
    let (kind, payload) = match api.method {
        Method::Post => {
            let on_conflict = api.prefer.resolution.map(|r| {
                let cols = api.on_conflict.clone().unwrap_or_else(|| table.primary_key.clone());
                (cols, r)
            });
            if let Some((cols, _)) = &on_conflict {
                if cols.is_empty() {
                    return Err(RestError::InvalidRequest("upsert needs on_conflict columns or a primary key".into()));
                }
                for c in cols {
                    column(table, c)?;
                }
            }
            (WriteKind::Insert { on_conflict }, Some(payload(api, table, true)?))
        }
        Method::Put => {
            let payload = payload(api, table, false)?;
            check_put(table, &api.filters, &payload)?;
            let on_conflict = Some((table.primary_key.clone(), Resolution::MergeDuplicates));
            (WriteKind::Insert { on_conflict }, Some(payload))
        }
        Method::Patch => (WriteKind::Update, Some(payload(api, table, false)?)),
        Method::Delete => (WriteKind::Delete, None),
        Method::Get | Method::Head => unreachable!("reads are planned by read_plan"),
    };
    let returning = api.prefer.return_.unwrap_or(Return::Minimal);
    let read = match returning {
        Return::HeadersOnly => {
            let projection = table
                .primary_key
                .iter()
                .map(|k| Projection::Column {
                    field: Field { name: k.clone(), json_path: vec![] },
                    key: k.clone(),
                    cast: None,
                })
                .collect();
            ReadPlan {
                source: Source::Written,
                name: table.name.clone(),
                columns: table.columns.iter().map(|c| c.name.clone()).collect(),
                projection,
                filters: vec![],
                order: vec![],
                paging: Paging::default(),
                capped: None,
                keyset: None,
                computed: vec![],
            }
        }
        _ => {
            let mut read = read_plan(api, catalog, table, Source::Written)?;
            // Filters and paging of the request select what to write, not what to return.
            read.filters.clear();
            read.paging = Paging::default();
            read
        }
    };
    let precondition = match (&api.if_match, api.method) {
        (Some(_), Method::Patch | Method::Delete | Method::Put) => {
            let mut read = read_plan(
                api,
                catalog,
                table,
                Source::Table { schema: table.schema.clone(), name: table.name.clone() },
            )?;
            read.paging = Paging::default();
            Some(read)
        }
        _ => None,
    };
    Ok(WritePlan {
        limited,
        precondition,
        schema: table.schema.clone(),
        table: table.name.clone(),
        kind,
        payload,
        filters,
        primary_key: table.primary_key.clone(),
        returning,
        read,
    })
}

/// The write's rows as a JSON array text, and the columns it sets.
fn payload(api: &ApiRequest, table: &Table, allow_array: bool) -> Result<Payload, RestError> {
    let body = api.body.as_ref().ok_or_else(|| RestError::InvalidBody("Empty or invalid json".into()))?;
    let rows: Vec<&serde_json::Map<String, Value>> = match body {
        Value::Object(o) => vec![o],
        Value::Array(items) if allow_array => items
            .iter()
            .map(|i| i.as_object().ok_or_else(|| RestError::InvalidBody("All array elements must be objects".into())))
            .collect::<Result<_, _>>()?,
        _ => return Err(RestError::InvalidBody("Expected a JSON object".into())),
    };
    let columns: Vec<String> = match &api.columns {
        Some(cols) => cols.clone(),
        None => {
            let first: Vec<String> = rows.first().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            for row in rows.iter().skip(1) {
                if row.len() != first.len() || !first.iter().all(|k| row.contains_key(k)) {
                    return Err(RestError::InvalidBody("All object keys must match".into()));
                }
            }
            first
        }
    };
    for c in &columns {
        table.column(c).ok_or_else(|| RestError::PayloadColumn { table: table.name.clone(), column: c.clone() })?;
    }
    let json = match body {
        Value::Array(_) => body.to_string(),
        other => Value::Array(vec![other.clone()]).to_string(),
    };
    let defaults = if api.prefer.missing_default {
        columns.iter().filter_map(|c| table.column(c)?.default.clone().map(|d| (c.clone(), d))).collect()
    } else {
        vec![]
    };
    Ok(Payload { json, columns, rows: rows.len(), defaults })
}

/// PUT is a single-row upsert addressed by its full primary key: the filters
/// are exactly `pk=eq.value` and the payload carries the same values.
fn check_put(table: &Table, filters: &[(EmbedPath, Filter)], payload: &Payload) -> Result<(), RestError> {
    let mut by_column = BTreeMap::new();
    for (path, f) in filters {
        match f {
            Filter::Condition { field, condition }
                if path.is_empty()
                    && field.json_path.is_empty()
                    && !condition.negated
                    && condition.operator == crate::filter::Operator::Eq =>
            {
                if let crate::filter::Operand::Scalar(v) = &condition.operand {
                    by_column.insert(field.name.clone(), v.clone());
                }
            }
            _ => {
                return Err(RestError::Put(
                    "Filters must include all and only primary key columns with 'eq' operators".into(),
                ))
            }
        }
    }
    let pk: BTreeSet<&String> = table.primary_key.iter().collect();
    if pk.is_empty() || by_column.keys().collect::<BTreeSet<_>>() != pk {
        return Err(RestError::Put("Filters must include all and only primary key columns with 'eq' operators".into()));
    }
    if payload.rows != 1 {
        return Err(RestError::InvalidBody("PUT takes a single object".into()));
    }
    let body: Value = serde_json::from_str(&payload.json).unwrap_or(Value::Null);
    let row = body.get(0).and_then(Value::as_object);
    for (col, value) in &by_column {
        let given = row.and_then(|r| r.get(col)).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        if given.as_deref() != Some(value.as_str()) {
            return Err(RestError::PutMismatch);
        }
    }
    Ok(())
}

fn call_plan(
    api: &ApiRequest,
    schema: &str,
    catalog: &Catalog,
    name: &str,
    max_rows: i32,
) -> Result<CallPlan, RestError> {
    let candidates = catalog.functions(schema, name);
    // Named arguments given: POST body keys, or GET parameters.
    let (mut given, body_object): (Vec<String>, Option<serde_json::Map<String, Value>>) = if api.method == Method::Post
    {
        match &api.body {
            Some(Value::Object(o)) => (o.keys().cloned().collect(), Some(o.clone())),
            None => (vec![], Some(serde_json::Map::new())),
            Some(_) => (vec![], None),
        }
    } else {
        (api.rpc_params.iter().map(|(k, _)| k.clone()).collect(), None)
    };
    given.sort();
    given.dedup();
    let body_kind = match (&api.raw_body, api.method) {
        (Some((kind, _)), _) => Some(*kind),
        (None, Method::Post) => Some(CallBody::Json),
        _ => None,
    };
    let not_found = || {
        RestError::Function(Box::new(MissingFunction {
            schema: schema.into(),
            name: name.into(),
            args: given.clone(),
            body: body_kind,
            hint: function_hint(catalog, schema, name, candidates, &given),
        }))
    };
    // A raw body (text, xml, bytea): the one unnamed argument of that type.
    if let Some((kind, text)) = &api.raw_body {
        let type_name = match kind {
            CallBody::Text => "text",
            CallBody::Xml => "xml",
            CallBody::Bytea => "bytea",
            CallBody::Json => "json",
        };
        let f = candidates
            .iter()
            .find(|f| f.args.len() == 1 && f.args[0].name.is_empty() && f.args[0].type_name == type_name)
            .ok_or_else(not_found)?;
        return Ok(CallPlan {
            function: f.clone(),
            args: vec![],
            args_json: text.clone(),
            whole_body: true,
            read: result_plan(api, catalog, f, max_rows)?,
            paging: root_paging(api),
        });
    }
    let whole_body_fn = candidates.iter().find(|f| {
        f.args.len() == 1 && f.args[0].name.is_empty() && matches!(f.args[0].type_name.as_str(), "json" | "jsonb")
    });
    if api.method == Method::Post {
        if let Some(f) = whole_body_fn {
            if candidates.len() > 1 {
                return Err(ambiguous(candidates.iter().collect()));
            }
            return Ok(CallPlan {
                function: f.clone(),
                args: vec![],
                args_json: api.body.as_ref().map(Value::to_string).unwrap_or_else(|| "{}".into()),
                whole_body: true,
                read: result_plan(api, catalog, f, max_rows)?,
                paging: root_paging(api),
            });
        }
        if body_object.is_none() {
            return Err(RestError::InvalidBody("Expected a JSON object of named arguments".into()));
        }
    }
    let matching: Vec<&Function> = candidates
        .iter()
        .filter(|f| {
            let names: BTreeSet<&str> = f.args.iter().map(|a| a.name.as_str()).collect();
            let required_ok = f.required_args().iter().all(|a| given.contains(&a.name));
            let all_known = api.method != Method::Post || given.iter().all(|g| names.contains(g.as_str()));
            required_ok && all_known && f.args.iter().all(|a| !a.name.is_empty())
        })
        .collect();
    let function = match matching.as_slice() {
        [] => return Err(not_found()),
        [one] => (*one).clone(),
        many => {
            // Prefer the overload that uses the most of the given names.
            let used = |f: &Function| f.args.iter().filter(|a| given.contains(&a.name)).count();
            let best_n = many.iter().map(|f| used(f)).max().unwrap_or(0);
            let best: Vec<&Function> = many.iter().copied().filter(|f| used(f) == best_n).collect();
            if best.len() > 1 {
                return Err(ambiguous(best));
            }
            best[0].clone()
        }
    };
    let mut args_obj = serde_json::Map::new();
    let mut args = Vec::new();
    for a in &function.args {
        let value = match &body_object {
            Some(o) => o.get(&a.name).cloned(),
            None => api.rpc_params.iter().find(|(k, _)| *k == a.name).map(|(_, v)| Value::String(v.clone())),
        };
        if let Some(v) = value {
            args_obj.insert(a.name.clone(), v);
            args.push((a.name.clone(), a.type_name.clone()));
        }
    }
    Ok(CallPlan {
        read: result_plan(api, catalog, &function, max_rows)?,
        function,
        args,
        args_json: Value::Object(args_obj).to_string(),
        whole_body: false,
        paging: root_paging(api),
    })
}

fn root_paging(api: &ApiRequest) -> Paging {
    api.paging.get(&vec![]).cloned().unwrap_or_default()
}

/// PGRST203 with PostgREST's candidate list: `schema.name(arg => type, …)`.
fn ambiguous(functions: Vec<&Function>) -> RestError {
    let candidates = functions
        .iter()
        .map(|f| {
            let args: Vec<String> = f.args.iter().map(|a| format!("{} => {}", a.name, a.type_name)).collect();
            format!("{}.{}({})", f.schema, f.name, args.join(", "))
        })
        .collect();
    RestError::AmbiguousFunction { candidates }
}

/// PGRST205's hint, as PostgREST's tableNotFoundHint words it: a table or
/// view of that schema with a close name (fuzzy score at least 0.75).
fn table_hint(catalog: &Catalog, schema: &str, name: &str) -> Option<String> {
    let names: BTreeSet<&str> = catalog.tables_in(schema).map(|t| t.name.as_str()).collect();
    let names: Vec<&str> = names.into_iter().collect();
    fuzzy::best(&names, name, 0.75).map(|t| format!("Perhaps you meant the table '{schema}.{t}'"))
}

/// PGRST202's hint, as PostgREST words it: a function of a close name
/// (fuzzy score at least 0.75) when none has this name, else the closest
/// parameter list of its overloads (at least 0.33), scored by the same
/// fuzzy set PostgREST uses (catalog/fuzzy.rs).
fn function_hint(
    catalog: &Catalog,
    schema: &str,
    name: &str,
    overloads: &[Function],
    given: &[String],
) -> Option<String> {
    fn listed(names: &[&str]) -> String {
        let mut names = names.to_vec();
        names.sort();
        format!("({})", names.join(", "))
    }
    let prefix = format!("Perhaps you meant to call the function {schema}.");
    if overloads.is_empty() {
        let names: BTreeSet<&str> = catalog.functions_in(schema).map(|f| f.name.as_str()).collect();
        let names: Vec<&str> = names.into_iter().collect();
        return fuzzy::best(&names, name, 0.75).map(|n| format!("{prefix}{n}"));
    }
    let lists: Vec<String> =
        overloads.iter().map(|f| listed(&f.args.iter().map(|a| a.name.as_str()).collect::<Vec<_>>())).collect();
    let lists: Vec<&str> = lists.iter().map(String::as_str).collect();
    let wanted = listed(&given.iter().map(String::as_str).collect::<Vec<_>>());
    fuzzy::best(&lists, &wanted, fuzzy::MIN_SCORE).map(|l| format!("{prefix}{name}{l}"))
}

/// Rows of a set- or composite-returning function can be selected, filtered,
/// ordered and paged like a table's; parameters that are not arguments are
/// filters on the result.
fn result_plan(
    api: &ApiRequest,
    catalog: &Catalog,
    function: &Function,
    max_rows: i32,
) -> Result<Option<ReadPlan>, RestError> {
    if !function.returns_composite {
        return Ok(None);
    }
    // Rows of a table type embed through that table's relationships.
    let table_type = function.returns_table.as_ref().and_then(|r| catalog.table(&r.schema, &r.name));
    let result_table;
    let table = match table_type {
        Some(t) => t,
        None => {
            result_table = function.result_table();
            &result_table
        }
    };
    let arg_names: BTreeSet<&str> = function.args.iter().map(|a| a.name.as_str()).collect();
    let mut extra = Vec::new();
    for (k, v) in &api.rpc_params {
        if arg_names.contains(k.as_str()) {
            continue;
        }
        let field = Field::parse(k).map_err(|_| RestError::InvalidRequest(format!("invalid filter \"{k}\"")))?;
        let condition = crate::filter::parse_condition(v).map_err(|e| crate::request::filter_error(k, v, e))?;
        extra.push((vec![], Filter::Condition { field, condition }));
    }
    let mut with_extra = api.clone();
    with_extra.filters.extend(extra);
    let mut read = read_plan(&with_extra, catalog, table, Source::Call)?;
    cap(&mut read, max_rows);
    Ok(Some(read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{test_catalog, Cardinality};
    use crate::request::{parse, HttpRequest};
    use serde_json::json;

    fn columns(names: &[(&str, &str)]) -> Value {
        names
            .iter()
            .map(|(name, ty)| {
                json!({"name": name, "type": ty, "nullable": *name != "id", "has_default": false, "generated": false})
            })
            .collect()
    }

    fn table(name: &str, cols: &[(&str, &str)]) -> Value {
        json!({"schema": "public", "name": name, "kind": "r", "comment": null, "columns": columns(cols),
               "primary_key": ["id"], "unique_keys": [["id"]]})
    }

    fn fk(name: &str, table: &str, column: &str, target: &str) -> Value {
        json!({"name": name, "schema": "public", "table": table, "columns": [column],
               "foreign_schema": "public", "foreign_table": target, "foreign_columns": ["id"]})
    }

    fn function(name: &str, args: &[(&str, &str)], defaults: i16) -> Value {
        let args: Vec<Value> = args.iter().map(|(n, t)| json!({"name": n, "type": t})).collect();
        json!({"schema": "public", "name": name, "args": args, "defaults": defaults, "returns_set": false,
               "returns_composite": false, "returns_void": false, "result_columns": null, "volatility": "s"})
    }

    /// Users write posts (as author and as editor: two relationships) and
    /// have one profile each.
    fn catalog() -> Catalog {
        test_catalog(json!({
            "tables": [
                table("users", &[("id", "integer"), ("name", "text")]),
                table("posts", &[("id", "integer"), ("title", "text"), ("author_id", "integer"), ("editor_id", "integer")]),
                table("profiles", &[("id", "integer"), ("bio", "text")]),
            ],
            "foreign_keys": [
                fk("posts_author_fkey", "posts", "author_id", "users"),
                fk("posts_editor_fkey", "posts", "editor_id", "users"),
                fk("profiles_id_fkey", "profiles", "id", "users"),
            ],
            "functions": [
                function("add", &[("a", "integer")], 0),
                function("add", &[("a", "integer"), ("b", "integer")], 0),
                function("scale", &[("x", "numeric"), ("by", "numeric")], 1),
                function("scale", &[("x", "numeric"), ("times", "numeric")], 1),
            ],
        }))
    }

    fn plan_get(path: &str, query: &str) -> Result<Plan, RestError> {
        let text = json!({"method": "GET", "path": path, "query": query}).to_string();
        let api = parse(&HttpRequest::from_json(&text).unwrap()).unwrap();
        plan(&api, "public", &catalog(), 0)
    }

    fn read_plan_of(plan: Result<Plan, RestError>) -> ReadPlan {
        match plan {
            Ok(Plan::Read(read)) => read,
            other => panic!("a read plan, not {other:?}"),
        }
    }

    fn embed(read: &ReadPlan, key: &str) -> EmbedPlan {
        read.projection
            .iter()
            .find_map(|p| match p {
                Projection::Embed(e) if e.key == key => Some((**e).clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no embed '{key}' in {:?}", read.projection))
    }

    #[test]
    fn a_filtered_select_resolves_columns_and_types() {
        let read = read_plan_of(plan_get("posts", "select=id,headline:title&author_id=eq.7&order=id.desc"));
        assert!(matches!(&read.source, Source::Table { schema, name } if schema == "public" && name == "posts"));
        let keys: Vec<&str> = read
            .projection
            .iter()
            .map(|p| match p {
                Projection::Column { key, .. } => key.as_str(),
                other => panic!("a column, not {other:?}"),
            })
            .collect();
        assert_eq!(keys, ["id", "headline"]);
        let [PlannedFilter::Condition { field, type_name, .. }] = read.filters.as_slice() else {
            panic!("one condition, not {:?}", read.filters)
        };
        assert_eq!((field.name.as_str(), type_name.as_str()), ("author_id", "integer"));
        assert!(read.order[0].descending);
        // The value reaches SQL as a parameter, never in the text.
        let query = crate::sql::read(&read, crate::sql::Body::Array, false, false);
        assert_eq!(query.params, ["7"]);
        assert!(!query.sql.contains('7'), "{}", query.sql);
    }

    #[test]
    fn embeds_many_to_one_and_one_to_many() {
        let read = read_plan_of(plan_get("posts", "select=title,author:users!posts_author_fkey(name)"));
        let author = embed(&read, "author");
        assert_eq!(author.relationship.cardinality, Cardinality::ManyToOne);
        assert_eq!(author.relationship.columns, [("author_id".to_string(), "id".to_string())]);
        assert!(author.to_one());
        assert_eq!(author.plan.name, "users");

        let read = read_plan_of(plan_get("users", "select=name,posts!author_id(title)&posts.title=like.A*"));
        let posts = embed(&read, "posts");
        assert_eq!(posts.relationship.cardinality, Cardinality::OneToMany);
        assert!(!posts.to_one());
        // The embedded filter lands on the embedded level, not the root.
        assert!(read.filters.is_empty());
        assert_eq!(posts.plan.filters.len(), 1);
    }

    #[test]
    fn two_relationships_to_one_table_are_ambiguous_without_a_hint() {
        let err = plan_get("posts", "select=title,users(name)").unwrap_err();
        let RestError::AmbiguousRelationship { table, target, candidates } = &err else { panic!("{err:?}") };
        assert_eq!((table.as_str(), target.as_str(), candidates.len()), ("posts", "users", 2));
        assert_eq!((err.status(), &err.body()["code"]), (300, &json!("PGRST201")));
        let err = plan_get("posts", "select=title,comments(body)").unwrap_err();
        assert_eq!((err.status(), &err.body()["code"]), (400, &json!("PGRST200")));
    }

    #[test]
    fn unknown_names_are_refused_where_they_appear() {
        let column = |table: &str, column: &str| RestError::Column { table: table.into(), column: column.into() };
        assert_eq!(plan_get("users", "select=id,nickname").unwrap_err(), column("users", "nickname"));
        assert_eq!(plan_get("users", "nickname=eq.x").unwrap_err(), column("users", "nickname"));
        assert_eq!(plan_get("users", "order=nickname").unwrap_err(), column("users", "nickname"));
        assert_eq!(
            plan_get("posts", "select=id,author:users!posts_author_fkey(nickname)").unwrap_err(),
            // Named by the embedded level's alias in PostgREST's query.
            column("users_1", "nickname")
        );
        assert_eq!(
            plan_get("posts", "select=id,author:users!posts_author_fkey(nickname.max())").unwrap_err(),
            column("users_1", "nickname")
        );
        assert_eq!(
            plan_get("people", "").unwrap_err(),
            RestError::Table { schema: "public".into(), table: "people".into(), hint: None }
        );
        // A filter addressed to an embed that is not selected.
        assert_eq!(plan_get("users", "posts.id=eq.1").unwrap_err(), RestError::EmbedFilter("posts".into()));
    }

    #[test]
    fn rpc_picks_the_overload_the_arguments_name() {
        let called = |query: &str| match plan_get("rpc/add", query) {
            Ok(Plan::Call(call)) => call.function.args.len(),
            other => panic!("a call plan, not {other:?}"),
        };
        assert_eq!(called("a=1"), 1);
        assert_eq!(called("a=1&b=2"), 2);
        // Both overloads of scale take x and have a defaulted second argument.
        let err = plan_get("rpc/scale", "x=2").unwrap_err();
        let RestError::AmbiguousFunction { candidates } = &err else { panic!("{err:?}") };
        assert_eq!(candidates.len(), 2, "{candidates:?}");
        assert!(candidates[0].starts_with("public.scale(x => "), "{candidates:?}");
        let Ok(Plan::Call(call)) = plan_get("rpc/scale", "x=2&times=3") else { panic!() };
        assert_eq!(call.args, [("x".to_string(), "numeric".to_string()), ("times".to_string(), "numeric".to_string())]);
        assert_eq!(call.args_json, r#"{"x":"2","times":"3"}"#);
        assert!(matches!(plan_get("rpc/add", "b=2").unwrap_err(), RestError::Function(_)));
    }

    #[test]
    fn max_rows_caps_the_page_and_says_so() {
        let text = json!({"method": "GET", "path": "users", "query": "limit=50"}).to_string();
        let api = parse(&HttpRequest::from_json(&text).unwrap()).unwrap();
        let Ok(Plan::Read(read)) = plan(&api, "public", &catalog(), 20) else { panic!() };
        assert_eq!((read.paging.limit, read.capped), (Some(20), Some(20)));
        let Ok(Plan::Read(read)) = plan(&api, "public", &catalog(), 100) else { panic!() };
        assert_eq!((read.paging.limit, read.capped), (Some(50), None));
    }
}
