//! Sluice's SQL layer: parsing ([`parser`]), the [`catalog`], the [`graph`] a streaming job
//! runs, and the [`planner`] that lowers DataFusion logical plans onto it.

pub mod catalog;
pub mod graph;
pub mod interval;
pub mod parser;
pub mod planner;
pub mod temporal;
pub mod windows;

pub use catalog::{Catalog, Relation, RelationKind, WatermarkSpec};
pub use graph::{Exchange, StreamEdge, StreamGraph, StreamNode, StreamOperator, WindowAggregate};
pub use parser::{
    ObjectKind, ParsedStatement, ShowTarget, Statement, ViewOptions, WatermarkDef, parse_sql,
    parse_state_ttl,
};
pub use planner::{dependencies, plan_stream_graph, relation_name};
pub use windows::{register_window_functions, rewrite_window_functions};
