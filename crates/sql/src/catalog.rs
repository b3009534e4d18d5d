//! The catalog: every table, source, materialized view and sink, with their schemas and
//! the dependencies between them.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::Expr;
use sluice_common::error::{Result, SluiceError, SqlState};

use crate::parser::ObjectKind;

/// What a relation is, with what only that kind has.
#[derive(Debug, Clone)]
pub enum RelationKind {
    Table {
        /// Column indices of the primary key (empty: none).
        primary_key: Vec<usize>,
        append_only: bool,
    },
    Source {
        /// The `WITH (...)` options, keys lower-cased.
        options: BTreeMap<String, String>,
    },
    MaterializedView {
        /// The defining query's text.
        query: String,
        /// Relations the query reads.
        depends_on: Vec<String>,
        /// Number of partitions of the view's result (its sink parallelism).
        partitions: usize,
        /// Whether the stream into the view carries retractions.
        changelog: bool,
    },
    /// A sink: its query's changelog goes to a connector. It cannot be read with SQL,
    /// but its name is taken like a relation's (as in RisingWave).
    Sink {
        /// The query's text (`FROM v` for `CREATE SINK s FROM v`).
        query: String,
        /// Relations the query reads.
        depends_on: Vec<String>,
        /// The connector's `WITH (...)` options, keys lower-cased.
        options: BTreeMap<String, String>,
        /// Whether the query's output carries retractions.
        changelog: bool,
    },
    /// A subscription: the view keeps its changes for `retention_ms`, for cursors to
    /// read. Its schema is a cursor's rows: the view's columns, `op` and `changed_at`.
    Subscription {
        /// The materialized view it reads, as the only entry (for `depends_on`).
        view: Vec<String>,
        retention_ms: i64,
    },
}

/// The watermark of a table or source: event-time progress derived from a column.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    /// The event-time column.
    pub column: String,
    /// The watermark expression over the relation's (unqualified) columns; its type is
    /// the column's timestamp type.
    pub expr: Expr,
    /// The expression as written, for DESCRIBE.
    pub sql: String,
}

/// One catalog entry.
#[derive(Debug, Clone)]
pub struct Relation {
    pub id: u64,
    /// The normalized (lower-cased unless quoted) name.
    pub name: String,
    pub schema: SchemaRef,
    pub kind: RelationKind,
    /// `WATERMARK FOR ...` of a table or source.
    pub watermark: Option<WatermarkSpec>,
}

impl Relation {
    pub fn object_kind(&self) -> ObjectKind {
        match self.kind {
            RelationKind::Table { .. } => ObjectKind::Table,
            RelationKind::Source { .. } => ObjectKind::Source,
            RelationKind::MaterializedView { .. } => ObjectKind::MaterializedView,
            RelationKind::Sink { .. } => ObjectKind::Sink,
            RelationKind::Subscription { .. } => ObjectKind::Subscription,
        }
    }

    /// Relations this one reads.
    pub fn depends_on(&self) -> &[String] {
        match &self.kind {
            RelationKind::MaterializedView { depends_on, .. }
            | RelationKind::Sink { depends_on, .. }
            | RelationKind::Subscription {
                view: depends_on, ..
            } => depends_on,
            _ => &[],
        }
    }
}

/// All relations by name. Names are unique across kinds, as in PostgreSQL.
#[derive(Debug, Default)]
pub struct Catalog {
    relations: BTreeMap<String, Relation>,
    next_id: u64,
}

impl Catalog {
    pub fn new() -> Self {
        Catalog {
            relations: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// The id [`Self::allocate_id`] hands out next.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Makes [`Self::allocate_id`] hand out `id` next: restoring a catalog gives every
    /// object the id it had.
    pub fn set_next_id(&mut self, id: u64) {
        self.next_id = id;
    }

    /// A fresh relation id.
    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn get(&self, name: &str) -> Option<&Relation> {
        self.relations.get(name)
    }

    /// The relation `name`, which must be of `kind`.
    pub fn get_kind(&self, name: &str, kind: ObjectKind) -> Result<&Relation> {
        let relation = self.get(name).ok_or_else(|| match kind {
            ObjectKind::Table => SluiceError::undefined_table(name),
            _ => SluiceError::new(
                SqlState::UNDEFINED_TABLE,
                format!(
                    "{} \"{name}\" does not exist",
                    kind.sql_name().to_lowercase()
                ),
            ),
        })?;
        if relation.object_kind() != kind {
            return Err(SluiceError::new(
                SqlState::WRONG_OBJECT_TYPE,
                format!(
                    "\"{name}\" is a {}, not a {}",
                    relation.object_kind().sql_name().to_lowercase(),
                    kind.sql_name().to_lowercase(),
                ),
            ));
        }
        Ok(relation)
    }

    /// Fails with `42P07` when `name` is taken.
    pub fn check_free(&self, name: &str) -> Result<()> {
        match self.get(name) {
            Some(existing) => Err(SluiceError::new(
                SqlState::DUPLICATE_TABLE,
                format!(
                    "relation \"{name}\" already exists (as a {})",
                    existing.object_kind().sql_name().to_lowercase()
                ),
            )),
            None => Ok(()),
        }
    }

    pub fn insert(&mut self, relation: Relation) -> Result<()> {
        self.check_free(&relation.name)?;
        self.relations.insert(relation.name.clone(), relation);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Option<Relation> {
        self.relations.remove(name)
    }

    /// Names of the materialized views and sinks that read `name`.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        self.relations
            .values()
            .filter(|r| r.depends_on().iter().any(|d| d == name))
            .map(|r| r.name.clone())
            .collect()
    }

    /// Every relation, by name.
    pub fn relations(&self) -> impl Iterator<Item = &Relation> {
        self.relations.values()
    }
}
