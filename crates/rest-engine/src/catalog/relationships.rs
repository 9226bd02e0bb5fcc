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

    fn name(&self) -> &'static str {
        match self {
            Cardinality::ManyToOne => "many-to-one",
            Cardinality::OneToMany => "one-to-many",
            Cardinality::OneToOne => "one-to-one",
            Cardinality::ManyToMany => "many-to-many",
        }
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

/// A function of the source table's row type that returns rows of the
/// target table: `FROM schema.name(parent::source)` replaces the join.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedRelationship {
    pub schema: String,
    pub name: String,
    /// The argument's type: the source table (`parent::"s"."t"` picks the overload).
    pub arg_schema: String,
    pub arg_table: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relationship {
    /// The table the relationship starts from (for messages).
    pub source_table: String,
    pub target_schema: String,
    pub target_table: String,
    pub cardinality: Cardinality,
    /// The constraint name (for hints and error messages).
    pub constraint: String,
    /// (source column, target column) for direct relationships.
    pub columns: Vec<(String, String)>,
    pub junction: Option<Junction>,
    pub computed: Option<ComputedRelationship>,
}

/// One candidate of an ambiguous embed, as PostgREST's `PGRST201` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationshipSummary {
    pub cardinality: &'static str,
    pub embedding: String,
    pub relationship: String,
    /// `target!hint`, the form that selects this one.
    pub hint: String,
}

impl Relationship {
    fn is_self(&self, schema: &str) -> bool {
        self.computed.is_none() && self.target_schema == schema && self.target_table == self.source_table
    }

    /// The source column of a single-column foreign key.
    fn single_column(&self) -> Option<&str> {
        match self.columns.as_slice() {
            [(source, _)] if self.junction.is_none() => Some(source),
            _ => None,
        }
    }

    /// The target column of a single-column foreign key.
    fn single_target_column(&self) -> Option<&str> {
        match self.columns.as_slice() {
            [(_, target)] if self.junction.is_none() => Some(target),
            _ => None,
        }
    }

    /// The constraint of a direct (not many-to-many) relationship.
    fn direct_constraint(&self) -> Option<&str> {
        (self.junction.is_none() && self.computed.is_none()).then_some(self.constraint.as_str())
    }

    /// How PostgREST describes this relationship in `PGRST201`'s details.
    pub fn summary(&self) -> RelationshipSummary {
        let list = |cols: &mut dyn Iterator<Item = &String>| {
            format!("({})", cols.map(String::as_str).collect::<Vec<_>>().join(", "))
        };
        let (relationship, hint) = match &self.junction {
            Some(j) => (
                format!(
                    "{} using {}{} and {}{}",
                    j.table,
                    j.source_fk,
                    list(&mut j.source_columns.iter().map(|(jc, _)| jc)),
                    j.target_fk,
                    list(&mut j.target_columns.iter().map(|(jc, _)| jc))
                ),
                j.table.clone(),
            ),
            None => (
                format!(
                    "{} using {}{} and {}{}",
                    self.constraint,
                    self.source_table,
                    list(&mut self.columns.iter().map(|(s, _)| s)),
                    self.target_table,
                    list(&mut self.columns.iter().map(|(_, t)| t))
                ),
                self.constraint.clone(),
            ),
        };
        RelationshipSummary {
            cardinality: self.cardinality.name(),
            embedding: format!("{} with {}", self.source_table, self.target_table),
            relationship,
            hint: format!("{}!{hint}", self.target_table),
        }
    }
}

fn pairs(a: &[String], b: &[String]) -> Vec<(String, String)> {
    a.iter().cloned().zip(b.iter().cloned()).collect()
}

impl Catalog {
    /// Every relationship from `schema.table` to a relation of `schema`:
    /// through foreign keys (either way), junction tables, and functions of
    /// the table's row type that return rows of a table (computed).
    pub fn relationships(&self, schema: &str, table: &str) -> Vec<Relationship> {
        let mut out = Vec::new();
        let is = |s: &str, t: &str, want_s: &str, want_t: &str| s == want_s && t == want_t;
        let unique = |s: &str, t: &str, cols: &[String]| self.table(s, t).is_some_and(|t| t.is_unique(cols));
        let direct = |target: &str, cardinality, constraint: &str, columns| Relationship {
            source_table: table.into(),
            target_schema: schema.into(),
            target_table: target.into(),
            cardinality,
            constraint: constraint.into(),
            columns,
            junction: None,
            computed: None,
        };
        for fk in &self.foreign_keys {
            if is(&fk.schema, &fk.table, schema, table) && fk.foreign_schema == schema {
                let cardinality = if unique(&fk.schema, &fk.table, &fk.columns) {
                    Cardinality::OneToOne
                } else {
                    Cardinality::ManyToOne
                };
                out.push(direct(&fk.foreign_table, cardinality, &fk.name, pairs(&fk.columns, &fk.foreign_columns)));
            }
            if is(&fk.foreign_schema, &fk.foreign_table, schema, table) && fk.schema == schema {
                let cardinality = if unique(&fk.schema, &fk.table, &fk.columns) {
                    Cardinality::OneToOne
                } else {
                    Cardinality::OneToMany
                };
                out.push(direct(&fk.table, cardinality, &fk.name, pairs(&fk.foreign_columns, &fk.columns)));
            }
        }
        // Many-to-many, as PostgREST's addM2MRels: a third table (or view)
        // with a many-to-one foreign key to each side, whose columns are all
        // part of its primary key (a view's inferred from its base table).
        let many_to_one = |fk: &ForeignKey| !unique(&fk.schema, &fk.table, &fk.columns);
        for to_source in self.foreign_keys.iter().filter(|fk| is(&fk.foreign_schema, &fk.foreign_table, schema, table))
        {
            if to_source.table == table || to_source.schema != schema || !many_to_one(to_source) {
                continue;
            }
            let Some(junction) = self.table(&to_source.schema, &to_source.table) else { continue };
            let in_key = |fk: &ForeignKey| fk.columns.iter().all(|c| junction.primary_key.contains(c));
            if !in_key(to_source) {
                continue;
            }
            for to_target in self.foreign_keys.iter().filter(|fk| {
                fk.schema == to_source.schema
                    && fk.table == to_source.table
                    && fk.name != to_source.name
                    && fk.foreign_schema == schema
                    && fk.foreign_table != to_source.table
                    && many_to_one(fk)
                    && in_key(fk)
            }) {
                out.push(junction_relationship(schema, table, to_source, to_target));
            }
        }
        for f in self.functions_in(schema) {
            let (Some(arg), Some(ret)) = (&f.row_arg, &f.returns_table) else { continue };
            if !is(&arg.schema, &arg.name, schema, table) || self.table(&ret.schema, &ret.name).is_none() {
                continue;
            }
            out.push(Relationship {
                source_table: table.into(),
                target_schema: ret.schema.clone(),
                target_table: ret.name.clone(),
                cardinality: if f.single_row { Cardinality::ManyToOne } else { Cardinality::OneToMany },
                constraint: f.name.clone(),
                columns: vec![],
                junction: None,
                computed: Some(ComputedRelationship {
                    schema: f.schema.clone(),
                    name: f.name.clone(),
                    arg_schema: arg.schema.clone(),
                    arg_table: arg.name.clone(),
                }),
            });
        }
        out
    }

    /// The one relationship `select=target!hint(…)` on `schema.table`
    /// names, found as PostgREST finds it, or the candidates when there is
    /// not exactly one (none: `PGRST200`, several: `PGRST201`). The target
    /// is a table or view, a function of the table's row type, or (for
    /// tables) a foreign key's constraint name or single column. In a
    /// self-referencing table the table's name is the one-to-many side (the
    /// children) and the column's name the many-to-one side (the parent); a
    /// hint there is the children's referencing column.
    pub fn relationship(
        &self,
        schema: &str,
        table: &str,
        target: &str,
        hint: Option<&str>,
    ) -> Result<Relationship, Vec<Relationship>> {
        let target_is_view =
            |r: &Relationship| self.table(&r.target_schema, &r.target_table).is_some_and(Table::is_view);
        let mut found = self.relationships(schema, table);
        found.retain(|r| {
            if let Some(f) = &r.computed {
                return f.name == target;
            }
            let one_to_many = r.cardinality == Cardinality::OneToMany;
            match (r.is_self(schema), hint) {
                (true, None) => {
                    (r.target_table == target && one_to_many)
                        || (r.single_column() == Some(target) && r.cardinality == Cardinality::ManyToOne)
                }
                (true, Some(h)) => r.target_table == target && one_to_many && r.single_target_column() == Some(h),
                (false, None) => {
                    r.target_table == target
                        || (r.direct_constraint() == Some(target) && !target_is_view(r))
                        || (r.single_column() == Some(target) && !target_is_view(r))
                }
                (false, Some(h)) => {
                    r.target_table == target
                        && (r.direct_constraint() == Some(h)
                            || r.single_column() == Some(h)
                            || r.single_target_column() == Some(h)
                            || r.junction.as_ref().is_some_and(|j| j.table == h))
                }
            }
        });
        if found.len() == 1 {
            Ok(found.remove(0))
        } else {
            Err(found)
        }
    }
}

/// PostgREST's hint for `PGRST200`: when `table` has relationships, the
/// target closest to `target` among them (never `target` itself); else the
/// table with relationships closest to `table`.
pub fn no_relationship_hint(catalog: &Catalog, schema: &str, table: &str, target: &str) -> Option<String> {
    let own = catalog.relationships(schema, table);
    if own.is_empty() {
        let mut parents: Vec<&str> = catalog
            .tables_in(schema)
            .filter(|t| !catalog.relationships(schema, &t.name).is_empty())
            .map(|t| t.name.as_str())
            .collect();
        parents.sort();
        let (_, best) = super::fuzzy::matches(&parents, table).into_iter().next()?;
        Some(format!("Perhaps you meant '{best}' instead of '{table}'."))
    } else {
        let mut children: Vec<&str> = own.iter().map(|r| r.target_table.as_str()).collect();
        children.sort();
        children.dedup();
        let (_, best) = super::fuzzy::matches(&children, target).into_iter().find(|(score, _)| *score < 1.0)?;
        Some(format!("Perhaps you meant '{best}' instead of '{target}'."))
    }
}

fn junction_relationship(schema: &str, table: &str, to_source: &ForeignKey, to_target: &ForeignKey) -> Relationship {
    Relationship {
        source_table: table.into(),
        target_schema: schema.into(),
        target_table: to_target.foreign_table.clone(),
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
        computed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;
    use serde_json::json;

    fn table(name: &str, unique: serde_json::Value) -> serde_json::Value {
        let key = unique.get(0).cloned().unwrap_or(json!(["id"]));
        json!({"schema": "public", "name": name, "kind": "r", "comment": null, "columns": [], "primary_key": key, "unique_keys": unique})
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
                // A key of its own: not a junction (PostgREST's addM2MRels
                // wants the foreign key columns in the primary key).
                table("likes", json!([["id"], ["post_id", "user_id"]])),
            ],
            "foreign_keys": [
                fk("posts_author_fkey", "posts", &["author_id"], "users"),
                fk("posts_editor_fkey", "posts", &["editor_id"], "users"),
                fk("post_tags_post_fkey", "post_tags", &["post_id"], "posts"),
                fk("post_tags_tag_fkey", "post_tags", &["tag_id"], "tags"),
                fk("profiles_user_fkey", "profiles", &["user_id"], "users"),
                fk("likes_post_fkey", "likes", &["post_id"], "posts"),
                fk("likes_user_fkey", "likes", &["user_id"], "users"),
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
        // posts → users: the two foreign keys of posts, and no many-to-many through likes.
        let all = c.relationships("public", "posts");
        assert!(all.iter().all(|r| r.junction.as_ref().is_none_or(|j| j.table != "likes")), "{all:?}");
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

    /// A real project's shape: a self-reference, two foreign keys to one
    /// table, a view, and functions of a table's row type.
    fn project() -> Catalog {
        let function = |name: &str, arg: &str, ret: &str, set: bool| {
            json!({"schema": "public", "name": name, "args": [{"name": "", "type": arg}], "defaults": 0,
                   "returns_set": set, "returns_composite": true, "returns_void": false, "result_columns": null,
                   "volatility": "s", "returns_table": {"schema": "public", "name": ret},
                   "row_arg": {"schema": "public", "name": arg}, "return_type": ret, "single_row": !set})
        };
        test_catalog(json!({
            "tables": [
                table("users", json!([["id"]])), table("collections", json!([["id"]])),
                table("best_friends", json!([["id"]])), table("channels", json!([["id"]])),
                table("messages", json!([["id"]])),
                {"schema": "public", "name": "active_users", "kind": "v", "comment": null, "columns": [], "primary_key": [], "unique_keys": []},
            ],
            "foreign_keys": [
                fk("collections_parent_id_fkey", "collections", &["parent_id"], "collections"),
                fk("best_friends_first_user_fkey", "best_friends", &["first_user"], "users"),
                fk("best_friends_second_user_fkey", "best_friends", &["second_user"], "users"),
                fk("messages_channel_id_fkey", "messages", &["channel_id"], "channels"),
                fk("messages_user_id_fkey", "messages", &["user_id"], "active_users"),
            ],
            "functions": [
                function("get_messages", "channels", "messages", true),
                function("last_message", "channels", "messages", false),
            ]
        }))
    }

    #[test]
    fn self_references_resolve_as_postgrest_resolves_them() {
        let c = project();
        // The table's name: the children (one-to-many).
        let r = c.relationship("public", "collections", "collections", None).unwrap();
        assert_eq!((r.cardinality, r.columns), (Cardinality::OneToMany, vec![("id".into(), "parent_id".into())]));
        // The column's name: the parent (many-to-one).
        let r = c.relationship("public", "collections", "parent_id", None).unwrap();
        assert_eq!(r.cardinality, Cardinality::ManyToOne);
        // A hint is the children's referencing column; a constraint name does not apply.
        assert!(c.relationship("public", "collections", "collections", Some("parent_id")).is_ok());
        assert!(c
            .relationship("public", "collections", "collections", Some("collections_parent_id_fkey"))
            .unwrap_err()
            .is_empty());
        assert!(c.relationship("public", "collections", "collections", Some("id")).unwrap_err().is_empty());
    }

    #[test]
    fn constraint_names_and_columns_are_targets() {
        let c = project();
        let r = c.relationship("public", "users", "best_friends_first_user_fkey", None).unwrap();
        assert_eq!((r.target_table.as_str(), r.cardinality), ("best_friends", Cardinality::OneToMany));
        let r = c.relationship("public", "best_friends", "second_user", None).unwrap();
        assert_eq!((r.target_table.as_str(), r.constraint.as_str()), ("users", "best_friends_second_user_fkey"));
        // Not when the target is a view (PostgREST#2277).
        assert!(c.relationship("public", "messages", "user_id", None).unwrap_err().is_empty());
        assert!(c.relationship("public", "messages", "active_users", None).is_ok());
        // Ambiguous without a hint, with PostgREST's details.
        let err = c.relationship("public", "users", "best_friends", None).unwrap_err();
        let s = err[0].summary();
        assert_eq!(
            (s.cardinality, s.embedding.as_str(), s.relationship.as_str(), s.hint.as_str()),
            (
                "one-to-many",
                "users with best_friends",
                "best_friends_first_user_fkey using users(id) and best_friends(first_user)",
                "best_friends!best_friends_first_user_fkey"
            )
        );
    }

    #[test]
    fn functions_of_a_row_type_are_computed_relationships() {
        let c = project();
        let r = c.relationship("public", "channels", "get_messages", None).unwrap();
        assert_eq!((r.target_table.as_str(), r.cardinality.is_to_one()), ("messages", false));
        assert_eq!(r.computed.unwrap().arg_table, "channels");
        assert!(c.relationship("public", "channels", "last_message", None).unwrap().cardinality.is_to_one());
        // Only from the table whose row type the function takes.
        assert!(c.relationship("public", "users", "get_messages", None).unwrap_err().is_empty());
    }

    #[test]
    fn no_relationship_hints_suggest_a_close_name() {
        let c = project();
        let hint = |t: &str, target: &str| no_relationship_hint(&c, "public", t, target);
        assert_eq!(hint("channels", "message").as_deref(), Some("Perhaps you meant 'messages' instead of 'message'."));
        assert_eq!(hint("channel", "messages").as_deref(), Some("Perhaps you meant 'channels' instead of 'channel'."));
        assert_eq!(hint("channels", "zzz"), None);
    }

    #[test]
    fn ambiguity_and_hints() {
        let c = catalog();
        assert_eq!(c.relationship("public", "posts", "users", None).unwrap_err().len(), 2);
        assert!(c.relationship("public", "posts", "users", Some("editor_id")).is_ok());
        assert!(c.relationship("public", "posts", "nothing", None).unwrap_err().is_empty());
    }
}
