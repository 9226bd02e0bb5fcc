//! `GET /rest/v1/`: an OpenAPI 2.0 description of the exposed schema, in the
//! shape PostgREST produces (paths per table and function, definitions per
//! table, shared parameters), following the caller's privileges as
//! PostgREST's default `openapi-mode = follow-privileges` does: only the
//! tables, columns, operations and functions the role may use. Pure.
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

use crate::catalog::{Catalog, Column, Function, Table};

/// What the request's role may use in the schema described
/// (`sql/openapi_privileges.sql`, run as that role).
#[derive(Debug, Default, Deserialize)]
pub struct Privileges {
    /// By table or view name.
    #[serde(default)]
    pub tables: HashMap<String, TablePrivileges>,
    /// Functions it may execute: name and input argument types.
    #[serde(default)]
    pub functions: Vec<FunctionIdentity>,
}

/// Columns the role may select, insert and update; whether it may delete.
#[derive(Debug, Default, Deserialize)]
pub struct TablePrivileges {
    #[serde(default)]
    pub select: Vec<String>,
    #[serde(default)]
    pub insert: Vec<String>,
    #[serde(default)]
    pub update: Vec<String>,
    #[serde(default)]
    pub delete: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct FunctionIdentity {
    pub name: String,
    pub args: Vec<String>,
}

impl Privileges {
    fn may_execute(&self, f: &Function) -> bool {
        self.functions.iter().any(|id| {
            id.name == f.name
                && id.args.len() == f.args.len()
                && id.args.iter().zip(&f.args).all(|(t, a)| *t == a.type_name)
        })
    }
}

/// `table` as the role sees it: the columns it may select, insert or update.
fn visible(table: &Table, may: &TablePrivileges) -> Table {
    let usable = |c: &&Column| [&may.select, &may.insert, &may.update].iter().any(|cols| cols.contains(&c.name));
    Table {
        schema: table.schema.clone(),
        name: table.name.clone(),
        kind: table.kind.clone(),
        comment: table.comment.clone(),
        columns: table.columns.iter().filter(usable).cloned().collect(),
        primary_key: table.primary_key.clone(),
        unique_keys: table.unique_keys.clone(),
    }
}

fn column_schema(column: &Column, primary_key: bool) -> Value {
    let ty = column.type_name.as_str();
    let mut s = Map::new();
    let (kind, format) = match ty {
        "smallint" | "integer" | "bigint" => ("integer", ty),
        "numeric" | "real" | "double precision" => ("number", ty),
        "boolean" => ("boolean", ty),
        "json" | "jsonb" => ("", ty),
        t if t.ends_with("[]") => ("array", ty),
        _ => ("string", ty),
    };
    if !kind.is_empty() {
        s.insert("type".into(), json!(kind));
    }
    if kind == "array" {
        s.insert("items".into(), json!({ "type": "string" }));
    }
    s.insert("format".into(), json!(format));
    if primary_key {
        s.insert("description".into(), json!("Note:\nThis is a Primary Key.<pk/>"));
    }
    Value::Object(s)
}

fn definition(table: &Table) -> Value {
    let properties: Map<String, Value> =
        table.columns.iter().map(|c| (c.name.clone(), column_schema(c, table.primary_key.contains(&c.name)))).collect();
    let required: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| !c.nullable && !c.has_default && !c.generated)
        .map(|c| c.name.as_str())
        .collect();
    let mut d = json!({ "type": "object", "properties": properties });
    if !required.is_empty() {
        d["required"] = json!(required);
    }
    if let Some(comment) = &table.comment {
        d["description"] = json!(comment);
    }
    d
}

fn table_path(table: &Table, may: &TablePrivileges) -> Value {
    let name = &table.name;
    // Filters read columns: only the selectable ones.
    let mut filters: Vec<Value> = table
        .columns
        .iter()
        .filter(|c| may.select.contains(&c.name))
        .map(|c| json!({ "$ref": format!("#/parameters/rowFilter.{name}.{}", c.name) }))
        .collect();
    let refs =
        |names: &[&str]| names.iter().map(|n| json!({ "$ref": format!("#/parameters/{n}") })).collect::<Vec<_>>();
    let mut path = json!({});
    if !may.select.is_empty() {
        let mut get = filters.clone();
        get.extend(refs(&["select", "order", "range", "rangeUnit", "offset", "limit", "preferCount"]));
        let ok = json!({ "description": "OK", "schema": { "type": "array", "items": { "$ref": format!("#/definitions/{name}") } } });
        path["get"] = json!({ "tags": [name], "parameters": get, "responses": { "200": ok, "206": { "description": "Partial Content" } } });
    }
    if !table.is_view() || !table.primary_key.is_empty() {
        let body = json!({ "$ref": format!("#/parameters/body.{name}") });
        if !may.insert.is_empty() {
            path["post"] = json!({ "tags": [name], "parameters": [body.clone(), {"$ref": "#/parameters/select"}, {"$ref": "#/parameters/preferPost"}], "responses": { "201": { "description": "Created" } } });
        }
        if !may.update.is_empty() {
            let mut patch = filters.clone();
            patch.push(body);
            patch.extend(refs(&["preferReturn"]));
            path["patch"] =
                json!({ "tags": [name], "parameters": patch, "responses": { "204": { "description": "No Content" } } });
        }
        if may.delete {
            filters.extend(refs(&["preferReturn"]));
            path["delete"] = json!({ "tags": [name], "parameters": filters, "responses": { "204": { "description": "No Content" } } });
        }
    }
    path
}

/// The description of `schema` for a role that may use `privileges`.
pub fn describe(
    catalog: &Catalog,
    schema: &str,
    privileges: &Privileges,
    request: &crate::request::HttpRequest<'_>,
) -> Value {
    let mut tables: Vec<(Table, &TablePrivileges)> = catalog
        .tables_in(schema)
        .filter_map(|t| privileges.tables.get(&t.name).map(|may| (visible(t, may), may)))
        .collect();
    tables.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut paths = Map::new();
    paths.insert("/".into(), json!({ "get": { "tags": ["Introspection"], "summary": "OpenAPI description (this document)", "produces": ["application/openapi+json", "application/json"], "responses": { "200": { "description": "OK" } } } }));
    let mut definitions = Map::new();
    let mut parameters = shared_parameters();
    for (t, may) in &tables {
        paths.insert(format!("/{}", t.name), table_path(t, may));
        definitions.insert(t.name.clone(), definition(t));
        parameters.insert(
            format!("body.{}", t.name),
            json!({ "name": t.name, "description": t.name, "required": false, "in": "body", "schema": { "$ref": format!("#/definitions/{}", t.name) } }),
        );
        for c in t.columns.iter().filter(|c| may.select.contains(&c.name)) {
            parameters.insert(
                format!("rowFilter.{}.{}", t.name, c.name),
                json!({ "name": c.name, "required": false, "in": "query", "format": c.type_name, "type": "string" }),
            );
        }
    }
    let mut functions: Vec<_> = catalog.functions_in(schema).filter(|f| privileges.may_execute(f)).collect();
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    for f in functions {
        let properties: Map<String, Value> = f
            .args
            .iter()
            .filter(|a| !a.name.is_empty())
            .map(|a| (a.name.clone(), json!({ "format": a.type_name, "type": "string" })))
            .collect();
        let required: Vec<&str> = f.required_args().iter().map(|a| a.name.as_str()).collect();
        let mut args = json!({ "type": "object", "properties": properties });
        if !required.is_empty() {
            args["required"] = json!(required);
        }
        let mut path = json!({
            "post": {
                "tags": ["(rpc) ".to_string() + &f.name],
                "parameters": [{ "name": "args", "required": true, "in": "body", "schema": args }, { "$ref": "#/parameters/preferParams" }],
                "responses": { "200": { "description": "OK" } }
            }
        });
        if f.volatility != "v" {
            let params: Vec<Value> = f
                .args
                .iter()
                .filter(|a| !a.name.is_empty())
                .map(|a| json!({ "name": a.name, "required": required.contains(&a.name.as_str()), "in": "query", "type": "string", "format": a.type_name }))
                .collect();
            path["get"] = json!({ "tags": ["(rpc) ".to_string() + &f.name], "parameters": params, "responses": { "200": { "description": "OK" } } });
        }
        paths.insert(format!("/rpc/{}", f.name), path);
    }
    let host = request.header("host").unwrap_or("127.0.0.1:54321");
    json!({
        "swagger": "2.0",
        "info": { "title": "Fluxbase REST API", "description": "PostgREST-compatible API generated from the database schema", "version": env!("CARGO_PKG_VERSION") },
        "host": host,
        "basePath": "/rest/v1",
        "schemes": ["http", "https"],
        "consumes": ["application/json", "application/vnd.pgrst.object+json"],
        "produces": ["application/json", "application/vnd.pgrst.object+json"],
        "paths": paths,
        "definitions": definitions,
        "parameters": parameters,
    })
}

fn shared_parameters() -> Map<String, Value> {
    let p = |name: &str, location: &str, description: &str| json!({ "name": name, "in": location, "required": false, "type": "string", "description": description });
    let mut m = Map::new();
    m.insert("select".into(), p("select", "query", "Filtering Columns"));
    m.insert("order".into(), p("order", "query", "Ordering"));
    m.insert("range".into(), p("Range", "header", "Limiting and Pagination"));
    m.insert("rangeUnit".into(), json!({ "name": "Range-Unit", "in": "header", "required": false, "type": "string", "default": "items", "description": "Limiting and Pagination" }));
    m.insert("offset".into(), p("offset", "query", "Limiting and Pagination"));
    m.insert("limit".into(), p("limit", "query", "Limiting and Pagination"));
    m.insert("preferCount".into(), json!({ "name": "Prefer", "in": "header", "required": false, "type": "string", "enum": ["count=none"], "description": "Preference" }));
    m.insert("preferReturn".into(), json!({ "name": "Prefer", "in": "header", "required": false, "type": "string", "enum": ["return=representation", "return=minimal", "return=none"], "description": "Preference" }));
    m.insert("preferPost".into(), json!({ "name": "Prefer", "in": "header", "required": false, "type": "string", "enum": ["return=representation", "return=minimal", "return=none", "resolution=ignore-duplicates", "resolution=merge-duplicates"], "description": "Preference" }));
    m.insert("preferParams".into(), json!({ "name": "Prefer", "in": "header", "required": false, "type": "string", "enum": ["params=single-object"], "description": "Preference" }));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;
    use crate::request::HttpRequest;

    fn catalog() -> Catalog {
        let col = |name: &str, ty: &str| json!({"name": name, "type": ty, "nullable": false, "has_default": false, "generated": false});
        test_catalog(json!({
            "tables": [
                {"schema": "public", "name": "payroll", "kind": "r", "comment": "salaries and SSNs",
                 "columns": [col("id", "integer"), col("name", "text"), col("salary", "numeric"), col("ssn", "text")],
                 "primary_key": ["id"], "unique_keys": [["id"]]},
                {"schema": "public", "name": "todos", "kind": "r", "comment": null,
                 "columns": [col("id", "integer"), col("title", "text")], "primary_key": ["id"], "unique_keys": [["id"]]}
            ],
            "foreign_keys": [],
            "functions": [
                {"schema": "public", "name": "raise_salary", "args": [{"name": "pct", "type": "integer"}], "defaults": 0,
                 "returns_set": false, "returns_composite": false, "returns_void": true, "result_columns": null,
                 "returns_table": null, "volatility": "v"},
                {"schema": "public", "name": "add", "args": [{"name": "a", "type": "integer"}], "defaults": 0,
                 "returns_set": false, "returns_composite": false, "returns_void": false, "result_columns": null,
                 "returns_table": null, "volatility": "i"}
            ]
        }))
    }

    /// Hardening: anon saw a payroll table's `salary`, `ssn` and comment.
    #[test]
    fn the_description_follows_the_roles_privileges() {
        let anon: Privileges = serde_json::from_value(json!({
            "tables": {"todos": {"select": ["id", "title"], "insert": [], "update": [], "delete": false}},
            "functions": [{"name": "add", "args": ["integer"]}]
        }))
        .unwrap();
        let request = HttpRequest::default();
        let doc = describe(&catalog(), "public", &anon, &request);
        let text = doc.to_string();
        for secret in ["payroll", "salary", "ssn", "salaries", "raise_salary"] {
            assert!(!text.contains(secret), "{secret} is described to a role that may not use it");
        }
        assert!(doc["paths"]["/todos"]["get"].is_object());
        assert!(doc["paths"]["/todos"].get("post").is_none() && doc["paths"]["/todos"].get("delete").is_none());
        assert!(doc["paths"]["/rpc/add"].is_object());

        // Column privileges: the columns granted, and only their operations.
        let clerk: Privileges = serde_json::from_value(json!({
            "tables": {"payroll": {"select": ["id", "name"], "insert": [], "update": ["name"], "delete": false}}
        }))
        .unwrap();
        let doc = describe(&catalog(), "public", &clerk, &request);
        let columns: Vec<&String> = doc["definitions"]["payroll"]["properties"].as_object().unwrap().keys().collect();
        assert_eq!(columns, ["id", "name"]);
        assert!(doc["paths"]["/payroll"]["patch"].is_object() && doc["paths"]["/payroll"].get("post").is_none());
        assert!(doc["parameters"].get("rowFilter.payroll.salary").is_none());
        assert!(doc["paths"].get("/todos").is_none());
    }
}
