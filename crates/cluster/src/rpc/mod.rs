//! The control plane (`proto/cluster.proto`) over gRPC: the coordinator's service that
//! workers register and heartbeat with ([`serve_control_plane`]), and the worker's side
//! ([`worker::run_worker`]).

pub mod worker;

use std::sync::Arc;

use sluice_common::error::{Result, SluiceError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::membership::Membership;

/// The code `tonic-prost-build` generates from `proto/cluster.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("sluice.cluster.v1");
}

use proto::coordinator_server::{Coordinator as CoordinatorRpc, CoordinatorServer};
use proto::{HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse};

/// This build's version; workers of another version are refused.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct ControlPlane {
    membership: Arc<Membership>,
}

#[tonic::async_trait]
impl CoordinatorRpc for ControlPlane {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> std::result::Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        if request.version != VERSION {
            return Err(Status::failed_precondition(format!(
                "worker version {} cannot join a coordinator of version {VERSION}",
                request.version
            )));
        }
        if request.slots == 0 {
            return Err(Status::invalid_argument("a worker needs at least one slot"));
        }
        if request.address.is_empty() {
            return Err(Status::invalid_argument("a worker must give its address"));
        }
        let worker_id = self.membership.register(&request.address, request.slots);
        Ok(Response::new(RegisterResponse {
            worker_id,
            heartbeat_interval_ms: self.membership.interval().as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> std::result::Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let known = self
            .membership
            .heartbeat(request.worker_id, &request.address);
        Ok(Response::new(HeartbeatResponse { known }))
    }
}

/// Serves the coordinator's control plane on `listener` until `shutdown` turns true,
/// and declares workers lost as their heartbeats stop.
pub async fn serve_control_plane(
    listener: TcpListener,
    membership: Arc<Membership>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let detector = {
        let membership = membership.clone();
        let period = membership.interval() / 2;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period.max(std::time::Duration::from_millis(10)));
            loop {
                ticks.tick().await;
                membership.detect_lost();
            }
        })
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let result = tonic::transport::Server::builder()
        .add_service(CoordinatorServer::new(ControlPlane { membership }))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|&stop| stop).await;
        })
        .await;
    detector.abort();
    result.map_err(|e| SluiceError::internal(format!("the control plane failed: {e}")))
}
