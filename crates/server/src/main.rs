//! The `sluice` binary: `serve` (coordinator and worker in one process, behind pgwire
//! and REST), `sql` (a psql-like shell over pgwire) and, later, `coordinator` and
//! `worker` for a cluster.
//!
//! Module map: [`cli`] (flags), [`config`] (flags + environment + TOML into a
//! `ServeConfig`), [`serve`] (startup and shutdown), [`pgwire`] (the PostgreSQL
//! protocol), [`pg_catalog`] (the catalog tables and functions psql and drivers query,
//! and the rewriting of their SQL), [`rest`] (the HTTP API), [`sql_cli`] (`sluice sql`).

mod cli;
mod config;
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
        Command::Serve(args) => {
            let config = match config::resolve(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sluice serve: {e}");
                    return ExitCode::from(2);
                }
            };
            run_async(serve::serve(config))
        }
        Command::Coordinator(args) => {
            let config = match config::resolve_coordinator(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sluice coordinator: {e}");
                    return ExitCode::from(2);
                }
            };
            run_async(serve::serve_coordinator(config))
        }
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
