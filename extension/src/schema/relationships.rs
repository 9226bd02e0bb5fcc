//! Relationships between tables, inferred from foreign keys as PostgREST
//! infers them: many-to-one, one-to-many (one-to-one when the referencing
//! columns are unique) and many-to-many through a junction table.
use super::{Catalog, ForeignKey};

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
    use crate::schema::test_catalog;
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
    fn ambiguity_and_hints() {
        let c = catalog();
        assert_eq!(c.relationship("public", "posts", "users", None).unwrap_err().len(), 2);
        assert!(c.relationship("public", "posts", "users", Some("editor_id")).is_ok());
        assert!(c.relationship("public", "posts", "nothing", None).unwrap_err().is_empty());
    }
}
