//! `sluice serve`: coordinator and worker in one process, behind pgwire and REST; and
//! `sluice coordinator`: the same, serving the control plane workers register with.
//!
//! Startup order matters to scripts: the data directory is created, the coordinator
//! started and every listener bound *before* the single `sluice ready ...` line is
//! printed, so a script that waits for that line can connect at once. Ctrl-C or SIGTERM
//! stops accepting connections and returns.
//!
//! A coordinator given `--metadata postgres://...` first waits to be the active one of
//! its group (printing `sluice standby: ...` while another is), and stops with an error
//! when it loses that role (docs/cluster.md, "A highly available coordinator").

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use sluice_cluster::Coordinator;
use sluice_cluster::metadata::postgres::{PostgresMetadata, SessionCheck, lost_leadership};
use sluice_cluster::metadata::{MetadataStore, Restored};
use sluice_cluster::rpc::serve_control_plane;
use sluice_common::config::ServeConfig;
use sluice_common::error::{Result, SluiceError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::flight_sql::FlightSqlServer;
use crate::pgwire::PgServer;

/// Runs the server until a shutdown signal arrives. Fails when the data directory cannot
/// be created, the engine does not start, or a listen address cannot be bound.
pub async fn serve(config: ServeConfig) -> Result<()> {
    run(config, false).await
}

/// [`serve`], also serving the control plane on `config.rpc_listen` (the ready line
/// then names it as `rpc=ADDR`).
pub async fn serve_coordinator(config: ServeConfig) -> Result<()> {
    run(config, true).await
}

async fn run(mut config: ServeConfig, control_plane: bool) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        SluiceError::internal(format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    // A coordinator of a highly available group waits here until it is the active
    // one; only then does it bind its listeners.
    let (leader, metadata) = match &config.metadata_url {
        Some(url) => {
            let (leader, restored) = lead(url, &config).await?;
            let store: Arc<dyn MetadataStore> = leader.clone();
            (Some(leader), Some((store, restored)))
        }
        None => (None, None),
    };
    let pg_listener = bind("pg-listen", &config.pg_listen).await?;
    let rest_listener = bind("rest-listen", &config.rest_listen).await?;
    let flight_listener = bind("flight-listen", &config.flight_listen).await?;
    let rpc_listener = match control_plane {
        true => Some(bind("rpc-listen", &config.rpc_listen).await?),
        false => None,
    };
    let pg_addr = pg_listener.local_addr()?;
    let rest_addr = rest_listener.local_addr()?;
    let flight_addr = flight_listener.local_addr()?;
    config.pg_listen = pg_addr.to_string();
    config.rest_listen = rest_addr.to_string();
    config.flight_listen = flight_addr.to_string();
    let mut ready = format!("sluice ready pg={pg_addr} rest={rest_addr} flight={flight_addr}");
    if let Some(listener) = &rpc_listener {
        let rpc_addr = listener.local_addr()?;
        config.rpc_listen = rpc_addr.to_string();
        ready.push_str(&format!(" rpc={rpc_addr}"));
    }

    let coordinator = match metadata {
        Some(metadata) => Coordinator::start_with_metadata(config.clone(), Some(metadata)).await?,
        None => Coordinator::start(config.clone()).await?,
    };
    crate::pg_catalog::register(&coordinator)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let pg = Arc::new(PgServer::new(coordinator.clone()));
    let pg_task = tokio::spawn(pg.serve(pg_listener, shutdown_rx.clone()));
    let flight =
        FlightSqlServer::new(coordinator.clone()).serve(flight_listener, shutdown_rx.clone());
    let flight_task = tokio::spawn(async move {
        if let Err(e) = flight.await {
            tracing::error!(error = %e, "Flight SQL server failed");
        }
    });
    let mut rest_shutdown = shutdown_rx.clone();
    let rest_coordinator = coordinator.clone();
    let rest_task = tokio::spawn(async move {
        let app = crate::rest::router(rest_coordinator);
        let result = axum::serve(rest_listener, app)
            .with_graceful_shutdown(async move {
                let _ = rest_shutdown.changed().await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "REST server failed");
        }
    });
    let rpc_task = rpc_listener.map(|listener| {
        // Workers reach the data plane through the address they were given for the
        // coordinator (`--coordinator`); this one is what the coordinator announces.
        coordinator.cluster().serve_at(config.rpc_listen.clone());
        let serving = serve_control_plane(listener, coordinator.cluster(), shutdown_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "control plane failed");
            }
        })
    });

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    tracing::info!(pg = %pg_addr, rest = %rest_addr, flight = %flight_addr, data_dir = %config.data_dir.display(), "sluice serving");

    let lost = async {
        match &leader {
            Some(leader) => leader.lost().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = wait_for_shutdown_signal() => Ok(()),
        why = lost => {
            let lost = lost_leadership(&why);
            Err(SluiceError::new(lost.state, format!("{}. Start it again to stand by", lost.message)))
        }
    };
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let listeners = async {
        let _ = pg_task.await;
        let _ = flight_task.await;
        let _ = rest_task.await;
        if let Some(task) = rpc_task {
            let _ = task.await;
        }
    };
    // A coordinator that is no longer active does not wait for its connections to
    // end (workers' data streams last as long as their jobs): its successor is
    // taking over.
    match outcome {
        Ok(()) => listeners.await,
        Err(_) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), listeners).await;
        }
    }
    coordinator.shutdown().await;
    outcome
}

/// Waits until this coordinator holds the metadata lock of `url` (announcing on stdout
/// that it stands by if another holds it), and reads the metadata. The active
/// coordinator checks its session every heartbeat interval.
async fn lead(url: &str, config: &ServeConfig) -> Result<(Arc<PostgresMetadata>, Restored)> {
    let check = SessionCheck {
        every: Duration::from_secs_f64(config.heartbeat_interval),
        timeout: Duration::from_secs_f64(config.heartbeat_timeout),
    };
    let (leader, restored) = PostgresMetadata::lead(url, check, || {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "sluice standby: another coordinator is active; this one takes over when it stops"
        );
        let _ = out.flush();
    })
    .await?;
    Ok((Arc::new(leader), restored))
}

pub async fn bind(flag: &str, addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        SluiceError::invalid_parameter(format!("cannot listen on --{flag} {addr}: {e}"))
    })
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn wait_for_shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
