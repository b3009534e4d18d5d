//! Sluice's SQL layer: parsing ([`parser`]), the [`catalog`], the [`graph`] a streaming job
//! runs, and the [`planner`] that lowers DataFusion logical plans onto it.

pub mod catalog;
pub mod graph;
pub mod parser;
pub mod planner;

pub use catalog::{Catalog, Relation, RelationKind};
pub use graph::{Exchange, StreamEdge, StreamGraph, StreamNode, StreamOperator};
pub use parser::{ObjectKind, ParsedStatement, ShowTarget, Statement, parse_sql};
pub use planner::{dependencies, plan_stream_graph, relation_name};
