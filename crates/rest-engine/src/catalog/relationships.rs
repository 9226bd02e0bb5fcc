//! Relationships between tables, inferred from foreign keys as PostgREST
//! infers them: many-to-one, one-to-many (one-to-one when the referencing
//! columns are unique) and many-to-many through a junction table.
use std::collections::HashMap;

use super::{Catalog, ForeignKey, Table, ViewColumn};

/// (schema, relation, column)
type ColumnRef = (String, String, String);

/// Which base-table column each view column shows, following views of views.
pub(super) struct ViewOrigins {
    /// (schema, view) → [(view column, base column)], base table per view.
    by_view: HashMap<(String, String), Vec<(String, ColumnRef)>>,
}

impl ViewOrigins {
    pub(super) fn new(view_columns: &[ViewColumn]) -> Self {
        let direct: HashMap<ColumnRef, Vec<ColumnRef>> = view_columns.iter().fold(HashMap::new(), |mut map, vc| {
            map.entry((vc.schema.clone(), vc.view.clone(), vc.column.clone())).or_default().push((
                vc.origin_schema.clone(),
                vc.origin_table.clone(),
                vc.origin_column.clone(),
            ));
            map
        });
        let mut by_view: HashMap<(String, String), Vec<(String, ColumnRef)>> = HashMap::new();
        for (column, origins) in &direct {
            // Two different origins: a subquery's entry matched too; trust neither.
            let [origin] = origins.as_slice() else { continue };
            let mut base = origin.clone();
            // A view of a view: follow the chain (bounded, views cannot cycle).
            for _ in 0..16 {
                match direct.get(&base).map(Vec::as_slice) {
                    Some([next]) => base = next.clone(),
                    _ => break,
                }
            }
            by_view.entry((column.0.clone(), column.1.clone())).or_default().push((column.2.clone(), base));
        }
        for columns in by_view.values_mut() {
            columns.sort();
        }
        ViewOrigins { by_view }
    }

    /// The view's names for `columns` of `schema.table`, when it shows them all.
    fn shown(&self, view: &(String, String), schema: &str, table: &str, columns: &[String]) -> Option<Vec<String>> {
        let shown = self.by_view.get(view)?;
        columns
            .iter()
            .map(|c| {
                shown
                    .iter()
                    .find(|(_, (s, t, col))| s == schema && t == table && col == c)
                    .map(|(name, _)| name.clone())
            })
            .collect()
    }

    /// Each relation standing for `schema.table` over `columns`: the table
    /// itself and every view that shows all those columns, with its names.
    fn stand_ins(&self, schema: &str, table: &str, columns: &[String]) -> Vec<(String, String, Vec<String>)> {
        let mut out = vec![(schema.to_string(), table.to_string(), columns.to_vec())];
        let mut views: Vec<&(String, String)> = self.by_view.keys().collect();
        views.sort();
        for view in views {
            if let Some(names) = self.shown(view, schema, table, columns) {
                out.push((view.0.clone(), view.1.clone(), names));
            }
        }
        out
    }

    /// Foreign keys as PostgREST sees them: each one also links every view
    /// that shows its columns (on either side), under the same name.
    pub(super) fn through_views(&self, foreign_keys: &[ForeignKey]) -> Vec<ForeignKey> {
        let mut out = Vec::with_capacity(foreign_keys.len());
        for fk in foreign_keys {
            for (schema, table, columns) in self.stand_ins(&fk.schema, &fk.table, &fk.columns) {
                for (fschema, ftable, fcolumns) in
                    self.stand_ins(&fk.foreign_schema, &fk.foreign_table, &fk.foreign_columns)
                {
                    out.push(ForeignKey {
                        name: fk.name.clone(),
                        schema: schema.clone(),
                        table: table.clone(),
                        columns: columns.clone(),
                        foreign_schema: fschema,
                        foreign_table: ftable,
                        foreign_columns: fcolumns,
                    });
                }
            }
        }
        out
    }

    /// A view that shows all columns of a base table's primary key (or of a
    /// unique key) has that key too.
    pub(super) fn infer_view_keys(&self, tables: &mut HashMap<(String, String), Table>) {
        let mut inferred = Vec::new();
        for (view, shown) in &self.by_view {
            if !tables.get(view).is_some_and(Table::is_view) {
                continue;
            }
            let mut bases: Vec<(&String, &String)> = shown.iter().map(|(_, (s, t, _))| (s, t)).collect();
            bases.dedup();
            for (bs, bt) in bases {
                let Some(base) = tables.get(&(bs.clone(), bt.clone())) else { continue };
                let pk = self.shown(view, bs, bt, &base.primary_key).filter(|k| !k.is_empty());
                let unique: Vec<Vec<String>> = base
                    .unique_keys
                    .iter()
                    .filter_map(|k| self.shown(view, bs, bt, k))
                    .map(|mut k| {
                        k.sort();
                        k
                    })
                    .collect();
                inferred.push((view.clone(), pk, unique));
            }
        }
        for (view, pk, unique) in inferred {
            if let Some(t) = tables.get_mut(&view) {
                if t.primary_key.is_empty() {
                    t.primary_key = pk.unwrap_or_default();
                }
                t.unique_keys.extend(unique);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cardinality {
    ManyToOne,
    OneToMany,
    OneToOne,
    ManyToMany,
}

impl Cardinality {
    pub fn is_to_one(&self) -> bool {
        matches!(self, Cardinality::ManyToOne | Cardinality::OneToOne)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Junction {
    pub schema: String,
    pub table: String,
    /// (junction column, source column)
    pub source_columns: Vec<(String, String)>,
    /// (junction column, target column)
    pub target_columns: Vec<(String, String)>,
    pub source_fk: String,
    pub target_fk: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relationship {
    pub target_schema: String,
    pub target_table: String,
    pub cardinality: Cardinality,
    /// The constraint name (for hints and error messages).
    pub constraint: String,
    /// (source column, target column) for direct relationships.
    pub columns: Vec<(String, String)>,
    pub junction: Option<Junction>,
}

impl Relationship {
    /// Whether `hint` (the `!hint` of `rel!hint(...)`) selects this one: a
    /// constraint name, a column of the relationship, or the junction table.
    fn matches_hint(&self, hint: &str) -> bool {
        self.constraint == hint
            || self.columns.iter().any(|(s, t)| s == hint || t == hint)
            || self.junction.as_ref().is_some_and(|j| j.table == hint || j.source_fk == hint || j.target_fk == hint)
    }

    pub fn describe(&self) -> String {
        let kind = match self.cardinality {
            Cardinality::ManyToOne => "many-to-one",
            Cardinality::OneToMany => "one-to-many",
            Cardinality::OneToOne => "one-to-one",
            Cardinality::ManyToMany => "many-to-many",
        };
        match &self.junction {
            Some(j) => format!("{kind} via {}.{} using {} and {}", j.schema, j.table, j.source_fk, j.target_fk),
            None => format!("{kind} using {}", self.constraint),
        }
    }
}

fn pairs(a: &[String], b: &[String]) -> Vec<(String, String)> {
    a.iter().cloned().zip(b.iter().cloned()).collect()
}

impl Catalog {
    /// Every relationship from `schema.table` to a table named `target` in `schema`.
    pub fn relationships(&self, schema: &str, table: &str, target: &str) -> Vec<Relationship> {
        let mut out = Vec::new();
        let is = |s: &str, t: &str, want_s: &str, want_t: &str| s == want_s && t == want_t;
        for fk in &self.foreign_keys {
            if is(&fk.schema, &fk.table, schema, table) && is(&fk.foreign_schema, &fk.foreign_table, schema, target) {
                out.push(Relationship {
                    target_schema: schema.into(),
                    target_table: target.into(),
                    cardinality: Cardinality::ManyToOne,
                    constraint: fk.name.clone(),
                    columns: pairs(&fk.columns, &fk.foreign_columns),
                    junction: None,
                });
            }
            if is(&fk.foreign_schema, &fk.foreign_table, schema, table) && is(&fk.schema, &fk.table, schema, target) {
                let unique = self.table(&fk.schema, &fk.table).is_some_and(|t| t.is_unique(&fk.columns));
                out.push(Relationship {
                    target_schema: schema.into(),
                    target_table: target.into(),
                    cardinality: if unique { Cardinality::OneToOne } else { Cardinality::OneToMany },
                    constraint: fk.name.clone(),
                    columns: pairs(&fk.foreign_columns, &fk.columns),
                    junction: None,
                });
            }
        }
        // Many-to-many: a third table with a foreign key to each side.
        for to_source in self.foreign_keys.iter().filter(|fk| is(&fk.foreign_schema, &fk.foreign_table, schema, table))
        {
            if to_source.table == table || to_source.table == target || to_source.schema != schema {
                continue;
            }
            // Junctions are tables: a view of one would make every
            // many-to-many through it ambiguous.
            if self.table(&to_source.schema, &to_source.table).is_none_or(Table::is_view) {
                continue;
            }
            for to_target in self.foreign_keys.iter().filter(|fk| {
                fk.schema == to_source.schema
                    && fk.table == to_source.table
                    && fk.name != to_source.name
                    && is(&fk.foreign_schema, &fk.foreign_table, schema, target)
            }) {
                out.push(junction_relationship(schema, target, to_source, to_target));
            }
        }
        out
    }

    /// The one relationship `hint` selects, or why there is not exactly one.
    pub fn relationship(
        &self,
        schema: &str,
        table: &str,
        target: &str,
        hint: Option<&str>,
    ) -> Result<Relationship, Vec<Relationship>> {
        let mut found = self.relationships(schema, table, target);
        if let Some(hint) = hint {
            found.retain(|r| r.matches_hint(hint));
        }
        if found.len() == 1 {
            Ok(found.remove(0))
        } else {
            Err(found)
        }
    }
}

fn junction_relationship(schema: &str, target: &str, to_source: &ForeignKey, to_target: &ForeignKey) -> Relationship {
    Relationship {
        target_schema: schema.into(),
        target_table: target.into(),
        cardinality: Cardinality::ManyToMany,
        constraint: to_target.name.clone(),
        columns: vec![],
        junction: Some(Junction {
            schema: to_source.schema.clone(),
            table: to_source.table.clone(),
            source_columns: pairs(&to_source.columns, &to_source.foreign_columns),
            target_columns: pairs(&to_target.columns, &to_target.foreign_columns),
            source_fk: to_source.name.clone(),
            target_fk: to_target.name.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;
    use serde_json::json;

    fn table(name: &str, unique: serde_json::Value) -> serde_json::Value {
        json!({"schema": "public", "name": name, "kind": "r", "comment": null, "columns": [], "primary_key": ["id"], "unique_keys": unique})
    }

    fn fk(name: &str, t: &str, cols: &[&str], ft: &str) -> serde_json::Value {
        json!({"name": name, "schema": "public", "table": t, "columns": cols, "foreign_schema": "public", "foreign_table": ft, "foreign_columns": ["id"]})
    }

    fn catalog() -> Catalog {
        test_catalog(json!({
            "tables": [
                table("users", json!([["id"]])), table("posts", json!([["id"]])),
                table("tags", json!([["id"]])), table("post_tags", json!([["post_id", "tag_id"]])),
                table("profiles", json!([["id"], ["user_id"]])),
            ],
            "foreign_keys": [
                fk("posts_author_fkey", "posts", &["author_id"], "users"),
                fk("posts_editor_fkey", "posts", &["editor_id"], "users"),
                fk("post_tags_post_fkey", "post_tags", &["post_id"], "posts"),
                fk("post_tags_tag_fkey", "post_tags", &["tag_id"], "tags"),
                fk("profiles_user_fkey", "profiles", &["user_id"], "users"),
            ],
            "functions": []
        }))
    }

    #[test]
    fn infers_every_cardinality() {
        let c = catalog();
        let r = c.relationship("public", "posts", "users", Some("posts_author_fkey")).unwrap();
        assert_eq!(r.cardinality, Cardinality::ManyToOne);
        assert_eq!(r.columns, vec![("author_id".to_string(), "id".to_string())]);
        let r = c.relationship("public", "users", "profiles", None).unwrap();
        assert_eq!(r.cardinality, Cardinality::OneToOne);
        let r = c.relationship("public", "posts", "tags", None).unwrap();
        assert_eq!(r.cardinality, Cardinality::ManyToMany);
        assert_eq!(r.junction.unwrap().table, "post_tags");
        let r = c.relationship("public", "tags", "post_tags", None).unwrap();
        assert_eq!(r.cardinality, Cardinality::OneToMany);
    }

    #[test]
    fn views_stand_in_for_the_tables_they_show() {
        let view = |name: &str, cols: &[(&str, &str, &str)]| {
            let columns: Vec<_> = cols
                .iter()
                .map(|(c, t, oc)| json!({"schema": "public", "view": name, "column": c, "origin_schema": "public", "origin_table": t, "origin_column": oc}))
                .collect();
            columns
        };
        let mut view_columns = view("authors", &[("author_ref", "users", "id"), ("nick", "users", "name")]);
        view_columns.extend(view("recent_posts", &[("post_id", "posts", "id"), ("writer", "posts", "author_id")]));
        // A view of a view.
        view_columns.extend(view("top_authors", &[("ref", "authors", "author_ref")]));
        let c = test_catalog(json!({
            "tables": [
                table("users", json!([["id"]])), table("posts", json!([["id"]])),
                {"schema": "public", "name": "authors", "kind": "v", "comment": null, "columns": [], "primary_key": [], "unique_keys": []},
                {"schema": "public", "name": "recent_posts", "kind": "v", "comment": null, "columns": [], "primary_key": [], "unique_keys": []},
                {"schema": "public", "name": "top_authors", "kind": "v", "comment": null, "columns": [], "primary_key": [], "unique_keys": []},
            ],
            "foreign_keys": [fk("posts_author_fkey", "posts", &["author_id"], "users")],
            "view_columns": view_columns,
            "functions": []
        }));
        let r = c.relationship("public", "recent_posts", "authors", None).unwrap();
        assert_eq!(r.cardinality, Cardinality::ManyToOne);
        assert_eq!(r.columns, vec![("writer".to_string(), "author_ref".to_string())]);
        let r = c.relationship("public", "top_authors", "posts", None).unwrap();
        assert_eq!((r.cardinality, r.columns), (Cardinality::OneToMany, vec![("ref".into(), "author_id".into())]));
        assert_eq!(c.table("public", "authors").unwrap().primary_key, vec!["author_ref".to_string()]);
        assert_eq!(c.table("public", "recent_posts").unwrap().primary_key, vec!["post_id".to_string()]);
        // And back: one-to-many from the table to the view.
        assert!(c.relationship("public", "users", "recent_posts", None).is_ok());
    }

    #[test]
    fn ambiguity_and_hints() {
        let c = catalog();
        assert_eq!(c.relationship("public", "posts", "users", None).unwrap_err().len(), 2);
        assert!(c.relationship("public", "posts", "users", Some("editor_id")).is_ok());
        assert!(c.relationship("public", "posts", "nothing", None).unwrap_err().is_empty());
    }
}
