//! The control plane (`proto/cluster.proto`) over gRPC: the coordinator's service that
//! workers register, heartbeat and report to ([`serve_control_plane`], which also serves
//! the coordinator's data plane), and the worker's side ([`worker::run_worker`]).

pub mod worker;

use std::sync::Arc;

use sluice_common::error::{Result, SluiceError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::membership::DataPlaneCounters;
use crate::remote::Cluster;

/// The code `tonic-prost-build` generates from `proto/cluster.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("sluice.cluster.v1");
}

use proto::coordinator_server::{Coordinator as CoordinatorRpc, CoordinatorServer};
use proto::{
    FailureReport, HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
    ReportResponse, SnapshotReport,
};

/// `call`, failing with `DEADLINE_EXCEEDED` after `timeout`. A channel's own timeout
/// covers only the response: a call waiting for a connection whose handshake never
/// completes (a peer that has bound its port but does not serve yet, or a dead one)
/// would wait for ever.
pub(crate) async fn within<T>(
    timeout: std::time::Duration,
    call: impl Future<Output = std::result::Result<T, Status>>,
) -> std::result::Result<T, Status> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")))
}

/// This build's version; workers of another version are refused.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct ControlPlane {
    cluster: Arc<Cluster>,
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
        let worker_id = self.cluster.register(&request.address, request.slots);
        Ok(Response::new(RegisterResponse {
            worker_id,
            heartbeat_interval_ms: self.cluster.membership.interval().as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> std::result::Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let known = self.cluster.membership.heartbeat(
            request.worker_id,
            &request.address,
            DataPlaneCounters {
                max_in_flight: request.max_in_flight,
                messages_sent: request.messages_sent,
            },
        );
        if known {
            self.cluster
                .record_metrics(request.worker_id, request.subtasks, request.late_rows);
        }
        Ok(Response::new(HeartbeatResponse {
            known,
            completed_epoch: self.cluster.completed_epoch(),
        }))
    }

    async fn report_snapshot(
        &self,
        request: Request<SnapshotReport>,
    ) -> std::result::Result<Response<ReportResponse>, Status> {
        let known = self.cluster.report_snapshot(request.into_inner());
        Ok(Response::new(ReportResponse { known }))
    }

    async fn report_failure(
        &self,
        request: Request<FailureReport>,
    ) -> std::result::Result<Response<ReportResponse>, Status> {
        let known = self.cluster.report_failure(request.into_inner());
        Ok(Response::new(ReportResponse { known }))
    }
}

/// Serves the coordinator's control plane and data plane on `listener` until `shutdown`
/// turns true, and declares workers lost as their heartbeats stop (failing the jobs
/// that had subtasks on them).
pub async fn serve_control_plane(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let detector = {
        let cluster = cluster.clone();
        let period = cluster.membership.interval() / 2;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period.max(std::time::Duration::from_millis(10)));
            loop {
                ticks.tick().await;
                for lost in cluster.membership.detect_lost() {
                    cluster.worker_lost(lost);
                }
            }
        })
    };
    let dataplane = cluster.dataplane.service();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let result = tonic::transport::Server::builder()
        .add_service(
            CoordinatorServer::new(ControlPlane { cluster }).max_decoding_message_size(usize::MAX),
        )
        .add_service(dataplane)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|&stop| stop).await;
        })
        .await;
    detector.abort();
    result.map_err(|e| SluiceError::internal(format!("the control plane failed: {e}")))
}
