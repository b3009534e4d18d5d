//! The data plane: edges of a job whose two subtasks run in different processes, carried
//! over Arrow Flight `DoExchange` streams with credit-based flow control.
//!
//! Each side of such an edge holds the ordinary bounded channel a local edge uses, so
//! subtasks do not know where their peers run. On the sending process the channel's
//! receiving end is an *outbox*, registered under the edge's [`ChannelKey`]; the
//! receiving process runs a [`pump`] that opens `DoExchange` on the sender's Flight
//! server, names the outbox in the first frame it sends, and feeds what it receives into
//! its local channel.
//!
//! Flow control (Flink's credit-based network stack): the receiver grants credits, one
//! per message it has room for; it starts with [`CREDITS`] and grants more as its local
//! channel accepts messages. The sender sends a message only while it holds a credit,
//! so at most [`CREDITS`] messages are in flight per edge, a slow consumer stops its
//! producers across the network, and no process buffers without bound.
//!
//! Framing: every message travels as one or more `FlightData` frames; the last frame of
//! a message carries a tag in `app_metadata` (`B` a batch, whose Arrow IPC schema and
//! dictionary frames precede it; `W` a watermark; `K` a barrier; `E` the end of the
//! stream). Frames from the receiver carry credit grants (a little-endian u32) in
//! `app_metadata`; the first also names the outbox in its descriptor.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::utils::{batches_to_flight_data, flight_data_to_batches};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::exchange::CHANNEL_CAPACITY;
use sluice_runtime::message::{BarrierKind, CheckpointBarrier, Message, Watermark};
use tokio::sync::{Notify, mpsc};
use tonic::{Request, Response, Status, Streaming};

/// Credits a receiver grants up front: as many messages as a local channel holds.
pub const CREDITS: u32 = CHANNEL_CAPACITY as u32;

/// How long a receiver's request waits for the sender's outbox to be registered (the
/// two processes deploy their subtasks concurrently).
const OUTBOX_WAIT: Duration = Duration::from_secs(30);

/// How long connecting to a peer's Flight server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One cross-process edge: the job run it belongs to and its number within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    pub deployment: u64,
    pub channel: u32,
}

impl ChannelKey {
    fn encode(&self) -> Bytes {
        Bytes::from(format!("{}/{}", self.deployment, self.channel))
    }

    fn decode(bytes: &[u8]) -> Option<ChannelKey> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (deployment, channel) = text.split_once('/')?;
        Some(ChannelKey {
            deployment: deployment.parse().ok()?,
            channel: channel.parse().ok()?,
        })
    }
}

/// The outboxes of one process, served to the receivers that ask for them.
#[derive(Default)]
pub struct DataPlane {
    outboxes: Mutex<HashMap<ChannelKey, mpsc::Receiver<Message>>>,
    registered: Notify,
    /// The most messages any edge served here had sent without a credit coming back.
    max_in_flight: AtomicU64,
    /// Messages sent to receivers in other processes.
    messages_sent: AtomicU64,
}

impl DataPlane {
    pub fn new() -> Arc<DataPlane> {
        Arc::new(DataPlane::default())
    }

    /// Registers the receiving end of an edge whose consumer runs elsewhere.
    pub fn add_outbox(&self, key: ChannelKey, outbox: mpsc::Receiver<Message>) {
        self.outboxes.lock().insert(key, outbox);
        self.registered.notify_waiters();
    }

    /// Drops every outbox of `deployment` not yet taken (the job stopped before its
    /// receivers connected).
    pub fn forget(&self, deployment: u64) {
        self.outboxes
            .lock()
            .retain(|key, _| key.deployment != deployment);
    }

    /// The most messages an edge served by this process had in flight (sent, no credit
    /// back yet). Never above [`CREDITS`]: what bounds memory across the network.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    pub fn messages_sent(&self) -> u64 {
        self.messages_sent.load(Ordering::Relaxed)
    }

    async fn take_outbox(&self, key: ChannelKey) -> Option<mpsc::Receiver<Message>> {
        let deadline = tokio::time::Instant::now() + OUTBOX_WAIT;
        loop {
            // Created before looking, so a registration in between is not missed.
            let registered = self.registered.notified();
            if let Some(outbox) = self.outboxes.lock().remove(&key) {
                return Some(outbox);
            }
            if tokio::time::timeout_at(deadline, registered).await.is_err() {
                return None;
            }
        }
    }

    /// This data plane as a Flight service (only `DoExchange` is implemented).
    pub fn service(self: &Arc<Self>) -> FlightServiceServer<FlightExchange> {
        FlightServiceServer::new(FlightExchange {
            plane: self.clone(),
        })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
    }

    /// Sends `outbox`'s messages as `frames`, one per credit received on `grants`.
    async fn serve_outbox(
        &self,
        mut outbox: mpsc::Receiver<Message>,
        mut grants: Streaming<FlightData>,
        mut credits: u64,
        frames: mpsc::Sender<std::result::Result<FlightData, Status>>,
    ) {
        let mut in_flight = 0u64;
        loop {
            // Without credit only a grant can come next.
            let event = if credits == 0 {
                Event::Grant(grants.message().await.ok().flatten())
            } else {
                tokio::select! {
                    biased;
                    message = outbox.recv() => Event::Message(message),
                    _ = frames.closed() => return,
                    grant = grants.message() => Event::Grant(grant.ok().flatten()),
                }
            };
            let message = match event {
                Event::Grant(Some(frame)) => {
                    let granted = credit_of(&frame) as u64;
                    credits += granted;
                    in_flight = in_flight.saturating_sub(granted);
                    continue;
                }
                // The receiver went away: so does this edge (dropping the outbox fails
                // the sending subtask).
                Event::Grant(None) => return,
                Event::Message(None) => {
                    let _ = frames
                        .send(Err(Status::aborted(
                            "the sending subtask stopped before the end of its stream",
                        )))
                        .await;
                    return;
                }
                Event::Message(Some(message)) => message,
            };
            let end = matches!(message, Message::EndOfStream);
            let encoded = match encode(message) {
                Ok(encoded) => encoded,
                Err(e) => {
                    let _ = frames.send(Err(Status::internal(e.message))).await;
                    return;
                }
            };
            for frame in encoded {
                if frames.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
            credits -= 1;
            in_flight += 1;
            self.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
            self.messages_sent.fetch_add(1, Ordering::Relaxed);
            if end {
                return;
            }
        }
    }
}

/// What an outbox's server waits for: the next message to send, or a credit grant (`None`:
/// the receiver's side of the stream ended or broke).
enum Event {
    Message(Option<Message>),
    Grant(Option<FlightData>),
}

/// The Flight service of a [`DataPlane`].
pub struct FlightExchange {
    plane: Arc<DataPlane>,
}

type FrameStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

fn unimplemented<T>(what: &str) -> std::result::Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what}: this endpoint only carries data between Sluice processes (DoExchange)"
    )))
}

#[tonic::async_trait]
impl FlightService for FlightExchange {
    type HandshakeStream = FrameStream<HandshakeResponse>;
    type ListFlightsStream = FrameStream<FlightInfo>;
    type DoGetStream = FrameStream<FlightData>;
    type DoPutStream = FrameStream<PutResult>;
    type DoExchangeStream = FrameStream<FlightData>;
    type DoActionStream = FrameStream<arrow_flight::Result>;
    type ListActionsStream = FrameStream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        unimplemented("Handshake")
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        unimplemented("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        unimplemented("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        unimplemented("GetSchema")
    }

    async fn do_get(
        &self,
        _: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        unimplemented("DoGet")
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        unimplemented("DoPut")
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        unimplemented("DoAction")
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        unimplemented("ListActions")
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        let mut grants = request.into_inner();
        let first = grants
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("DoExchange without a first frame"))?;
        let key = first
            .flight_descriptor
            .as_ref()
            .and_then(|d| ChannelKey::decode(&d.cmd))
            .ok_or_else(|| {
                Status::invalid_argument(
                    "the first frame must name a channel as deployment/channel",
                )
            })?;
        let outbox = self.plane.take_outbox(key).await.ok_or_else(|| {
            Status::not_found(format!(
                "no channel {}/{} here (its job is not deployed on this process)",
                key.deployment, key.channel
            ))
        })?;
        let (frames_tx, frames_rx) = mpsc::channel(4);
        let plane = self.plane.clone();
        let credits = credit_of(&first) as u64;
        tokio::spawn(async move {
            plane.serve_outbox(outbox, grants, credits, frames_tx).await;
        });
        let stream = futures::stream::unfold(frames_rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Called with the error when a [`pump`] cannot connect to its sender's process.
pub type OnUnreachable = Box<dyn FnOnce(&str) + Send>;

/// Receives the edge `key` from the Flight server at `address` into `tx`, granting
/// credits as `tx` takes messages. Ends after the end of the stream, or when the local
/// consumer is gone; fails when the connection breaks or the sender stopped first.
pub async fn pump(
    address: String,
    key: ChannelKey,
    tx: mpsc::Sender<Message>,
    unreachable: Option<OnUnreachable>,
) -> Result<()> {
    let broken = |e: &dyn std::fmt::Display| {
        SluiceError::internal(format!(
            "the data connection to {address} (channel {}/{}) failed: {e}",
            key.deployment, key.channel
        ))
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| broken(&e))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => {
            let error = broken(&e);
            if let Some(unreachable) = unreachable {
                unreachable(&error.message);
            }
            return Err(error);
        }
    };
    let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (grants, grants_rx) = mpsc::channel::<FlightData>(CREDITS as usize);
    let first = FlightData {
        flight_descriptor: Some(FlightDescriptor::new_cmd(key.encode())),
        app_metadata: credit(CREDITS),
        ..Default::default()
    };
    grants.send(first).await.map_err(|e| broken(&e))?;
    let requests = futures::stream::unfold(grants_rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    let mut frames = client
        .do_exchange(requests)
        .await
        .map_err(|e| broken(&e.message()))?
        .into_inner();
    let mut pending: Vec<FlightData> = Vec::new();
    let mut consumed = 0u32;
    while let Some(frame) = frames.message().await.map_err(|e| broken(&e.message()))? {
        let Some(message) = decode(frame, &mut pending)? else {
            continue;
        };
        let end = matches!(message, Message::EndOfStream);
        if tx.send(message).await.is_err() || end {
            return Ok(());
        }
        consumed += 1;
        if consumed >= CREDITS / 2 {
            let grant = FlightData {
                app_metadata: credit(consumed),
                ..Default::default()
            };
            // The request side closes once the sender has finished its response: the
            // rest of the stream (up to its end) is already here, and needs no credit.
            // A broken connection shows as an error on the frames instead.
            let _ = grants.send(grant).await;
            consumed = 0;
        }
    }
    Err(broken(&"the stream ended before its end-of-stream message"))
}

fn credit(n: u32) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

fn credit_of(frame: &FlightData) -> u32 {
    frame
        .app_metadata
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")))
        .unwrap_or(0)
}

/// A barrier kind's code on the wire: in barrier frames, and in the control plane's
/// snapshot reports and barrier injections.
pub(crate) fn barrier_code(kind: BarrierKind) -> u8 {
    match kind {
        BarrierKind::Checkpoint => 0,
        BarrierKind::Savepoint => 1,
        BarrierKind::Flush => 2,
    }
}

/// The kind [`barrier_code`] gave `code`.
pub(crate) fn barrier_kind(code: u32) -> Option<BarrierKind> {
    match code {
        0 => Some(BarrierKind::Checkpoint),
        1 => Some(BarrierKind::Savepoint),
        2 => Some(BarrierKind::Flush),
        _ => None,
    }
}

/// The frames of one message (see the module docs).
fn encode(message: Message) -> Result<Vec<FlightData>> {
    let tagged = |tag: &[u8]| FlightData {
        app_metadata: Bytes::copy_from_slice(tag),
        ..Default::default()
    };
    Ok(match message {
        Message::Batch(batch) => {
            let mut frames = batches_to_flight_data(batch.schema().as_ref(), vec![batch])?;
            if let Some(last) = frames.last_mut() {
                last.app_metadata = Bytes::from_static(b"B");
            }
            frames
        }
        Message::Watermark(w) => vec![tagged(&[b"W".as_slice(), &w.0.to_le_bytes()].concat())],
        Message::Barrier(b) => vec![tagged(
            &[
                b"K".as_slice(),
                &b.epoch.to_le_bytes(),
                &[barrier_code(b.kind)],
            ]
            .concat(),
        )],
        Message::EndOfStream => vec![tagged(b"E")],
    })
}

/// Adds `frame` to `pending`; returns the message it completes, if it is a message's last.
fn decode(frame: FlightData, pending: &mut Vec<FlightData>) -> Result<Option<Message>> {
    let malformed = || SluiceError::internal("a malformed frame on a data connection");
    let tag = frame.app_metadata.clone();
    let Some((&kind, rest)) = tag.split_first() else {
        pending.push(frame);
        return Ok(None);
    };
    let message = match kind {
        b'B' => {
            pending.push(frame);
            let mut batches: Vec<RecordBatch> = flight_data_to_batches(pending)?;
            pending.clear();
            if batches.len() != 1 {
                return Err(malformed());
            }
            Message::Batch(batches.remove(0))
        }
        b'W' => Message::Watermark(Watermark(i64::from_le_bytes(
            rest.try_into().map_err(|_| malformed())?,
        ))),
        b'K' => {
            let (epoch, kind) = rest.split_at_checked(8).ok_or_else(malformed)?;
            let kind = match kind {
                [code] => barrier_kind((*code).into()).ok_or_else(malformed)?,
                _ => return Err(malformed()),
            };
            Message::Barrier(CheckpointBarrier {
                epoch: u64::from_le_bytes(epoch.try_into().map_err(|_| malformed())?),
                kind,
            })
        }
        b'E' => Message::EndOfStream,
        _ => return Err(malformed()),
    };
    Ok(Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    async fn serve(plane: Arc<DataPlane>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(plane.service())
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        address
    }

    #[tokio::test]
    async fn every_kind_of_message_crosses_in_order() {
        let plane = DataPlane::new();
        let address = serve(plane.clone()).await;
        let key = ChannelKey {
            deployment: 7,
            channel: 3,
        };
        let (out_tx, out_rx) = mpsc::channel(4);
        let (in_tx, mut in_rx) = mpsc::channel(4);
        let receiving = tokio::spawn(pump(address, key, in_tx, None));
        // The receiver connects first and waits for the outbox to be registered.
        plane.add_outbox(key, out_rx);
        let sent = vec![
            Message::Batch(batch(vec![1, 2, 3])),
            Message::Watermark(Watermark(42)),
            Message::Barrier(CheckpointBarrier {
                epoch: 5,
                kind: BarrierKind::Savepoint,
            }),
            Message::Batch(batch(vec![4])),
            Message::EndOfStream,
        ];
        let sender = tokio::spawn(async move {
            for m in sent {
                out_tx.send(m).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(m) = in_rx.recv().await {
            got.push(describe(&m));
        }
        sender.await.unwrap();
        receiving.await.unwrap().unwrap();
        assert_eq!(
            got,
            [
                "rows [1, 2, 3]",
                "watermark 42",
                "savepoint 5",
                "rows [4]",
                "end"
            ]
        );
    }

    fn describe(message: &Message) -> String {
        match message {
            Message::Batch(b) => {
                let values = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                format!("rows {:?}", values.values().to_vec())
            }
            Message::Watermark(w) => format!("watermark {}", w.0),
            Message::Barrier(b) => {
                format!("{} {}", format!("{:?}", b.kind).to_lowercase(), b.epoch)
            }
            Message::EndOfStream => "end".into(),
        }
    }

    #[tokio::test]
    async fn a_receiver_that_does_not_consume_stops_the_sender_after_its_credits() {
        let plane = DataPlane::new();
        let address = serve(plane.clone()).await;
        let key = ChannelKey {
            deployment: 1,
            channel: 0,
        };
        // The receiver's local channel holds one message and nobody reads it yet.
        let (in_tx, mut in_rx) = mpsc::channel(1);
        let receiving = tokio::spawn(pump(address, key, in_tx, None));
        let (out_tx, out_rx) = mpsc::channel(1);
        plane.add_outbox(key, out_rx);
        const TOTAL: i64 = 200;
        let handed_over = Arc::new(AtomicU64::new(0));
        let producer = {
            let handed_over = handed_over.clone();
            tokio::spawn(async move {
                for i in 0..TOTAL {
                    out_tx.send(Message::Batch(batch(vec![i]))).await.unwrap();
                    handed_over.fetch_add(1, Ordering::Relaxed);
                }
                out_tx.send(Message::EndOfStream).await.unwrap();
            })
        };
        // The sender spends its initial credits, and no grant comes back: the receiver's
        // channel took one message and its pump is blocked on the next.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while plane.messages_sent() < CREDITS as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "credits never spent"
            );
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(plane.messages_sent(), CREDITS as u64, "sent without credit");
        assert_eq!(plane.max_in_flight(), CREDITS as u64);
        // The producer is held up too: the outbox channel's one slot and nothing more.
        assert!(handed_over.load(Ordering::Relaxed) <= CREDITS as u64 + 1);
        assert!(!producer.is_finished());
        // Once the consumer reads, credits flow back and everything arrives, in order.
        let mut next = 0i64;
        while let Some(message) = in_rx.recv().await {
            match message {
                Message::Batch(b) => {
                    let values = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    assert_eq!(values.value(0), next);
                    next += 1;
                }
                Message::EndOfStream => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(next, TOTAL);
        producer.await.unwrap();
        receiving.await.unwrap().unwrap();
        assert!(plane.max_in_flight() <= CREDITS as u64);
    }

    /// The sender finishes its response (and the request side closes) while the receiver
    /// still has frames to take: it must take them all, not stop at its next grant.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_receiver_gets_the_whole_stream_after_the_sender_has_finished() {
        let plane = DataPlane::new();
        let address = serve(plane.clone()).await;
        for round in 0..20u32 {
            let key = ChannelKey {
                deployment: 9,
                channel: round,
            };
            let (out_tx, out_rx) = mpsc::channel(128);
            plane.add_outbox(key, out_rx);
            const TOTAL: i64 = 100;
            for i in 0..TOTAL {
                out_tx.send(Message::Batch(batch(vec![i]))).await.unwrap();
            }
            // Sent while the receiver has not read anything yet.
            let (in_tx, mut in_rx) = mpsc::channel(1);
            let receiving = tokio::spawn(pump(address.clone(), key, in_tx, None));
            out_tx.send(Message::EndOfStream).await.unwrap();
            let mut received = 0i64;
            while let Some(message) = in_rx.recv().await {
                if matches!(message, Message::EndOfStream) {
                    break;
                }
                received += 1;
                tokio::task::yield_now().await;
            }
            assert_eq!(received, TOTAL, "round {round}");
            receiving.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_sender_that_stops_without_ending_fails_the_receiver() {
        let plane = DataPlane::new();
        let address = serve(plane.clone()).await;
        let key = ChannelKey {
            deployment: 2,
            channel: 1,
        };
        let (out_tx, out_rx) = mpsc::channel(4);
        plane.add_outbox(key, out_rx);
        out_tx.send(Message::Batch(batch(vec![1]))).await.unwrap();
        drop(out_tx);
        let (in_tx, mut in_rx) = mpsc::channel(4);
        let error = pump(address, key, in_tx, None).await.unwrap_err();
        assert!(error.message.contains("stopped"), "{}", error.message);
        assert!(matches!(in_rx.recv().await, Some(Message::Batch(_))));
    }
}
