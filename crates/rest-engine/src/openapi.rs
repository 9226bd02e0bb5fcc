//! `GET /rest/v1/`: an OpenAPI 2.0 description of the exposed schema, in the
//! shape PostgREST produces (paths per table and function, definitions per
//! table, shared parameters). Pure.
use serde_json::{json, Map, Value};

use crate::catalog::{Catalog, Column, Table};

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

fn table_path(table: &Table) -> Value {
    let name = &table.name;
    let mut filters: Vec<Value> =
        table.columns.iter().map(|c| json!({ "$ref": format!("#/parameters/rowFilter.{name}.{}", c.name) })).collect();
    let refs =
        |names: &[&str]| names.iter().map(|n| json!({ "$ref": format!("#/parameters/{n}") })).collect::<Vec<_>>();
    let mut get = filters.clone();
    get.extend(refs(&["select", "order", "range", "rangeUnit", "offset", "limit", "preferCount"]));
    let ok = json!({ "description": "OK", "schema": { "type": "array", "items": { "$ref": format!("#/definitions/{name}") } } });
    let mut path = json!({
        "get": { "tags": [name], "parameters": get, "responses": { "200": ok, "206": { "description": "Partial Content" } } },
    });
    if !table.is_view() || !table.primary_key.is_empty() {
        let body = json!({ "$ref": format!("#/parameters/body.{name}") });
        path["post"] = json!({ "tags": [name], "parameters": [body.clone(), {"$ref": "#/parameters/select"}, {"$ref": "#/parameters/preferPost"}], "responses": { "201": { "description": "Created" } } });
        let mut patch = filters.clone();
        patch.push(body);
        patch.extend(refs(&["preferReturn"]));
        path["patch"] =
            json!({ "tags": [name], "parameters": patch, "responses": { "204": { "description": "No Content" } } });
        filters.extend(refs(&["preferReturn"]));
        path["delete"] =
            json!({ "tags": [name], "parameters": filters, "responses": { "204": { "description": "No Content" } } });
    }
    path
}

pub fn describe(catalog: &Catalog, schema: &str, request: &crate::request::HttpRequest<'_>) -> Value {
    let mut tables: Vec<&Table> = catalog.tables_in(schema).collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut paths = Map::new();
    paths.insert("/".into(), json!({ "get": { "tags": ["Introspection"], "summary": "OpenAPI description (this document)", "produces": ["application/openapi+json", "application/json"], "responses": { "200": { "description": "OK" } } } }));
    let mut definitions = Map::new();
    let mut parameters = shared_parameters();
    for t in &tables {
        paths.insert(format!("/{}", t.name), table_path(t));
        definitions.insert(t.name.clone(), definition(t));
        parameters.insert(
            format!("body.{}", t.name),
            json!({ "name": t.name, "description": t.name, "required": false, "in": "body", "schema": { "$ref": format!("#/definitions/{}", t.name) } }),
        );
        for c in &t.columns {
            parameters.insert(
                format!("rowFilter.{}.{}", t.name, c.name),
                json!({ "name": c.name, "required": false, "in": "query", "format": c.type_name, "type": "string" }),
            );
        }
    }
    let mut functions: Vec<_> = catalog.functions_in(schema).collect();
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
