//! Plan stage: resolve names against the schema cache into a typed plan. Pure.
use crate::error::RestError;
use crate::filter::Condition;
use crate::rest::request::{ApiRequest, OrderTerm, SelectItem};
use crate::schema::Catalog;

#[derive(Debug, PartialEq)]
pub enum Projection {
    Star,
    Column {
        name: String,
        alias: Option<String>,
        cast: Option<String>,
    },
}

#[derive(Debug)]
pub struct PlannedFilter {
    pub column: String,
    /// The column's type, which the parameter is cast to.
    pub type_name: String,
    pub condition: Condition,
}

#[derive(Debug)]
pub struct ReadPlan {
    pub schema: String,
    pub table: String,
    pub projection: Vec<Projection>,
    pub filters: Vec<PlannedFilter>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

pub fn resolve_schema(requested: Option<&str>, exposed: &[String]) -> Result<String, RestError> {
    match requested {
        None => Ok(exposed.first().cloned().unwrap_or_else(|| "public".into())),
        Some(s) if exposed.iter().any(|e| e == s) => Ok(s.to_string()),
        Some(s) => Err(RestError::Schema {
            schema: s.to_string(),
            exposed: exposed.to_vec(),
        }),
    }
}

pub fn read(
    api: &ApiRequest,
    schema: &str,
    catalog: &Catalog,
    max_rows: i32,
) -> Result<ReadPlan, RestError> {
    let table = catalog
        .table(schema, &api.relation)
        .ok_or_else(|| RestError::Table {
            schema: schema.into(),
            table: api.relation.clone(),
        })?;
    let known = |name: &str| {
        table.column(name).ok_or_else(|| RestError::Column {
            table: table.name.clone(),
            column: name.to_string(),
        })
    };

    let mut projection = Vec::with_capacity(api.select.len());
    for item in &api.select {
        projection.push(match item {
            SelectItem::Star => Projection::Star,
            SelectItem::Column { name, alias, cast } => {
                known(name)?;
                Projection::Column {
                    name: name.clone(),
                    alias: alias.clone(),
                    cast: cast.clone(),
                }
            }
        });
    }
    let mut filters = Vec::with_capacity(api.filters.len());
    for f in &api.filters {
        let column = known(&f.column)?;
        filters.push(PlannedFilter {
            column: column.name.clone(),
            type_name: column.type_name.clone(),
            condition: f.condition.clone(),
        });
    }
    let mut order = Vec::with_capacity(api.order.len());
    for term in &api.order {
        known(&term.column)?;
        order.push(OrderTerm {
            column: term.column.clone(),
            descending: term.descending,
            nulls_first: term.nulls_first,
        });
    }
    let limit = match (api.limit, max_rows) {
        (l, 0) => l,
        (Some(l), m) => Some(l.min(m as i64)),
        (None, m) => Some(m as i64),
    };
    Ok(ReadPlan {
        schema: schema.into(),
        table: table.name.clone(),
        projection,
        filters,
        order,
        limit,
        offset: api.offset,
    })
}
