//! Connectors: the sources and sinks that move data between Sluice and the outside
//! world, as implementations of the runtime's `SourceReader` (and, later, sink) traits.

pub mod table;
