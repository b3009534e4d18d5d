//! PostgreSQL catalog emulation for psql and drivers.
//!
//! Clients discover tables by querying `pg_catalog` (`\dt` in psql is a join of
//! `pg_class`, `pg_namespace` and `pg_am`) and call catalog functions such as
//! `pg_table_is_visible` or `format_type`. This module registers a `pg_catalog` schema
//! whose tables are computed from `Coordinator::relations()` on every scan
//! ([`tables`]), registers those functions as DataFusion UDFs ([`functions`]), and
//! [`rewrite`]s the PostgreSQL-only syntax in client SQL (`OPERATOR(pg_catalog.~)`,
//! `::regclass`, `COLLATE pg_catalog.default`) into SQL DataFusion plans.

mod functions;
mod rewrite;
mod rows;
mod tables;

pub use rewrite::rewrite;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use sluice_cluster::Coordinator;
use sluice_common::error::{Result, SluiceError};

/// Registers the `pg_catalog` schema and the catalog functions on the coordinator's
/// session context. Fails only if the context has no default catalog.
pub fn register(coordinator: &Arc<Coordinator>) -> Result<()> {
    let ctx = coordinator.session_context();
    let catalog_name = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let catalog = ctx.catalog(&catalog_name).ok_or_else(|| {
        SluiceError::internal(format!("default catalog {catalog_name} is missing"))
    })?;
    catalog.register_schema("pg_catalog", Arc::new(PgCatalogSchema::new(coordinator)))?;
    functions::register(ctx);
    Ok(())
}

/// The `pg_catalog` schema: a fixed set of tables whose rows are computed on scan.
#[derive(Debug)]
struct PgCatalogSchema {
    tables: HashMap<&'static str, Arc<PgCatalogTable>>,
}

impl PgCatalogSchema {
    fn new(coordinator: &Arc<Coordinator>) -> PgCatalogSchema {
        let tables = tables::table_columns()
            .into_iter()
            .map(|(name, columns)| {
                let table = PgCatalogTable {
                    name,
                    schema: tables::schema_of(&columns),
                    // Weak: the coordinator owns the session context that owns this
                    // schema, so a strong reference would be a cycle.
                    coordinator: Arc::downgrade(coordinator),
                };
                (name, Arc::new(table))
            })
            .collect();
        PgCatalogSchema { tables }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.keys().map(|k| k.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self
            .tables
            .get(name)
            .map(|t| t.clone() as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}

/// One `pg_catalog` table; every scan computes its rows anew, so it always reflects the
/// relations that exist at that moment.
#[derive(Debug)]
struct PgCatalogTable {
    name: &'static str,
    schema: SchemaRef,
    coordinator: Weak<Coordinator>,
}

#[async_trait]
impl TableProvider for PgCatalogTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let relations = self
            .coordinator
            .upgrade()
            .map(|c| c.relations())
            .unwrap_or_default();
        let batch = tables::batch(self.name, &self.schema, &relations, settings())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let table = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// The settings `pg_settings` lists.
fn settings() -> &'static [(&'static str, &'static str)] {
    crate::pgwire::DEFAULT_VARIABLES
}
