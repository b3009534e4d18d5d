//! Sluice's SQL layer: parsing ([`parser`]), the [`catalog`], the [`graph`] a streaming job
//! runs, and the [`planner`] that lowers DataFusion logical plans onto it.

pub mod catalog;
pub mod codec;
mod dialect;
pub mod graph;
pub mod interval;
pub mod over;
pub mod parser;
pub mod planner;
pub mod temporal;
pub mod temporal_join;
pub mod windows;

pub use catalog::{Catalog, Relation, RelationKind, WatermarkSpec};
pub use graph::{
    Exchange, OverFrame, StreamEdge, StreamGraph, StreamNode, StreamOperator, WindowAggregate,
};
pub use parser::{
    CursorStart, DEFAULT_RETENTION_MS, ObjectKind, ParsedStatement, ShowTarget, Statement,
    ViewOptions, WatermarkDef, parse_checkpoint_interval, parse_sql, parse_state_ttl,
};
pub use planner::{dependencies, into_sink_graph, plan_stream_graph, relation_name};

/// Registers Sluice's functions with a DataFusion context: the window functions and the
/// temporal join marker.
pub fn register_functions(ctx: &datafusion::prelude::SessionContext) {
    windows::register_window_functions(ctx);
    temporal_join::register(ctx);
}

/// Rewrites Sluice's SQL extensions (window table functions, temporal joins) in a
/// statement into SQL DataFusion plans.
pub fn rewrite_extensions(
    statement: &mut datafusion::sql::sqlparser::ast::Statement,
) -> sluice_common::error::Result<()> {
    windows::rewrite_window_functions(statement)?;
    temporal_join::rewrite_temporal_joins(statement)
}
