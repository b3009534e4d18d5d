//! Integration tests of the `sluice` binary: each test starts a real server process
//! (see [`server::TestServer`]) and talks to it the way users do — sqllogictest files
//! over pgwire, tokio-postgres with parameters, psql, and HTTP.

mod checkpoint_settings;
mod cluster;
mod deploy;
mod durability;
mod errors;
mod extended;
mod flight_sql;
mod psql;
mod psycopg;
mod readme;
mod rest;
mod server;
mod slt;
mod standby;
