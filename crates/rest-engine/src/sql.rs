//! SQL stage: a plan into one SQL text plus text parameters. Identifiers are
//! always quoted; user values (filter values, JSON keys, payloads) only ever
//! travel as `$n` parameters. Pure.
use crate::filter::{Field, IsValue, LogicOp, Operand, Quantifier};
use crate::keyset::{KeyColumn, Keyset};
use crate::plan::{
    CallPlan, ComputedField, EmbedPlan, Payload, PlannedFilter, PlannedOrder, Projection, ReadPlan, Source, WriteKind,
    WritePlan,
};
use crate::prefer::{Resolution, Return};
use crate::request::{Aggregate, Explain, Paging};

#[derive(Debug, PartialEq)]
pub struct Query {
    pub sql: String,
    pub params: Vec<String>,
    pub shape: Shape,
}

/// What the statement yields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// One row `(body text, rows int8[, total int8])`.
    Aggregated,
    /// One JSON object (text) per row, joined into the body by the engine:
    /// no aggregate to set up per execution, the commonest case.
    Rows { object: bool },
    /// A bare statement (a write without a body, EXPLAIN): SPI's row count.
    Bare,
}

/// How the rows of the result become the body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body {
    Array,
    /// The first (only) row as an object: singular responses, non-set functions.
    Object,
    /// The rows as GeoJSON features of a FeatureCollection (needs PostGIS).
    GeoJson,
    /// The rows as CSV, quoted as PostgREST's statement quotes them: each
    /// row's record text without its parentheses, after a header row.
    Csv,
    None,
}

/// The third column of an aggregated statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Total {
    None,
    /// `count=exact`: the unpaged row count.
    Exact,
    /// An upsert's inserted rows (`pgrst.inserted`, as PostgREST counts them).
    Inserted,
}

/// The rows an upsert inserted (not updated): counted by the statement's
/// own `set_config` calls, as PostgREST's statement counts them.
const INSERTED: &str = "nullif(current_setting('pgrst.inserted', true), '')::int8";
const COUNT_INSERT: &str = "set_config('pgrst.inserted', (coalesce(nullif(current_setting('pgrst.inserted', true), '')::int, 0) + 1)::text, true) <> '0'";
const COUNT_UPDATE: &str = "set_config('pgrst.inserted', (coalesce(nullif(current_setting('pgrst.inserted', true), '')::int, 0) - 1)::text, true) <> '-1'";

pub fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_ident(&mut out, name);
    out
}

/// Appends `name` quoted as an identifier. The builder's hot path: plain
/// pushes instead of the formatting machinery, which costs several times more.
fn push_ident(out: &mut String, name: &str) {
    out.push('"');
    if name.contains('"') {
        out.push_str(&name.replace('"', "\"\""));
    } else {
        out.push_str(name);
    }
    out.push('"');
}

/// `"a"."b"`.
pub(crate) fn qualified_name(a: &str, b: &str) -> String {
    qualified(a, b, None)
}

/// `"a"."b"`, and `"a"."b" AS "c"` with an alias.
fn qualified(a: &str, b: &str, alias: Option<&str>) -> String {
    let mut out = String::with_capacity(a.len() + b.len() + alias.map_or(0, |c| c.len() + 6) + 5);
    push_ident(&mut out, a);
    out.push('.');
    push_ident(&mut out, b);
    if let Some(c) = alias {
        out.push_str(" AS ");
        push_ident(&mut out, c);
    }
    out
}

/// A Postgres array literal of text elements, each quoted and escaped.
fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> =
        items.iter().map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("{{{}}}", quoted.join(","))
}

#[derive(Default)]
struct Builder {
    params: Vec<String>,
    /// Embedding depth of the level being written (0: the root).
    depth: usize,
    /// FROM clause of `Source::Call` levels.
    call_from: Option<String>,
    /// FROM clause of the next level, when an embed decides it (computed relationships).
    from_override: Option<String>,
    /// Computed fields of the level being written.
    computed: Vec<ComputedField>,
    /// Lock the root level's rows (`FOR UPDATE OF`), for preconditions.
    lock_root: bool,
    /// The level being written is a to-one spread: its aggregates are
    /// hoisted to the nearest level that is not (PostgREST's
    /// hoistSpreadAggFunctions), so it selects their inputs instead.
    hoisting: bool,
    /// The level above groups its rows (to-one spreads pass its columns up
    /// to be grouped by).
    parent_grouped: bool,
}

impl Builder {
    fn bind(&mut self, value: impl Into<String>) -> String {
        self.params.push(value.into());
        let mut p = String::with_capacity(4);
        p.push('$');
        push_number(&mut p, self.params.len());
        p
    }

    fn field(&mut self, alias: &str, field: &Field) -> String {
        let mut expr = match self.computed.iter().find(|c| c.name == field.name) {
            Some(c) => format!("{}({}::{})", c.function, ident(alias), c.row_type),
            None => qualified(alias, &field.name, None),
        };
        for step in &field.json_path {
            let op = if step.as_text { "->>" } else { "->" };
            let key = match step.key.parse::<i32>() {
                Ok(_) => format!("{}::int4", self.bind(step.key.clone())),
                Err(_) => format!("{}::text", self.bind(step.key.clone())),
            };
            expr = format!("({expr}{op}{key})");
        }
        if field.json_path.last().is_some_and(|s| !s.as_text) {
            // `->` on json and jsonb: compare and order as jsonb.
            expr = format!("{expr}::jsonb");
        }
        expr
    }

    fn filters(&mut self, alias: &str, filters: &[PlannedFilter]) -> Vec<String> {
        filters.iter().map(|f| self.filter(alias, f)).collect()
    }

    fn filter(&mut self, alias: &str, filter: &PlannedFilter) -> String {
        match filter {
            PlannedFilter::Logic { op, negated, children } => {
                let joiner = if *op == LogicOp::And { " AND " } else { " OR " };
                let parts = self.filters(alias, children);
                let expr = format!("({})", parts.join(joiner));
                if *negated {
                    format!("NOT {expr}")
                } else {
                    expr
                }
            }
            PlannedFilter::Condition { field, type_name, condition: c } => {
                let lhs = self.field(alias, field);
                let ty = type_name;
                let expr = match (&c.operator, &c.operand) {
                    (_, Operand::Is(v)) => {
                        let rhs = match v {
                            IsValue::Null => "NULL",
                            IsValue::NotNull => "NOT NULL",
                            IsValue::True => "TRUE",
                            IsValue::False => "FALSE",
                            IsValue::Unknown => "UNKNOWN",
                        };
                        format!("{lhs} IS {rhs}")
                    }
                    (_, Operand::List(items)) => {
                        let p = self.bind(array_literal(items));
                        format!("{lhs} = ANY({p}::{ty}[])")
                    }
                    (op, Operand::Quantified(q, items)) => {
                        let quantifier = if *q == Quantifier::Any { "ANY" } else { "ALL" };
                        let p = self.bind(array_literal(items));
                        if op.is_text_match() {
                            format!("{lhs}::text {} {quantifier}({p}::text[])", op.sql())
                        } else {
                            format!("{lhs} {} {quantifier}({p}::{ty}[])", op.sql())
                        }
                    }
                    (op, Operand::Text { language, query }) => {
                        let func = op.tsquery_fn().expect("text operands come with full-text operators");
                        let q = self.bind(query.clone());
                        match language {
                            Some(lang) => {
                                let l = self.bind(lang.clone());
                                format!("{lhs} @@ {func}({l}::regconfig, {q})")
                            }
                            None => format!("{lhs} @@ {func}({q})"),
                        }
                    }
                    (op, Operand::Scalar(v)) if op.is_text_match() => {
                        let p = self.bind(v.clone());
                        format!("{lhs}::text {} {p}", op.sql())
                    }
                    (op, Operand::Scalar(v)) => {
                        let p = self.bind(v.clone());
                        [lhs.as_str(), " ", op.sql(), " ", &p, "::", ty].concat()
                    }
                };
                if c.negated {
                    format!("NOT ({expr})")
                } else {
                    expr
                }
            }
        }
    }

    fn from(&self, plan: &ReadPlan, alias: &str) -> String {
        match &plan.source {
            Source::Table { schema, name } => qualified(schema, name, Some(alias)),
            Source::Written => format!("pgrst_source AS {}", ident(alias)),
            Source::Call => self.call_from.clone().expect("call plans set the FROM clause"),
        }
    }

    /// `SELECT … FROM … [joins] WHERE … ORDER BY … LIMIT … OFFSET …` of one level.
    /// `link` is the join condition to the parent level, for embeds.
    fn select(&mut self, plan: &ReadPlan, alias: &str, link: Option<String>, paged: bool) -> String {
        let from = match self.from_override.take() {
            Some(from) => from,
            None => self.from(plan, alias),
        };
        let outer_computed = std::mem::replace(&mut self.computed, plan.computed.clone());
        let mut columns = Vec::new();
        let mut joins = Vec::new();
        let hoisting = self.hoisting;
        // This level aggregates its own aggregates, unless it hoists them,
        // and those its to-one spreads hoist to it.
        let aggregated = !hoisting
            && plan.projection.iter().any(|p| match p {
                Projection::Aggregate { .. } => true,
                Projection::Embed(e) => e.spread && e.to_one() && hoists_aggregates(&e.plan),
                _ => false,
            });
        // With aggregates, every other output column is grouped by (by position).
        let mut group_by = Vec::new();
        // Embed keys and the aliases of their joined results, for `order=rel(col)`.
        let mut related = Vec::new();
        for p in &plan.projection {
            match p {
                Projection::Star if aggregated => {
                    for c in &plan.columns {
                        columns.push(qualified(alias, c, Some(c)));
                        group_by.push(columns.len().to_string());
                    }
                }
                Projection::Star => columns.push(ident(alias) + ".*"),
                Projection::Aggregate { aggregate: a, key } if hoisting => {
                    // The input of an aggregate a level above; `count()`
                    // counts the rows this (outer-joined) level matched.
                    let mut arg = match &a.field {
                        Some(field) => self.field(alias, field),
                        None => "TRUE".into(),
                    };
                    if let Some(cast) = &a.input_cast {
                        arg = format!("({arg})::{cast}");
                    }
                    columns.push(format!("{arg} AS {}", ident(key)));
                }
                Projection::Aggregate { aggregate: a, key } => {
                    let mut arg = match &a.field {
                        Some(field) => self.field(alias, field),
                        None => format!("{}.*", ident(alias)),
                    };
                    if let Some(cast) = &a.input_cast {
                        arg = format!("({arg})::{cast}");
                    }
                    let mut expr = format!("{}({arg})", a.function.name());
                    if let Some(cast) = &a.output_cast {
                        expr = format!("({expr})::{cast}");
                    }
                    columns.push(format!("{expr} AS {}", ident(key)));
                }
                Projection::Column { field, key, cast } => {
                    let mut expr = self.field(alias, field);
                    if let Some(cast) = cast {
                        expr = format!("({expr})::{cast}");
                    }
                    columns.push(format!("{expr} AS {}", ident(key)));
                    if aggregated {
                        group_by.push(columns.len().to_string());
                    }
                }
                Projection::Embed(embed) => {
                    // Embedded values that end up grouped by are jsonb.
                    let grouped = aggregated || (hoisting && self.parent_grouped);
                    let (embed_columns, join, agg) = self.embed(alias, &plan.name, embed, grouped);
                    related.push((embed.key.as_str(), agg));
                    for (column, is_aggregate) in embed_columns {
                        columns.push(column);
                        // Next to aggregates, embedded values are grouped by, as PostgREST groups them.
                        if aggregated && !is_aggregate {
                            group_by.push(columns.len().to_string());
                        }
                    }
                    joins.push(join);
                }
            }
        }
        // No columns (`rel()`) is a valid zero-column SELECT: an empty object.
        let mut sql = ["SELECT ", &columns.join(", "), " FROM ", &from].concat();
        for j in joins {
            sql.push(' ');
            sql.push_str(&j);
        }
        let root = self.depth == 0;
        let mut conditions: Vec<String> = link.into_iter().collect();
        conditions.extend(self.filters(alias, &plan.filters));
        if let (true, Some(Keyset { columns, after: Some(values) })) = (root, &plan.keyset) {
            conditions.push(self.after(alias, columns, values));
        }
        sql.push_str(&where_clause(&conditions));
        if !group_by.is_empty() {
            sql.push_str(" GROUP BY ");
            sql.push_str(&group_by.join(", "));
        }
        if paged {
            self.order_and_page(&mut sql, alias, &related, &plan.order, &plan.paging);
        }
        self.computed = outer_computed;
        sql
    }

    /// ` ORDER BY … LIMIT … OFFSET …`
    fn order_and_page(
        &mut self,
        sql: &mut String,
        alias: &str,
        related: &[(&str, String)],
        order: &[PlannedOrder],
        paging: &Paging,
    ) {
        if !order.is_empty() {
            let terms: Vec<String> = order
                .iter()
                .map(|o| {
                    let relation = o.relation.as_deref().and_then(|r| related.iter().find(|(k, _)| *k == r));
                    let mut t = match relation {
                        Some((_, agg)) => {
                            let computed = std::mem::take(&mut self.computed);
                            let t = self.field(agg, &o.field);
                            self.computed = computed;
                            t
                        }
                        None => self.field(alias, &o.field),
                    };
                    t.push_str(if o.descending { " DESC" } else { " ASC" });
                    match o.nulls_first {
                        Some(true) => t.push_str(" NULLS FIRST"),
                        Some(false) => t.push_str(" NULLS LAST"),
                        None => {}
                    }
                    t
                })
                .collect();
            sql.push_str(" ORDER BY ");
            sql.push_str(&terms.join(", "));
        }
        if let Some(limit) = paging.limit {
            let p = self.bind(limit.to_string());
            sql.push_str(&format!(" LIMIT {p}::int8"));
        }
        if let Some(offset) = paging.offset {
            let p = self.bind(offset.to_string());
            sql.push_str(&format!(" OFFSET {p}::int8"));
        }
    }

    /// The WHERE clause of an UPDATE/DELETE: its filters, or with `limit`,
    /// the rows (by primary key, else `ctid`) the ordered, paged filters pick.
    fn write_where(&mut self, plan: &WritePlan, table: &str) -> String {
        let Some(limited) = &plan.limited else {
            return where_clause(&self.filters(&plan.table, &plan.filters));
        };
        let key: Vec<String> = if plan.primary_key.is_empty() {
            vec!["ctid".into()]
        } else {
            plan.primary_key.iter().map(|k| ident(k)).collect()
        };
        let outer: Vec<String> = key.iter().map(|k| format!("{}.{k}", ident(&plan.table))).collect();
        let inner: Vec<String> = key.iter().map(|k| format!("_fb_l.{k}")).collect();
        let mut pick = format!("SELECT {} FROM {table} AS _fb_l", inner.join(", "));
        pick.push_str(&where_clause(&self.filters("_fb_l", &plan.filters)));
        self.order_and_page(&mut pick, "_fb_l", &[], &limited.order, &limited.paging);
        format!(" WHERE ({}) IN ({pick})", outer.join(", "))
    }

    /// Rows after a keyset position: `(a > $1) OR (a = $1 AND b < $2) OR …`.
    fn after(&mut self, alias: &str, columns: &[KeyColumn], values: &[String]) -> String {
        let params: Vec<String> = values.iter().map(|v| self.bind(v.clone())).collect();
        let mut alternatives = Vec::new();
        for i in 0..columns.len() {
            let mut terms: Vec<String> = (0..i)
                .map(|j| {
                    format!("{}.{} = {}::{}", ident(alias), ident(&columns[j].name), params[j], columns[j].type_name)
                })
                .collect();
            let op = if columns[i].descending { "<" } else { ">" };
            terms.push(format!(
                "{}.{} {op} {}::{}",
                ident(alias),
                ident(&columns[i].name),
                params[i],
                columns[i].type_name
            ));
            alternatives.push(format!("({})", terms.join(" AND ")));
        }
        format!("({})", alternatives.join(" OR "))
    }

    /// The parent's output column(s) for an embed, and the lateral join that
    /// computes it. Aliases are PostgREST's, so that messages naming them
    /// (Postgres errors of aggregates, say) read the same: the embedded table
    /// is `{table}_{depth}`, the joined result `{parent}_{name}_{depth}`.
    /// Next to aggregates (`grouped`), embedded objects and arrays are jsonb,
    /// which can be grouped by.
    /// Each output column comes with whether it is an aggregate hoisted out
    /// of a to-one spread (not grouped by).
    fn embed(
        &mut self,
        parent: &str,
        parent_name: &str,
        embed: &EmbedPlan,
        grouped: bool,
    ) -> (Vec<(String, bool)>, String, String) {
        self.depth += 1;
        let depth = self.depth;
        let mut alias = String::with_capacity(embed.plan.name.len() + 3);
        alias.push_str(&embed.plan.name);
        alias.push('_');
        push_number(&mut alias, depth);
        let mut agg = String::with_capacity(parent_name.len() + embed.key.len() + 4);
        agg.push_str(parent_name);
        agg.push('_');
        agg.push_str(&embed.key);
        agg.push('_');
        push_number(&mut agg, depth);
        let rel = &embed.relationship;
        let (link, junction_join) = match (&rel.junction, &rel.computed) {
            (_, Some(f)) => {
                // `fn(parent::table)`: the cast picks the overload for the
                // parent's row type, even when the parent is a CTE's row.
                self.from_override = Some(format!(
                    "{}({}::{}) AS {}",
                    qualified(&f.schema, &f.name, None),
                    ident(parent),
                    qualified(&f.arg_schema, &f.arg_table, None),
                    ident(&alias)
                ));
                (None, None)
            }
            (None, None) => (Some(equalities(&alias, parent, rel.columns.iter().map(|(s, t)| (t, s)))), None),
            (Some(j), None) => {
                let jalias = format!("{alias}_j");
                let on = equalities(&jalias, &alias, j.target_columns.iter().map(|(jc, tc)| (jc, tc)));
                let link = equalities(&jalias, parent, j.source_columns.iter().map(|(jc, sc)| (jc, sc)));
                let join =
                    format!("INNER JOIN {}.{} AS {} ON {}", ident(&j.schema), ident(&j.table), ident(&jalias), on);
                (Some(link), Some(join))
            }
        };
        let outer_hoisting = std::mem::replace(&mut self.hoisting, embed.spread && embed.to_one());
        let outer_grouped = std::mem::replace(&mut self.parent_grouped, grouped);
        let mut inner = self.select(&embed.plan, &alias, link, true);
        self.hoisting = outer_hoisting;
        self.parent_grouped = outer_grouped;
        self.depth -= 1;
        if let Some(join) = junction_join {
            // The junction join goes right after the FROM item of the child level.
            let from = self.from(&embed.plan, &alias);
            inner = inner.replacen(&from, &format!("{from} {join}"), 1);
        }
        let kind = if embed.inner { "INNER" } else { "LEFT" };
        let a = ident(&agg);
        // `rel()` only filters (with `!inner`): nothing of it is output.
        let output = !is_empty_embed(&embed.plan);
        if embed.to_one() {
            let join = format!("{kind} JOIN LATERAL ({inner}) AS {a} ON TRUE");
            let columns = match (output, embed.spread) {
                (false, _) => vec![],
                (true, true) => spread_keys(&embed.plan)
                    .into_iter()
                    .map(|(k, hoisted)| match hoisted {
                        // A to-one spread inside a to-one spread hands its
                        // aggregates' inputs on up, as plain columns.
                        Some(a) if !self.hoisting => {
                            let mut expr = format!("{}({})", a.function.name(), qualified(&agg, &k, None));
                            if let Some(cast) = &a.output_cast {
                                expr = format!("({expr})::{cast}");
                            }
                            (format!("{expr} AS {}", ident(&k)), true)
                        }
                        _ => (qualified(&agg, &k, Some(&k)), false),
                    })
                    .collect(),
                (true, false) => {
                    let cast = if grouped { "::jsonb" } else { "" };
                    vec![(format!("row_to_json({a}.*){cast} AS {}", ident(&embed.key)), false)]
                }
            };
            (columns, join, agg)
        } else if embed.spread {
            // A spread to-many embed: each of its columns becomes an array
            // (PostgREST 13), in the embed's order.
            let keys: Vec<String> = spread_keys(&embed.plan).into_iter().map(|(k, _)| k).collect();
            let mut aggregates: Vec<String> = keys
                .iter()
                .map(|k| format!("coalesce(json_agg({}), '[]'::json) AS {}", qualified(&agg, k, None), ident(k)))
                .collect();
            let on = if embed.inner {
                aggregates.push(format!("json_agg({a}) AS {a}"));
                format!("{a}.{a} IS NOT NULL")
            } else {
                "TRUE".into()
            };
            let join =
                format!("{kind} JOIN LATERAL (SELECT {} FROM ({inner}) AS {a}) AS {a} ON {on}", aggregates.join(", "));
            let cast = if grouped { "::jsonb" } else { "" };
            let columns =
                keys.iter().map(|k| (format!("{}{cast} AS {}", qualified(&agg, k, None), ident(k)), false)).collect();
            (columns, join, agg)
        } else {
            let on = if embed.inner { format!("{a}.{a} IS NOT NULL") } else { "TRUE".into() };
            let join =
                format!("{kind} JOIN LATERAL (SELECT json_agg({a}) AS {a} FROM ({inner}) AS {a}) AS {a} ON {on}");
            let columns = if output {
                let cast = if grouped { "::jsonb" } else { "" };
                vec![(format!("coalesce({a}.{a}, '[]'::json){cast} AS {}", ident(&embed.key)), false)]
            } else {
                vec![]
            };
            (columns, join, agg)
        }
    }
}

/// An embed with nothing to output: no columns of its own, and only such embeds.
fn is_empty_embed(plan: &ReadPlan) -> bool {
    plan.projection.iter().all(|p| matches!(p, Projection::Embed(e) if is_empty_embed(&e.plan)))
}

/// ` WHERE a AND b`, or nothing without conditions.
fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        [" WHERE ", &conditions.join(" AND ")].concat()
    }
}

/// Appends `n` in decimal (placeholders: `$1`, `$2`, …).
fn push_number(out: &mut String, n: usize) {
    if n >= 10 {
        push_number(out, n / 10);
    }
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// `"l"."a" = "r"."b" AND …` for (a, b) pairs of columns.
fn equalities<'a>(left: &str, right: &str, pairs: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    pairs
        .map(|(l, r)| format!("{}.{} = {}.{}", ident(left), ident(l), ident(right), ident(r)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Output keys of a spread embed (its `*` expands to the table's columns),
/// each with its aggregate where it is one hoisted out of to-one spreads.
fn spread_keys(plan: &ReadPlan) -> Vec<(String, Option<&Aggregate>)> {
    let mut keys = Vec::new();
    for p in &plan.projection {
        match p {
            Projection::Star => keys.extend(plan.columns.iter().map(|c| (c.clone(), None))),
            Projection::Column { key, .. } => keys.push((key.clone(), None)),
            Projection::Aggregate { key, aggregate } => keys.push((key.clone(), Some(aggregate))),
            Projection::Embed(e) if is_empty_embed(&e.plan) => {}
            Projection::Embed(e) if e.spread && e.to_one() => keys.extend(spread_keys(&e.plan)),
            Projection::Embed(e) if e.spread => keys.extend(spread_keys(&e.plan).into_iter().map(|(k, _)| (k, None))),
            Projection::Embed(e) => keys.push((e.key.clone(), None)),
        }
    }
    keys
}

/// A to-one spread level hands aggregates up: its own, or those of to-one
/// spreads inside it.
fn hoists_aggregates(plan: &ReadPlan) -> bool {
    plan.projection.iter().any(|p| match p {
        Projection::Aggregate { .. } => true,
        Projection::Embed(e) => e.spread && e.to_one() && hoists_aggregates(&e.plan),
        _ => false,
    })
}

/// One row of the result as JSON text.
fn row_expr(nulls_stripped: bool) -> &'static str {
    if nulls_stripped {
        "json_strip_nulls(row_to_json(_fb_t))::text"
    } else {
        "row_to_json(_fb_t)::text"
    }
}

/// The body as an aggregate over the rows, in the same text form the
/// engine joins `Shape::Rows` into (`[row,row]`), so that equal results
/// have equal ETags whichever way they were built.
fn body_expr(body: Body, nulls_stripped: bool) -> String {
    let row = row_expr(nulls_stripped);
    match body {
        Body::Array => format!("coalesce('[' || string_agg({row}, ',') || ']', '[]')"),
        Body::GeoJson => "json_build_object('type', 'FeatureCollection', 'features', \
             coalesce(json_agg(ST_AsGeoJSON(_fb_t)::json), '[]'))::text"
            .into(),
        Body::Object => format!("CASE WHEN count(*) = 1 THEN string_agg({row}, ',') END"),
        // PostgREST's asCsvF: the keys of the first row, then each record's text.
        Body::Csv => "coalesce((SELECT string_agg(_fb_k, ',') FROM json_object_keys((SELECT row_to_json(_fb_h) \
             FROM _fb_s AS _fb_h LIMIT 1)) AS _fb_k), '') || chr(10) || \
             coalesce(string_agg(substring(_fb_t::text, 2, length(_fb_t::text) - 2), chr(10)), '')"
            .into(),
        Body::None => "NULL::text".into(),
    }
}

/// The current rows a precondition (`If-Match`) is checked against, locked
/// until the write that follows commits.
pub fn locked_read(plan: &ReadPlan) -> Query {
    let mut b = Builder { lock_root: true, ..Builder::default() };
    read_with(&mut b, plan, Body::Array, false, Total::None, "")
}

/// The planner's row estimate of a read (for `count=planned`): `EXPLAIN` of
/// the unpaged query, with the same parameters.
pub fn planned_count(plan: &ReadPlan) -> Query {
    let mut b = Builder::default();
    let unpaged = b.select(plan, &plan.name, None, false);
    Query { sql: format!("EXPLAIN (FORMAT JSON) {unpaged}"), params: b.params, shape: Shape::Bare }
}

/// A read: `(body, rows[, total])`.
pub fn read(plan: &ReadPlan, body: Body, nulls_stripped: bool, exact_count: bool) -> Query {
    let mut b = Builder::default();
    let total = if exact_count { Total::Exact } else { Total::None };
    read_with(&mut b, plan, body, nulls_stripped, total, "")
}

/// A read as one aggregate over its rows (never the per-row shape), as
/// PostgREST's statement is: what `Accept: application/vnd.pgrst.plan`
/// explains, so the plan's top node is the aggregate over the query's own.
pub fn read_aggregated(plan: &ReadPlan, body: Body, nulls_stripped: bool) -> Query {
    let mut b = Builder::default();
    if !matches!(body, Body::Array | Body::Object) {
        return read_with(&mut b, plan, body, nulls_stripped, Total::None, "");
    }
    // PostgREST's shape: the query in `pgrst_source`, aggregated.
    let select = b.select(plan, &plan.name, None, true);
    let sql = format!(
        "WITH pgrst_source AS ({select}) SELECT {}, count(*) FROM (SELECT * FROM pgrst_source) AS _fb_t",
        body_expr(body, nulls_stripped)
    );
    Query { sql, params: b.params, shape: Shape::Aggregated }
}

fn read_with(b: &mut Builder, plan: &ReadPlan, body: Body, nulls_stripped: bool, total: Total, prefix: &str) -> Query {
    let mut select = b.select(plan, &plan.name, None, true);
    if b.lock_root {
        select.push_str(&format!(" FOR UPDATE OF {}", ident(&plan.name)));
    }
    let total = match total {
        Total::Exact => {
            let unpaged = b.select(plan, &plan.name, None, false);
            format!(", (SELECT count(*) FROM ({unpaged}) AS _fb_c)")
        }
        Total::Inserted => format!(", {INSERTED}"),
        Total::None => String::new(),
    };
    let params = std::mem::take(&mut b.params);
    if let (Body::Array | Body::Object, true) = (body, total.is_empty()) {
        let sql = [prefix, "SELECT ", row_expr(nulls_stripped), " FROM (", &select, ") AS _fb_t"].concat();
        return Query { sql, params, shape: Shape::Rows { object: body == Body::Object } };
    }
    if body == Body::Csv {
        // The rows once, in a CTE the header and the body both read.
        let with = if prefix.is_empty() { "WITH ".to_string() } else { format!("{}, ", prefix.trim_end()) };
        let sql = format!(
            "{with}_fb_s AS ({select}) SELECT {}, count(*){total} FROM _fb_s AS _fb_t",
            body_expr(body, nulls_stripped)
        );
        return Query { sql, params, shape: Shape::Aggregated };
    }
    let sql = format!("{prefix}SELECT {}, count(*){total} FROM ({select}) AS _fb_t", body_expr(body, nulls_stripped));
    Query { sql, params, shape: Shape::Aggregated }
}

/// An SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The payload's rows as records of `table`. With `missing=default`, each
/// row's missing keys are first filled from the columns' defaults
/// (evaluated per row, so sequences and `now()` behave as in an INSERT).
fn payload_records(table: &str, payload: Option<&Payload>, param: Option<&str>) -> String {
    let param = param.unwrap_or("'[]'");
    match payload {
        Some(p) if !p.defaults.is_empty() => {
            // As PostgREST's statement: the defaults are evaluated for every
            // row and the row's own keys win (`defaults || row`), so a
            // sequence advances for rows that bring their own key too.
            let defaults: Vec<String> =
                p.defaults.iter().map(|(c, expr)| format!("{}, to_jsonb(({expr}))", literal(c))).collect();
            // jsonb_build_object takes at most 100 arguments: 40 pairs per call.
            let objects: Vec<String> =
                defaults.chunks(40).map(|pairs| format!("jsonb_build_object({})", pairs.join(", "))).collect();
            format!(
                "jsonb_populate_recordset(NULL::{table}, (SELECT jsonb_agg({} || _fb_e.v ORDER BY _fb_e.n) \
                 FROM jsonb_array_elements({param}::jsonb) WITH ORDINALITY AS _fb_e(v, n)))",
                objects.join(" || ")
            )
        }
        _ => format!("json_populate_recordset(NULL::{table}, {param}::json)"),
    }
}

pub fn write(plan: &WritePlan, body: Body, nulls_stripped: bool) -> Query {
    let mut b = Builder::default();
    let table = qualified(&plan.schema, &plan.table, None);
    let alias = ident(&plan.table);
    let columns: Vec<String> =
        plan.payload.as_ref().map(|p| p.columns.iter().map(|c| ident(c)).collect()).unwrap_or_default();
    let payload = plan.payload.as_ref().map(|p| b.bind(p.json.clone()));
    let records = payload_records(&table, plan.payload.as_ref(), payload.as_deref());
    let mut sql = match &plan.kind {
        WriteKind::Insert { on_conflict } => {
            let mut source = format!("SELECT {} FROM {records} AS _fb_p", columns.join(", "));
            if counts_inserted(plan) {
                source.push_str(" WHERE ");
                source.push_str(COUNT_INSERT);
            }
            let mut s = if columns.is_empty() {
                format!("INSERT INTO {table} AS {alias} {source}")
            } else {
                format!("INSERT INTO {table} AS {alias} ({}) {source}", columns.join(", "))
            };
            if let Some((conflict, resolution)) = on_conflict {
                let target: Vec<String> = conflict.iter().map(|c| ident(c)).collect();
                let sets: Vec<String> = columns.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
                if *resolution == Resolution::IgnoreDuplicates || sets.is_empty() {
                    s.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", target.join(", ")));
                } else {
                    s.push_str(&format!(" ON CONFLICT ({}) DO UPDATE SET {}", target.join(", "), sets.join(", ")));
                    if counts_inserted(plan) {
                        s.push_str(" WHERE ");
                        s.push_str(COUNT_UPDATE);
                    }
                }
            }
            s
        }
        WriteKind::Update => {
            let sets: Vec<String> = columns.iter().map(|c| format!("{c} = _fb_p.{c}")).collect();
            let mut s = format!(
                "UPDATE {table} AS {alias} SET {} FROM (SELECT * FROM {records} LIMIT 1) AS _fb_p",
                sets.join(", ")
            );
            s.push_str(&b.write_where(plan, &table));
            s
        }
        WriteKind::Delete => {
            let mut s = format!("DELETE FROM {table} AS {alias}");
            s.push_str(&b.write_where(plan, &table));
            s
        }
    };
    let total = if counts_inserted(plan) { Total::Inserted } else { Total::None };
    if plan.returning == Return::Minimal {
        if total == Total::Inserted {
            let sql = format!(
                "WITH pgrst_source AS ({sql} RETURNING 1) SELECT NULL::text, count(*), {INSERTED} FROM pgrst_source"
            );
            return Query { sql, params: b.params, shape: Shape::Aggregated };
        }
        return Query { sql, params: b.params, shape: Shape::Bare };
    }
    sql.push_str(&format!(" RETURNING {alias}.*"));
    let body = if plan.returning == Return::HeadersOnly { Body::Array } else { body };
    read_with(&mut b, &plan.read, body, nulls_stripped, total, &format!("WITH pgrst_source AS ({sql}) "))
}

/// Whether the write is an upsert that updates on conflict (POST with
/// `resolution=merge-duplicates`, PUT): its answer depends on whether it
/// inserted (201) or only updated (200), as in PostgREST.
pub fn counts_inserted(plan: &WritePlan) -> bool {
    let merges = matches!(&plan.kind, WriteKind::Insert { on_conflict: Some((_, Resolution::MergeDuplicates)) });
    merges && plan.payload.as_ref().is_some_and(|p| !p.columns.is_empty())
}

pub fn call(plan: &CallPlan, body: Body, nulls_stripped: bool, exact_count: bool) -> Query {
    let mut b = Builder::default();
    let f = &plan.function;
    let name = qualified(&f.schema, &f.name, None);
    // `args_from` is the json_to_record source of named arguments, if any.
    let (call, args_from) = if plan.whole_body {
        let args = b.bind(plan.args_json.clone());
        (format!("{name}({args}::{})", f.args[0].type_name), None)
    } else if plan.args.is_empty() {
        (format!("{name}()"), None)
    } else {
        let args = b.bind(plan.args_json.clone());
        let defs: Vec<String> = plan.args.iter().map(|(n, t)| format!("{} {t}", ident(n))).collect();
        let passed: Vec<String> =
            plan.args.iter().map(|(n, _)| format!("{} := _fb_a.{}", ident(n), ident(n))).collect();
        (
            format!("{name}({})", passed.join(", ")),
            Some(format!("json_to_record({args}::json) AS _fb_a({})", defs.join(", "))),
        )
    };
    let lateral = args_from.as_ref().map(|a| format!("{a}, LATERAL ")).unwrap_or_default();
    let from = args_from.as_ref().map(|a| format!(" FROM {a}")).unwrap_or_default();
    let aggregated = |sql: String, params: Vec<String>| Query { sql, params, shape: Shape::Aggregated };
    match &plan.read {
        Some(read) if exact_count => {
            // Counted: the call runs once, in a CTE read twice (page and total),
            // as PostgREST's pgrst_source; a volatile function never runs twice.
            let name = ident(&read.name);
            let prefix = format!("WITH pgrst_source AS (SELECT {name}.* FROM {lateral}{call} AS {name}) ");
            b.call_from = Some(format!("pgrst_source AS {name}"));
            let body = if f.returns_set { body } else { Body::Object };
            read_with(&mut b, read, body, nulls_stripped, Total::Exact, &prefix)
        }
        Some(read) => {
            b.call_from = Some(format!("{lateral}{call} AS {}", ident(&read.name)));
            let body = if f.returns_set { body } else { Body::Object };
            read_with(&mut b, read, body, nulls_stripped, Total::None, "")
        }
        None if f.returns_void => {
            aggregated(format!("SELECT NULL::text, count(*) FROM (SELECT {call}{from}) AS _fb_t"), b.params)
        }
        None if f.returns_set => {
            // A set of scalars: paged, and counted when asked, as rows are.
            let mut page = String::new();
            b.order_and_page(&mut page, "_fb_r", &[], &[], &plan.paging);
            let total = if exact_count { ", (SELECT count(*) FROM _fb_r)" } else { "" };
            if body == Body::Csv {
                // PostgREST's column name for scalars, and its CSV.
                return aggregated(
                    format!(
                        "WITH _fb_r AS (SELECT _fb_v AS pgrst_scalar FROM {lateral}{call} AS _fb_v), \
                         _fb_s AS (SELECT pgrst_scalar FROM _fb_r{page}) \
                         SELECT {}, count(*){total} FROM _fb_s AS _fb_t",
                        body_expr(Body::Csv, false)
                    ),
                    b.params,
                );
            }
            aggregated(
                format!(
                    "WITH _fb_r AS (SELECT _fb_v FROM {lateral}{call} AS _fb_v) \
                     SELECT coalesce(json_agg(_fb_p._fb_v), '[]')::text, count(*){total} \
                     FROM (SELECT _fb_v FROM _fb_r{page}) AS _fb_p"
                ),
                b.params,
            )
        }
        // One scalar as CSV: PostgREST's `pgrst_scalar` column and its value.
        None if body == Body::Csv => aggregated(
            format!(
                "WITH _fb_s AS (SELECT {call} AS pgrst_scalar{from}) SELECT {}, count(*) FROM _fb_s AS _fb_t",
                body_expr(Body::Csv, false)
            ),
            b.params,
        ),
        None => aggregated(format!("SELECT to_json({call})::text, 1::int8{from}"), b.params),
    }
}

/// `EXPLAIN` of the request's statement, for `Accept: application/vnd.pgrst.plan`;
/// its options are the request parser's fixed words, never the client's text.
pub fn explain(query: &Query, explain: &Explain) -> String {
    let mut options = vec![if explain.json { "FORMAT JSON" } else { "FORMAT TEXT" }.to_string()];
    options.extend(explain.options.iter().map(|o| o.to_ascii_uppercase()));
    format!("EXPLAIN ({}) {}", options.join(", "), query.sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse_condition;

    fn field(name: &str) -> Field {
        Field { name: name.into(), json_path: vec![] }
    }

    #[test]
    fn builds_parameterised_sql() {
        let plan = ReadPlan {
            source: Source::Table { schema: "public".into(), name: "to\"dos".into() },
            name: "to\"dos".into(),
            columns: vec![],
            projection: vec![Projection::Column { field: field("id"), key: "key".into(), cast: None }],
            filters: vec![
                PlannedFilter::Condition {
                    field: field("id"),
                    type_name: "integer".into(),
                    condition: parse_condition("gt.1").unwrap(),
                },
                PlannedFilter::Condition {
                    field: field("title"),
                    type_name: "text".into(),
                    condition: parse_condition("in.(a,\"b\\\"c\")").unwrap(),
                },
            ],
            order: vec![PlannedOrder {
                relation: None,
                field: field("id"),
                descending: true,
                nulls_first: Some(false),
            }],
            paging: Paging { limit: Some(5), offset: None },
            capped: None,
            keyset: None,
            computed: vec![],
        };
        let q = read(&plan, Body::Array, false, false);
        assert_eq!(
            q.sql,
            "SELECT row_to_json(_fb_t)::text FROM (SELECT \"to\"\"dos\".\"id\" AS \"key\" FROM \"public\".\"to\"\"dos\" AS \"to\"\"dos\" \
             WHERE \"to\"\"dos\".\"id\" > $1::integer AND \"to\"\"dos\".\"title\" = ANY($2::text[]) ORDER BY \"to\"\"dos\".\"id\" DESC NULLS LAST LIMIT $3::int8) AS _fb_t"
        );
        assert_eq!(q.params, vec!["1".to_string(), "{\"a\",\"b\\\"c\"}".to_string(), "5".to_string()]);
    }

    #[test]
    fn json_path_keys_are_parameters() {
        let mut b = Builder::default();
        let f = Field::parse("data->a'b->>0").unwrap();
        assert_eq!(b.field("t", &f), "((\"t\".\"data\"->$1::text)->>$2::int4)");
        assert_eq!(b.params, vec!["a'b".to_string(), "0".to_string()]);
    }
}
