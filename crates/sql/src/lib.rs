//! Sluice's SQL layer: parsing ([`parser`]), and (to come in this crate) the catalog and
//! the streaming planner that lowers DataFusion logical plans to stream graphs.

pub mod parser;

pub use parser::{ObjectKind, ParsedStatement, ShowTarget, Statement, parse_sql};
