//! The stream graph: the logical dataflow of one streaming job, as the planner produced it.
//!
//! Nodes are in topological order (inputs before their consumers) and the last node is the
//! job's sink. Expressions are DataFusion logical [`Expr`]s over the input node's schema;
//! the worker compiles them to physical expressions, so a graph can be shipped to another
//! process (with datafusion-proto) before anything is compiled.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use datafusion::common::{DFSchemaRef, NullHandling, ScalarValue};
use datafusion::logical_expr::{Expr, JoinType, SortExpr};
use serde::{Deserialize, Serialize};

/// How rows move from a node's input to the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Exchange {
    /// Subtask i feeds subtask i (same parallelism); such edges are chained.
    Forward,
    /// Rows are hash-partitioned by these expressions (over the input's schema) into key
    /// groups; no expressions sends everything to a single subtask.
    Hash(#[serde(with = "crate::codec::exprs")] Vec<Expr>),
}

/// A window aggregate's group key `window_end` (at `end_index` among the group
/// expressions) closes the group when the watermark passes `end + allowed_lateness_ms`:
/// its state is freed, and later rows for it are late (dropped and counted). With
/// `emit_on_close` (EMIT ON WINDOW CLOSE) the group is emitted only then, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowAggregate {
    pub end_index: usize,
    pub emit_on_close: bool,
    pub allowed_lateness_ms: i64,
}

/// The key (join key pair or PARTITION BY key, at `index`) that holds a window's end in
/// an operator that frees a window's state when the watermark passes the end plus
/// `allowed_lateness_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowKey {
    pub index: usize,
    pub allowed_lateness_ms: i64,
}

/// The frame of OVER aggregates: from how far back to the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW` (`None`: UNBOUNDED PRECEDING).
    Rows(Option<u64>),
    /// `RANGE BETWEEN interval PRECEDING AND CURRENT ROW`, in milliseconds (`None`:
    /// UNBOUNDED PRECEDING). A row's peers (same time) are in its frame.
    Range(Option<i64>),
}

/// An input edge of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamEdge {
    pub from: usize,
    pub exchange: Exchange,
}

/// What a node does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StreamOperator {
    /// Reads a table's log (backfill, then new writes).
    TableScan { table: String },
    /// Reads an external source through its connector.
    SourceScan {
        source: String,
        options: BTreeMap<String, String>,
    },
    /// Reads another view: its current rows, then its changes.
    ViewScan { view: String },
    Project {
        #[serde(with = "crate::codec::exprs")]
        exprs: Vec<Expr>,
    },
    Filter {
        #[serde(with = "crate::codec::expr")]
        predicate: Expr,
    },
    /// `time > now() - offset` (`>=` when `inclusive`): keeps each row from the moment it
    /// passes until the clock moves past `time + offset`, then retracts it.
    TemporalFilter {
        #[serde(with = "crate::codec::expr")]
        time: Expr,
        offset_ms: i64,
        inclusive: bool,
    },
    /// Emits a watermark after each batch: the maximum of `expr` (a timestamp) so far.
    WatermarkAssign {
        #[serde(with = "crate::codec::expr")]
        expr: Expr,
    },
    /// GROUP BY; output columns are the group expressions, then the aggregates.
    Aggregate {
        #[serde(with = "crate::codec::exprs")]
        group_exprs: Vec<Expr>,
        #[serde(with = "crate::codec::exprs")]
        aggr_exprs: Vec<Expr>,
        /// A window aggregate (`window_end` among the group keys, append-only input):
        /// what happens when the watermark passes a window's end.
        window: Option<WindowAggregate>,
    },
    /// Equi-join; inputs are `[left, right]`, each hash-partitioned by its keys. `filter`
    /// is the residual condition over the output columns (inner joins only).
    Join {
        #[serde(with = "crate::codec::join_type")]
        join_type: JoinType,
        #[serde(with = "crate::codec::exprs")]
        left_keys: Vec<Expr>,
        #[serde(with = "crate::codec::exprs")]
        right_keys: Vec<Expr>,
        #[serde(with = "crate::codec::opt_expr")]
        filter: Option<Expr>,
        /// NULL keys equal each other (INTERSECT, EXCEPT).
        nulls_equal: bool,
        /// `NOT IN (subquery)`: a null-aware anti join (one subtask).
        null_aware: bool,
        /// A window join: the key pair `window_end = window_end`, whose windows close.
        windows: Option<WindowKey>,
        /// An interval join: when each side's rows can be forgotten.
        intervals: Option<Box<crate::interval::IntervalBounds>>,
    },
    /// A processing-time temporal join (`JOIN t FOR SYSTEM_TIME AS OF PROCTIME()`): each
    /// row of the append-only left input joins the right input's rows as they are when
    /// it arrives; right changes emit nothing. Append-only output.
    TemporalJoin {
        /// LEFT JOIN: a left row without a match is kept, padded with NULLs.
        outer: bool,
        #[serde(with = "crate::codec::exprs")]
        left_keys: Vec<Expr>,
        #[serde(with = "crate::codec::exprs")]
        right_keys: Vec<Expr>,
        #[serde(with = "crate::codec::opt_expr")]
        filter: Option<Expr>,
    },
    /// UNION ALL of its inputs (each hash-partitioned by all its columns).
    Union,
    /// One row per element of the list columns `lists` (input indices); output column j
    /// comes from input column `sources[j]`, unnested if it is one of `lists`.
    Unnest {
        lists: Vec<usize>,
        sources: Vec<usize>,
        #[serde(with = "crate::codec::null_handling")]
        null_handling: NullHandling,
    },
    /// Session windows: appends each row's session bounds (`bounds`, in order) to its
    /// columns. Inputs are hash-partitioned by `partition_by`.
    SessionWindow {
        #[serde(with = "crate::codec::exprs")]
        partition_by: Vec<Expr>,
        #[serde(with = "crate::codec::expr")]
        time: Expr,
        /// The gap, a constant interval.
        #[serde(with = "crate::codec::scalar")]
        gap: ScalarValue,
        /// For each appended column: true for the session's start, false for its end.
        bounds: Vec<bool>,
        /// Emit each session once, when the watermark passes its end (append-only).
        emit_on_close: bool,
        /// Sessions close when the watermark passes their end plus this.
        allowed_lateness_ms: i64,
    },
    /// `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..) <= limit`: the first `limit` rows
    /// of each partition, with their row number appended. Inputs are hash-partitioned by
    /// `partition_by`; the output retracts as the ranking changes.
    TopN {
        #[serde(with = "crate::codec::exprs")]
        partition_by: Vec<Expr>,
        #[serde(with = "crate::codec::sort_exprs")]
        order_by: Vec<SortExpr>,
        limit: usize,
        /// A window Top-N: the PARTITION BY key `window_end`, whose windows close.
        windows: Option<WindowKey>,
    },
    /// OVER aggregates (`agg(x) OVER (PARTITION BY k ORDER BY ts <frame>)`) over an
    /// append-only input whose event time is `ts`: once the watermark passes a row's
    /// time, the row is emitted with its aggregates over the frame of its partition, rows
    /// taken in time order. Rows behind the watermark are late. Append-only output.
    OverAggregate {
        #[serde(with = "crate::codec::exprs")]
        partition_by: Vec<Expr>,
        /// The ORDER BY column, the input's event time.
        #[serde(with = "crate::codec::expr")]
        time: Expr,
        /// One aggregate function expression over the input per output column.
        #[serde(with = "crate::codec::exprs")]
        aggr_exprs: Vec<Expr>,
        frame: OverFrame,
    },
    /// Stores the result of view `view`, each row in the partition owning the key group
    /// of its `key_columns`: the columns the rows arrive partitioned by (the group keys
    /// of an aggregate, say), or all of them.
    Materialize {
        view: String,
        key_columns: Vec<usize>,
    },
    /// Writes the changelog to sink `sink`'s connector, configured by `options` (the
    /// `WITH (...)` options, keys lower-cased).
    Sink {
        sink: String,
        options: BTreeMap<String, String>,
    },
}

impl StreamOperator {
    pub fn name(&self) -> &'static str {
        match self {
            StreamOperator::TableScan { .. } => "TableScan",
            StreamOperator::SourceScan { .. } => "SourceScan",
            StreamOperator::ViewScan { .. } => "ViewScan",
            StreamOperator::Project { .. } => "Project",
            StreamOperator::Filter { .. } => "Filter",
            StreamOperator::WatermarkAssign { .. } => "WatermarkAssign",
            StreamOperator::Aggregate { .. } => "Aggregate",
            StreamOperator::Join { .. } => "Join",
            StreamOperator::TemporalJoin { .. } => "TemporalJoin",
            StreamOperator::Union => "Union",
            StreamOperator::Unnest { .. } => "Unnest",
            StreamOperator::SessionWindow { .. } => "SessionWindow",
            StreamOperator::TopN { .. } => "TopN",
            StreamOperator::OverAggregate { .. } => "OverAggregate",
            StreamOperator::TemporalFilter { .. } => "TemporalFilter",
            StreamOperator::Materialize { .. } => "Materialize",
            StreamOperator::Sink { .. } => "Sink",
        }
    }

    pub fn is_source(&self) -> bool {
        matches!(
            self,
            StreamOperator::TableScan { .. }
                | StreamOperator::SourceScan { .. }
                | StreamOperator::ViewScan { .. }
        )
    }
}

/// One node of the graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamNode {
    pub id: usize,
    pub operator: StreamOperator,
    pub inputs: Vec<StreamEdge>,
    /// The node's output columns (without the changelog column).
    #[serde(with = "crate::codec::schema")]
    pub schema: DFSchemaRef,
    /// Whether the output carries retractions (`__op` column).
    pub changelog: bool,
    pub parallelism: usize,
}

/// The logical dataflow of one job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamGraph {
    pub nodes: Vec<StreamNode>,
    /// Inputs of an operator silent for this long stop holding its watermark back
    /// (`WITH (source_idle_timeout = ...)`).
    pub idle_timeout: Option<std::time::Duration>,
    /// Inner joins and GROUP BYs over append-only input forget what has not been touched
    /// for this long (`state_ttl`).
    pub state_ttl: Option<std::time::Duration>,
}

impl StreamGraph {
    /// The sink (last node).
    pub fn sink(&self) -> &StreamNode {
        self.nodes.last().expect("a stream graph has a sink")
    }

    /// Groups nodes into chains: a node joins its input's chain when the edge is
    /// forward, parallelism is equal and the input feeds nobody else. Returns chains of
    /// node ids, in topological order.
    pub fn chains(&self) -> Vec<Vec<usize>> {
        let mut consumers = vec![0usize; self.nodes.len()];
        for node in &self.nodes {
            for edge in &node.inputs {
                consumers[edge.from] += 1;
            }
        }
        let mut chain_of: Vec<usize> = vec![usize::MAX; self.nodes.len()];
        let mut chains: Vec<Vec<usize>> = Vec::new();
        for node in &self.nodes {
            let chained_to = match node.inputs.as_slice() {
                [edge]
                    if matches!(edge.exchange, Exchange::Forward)
                        && consumers[edge.from] == 1
                        && self.nodes[edge.from].parallelism == node.parallelism =>
                {
                    Some(chain_of[edge.from])
                }
                _ => None,
            };
            match chained_to {
                Some(c) => {
                    chains[c].push(node.id);
                    chain_of[node.id] = c;
                }
                None => {
                    chain_of[node.id] = chains.len();
                    chains.push(vec![node.id]);
                }
            }
        }
        chains
    }
}

impl fmt::Display for StreamGraph {
    /// The text of `EXPLAIN CREATE MATERIALIZED VIEW`: the operator tree from the sink
    /// down, then the tasks the operators are chained into.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn node_line(graph: &StreamGraph, node: &StreamNode) -> String {
            let detail = match &node.operator {
                StreamOperator::TableScan { table } => format!("table={table}"),
                StreamOperator::SourceScan { source, options } => format!(
                    "source={source}, connector={}",
                    options.get("connector").map(String::as_str).unwrap_or("?")
                ),
                StreamOperator::ViewScan { view } => format!("view={view}"),
                StreamOperator::Project { exprs } => {
                    format!(
                        "exprs=[{}]",
                        exprs
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                StreamOperator::Filter { predicate } => format!("predicate={predicate}"),
                StreamOperator::TemporalFilter {
                    time,
                    offset_ms,
                    inclusive,
                } => format!(
                    "{time} {} now() - {offset_ms} ms",
                    if *inclusive { ">=" } else { ">" }
                ),
                StreamOperator::WatermarkAssign { expr } => format!("watermark={expr}"),
                StreamOperator::Aggregate {
                    group_exprs,
                    aggr_exprs,
                    window,
                } => format!(
                    "group=[{}], aggs=[{}]{}",
                    group_exprs
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    aggr_exprs
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    match window {
                        Some(w) if w.emit_on_close => ", emit=on window close",
                        Some(_) => ", windows close at watermark",
                        None => "",
                    }
                ),
                StreamOperator::Join {
                    join_type,
                    left_keys,
                    right_keys,
                    filter,
                    windows,
                    intervals,
                    null_aware,
                    ..
                } => {
                    let mut detail =
                        format!("{join_type}, on=[{}]", key_pairs(left_keys, right_keys));
                    if let Some(f) = filter {
                        detail.push_str(&format!(", filter={f}"));
                    }
                    if windows.is_some() {
                        detail.push_str(", window join");
                    }
                    if *null_aware {
                        detail.push_str(", null-aware (NOT IN)");
                    }
                    if let Some(bounds) = intervals {
                        let sides: Vec<String> = bounds
                            .expiry
                            .iter()
                            .zip(["left", "right"])
                            .filter_map(|(e, side)| e.as_ref().map(|e| format!("{side} until {e}")))
                            .collect();
                        detail.push_str(&format!(", interval join: {}", sides.join(", ")));
                    }
                    detail
                }
                StreamOperator::TemporalJoin {
                    outer,
                    left_keys,
                    right_keys,
                    filter,
                } => {
                    let kind = if *outer { "Left" } else { "Inner" };
                    let mut detail = format!(
                        "{kind}, on=[{}], as of processing time",
                        key_pairs(left_keys, right_keys)
                    );
                    if let Some(f) = filter {
                        detail.push_str(&format!(", filter={f}"));
                    }
                    detail
                }
                StreamOperator::OverAggregate {
                    partition_by,
                    time,
                    aggr_exprs,
                    frame,
                } => {
                    let aggregates: Vec<String> =
                        aggr_exprs.iter().map(|e| e.to_string()).collect();
                    let frame = match frame {
                        OverFrame::Rows(Some(n)) => format!("rows {n} preceding"),
                        OverFrame::Rows(None) => "rows unbounded preceding".into(),
                        OverFrame::Range(Some(ms)) => format!("range {ms} ms preceding"),
                        OverFrame::Range(None) => "range unbounded preceding".into(),
                    };
                    let keys: Vec<String> = partition_by.iter().map(|e| e.to_string()).collect();
                    format!(
                        "aggregates=[{}], partition_by=[{}], order_by={time}, {frame}",
                        aggregates.join(", "),
                        keys.join(", ")
                    )
                }
                StreamOperator::Union => format!("inputs={}", node.inputs.len()),
                StreamOperator::Unnest { lists, .. } => {
                    let input = &graph.nodes[node.inputs[0].from].schema;
                    let names: Vec<String> = lists
                        .iter()
                        .map(|&i| input.field(i).name().clone())
                        .collect();
                    format!("lists=[{}]", names.join(", "))
                }
                StreamOperator::SessionWindow {
                    partition_by,
                    time,
                    gap,
                    emit_on_close,
                    ..
                } => format!(
                    "partition_by=[{}], time={time}, gap={gap}{}",
                    partition_by
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if *emit_on_close {
                        ", emit=on window close"
                    } else {
                        ""
                    }
                ),
                StreamOperator::TopN {
                    partition_by,
                    order_by,
                    limit,
                    ..
                } => format!(
                    "partition_by=[{}], order_by=[{}], limit={limit}",
                    partition_by
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    order_by
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                StreamOperator::Materialize { view, .. } => format!("view={view}"),
                StreamOperator::Sink { sink, options } => format!(
                    "sink={sink}, connector={}",
                    options.get("connector").map_or("", String::as_str)
                ),
            };
            let kind = if node.changelog {
                "retract"
            } else {
                "append-only"
            };
            format!(
                "{} [{detail}] parallelism={} output={kind}",
                node.operator.name(),
                node.parallelism
            )
        }
        fn walk(graph: &StreamGraph, id: usize, depth: usize, out: &mut String) {
            let node = &graph.nodes[id];
            let _ = writeln!(out, "{}{}", "  ".repeat(depth), node_line(graph, node));
            for edge in &node.inputs {
                let mut d = depth + 1;
                if let Exchange::Hash(keys) = &edge.exchange {
                    let keys = if keys.is_empty() {
                        "single".to_string()
                    } else {
                        format!(
                            "hash({})",
                            keys.iter()
                                .map(|e| e.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    let _ = writeln!(out, "{}Exchange [{keys}]", "  ".repeat(d));
                    d += 1;
                }
                walk(graph, edge.from, d, out);
            }
        }
        let mut out = String::new();
        if !self.nodes.is_empty() {
            walk(self, self.nodes.len() - 1, 0, &mut out);
        }
        for (i, chain) in self.chains().iter().enumerate() {
            let names: Vec<&str> = chain
                .iter()
                .map(|&n| self.nodes[n].operator.name())
                .collect();
            let _ = writeln!(
                out,
                "Task {i}: {} (parallelism {})",
                names.join(" -> "),
                self.nodes[chain[0]].parallelism
            );
        }
        f.write_str(out.trim_end())
    }
}

/// A join's key equalities as EXPLAIN shows them: `l1 = r1, l2 = r2`.
fn key_pairs(left: &[Expr], right: &[Expr]) -> String {
    left.iter()
        .zip(right)
        .map(|(l, r)| format!("{l} = {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}
