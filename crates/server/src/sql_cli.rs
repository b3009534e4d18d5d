//! `sluice sql`: a psql-like client.

use std::process::ExitCode;

use crate::cli::SqlArgs;

/// Runs the shell.
pub async fn run(_args: SqlArgs) -> ExitCode {
    ExitCode::SUCCESS
}
