//! The `sluice` binary: `serve` (coordinator and worker in one process, behind pgwire
//! and REST), `sql` (a psql-like shell over pgwire) and, later, `coordinator` and
//! `worker` for a cluster.
//!
//! Module map: [`cli`] (flags), [`config`] (flags + environment + TOML into a
//! `ServeConfig`), [`serve`] (startup and shutdown), [`pgwire`] (the PostgreSQL
//! protocol), [`flight_sql`] (Arrow Flight SQL), [`pg_catalog`] (the catalog tables and functions psql and drivers query,
//! and the rewriting of their SQL), [`rest`] (the HTTP API), [`sql_cli`] (`sluice sql`).

mod cli;
mod config;
mod flight_sql;
mod openapi;
mod pg_catalog;
mod pgwire;
mod rest;
mod serve;
mod sql_cli;
mod worker;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Serve(args) => match config::resolve(&args) {
            Ok(config) => run_async(serve::serve(config)),
            Err(e) => configuration_error("serve", e),
        },
        Command::Coordinator(args) => match config::resolve_coordinator(&args) {
            Ok(config) => run_async(serve::serve_coordinator(config)),
            Err(e) => configuration_error("coordinator", e),
        },
        Command::Worker(args) => run_async(worker::run(args)),
        Command::Sql(args) => match runtime() {
            Ok(rt) => rt.block_on(sql_cli::run(args)),
            Err(e) => {
                eprintln!("sluice: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Exit code 2, as for a usage error, naming the subcommand whose configuration is bad.
fn configuration_error(subcommand: &str, e: sluice_common::SluiceError) -> ExitCode {
    eprintln!("sluice {subcommand}: {e}");
    ExitCode::from(2)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn run_async(fut: impl Future<Output = sluice_common::Result<()>>) -> ExitCode {
    match runtime().map(|rt| rt.block_on(fut)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("sluice: {e} (SQLSTATE {})", e.state);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
