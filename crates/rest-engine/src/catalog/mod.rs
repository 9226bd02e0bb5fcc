//! The catalog model: tables, columns, keys, functions and the
//! relationships between tables, as one catalog query describes them (the
//! query is `sql/catalog.sql`; the extension runs it and keeps the result per
//! backend). Pure: built from that query's JSON.
use serde::Deserialize;
use std::collections::HashMap;

pub(crate) mod fuzzy;
mod relationships;
pub use relationships::{
    no_relationship_hint, Cardinality, ComputedRelationship, Junction, Relationship, RelationshipSummary,
};

#[derive(Debug, Deserialize, Clone)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub nullable: bool,
    pub has_default: bool,
    pub generated: bool,
    /// The default as an SQL expression (identity: its `nextval`).
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub kind: String,
    pub comment: Option<String>,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// Column sets (sorted) of primary key and unique constraints.
    pub unique_keys: Vec<Vec<String>>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_view(&self) -> bool {
        self.kind == "v" || self.kind == "m"
    }

    /// Whether `columns` (in any order) are covered by a unique key.
    pub fn is_unique(&self, columns: &[String]) -> bool {
        let mut sorted = columns.to_vec();
        sorted.sort();
        self.unique_keys.contains(&sorted)
    }
}

#[derive(Debug, Deserialize, Clone)]
pub struct ForeignKey {
    pub name: String,
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
    pub foreign_schema: String,
    pub foreign_table: String,
    pub foreign_columns: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct FunctionArg {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Debug, Deserialize, Clone)]
pub struct Function {
    pub schema: String,
    pub name: String,
    pub args: Vec<FunctionArg>,
    /// How many trailing arguments have defaults.
    pub defaults: i16,
    pub returns_set: bool,
    pub returns_composite: bool,
    pub returns_void: bool,
    /// Columns of the rows a composite-returning function yields.
    pub result_columns: Option<Vec<ResultColumn>>,
    /// `i`mmutable, `s`table or `v`olatile.
    pub volatility: String,
    /// Returns rows of this table or view (`SETOF t`, `t`).
    #[serde(default)]
    pub returns_table: Option<RelationName>,
    /// Its one argument is this table's row type (computed field or relationship).
    #[serde(default)]
    pub row_arg: Option<RelationName>,
    /// The return type as Postgres names it (for filters on a computed field).
    #[serde(default)]
    pub return_type: String,
    /// Not `SETOF`, or `ROWS 1`: a computed relationship to one row.
    #[serde(default)]
    pub single_row: bool,
}

#[derive(Debug, Deserialize, Clone)]
pub struct RelationName {
    pub schema: String,
    pub name: String,
}

#[derive(Debug, Deserialize, Clone)]
pub struct ResultColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

impl Function {
    /// The rows this function returns, seen as a table (for select/filters).
    pub fn result_table(&self) -> Table {
        Table {
            schema: self.schema.clone(),
            name: self.name.clone(),
            kind: "f".into(),
            comment: None,
            columns: self
                .result_columns
                .iter()
                .flatten()
                .map(|c| Column {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    nullable: true,
                    has_default: false,
                    generated: false,
                    default: None,
                })
                .collect(),
            primary_key: vec![],
            unique_keys: vec![],
        }
    }

    pub fn required_args(&self) -> &[FunctionArg] {
        &self.args[..self.args.len().saturating_sub(self.defaults.max(0) as usize)]
    }
}

/// A view column and the table (or view) column it shows unchanged.
#[derive(Debug, Deserialize, Clone)]
pub struct ViewColumn {
    pub schema: String,
    pub view: String,
    pub column: String,
    pub origin_schema: String,
    pub origin_table: String,
    pub origin_column: String,
}

/// The catalog query's JSON document, as it deserialises.
#[derive(Debug, Deserialize, Default)]
struct CatalogJson {
    tables: Vec<Table>,
    foreign_keys: Vec<ForeignKey>,
    #[serde(default)]
    view_columns: Vec<ViewColumn>,
    functions: Vec<Function>,
    #[serde(default)]
    postgis: bool,
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// PostGIS is installed (`application/geo+json` can be served).
    pub postgis: bool,
    tables: HashMap<(String, String), Table>,
    pub foreign_keys: Vec<ForeignKey>,
    functions: HashMap<(String, String), Vec<Function>>,
    /// Some function takes a table's row type: computed fields are possible
    /// (reads skip looking for them otherwise).
    pub row_functions: bool,
}

impl Catalog {
    /// The catalog from the catalog query's JSON document. `exposed`: the
    /// schemas the API serves; the JSON may describe more (tables behind
    /// views of exposed schemas).
    pub fn from_json(json: serde_json::Value, exposed: &[String]) -> Result<Self, serde_json::Error> {
        Ok(Self::from_parsed(serde_json::from_value(json)?, exposed))
    }

    fn from_parsed(json: CatalogJson, exposed: &[String]) -> Self {
        let mut functions: HashMap<(String, String), Vec<Function>> = HashMap::new();
        for f in json.functions {
            functions.entry((f.schema.clone(), f.name.clone())).or_default().push(f);
        }
        let mut tables: HashMap<(String, String), Table> =
            json.tables.into_iter().map(|t| ((t.schema.clone(), t.name.clone()), t)).collect();
        let origins = relationships::ViewOrigins::new(&json.view_columns);
        origins.infer_view_keys(&mut tables);
        let mut foreign_keys = origins.through_views(&json.foreign_keys);
        // Keep what touches an exposed schema: the rest cannot be embedded.
        foreign_keys.retain(|fk| exposed.contains(&fk.schema) || exposed.contains(&fk.foreign_schema));
        let row_functions = functions.values().flatten().any(|f| f.row_arg.is_some());
        Catalog { tables, foreign_keys, functions, postgis: json.postgis, row_functions }
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }

    /// Tables and views of one (exposed) schema.
    pub fn tables_in<'a>(&'a self, schema: &'a str) -> impl Iterator<Item = &'a Table> + 'a {
        self.tables.values().filter(move |t| t.schema == schema)
    }

    pub fn functions(&self, schema: &str, name: &str) -> &[Function] {
        self.functions.get(&(schema.to_string(), name.to_string())).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A computed field of `table`: a function of the table's row type,
    /// `name(table)`, written `table.name` in SQL. Looked up only for names
    /// that are not columns.
    pub fn computed_field(&self, table: &Table, name: &str) -> Option<&Function> {
        self.functions(&table.schema, name).iter().find(|f| {
            f.row_arg.as_ref().is_some_and(|a| a.schema == table.schema && a.name == table.name)
                && !f.returns_set
                && !f.returns_void
        })
    }

    pub fn functions_in<'a>(&'a self, schema: &'a str) -> impl Iterator<Item = &'a Function> + 'a {
        self.functions.values().flatten().filter(move |f| f.schema == schema)
    }
}

#[cfg(test)]
pub(crate) fn test_catalog(json: serde_json::Value) -> Catalog {
    Catalog::from_json(json, &["public".to_string()]).expect("test catalog")
}
