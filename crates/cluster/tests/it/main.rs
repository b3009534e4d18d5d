//! Engine tests: SQL through the coordinator's API, without a network protocol. SQL
//! behaviour as users see it is tested in `sql-tests/*.slt` through pgwire; these pin
//! the engine's pieces (planning, deployment, FLUSH) directly and fast.

mod changes;
mod differential;
mod metadata;
mod rescale;
mod restarts;
mod sinks;
mod spill;
mod subscriptions;
mod support;
mod views;
mod window_differential;
