//! Edges between subtasks: bounded channels, the partitioning of a subtask's output over
//! its downstream subtasks, and the [`InputGate`] that merges a subtask's inputs while
//! aligning barriers and taking the minimum watermark.

use std::future::{Future, poll_fn};
use std::task::Poll;

use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take_record_batch;
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};
use sluice_state::subtask_of_key_group;
use tokio::sync::mpsc;

use crate::keygroup::key_groups_of_columns;
use crate::message::{CheckpointBarrier, Message, Watermark};
use crate::metrics::SubtaskMetrics;

/// The error of a subtask whose input channel closed before its end of stream: the
/// operator or view it reads failed or was dropped (which that one reports).
pub const INPUT_STOPPED: &str = "an input of this job stopped without finishing its stream (the operator or view it reads failed or was dropped)";

/// Capacity of every channel, in messages. A full channel blocks its sender, which is how
/// backpressure reaches the sources.
pub const CHANNEL_CAPACITY: usize = 16;

/// A bounded channel for one edge between two subtasks.
pub fn channel() -> (mpsc::Sender<Message>, mpsc::Receiver<Message>) {
    mpsc::channel(CHANNEL_CAPACITY)
}

/// Where the tail of a subtask's chain puts its messages: an exchange to downstream
/// subtasks, or a sink.
#[async_trait]
pub trait Collector: Send {
    async fn collect(&mut self, message: Message) -> Result<()>;

    /// The state a sink holds, taken like [`crate::operators::Operator::snapshot_state`];
    /// with the index of the view partition it writes. Exchanges hold none.
    fn snapshot_state(&mut self) -> Result<Option<(usize, Vec<crate::operators::StateEntry>)>> {
        Ok(None)
    }
}

/// How rows are spread over the downstream subtasks.
#[derive(Debug, Clone)]
pub enum Partitioning {
    /// Subtask i sends to subtask i only (the receivers list has one element).
    Forward,
    /// Rows go to the subtask owning the key group of the hash of `keys`, expressions
    /// evaluated on each batch.
    Hash {
        keys: Vec<Arc<dyn PhysicalExpr>>,
        key_groups: u16,
    },
}

/// Sends a subtask's output to downstream subtasks. Rows are partitioned; watermarks,
/// barriers and end of stream are broadcast to every receiver.
pub struct ExchangeOutput {
    senders: Vec<mpsc::Sender<Message>>,
    partitioning: Partitioning,
    /// Where the time spent waiting on full channels is counted.
    metrics: Arc<SubtaskMetrics>,
}

impl ExchangeOutput {
    pub fn new(
        senders: Vec<mpsc::Sender<Message>>,
        partitioning: Partitioning,
        metrics: Arc<SubtaskMetrics>,
    ) -> Self {
        debug_assert!(!matches!(partitioning, Partitioning::Forward) || senders.len() == 1);
        ExchangeOutput {
            senders,
            partitioning,
            metrics,
        }
    }

    /// Sends `message` to subtask `target`, waiting while its channel is full (and
    /// counting the wait as backpressure).
    async fn send(&self, target: usize, message: Message) -> Result<()> {
        let stopped = || SluiceError::internal("downstream subtask stopped");
        let message = match self.senders[target].try_send(message) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        let waiting = std::time::Instant::now();
        let sent = self.senders[target].send(message).await;
        self.metrics.add_backpressure(waiting.elapsed());
        sent.map_err(|_| stopped())
    }
}

#[async_trait]
impl Collector for ExchangeOutput {
    async fn collect(&mut self, message: Message) -> Result<()> {
        match (message, &self.partitioning) {
            (Message::Batch(batch), Partitioning::Hash { keys, key_groups })
                if self.senders.len() > 1 =>
            {
                let parallelism = self.senders.len();
                let n = batch.num_rows();
                let columns: Vec<ArrayRef> = keys
                    .iter()
                    .map(|k| k.evaluate(&batch).and_then(|v| v.into_array(n)))
                    .collect::<datafusion::error::Result<_>>()?;
                let groups = key_groups_of_columns(&columns, n, *key_groups)?;
                // Per-row loop: no Arrow kernel partitions by a computed target index;
                // DataFusion's RepartitionExec builds its index lists the same way.
                let mut indices: Vec<Vec<u32>> = vec![Vec::new(); parallelism];
                for (row, kg) in groups.into_iter().enumerate() {
                    indices[subtask_of_key_group(kg, *key_groups, parallelism)].push(row as u32);
                }
                for (target, rows) in indices.into_iter().enumerate() {
                    if rows.is_empty() {
                        continue;
                    }
                    let part = if rows.len() == batch.num_rows() {
                        batch.clone()
                    } else {
                        take_record_batch(&batch, &UInt32Array::from(rows))?
                    };
                    self.send(target, Message::Batch(part)).await?;
                }
                Ok(())
            }
            (Message::Batch(batch), _) => self.send(0, Message::Batch(batch)).await,
            (other, _) => {
                for target in 0..self.senders.len() {
                    self.send(target, other.clone()).await?;
                }
                Ok(())
            }
        }
    }
}

/// Which inputs of a gate are idle, and the timer that notices the next one.
struct Idleness {
    timeout: std::time::Duration,
    last_active: Vec<tokio::time::Instant>,
    idle: Vec<bool>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// Merges the input channels of one subtask.
///
/// - Barrier n is aligned: an input that delivered it is not read again until every live
///   input has, then the barrier is returned once. Barriers with an epoch at or below the
///   gate's starting epoch are dropped (an input subscribed mid-epoch).
/// - The watermark returned is the minimum over live inputs, and only when it advances.
///   With an idle timeout, an input that has sent neither rows nor a watermark for that
///   long is idle: it stops holding the watermark back until it sends again (Flink's
///   source idleness; its rows may then be late).
/// - `EndOfStream` is returned once every input has ended. An input whose sender goes away
///   without `EndOfStream` is an error: its subtask failed.
pub struct InputGate {
    inputs: Vec<Option<mpsc::Receiver<Message>>>,
    blocked: Vec<bool>,
    aligning: Option<CheckpointBarrier>,
    /// When the barrier being aligned first arrived, and how long the last alignment took.
    aligning_since: Option<tokio::time::Instant>,
    last_alignment: std::time::Duration,
    watermarks: Vec<Option<Watermark>>,
    current_watermark: Option<Watermark>,
    idleness: Option<Box<Idleness>>,
    skip_epochs_up_to: u64,
    next_input: usize,
    ended: bool,
    /// The logical input (join side) of each channel; all 0 for single-input operators.
    sides: Vec<usize>,
    /// The logical input of the last batch returned.
    last_side: usize,
    /// Channels whose watermarks do not count (see [`InputGate::ignoring_watermarks_of`]).
    timeless: Vec<bool>,
}

impl InputGate {
    pub fn new(inputs: Vec<mpsc::Receiver<Message>>) -> Self {
        Self::starting_after_epoch(inputs, 0)
    }

    /// A gate that ignores barriers of epochs `<= epoch`.
    pub fn starting_after_epoch(inputs: Vec<mpsc::Receiver<Message>>, epoch: u64) -> Self {
        let n = inputs.len();
        InputGate {
            inputs: inputs.into_iter().map(Some).collect(),
            blocked: vec![false; n],
            aligning: None,
            aligning_since: None,
            last_alignment: std::time::Duration::ZERO,
            watermarks: vec![None; n],
            current_watermark: None,
            idleness: None,
            skip_epochs_up_to: epoch,
            next_input: 0,
            ended: n == 0,
            sides: vec![0; n],
            last_side: 0,
            timeless: vec![false; n],
        }
    }

    /// Marks an input idle after `timeout` without rows or watermarks (see the type docs).
    pub fn with_idle_timeout(mut self, timeout: std::time::Duration) -> Self {
        let now = tokio::time::Instant::now();
        self.idleness = Some(Box::new(Idleness {
            timeout,
            last_active: vec![now; self.inputs.len()],
            idle: vec![false; self.inputs.len()],
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
        }));
        self
    }

    /// Labels each channel with the logical input it belongs to (for operators with
    /// several inputs, such as joins): `sides[i]` is channel `i`'s input.
    pub fn with_sides(mut self, sides: Vec<usize>) -> Self {
        assert_eq!(sides.len(), self.inputs.len(), "one side per channel");
        self.sides = sides;
        self
    }

    /// Leaves the channels of logical input `side` out of the watermark: a temporal
    /// join's table, whose rows are looked up as they are now, must not hold back the
    /// event time of the stream it enriches. Call after [`Self::with_sides`].
    pub fn ignoring_watermarks_of(mut self, side: usize) -> Self {
        self.timeless = self.sides.iter().map(|&s| s == side).collect();
        self
    }

    /// How long the last released barrier waited, from its arrival on the first input
    /// to its arrival on the last (Flink's alignment time).
    pub fn last_alignment(&self) -> std::time::Duration {
        self.last_alignment
    }

    /// The logical input that the last batch returned by [`Self::next`] came from.
    pub fn last_input(&self) -> usize {
        self.last_side
    }

    /// The next message, or `Ok(None)` after `EndOfStream` has been returned.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Option<Message>>> {
        loop {
            if self.ended {
                return Poll::Ready(Ok(None));
            }
            if self.inputs.iter().all(Option::is_none) {
                self.ended = true;
                return Poll::Ready(Ok(Some(Message::EndOfStream)));
            }
            let n = self.inputs.len();
            let mut progressed = false;
            for k in 0..n {
                let i = (self.next_input + k) % n;
                if self.blocked[i] {
                    continue;
                }
                let Some(rx) = self.inputs[i].as_mut() else {
                    continue;
                };
                match rx.poll_recv(cx) {
                    Poll::Pending => continue,
                    Poll::Ready(received) => {
                        self.next_input = (i + 1) % n;
                        progressed = true;
                        if matches!(received, Some(Message::Batch(_))) {
                            self.last_side = self.sides[i];
                        }
                        if let Some(out) = self.on_message(i, received)? {
                            return Poll::Ready(Ok(Some(out)));
                        }
                        break;
                    }
                }
            }
            if !progressed {
                return match self.poll_idleness(cx) {
                    Some(watermark) => Poll::Ready(Ok(Some(watermark))),
                    None => Poll::Pending,
                };
            }
        }
    }

    /// Marks inputs silent for the idle timeout as idle; returns the watermark that
    /// advances once they no longer count. Otherwise arms the timer for the next input
    /// that could go idle.
    fn poll_idleness(&mut self, cx: &mut std::task::Context<'_>) -> Option<Message> {
        self.idleness.as_ref()?;
        loop {
            let (went_idle, next_deadline) = self.mark_idle();
            if went_idle && let Some(watermark) = self.advance_watermark() {
                return Some(watermark);
            }
            let idleness = self.idleness.as_mut().expect("checked above");
            let deadline = next_deadline?;
            idleness.timer.as_mut().reset(deadline);
            if idleness.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
    }

    /// Marks the live inputs silent for the idle timeout as idle. Returns whether any
    /// went idle, and when the next one could.
    fn mark_idle(&mut self) -> (bool, Option<tokio::time::Instant>) {
        let Some(idleness) = self.idleness.as_mut() else {
            return (false, None);
        };
        let now = tokio::time::Instant::now();
        let mut next_deadline: Option<tokio::time::Instant> = None;
        let mut went_idle = false;
        for i in 0..self.inputs.len() {
            // A blocked input (aligning a barrier) counts too: barriers are not activity.
            if self.inputs[i].is_none() || idleness.idle[i] {
                continue;
            }
            let deadline = idleness.last_active[i] + idleness.timeout;
            if deadline <= now {
                idleness.idle[i] = true;
                went_idle = true;
            } else {
                next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
            }
        }
        (went_idle, next_deadline)
    }

    /// Handles one message of input `i`; returns what the gate emits, if anything.
    fn on_message(&mut self, i: usize, received: Option<Message>) -> Result<Option<Message>> {
        if let (Some(idleness), Some(Message::Batch(_) | Message::Watermark(_))) =
            (self.idleness.as_mut(), &received)
        {
            idleness.last_active[i] = tokio::time::Instant::now();
            idleness.idle[i] = false;
        }
        match received {
            Some(Message::Batch(b)) => Ok(Some(Message::Batch(b))),
            Some(Message::Watermark(w)) => {
                let slot = &mut self.watermarks[i];
                if slot.is_none_or(|old| w > old) {
                    *slot = Some(w);
                }
                Ok(self.advance_watermark())
            }
            Some(Message::Barrier(b)) => {
                if b.epoch <= self.skip_epochs_up_to {
                    return Ok(None);
                }
                match self.aligning {
                    None => {
                        self.aligning = Some(b);
                        self.aligning_since = Some(tokio::time::Instant::now());
                    }
                    Some(a) if a.epoch == b.epoch => {}
                    Some(a) => {
                        return Err(SluiceError::internal(format!(
                            "barrier {} arrived while aligning barrier {}",
                            b.epoch, a.epoch
                        )));
                    }
                }
                self.blocked[i] = true;
                Ok(self.release_if_aligned())
            }
            Some(Message::EndOfStream) => {
                self.inputs[i] = None;
                self.blocked[i] = false;
                Ok(self
                    .release_if_aligned()
                    .or_else(|| self.advance_watermark()))
            }
            None => Err(SluiceError::new(
                sluice_common::SqlState::DATA_EXCEPTION,
                INPUT_STOPPED,
            )),
        }
    }

    fn release_if_aligned(&mut self) -> Option<Message> {
        let barrier = self.aligning?;
        let all = self
            .inputs
            .iter()
            .zip(&self.blocked)
            .all(|(input, blocked)| input.is_none() || *blocked);
        if !all {
            return None;
        }
        self.aligning = None;
        self.last_alignment = self
            .aligning_since
            .take()
            .map(|since| since.elapsed())
            .unwrap_or_default();
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.skip_epochs_up_to = barrier.epoch;
        Some(Message::Barrier(barrier))
    }

    /// The minimum watermark of the live inputs that are not idle; when every live input
    /// is idle, the largest of theirs (as Flink's watermark valve does), so that progress
    /// made before they went quiet is not held back.
    fn advance_watermark(&mut self) -> Option<Message> {
        // Inputs whose timeout ran out while others kept sending are idle by now, even
        // if the timer has not fired yet.
        self.mark_idle();
        let is_idle = |i: usize| self.idleness.as_ref().is_some_and(|idle| idle.idle[i]);
        let live =
            || (0..self.inputs.len()).filter(|&i| self.inputs[i].is_some() && !self.timeless[i]);
        let candidate = if live().all(is_idle) {
            live().filter_map(|i| self.watermarks[i]).max()?
        } else {
            live()
                .filter(|&i| !is_idle(i))
                .map(|i| self.watermarks[i])
                .min()
                .flatten()?
        };
        if self.current_watermark.is_none_or(|c| candidate > c) {
            self.current_watermark = Some(candidate);
            return Some(Message::Watermark(candidate));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::BarrierKind;
    use arrow::array::Int64Array;
    use arrow::array::RecordBatch;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(v: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(v))]).unwrap()
    }

    fn barrier(epoch: u64) -> Message {
        Message::Barrier(CheckpointBarrier {
            epoch,
            kind: BarrierKind::Flush,
        })
    }

    #[tokio::test]
    async fn barrier_blocks_an_input_until_every_input_has_delivered_it() {
        let (tx0, rx0) = channel();
        let (tx1, rx1) = channel();
        let mut gate = InputGate::new(vec![rx0, rx1]);
        tx0.send(barrier(1)).await.unwrap();
        tx0.send(Message::Batch(batch(vec![99]))).await.unwrap();
        tx1.send(Message::Batch(batch(vec![1]))).await.unwrap();
        // Input 0 is blocked behind barrier 1, so input 1's row comes first.
        let Some(Message::Batch(b)) = gate.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(b, batch(vec![1]));
        tx1.send(barrier(1)).await.unwrap();
        assert!(matches!(gate.next().await.unwrap(), Some(Message::Barrier(b)) if b.epoch == 1));
        let Some(Message::Batch(b)) = gate.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(b, batch(vec![99]));
    }

    #[tokio::test]
    async fn an_idle_input_stops_holding_the_watermark_back_and_rejoins_when_it_sends() {
        let (tx0, rx0) = channel();
        let (tx1, rx1) = channel();
        let mut gate =
            InputGate::new(vec![rx0, rx1]).with_idle_timeout(std::time::Duration::from_millis(50));
        tx0.send(Message::Watermark(Watermark(10))).await.unwrap();
        // Input 1 never sends: once idle, input 0's watermark is the gate's.
        let deadline = std::time::Duration::from_secs(10);
        let next = tokio::time::timeout(deadline, gate.next()).await;
        assert!(
            matches!(next, Ok(Ok(Some(Message::Watermark(Watermark(10)))))),
            "{next:?}"
        );
        // Input 1 rejoins with rows: it holds input 0's watermark back again.
        let schema = Arc::new(arrow::datatypes::Schema::empty());
        let rows = arrow::array::RecordBatch::new_empty(schema);
        tx1.send(Message::Batch(rows)).await.unwrap();
        assert!(matches!(
            gate.next().await.unwrap(),
            Some(Message::Batch(_))
        ));
        tx0.send(Message::Watermark(Watermark(20))).await.unwrap();
        tx1.send(Message::Watermark(Watermark(15))).await.unwrap();
        let next = tokio::time::timeout(deadline, gate.next()).await;
        assert!(
            matches!(next, Ok(Ok(Some(Message::Watermark(Watermark(15)))))),
            "{next:?}"
        );
    }

    #[tokio::test]
    async fn a_barrier_reports_how_long_it_waited_for_every_input() {
        let (tx0, rx0) = channel();
        let (tx1, rx1) = channel();
        let mut gate = InputGate::new(vec![rx0, rx1]);
        let barrier = CheckpointBarrier {
            epoch: 1,
            kind: crate::message::BarrierKind::Checkpoint,
        };
        use futures::FutureExt;
        use tokio::time::Instant;
        tx0.send(Message::Barrier(barrier)).await.unwrap();
        // Input 0's barrier arrives; the gate starts timing and waits for input 1's.
        let before_first = Instant::now();
        assert!(gate.next().now_or_never().is_none(), "not aligned yet");
        let after_first = Instant::now();
        // Let some time pass: the duration to measure.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        tx1.send(Message::Barrier(barrier)).await.unwrap();
        let before_second = Instant::now();
        assert!(matches!(
            gate.next().await.unwrap(),
            Some(Message::Barrier(_))
        ));
        let after_second = Instant::now();
        // The alignment began during the first poll and ended during the second.
        let aligned = gate.last_alignment();
        assert!(
            aligned >= before_second - after_first && aligned <= after_second - before_first,
            "{aligned:?} outside [{:?}, {:?}]",
            before_second - after_first,
            after_second - before_first
        );
        assert!(aligned > std::time::Duration::ZERO);
    }

    #[tokio::test]
    async fn watermark_is_the_minimum_of_live_inputs_and_end_needs_every_input() {
        let (tx0, rx0) = channel();
        let (tx1, rx1) = channel();
        let mut gate = InputGate::new(vec![rx0, rx1]);
        tx0.send(Message::Watermark(Watermark(10))).await.unwrap();
        tx1.send(Message::Watermark(Watermark(5))).await.unwrap();
        assert!(matches!(
            gate.next().await.unwrap(),
            Some(Message::Watermark(Watermark(5)))
        ));
        tx1.send(Message::EndOfStream).await.unwrap();
        assert!(matches!(
            gate.next().await.unwrap(),
            Some(Message::Watermark(Watermark(10)))
        ));
        tx0.send(Message::EndOfStream).await.unwrap();
        assert!(matches!(
            gate.next().await.unwrap(),
            Some(Message::EndOfStream)
        ));
        assert!(gate.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn waiting_on_a_full_channel_counts_as_backpressure() {
        use futures::FutureExt;
        let (tx, mut rx) = channel();
        let metrics = Arc::new(SubtaskMetrics::default());
        let mut out = ExchangeOutput::new(vec![tx], Partitioning::Forward, metrics.clone());
        for epoch in 0..CHANNEL_CAPACITY as u64 {
            let barrier = Message::Barrier(CheckpointBarrier {
                epoch,
                kind: crate::message::BarrierKind::Flush,
            });
            out.collect(barrier).await.expect("room in the channel");
        }
        assert_eq!(
            metrics
                .backpressured_ns
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let mut blocked = Box::pin(out.collect(Message::EndOfStream));
        assert!(
            (&mut blocked).now_or_never().is_none(),
            "the channel is full"
        );
        assert!(rx.recv().await.is_some());
        blocked.await.expect("sent once there is room");
        assert!(
            metrics
                .backpressured_ns
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
    }

    #[tokio::test]
    async fn a_vanished_upstream_is_an_error_not_an_end() {
        let (tx0, rx0) = channel();
        let mut gate = InputGate::new(vec![rx0]);
        drop(tx0);
        assert!(gate.next().await.is_err());
    }

    #[tokio::test]
    async fn hash_exchange_sends_each_key_to_one_subtask_and_broadcasts_barriers() {
        let (senders, mut receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| channel()).unzip();
        let mut out = ExchangeOutput::new(
            senders,
            Partitioning::Hash {
                keys: vec![Arc::new(
                    datafusion::physical_expr::expressions::Column::new("k", 0),
                )],
                key_groups: 128,
            },
            Arc::new(SubtaskMetrics::default()),
        );
        out.collect(Message::Batch(batch((0..100).map(|i| i % 10).collect())))
            .await
            .unwrap();
        out.collect(barrier(7)).await.unwrap();
        let mut owner = std::collections::HashMap::new();
        let mut total = 0;
        for (i, rx) in receivers.iter_mut().enumerate() {
            loop {
                match rx.recv().await.unwrap() {
                    Message::Batch(b) => {
                        let keys = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                        for k in keys.values() {
                            assert_eq!(
                                *owner.entry(*k).or_insert(i),
                                i,
                                "key {k} went to two subtasks"
                            );
                        }
                        total += b.num_rows();
                    }
                    Message::Barrier(b) => {
                        assert_eq!(b.epoch, 7);
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(total, 100);
    }
}
