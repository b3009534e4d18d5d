//! A worker process (`sluice worker`): registers its slots with the coordinator and
//! heartbeats. When the coordinator is unreachable it keeps retrying; when the
//! coordinator no longer knows it (it was declared lost, or the coordinator restarted)
//! it registers again. Given the coordinators of a highly available group, it tries the
//! next one whenever a call fails, so it finds the one that took over: that one does
//! not know it, and it registers there. It serves the `Worker` service (deploy and cancel subtasks) and
//! its data plane on its own address.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_common::error::{Result, SluiceError};
use sluice_state::OperatorStateDirs;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use super::proto::coordinator_client::CoordinatorClient;
use super::proto::worker_server::{Worker as WorkerRpc, WorkerServer};
use super::proto::{
    CancelRequest, CancelResponse, DeployRequest, DeployResponse, HeartbeatRequest, InjectRequest,
    InjectResponse, MetricsRequest, MetricsResponse, RegisterRequest,
};
use super::{VERSION, within};
use crate::dataplane::DataPlane;
use crate::remote::WorkerRuntime;

/// How long to wait between attempts to reach an unreachable coordinator.
const RETRY: Duration = Duration::from_millis(500);

/// How long connecting to the coordinator, and each call, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a worker process is started with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The control plane URLs (`http://host:port`) of the coordinator, or of every
    /// coordinator of a highly available group.
    pub coordinators: Vec<String>,
    /// The address this worker serves on, as the coordinator should reach it.
    pub address: String,
    pub slots: u32,
    /// Where operators spill keyed state beyond their memory budget, under
    /// `operator-state/` (emptied at start); `None`: they keep it in memory.
    pub data_dir: Option<PathBuf>,
    /// Bytes (MiB) of keyed state each operator subtask keeps in memory before spilling.
    pub operator_cache_mb: usize,
}

/// Registration state a worker reports as it changes (tests and the ready line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    Connecting,
    Registered { id: u64 },
}

/// Runs the worker, serving on `listener`, until `shutdown` turns true. Fails only on a
/// configuration error (a malformed coordinator URL) or when the coordinator refuses
/// the worker.
pub async fn run_worker(
    config: WorkerConfig,
    listener: TcpListener,
    status: watch::Sender<WorkerStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let coordinators = config
        .coordinators
        .iter()
        .map(|url| CoordinatorLink::parse(url))
        .collect::<Result<Vec<_>>>()?;
    if coordinators.is_empty() {
        return Err(SluiceError::invalid_parameter(
            "--coordinator names no coordinator",
        ));
    }
    let operator_state = config
        .data_dir
        .as_ref()
        .map(|dir| {
            OperatorStateDirs::open(&dir.join("operator-state"), config.operator_cache_mb << 20)
        })
        .transpose()?;
    let dataplane = DataPlane::new();
    let runtime = Arc::new(WorkerRuntime::new(
        dataplane.clone(),
        coordinators[0].address.clone(),
        coordinators[0].connect(),
        operator_state,
    ));
    let mut server_shutdown = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .add_service(
            WorkerServer::new(WorkerService {
                runtime: runtime.clone(),
            })
            .max_decoding_message_size(usize::MAX),
        )
        .add_service(dataplane.service())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = server_shutdown.wait_for(|&stop| stop).await;
            },
        );
    let server = tokio::spawn(server);
    let result = tokio::select! {
        result = serve(&config, &coordinators, &status, &runtime) => result,
        _ = shutdown.wait_for(|&stop| stop) => Ok(()),
    };
    server.abort();
    result
}

/// The worker's gRPC service: the coordinator deploys and cancels subtasks here.
struct WorkerService {
    runtime: Arc<WorkerRuntime>,
}

#[tonic::async_trait]
impl WorkerRpc for WorkerService {
    async fn deploy(
        &self,
        request: Request<DeployRequest>,
    ) -> std::result::Result<Response<DeployResponse>, Status> {
        self.runtime
            .deploy(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.message))?;
        Ok(Response::new(DeployResponse {}))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> std::result::Result<Response<CancelResponse>, Status> {
        self.runtime.cancel(request.into_inner().deployment).await;
        Ok(Response::new(CancelResponse {}))
    }

    async fn inject_barrier(
        &self,
        request: Request<InjectRequest>,
    ) -> std::result::Result<Response<InjectResponse>, Status> {
        let request = request.into_inner();
        self.runtime
            .inject(request.deployment, request.epoch, request.kind)
            .await;
        Ok(Response::new(InjectResponse {}))
    }

    async fn metrics(
        &self,
        _: Request<MetricsRequest>,
    ) -> std::result::Result<Response<MetricsResponse>, Status> {
        let (subtasks, late_rows) = self.runtime.metrics();
        Ok(Response::new(MetricsResponse {
            subtasks,
            late_rows,
        }))
    }
}

/// One coordinator a worker may register with.
struct CoordinatorLink {
    url: String,
    endpoint: Endpoint,
    /// Its data-plane address (`host:port`), as this worker reaches it.
    address: String,
}

impl CoordinatorLink {
    fn parse(url: &str) -> Result<CoordinatorLink> {
        let bad_url = |e: &dyn std::fmt::Display| {
            SluiceError::invalid_parameter(format!("--coordinator {url} is not a URL: {e}"))
        };
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad_url(&e))?
            .connect_timeout(CONNECT_TIMEOUT);
        let address = endpoint
            .uri()
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| bad_url(&"it has no host:port"))?;
        Ok(CoordinatorLink {
            url: url.to_string(),
            endpoint,
            address,
        })
    }

    /// A client over a new connection: a channel whose connection failed is replaced,
    /// so a new coordinator process on the same address is reached.
    fn connect(&self) -> CoordinatorClient<tonic::transport::Channel> {
        CoordinatorClient::new(self.endpoint.connect_lazy())
    }
}

async fn serve(
    config: &WorkerConfig,
    coordinators: &[CoordinatorLink],
    status: &watch::Sender<WorkerStatus>,
    runtime: &WorkerRuntime,
) -> Result<()> {
    // The coordinator tried now; the next one is tried when registering fails, or
    // heartbeats failed twice in a row (one failure may be a blip of the active one).
    let mut current = 0;
    let mut client = coordinators[current].connect();
    let next = |current: usize| {
        let next = (current + 1) % coordinators.len();
        (next, coordinators[next].connect())
    };
    loop {
        let coordinator = &coordinators[current];
        status.send_replace(WorkerStatus::Connecting);
        let registered = within(
            CALL_TIMEOUT,
            client.register(RegisterRequest {
                address: config.address.clone(),
                slots: config.slots,
                version: VERSION.to_string(),
            }),
        )
        .await;
        let reply = match registered {
            Ok(reply) => reply.into_inner(),
            Err(e) if refused(&e) => {
                return Err(SluiceError::invalid_parameter(format!(
                    "the coordinator at {} refused this worker: {}",
                    coordinator.url,
                    e.message()
                )));
            }
            Err(e) => {
                tracing::warn!(coordinator = %coordinator.url, error = %e.message(), "cannot register; retrying");
                tokio::time::sleep(RETRY).await;
                (current, client) = next(current);
                continue;
            }
        };
        let id = reply.worker_id;
        let interval = Duration::from_millis(reply.heartbeat_interval_ms.max(1));
        runtime
            .follow(coordinator.address.clone(), client.clone())
            .await;
        status.send_replace(WorkerStatus::Registered { id });
        tracing::info!(worker = id, coordinator = %coordinator.url, "registered");
        let mut ticks = tokio::time::interval(interval);
        let mut failures = 0;
        loop {
            ticks.tick().await;
            let metrics = runtime.metrics();
            match within(
                CALL_TIMEOUT,
                client.heartbeat(HeartbeatRequest {
                    worker_id: id,
                    address: config.address.clone(),
                    subtasks: metrics.0,
                    late_rows: metrics.1,
                    max_in_flight: runtime.dataplane().max_in_flight(),
                    messages_sent: runtime.dataplane().messages_sent(),
                }),
            )
            .await
            {
                Ok(reply) if reply.get_ref().known => {
                    failures = 0;
                    runtime.checkpoint_completed(reply.get_ref().completed_epoch);
                }
                Ok(_) => {
                    tracing::warn!(
                        worker = id,
                        "the coordinator no longer knows this worker; registering again"
                    );
                    break;
                }
                Err(e) => {
                    // Keep heartbeating: a coordinator back within the timeout still
                    // knows this worker; one that is not (or another coordinator of
                    // the group, now active) tells it to register.
                    tracing::warn!(worker = id, error = %e.message(), "heartbeat failed");
                    failures += 1;
                    if failures >= 2 {
                        failures = 0;
                        (current, client) = next(current);
                    } else {
                        client = coordinators[current].connect();
                    }
                }
            }
        }
    }
}

/// Whether the coordinator refused the registration (as opposed to being unreachable).
fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
    )
}
