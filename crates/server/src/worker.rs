//! `sluice worker`: registers its slots with a coordinator and heartbeats until stopped.
//!
//! It prints `sluice worker ready id=N rpc=ADDR` once the coordinator has registered
//! it, so scripts and tests can wait for that line. The coordinator deploys subtasks to
//! it over that address, which also serves its data plane (docs/cluster.md).

use std::io::Write;

use sluice_cluster::rpc::worker::{WorkerConfig, WorkerStatus, run_worker};
use sluice_common::config::{ServeConfig, available_cores};
use sluice_common::error::Result;
use tokio::sync::watch;

use crate::cli::WorkerArgs;
use crate::serve::{bind, wait_for_shutdown_signal};

/// Runs the worker until a shutdown signal arrives.
pub async fn run(args: WorkerArgs) -> Result<()> {
    // Bound for the worker's own endpoints, so the address it registers is real.
    let listener = bind("rpc-listen", &args.rpc_listen).await?;
    let address = match args.advertise {
        Some(advertised) => advertised,
        None => listener.local_addr()?.to_string(),
    };
    let config = WorkerConfig {
        coordinators: args
            .coordinator
            .split(',')
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty())
            .collect(),
        address: address.clone(),
        slots: args
            .slots
            .unwrap_or_else(|| u32::try_from(available_cores()).unwrap_or(u32::MAX)),
        data_dir: args.data_dir,
        operator_cache_mb: args
            .operator_cache_mb
            .unwrap_or(ServeConfig::default().operator_cache_mb),
    };
    let (status_tx, mut status) = watch::channel(WorkerStatus::Connecting);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let worker = tokio::spawn(run_worker(config, listener, status_tx, shutdown));
    tokio::spawn(async move {
        let registered = status
            .wait_for(|s| matches!(s, WorkerStatus::Registered { .. }))
            .await
            .map(|s| *s);
        if let Ok(WorkerStatus::Registered { id }) = registered {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "sluice worker ready id={id} rpc={address}");
            let _ = out.flush();
        }
    });
    tokio::select! {
        result = worker => {
            return result.map_err(|e| sluice_common::error::SluiceError::internal(format!("the worker stopped: {e}")))?;
        }
        _ = wait_for_shutdown_signal() => {}
    }
    let _ = shutdown_tx.send(true);
    Ok(())
}
