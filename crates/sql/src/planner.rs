//! The streaming planner: lowers a DataFusion logical plan (already analyzed, so types
//! are coerced) onto a [`StreamGraph`].
//!
//! Each supported logical node maps to one stream node; the planner decides parallelism,
//! where rows must be re-partitioned (exchanges), and whether each edge is append-only or
//! carries retractions. Constructs that have no streaming operator yet are refused with
//! `0A000` and a message naming the construct.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::NullEquality;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, DFSchemaRef, TableReference};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    Aggregate, Distinct, Expr, Join, JoinType, LogicalPlan, TableScan, Unnest, Window,
    WindowFunctionDefinition,
};
use sluice_common::error::{Result, SluiceError, SqlState};

use crate::catalog::{Catalog, RelationKind};
use crate::graph::{
    Exchange, StreamEdge, StreamGraph, StreamNode, StreamOperator, WindowAggregate, WindowKey,
};
use crate::interval::interval_bounds;
use crate::parser::ViewOptions;
use crate::temporal::{check_no_now, split_temporal};

/// Lowers `plan` (the query of view `view`) to a stream graph whose sink materializes the
/// view. `parallelism` is the job's parallelism (at least 1).
pub fn plan_stream_graph(
    plan: &LogicalPlan,
    view: &str,
    catalog: &Catalog,
    parallelism: usize,
    options: ViewOptions,
) -> Result<StreamGraph> {
    let emit_on_window_close = options.emit_on_window_close;
    debug_assert!(parallelism >= 1);
    let mut builder = GraphBuilder {
        graph: StreamGraph::default(),
        catalog,
        parallelism,
        source_parallelism: options.source_parallelism,
        emit_on_window_close,
        allowed_lateness_ms: options.allowed_lateness_ms,
        window_close_claimed: false,
        top_n_limit: None,
        condition_above_join: None,
        temporal_join_above: false,
    };
    builder.graph.idle_timeout = options
        .source_idle_timeout_ms
        .map(|ms| std::time::Duration::from_millis(ms as u64));
    builder.graph.state_ttl = options
        .state_ttl_ms
        .map(|ms| std::time::Duration::from_millis(ms as u64));
    let root = builder.lower(plan)?;
    if emit_on_window_close && !builder.window_close_claimed {
        return Err(SluiceError::unsupported(
            "EMIT ON WINDOW CLOSE needs a GROUP BY over window_end of a window (TUMBLE, HOP, CUMULATE or SESSION)",
        ));
    }
    let root_node = &builder.graph.nodes[root];
    let (schema, changelog, p) = (
        root_node.schema.clone(),
        root_node.changelog,
        root_node.parallelism,
    );
    check_unique_column_names(&schema)?;
    // A view partition files each row under the key group of the columns its rows are
    // routed by, so that the rows can be redistributed by key group when the view changes
    // parallelism, and a retraction still reaches the partition holding its row. When
    // the last keyed operator's key passes through to the view's columns, its subtasks
    // already route by them; otherwise an updating view is repartitioned by the whole
    // row. Appended rows are never retracted: they can stay where they are produced.
    let routed_by = routing_columns(&builder.graph, root);
    let exchange = if changelog && p > 1 && routed_by.is_none() {
        Exchange::Hash(schema.columns().into_iter().map(Expr::Column).collect())
    } else {
        Exchange::Forward
    };
    let key_columns = routed_by.unwrap_or_else(|| (0..schema.fields().len()).collect());
    builder.add(
        StreamOperator::Materialize {
            view: view.to_string(),
            key_columns,
        },
        vec![StreamEdge {
            from: root,
            exchange,
        }],
        schema,
        changelog,
        p,
    );
    Ok(builder.graph)
}

/// Turns the graph of a view's query (from [`plan_stream_graph`]) into the graph of sink
/// `sink` with connector options `options`: the same dataflow, ending in the connector
/// instead of the view's storage.
pub fn into_sink_graph(
    mut graph: StreamGraph,
    sink: &str,
    options: BTreeMap<String, String>,
) -> StreamGraph {
    let last = graph.nodes.len() - 1;
    debug_assert!(matches!(
        graph.nodes[last].operator,
        StreamOperator::Materialize { .. }
    ));
    graph.nodes[last].operator = StreamOperator::Sink {
        sink: sink.to_string(),
        options,
    };
    // A sink writes its query's changes in the order its last operator produced them
    // (an update's -U and +U together), so it is not repartitioned by row.
    for edge in &mut graph.nodes[last].inputs {
        edge.exchange = Exchange::Forward;
    }
    graph
}

/// The columns of `node`'s output that its rows are routed to subtasks by, when `node`
/// is a keyed operator whose key is columns of its output (an aggregate's group keys, a
/// Top-N's partition columns, a join's key on its unpadded side), or passes such columns
/// on unchanged (projections and filters above it). The hash of these columns is the key
/// group the operator's input exchange routed each row by, so both agree on the subtask of
/// every row.
fn routing_columns(graph: &StreamGraph, node: usize) -> Option<Vec<usize>> {
    let n = &graph.nodes[node];
    let input = n.inputs.first().map(|e| e.from);
    let columns_of = |exprs: &[Expr], schema: &DFSchema| -> Option<Vec<usize>> {
        exprs
            .iter()
            .map(|e| match e {
                Expr::Column(c) => schema.index_of_column(c).ok(),
                _ => None,
            })
            .collect()
    };
    match &n.operator {
        StreamOperator::Aggregate { group_exprs, .. } if !group_exprs.is_empty() => {
            Some((0..group_exprs.len()).collect())
        }
        StreamOperator::TopN { partition_by, .. } if !partition_by.is_empty() => {
            // A Top-N's output is its input's columns and the rank.
            columns_of(partition_by, &graph.nodes[input?].schema)
        }
        // A join runs where its key's key group is; its output keeps the key in the
        // columns of the side that is never padded with NULLs.
        StreamOperator::Join {
            join_type,
            left_keys,
            right_keys,
            ..
        } => match join_type {
            JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti => {
                columns_of(left_keys, &graph.nodes[input?].schema)
            }
            JoinType::Right => {
                let left_width = graph.nodes[input?].schema.fields().len();
                let right = &graph.nodes[n.inputs.get(1)?.from].schema;
                let columns = columns_of(right_keys, right)?;
                Some(columns.into_iter().map(|c| c + left_width).collect())
            }
            _ => None,
        },
        StreamOperator::TemporalJoin { left_keys, .. } => {
            columns_of(left_keys, &graph.nodes[input?].schema)
        }
        StreamOperator::Filter { .. } => routing_columns(graph, input?),
        StreamOperator::Project { exprs } => {
            let below = routing_columns(graph, input?)?;
            let input_schema = &graph.nodes[input?].schema;
            below
                .into_iter()
                .map(|j| {
                    exprs.iter().position(|e| {
                        let e = match e {
                            Expr::Alias(alias) => alias.expr.as_ref(),
                            e => e,
                        };
                        matches!(e, Expr::Column(c) if input_schema.index_of_column(c).ok() == Some(j))
                    })
                })
                .collect()
        }
        _ => None,
    }
}

/// The first node under `plan` that is not a projection: pruning unused columns puts
/// projections between a filter and the join it belongs to.
fn below_projections(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::Projection(p) => below_projections(&p.input),
        other => other,
    }
}

/// Names of the relations a stream graph reads.
pub fn dependencies(graph: &StreamGraph) -> Vec<String> {
    let mut deps: Vec<String> = graph
        .nodes
        .iter()
        .filter_map(|n| match &n.operator {
            StreamOperator::TableScan { table } => Some(table.clone()),
            StreamOperator::SourceScan { source, .. } => Some(source.clone()),
            StreamOperator::ViewScan { view } => Some(view.clone()),
            _ => None,
        })
        .collect();
    deps.sort();
    deps.dedup();
    deps
}

struct GraphBuilder<'a> {
    graph: StreamGraph,
    catalog: &'a Catalog,
    /// Connector sources' parallelism when not the job's (see `ViewOptions`).
    source_parallelism: Option<usize>,
    parallelism: usize,
    /// The view asked for EMIT ON WINDOW CLOSE; the top-most aggregate claims it.
    emit_on_window_close: bool,
    allowed_lateness_ms: i64,
    window_close_claimed: bool,
    /// Set by a filter on a row number (`rn <= N`) for the window below it: the name of
    /// the window's ROW_NUMBER column and N.
    top_n_limit: Option<(String, usize)>,
    /// Set by a filter right above a join, for the join's interval analysis: DataFusion
    /// may leave an inner join's non-equi condition in a filter over it.
    condition_above_join: Option<Expr>,
    /// Set by a filter right above a join that carries the temporal join marker.
    temporal_join_above: bool,
}

fn unsupported(what: &str) -> SluiceError {
    SluiceError::unsupported(format!("{what} is not supported in materialized views yet"))
}

impl GraphBuilder<'_> {
    fn add(
        &mut self,
        operator: StreamOperator,
        inputs: Vec<StreamEdge>,
        schema: DFSchemaRef,
        changelog: bool,
        parallelism: usize,
    ) -> usize {
        let id = self.graph.nodes.len();
        self.graph.nodes.push(StreamNode {
            id,
            operator,
            inputs,
            schema,
            changelog,
            parallelism,
        });
        id
    }

    /// A node applied to `input` with a forward edge, inheriting its parallelism and kind.
    fn add_forward(
        &mut self,
        operator: StreamOperator,
        input: usize,
        schema: DFSchemaRef,
    ) -> usize {
        let (changelog, p) = (
            self.graph.nodes[input].changelog,
            self.graph.nodes[input].parallelism,
        );
        self.add(
            operator,
            vec![StreamEdge {
                from: input,
                exchange: Exchange::Forward,
            }],
            schema,
            changelog,
            p,
        )
    }

    fn lower(&mut self, plan: &LogicalPlan) -> Result<usize> {
        match plan {
            LogicalPlan::TableScan(scan) => self.lower_scan(scan),
            LogicalPlan::Projection(p) => {
                check_no_subqueries(&p.expr)?;
                check_no_now(&p.expr)?;
                let input = self.lower(&p.input)?;
                Ok(self.add_forward(
                    StreamOperator::Project {
                        exprs: p.expr.clone(),
                    },
                    input,
                    p.schema.clone(),
                ))
            }
            LogicalPlan::Filter(f) => {
                check_no_subqueries(std::slice::from_ref(&f.predicate))?;
                // `rn <= N` over a ROW_NUMBER is a Top-N: the window below takes the
                // limit. The filter stays: it holds for every row the Top-N emits.
                let outer_limit = self.top_n_limit.take();
                self.top_n_limit = row_number_limit(f);
                // DataFusion may lift a temporal join's ON (with its marker) into a
                // filter above the join: the join below takes the marker.
                let marked = crate::temporal_join::take_marker(Some(&f.predicate));
                if matches!(below_projections(&f.input), LogicalPlan::Join(_)) {
                    self.condition_above_join = Some(f.predicate.clone());
                    self.temporal_join_above = marked.is_some();
                }
                let mut node = self.lower(&f.input)?;
                self.top_n_limit = outer_limit;
                let schema = self.graph.nodes[node].schema.clone();
                let Some(predicate) = marked.unwrap_or_else(|| Some(f.predicate.clone())) else {
                    return Ok(node);
                };
                // A comparison with now() becomes a temporal filter (rows leave as the
                // clock passes them); the rest stays an ordinary filter.
                let (temporal, rest) = split_temporal(&predicate)?;
                if let Some(rest) = rest {
                    node = self.add_forward(
                        StreamOperator::Filter { predicate: rest },
                        node,
                        schema.clone(),
                    );
                }
                if let Some(t) = temporal {
                    node = self.add_forward(
                        StreamOperator::TemporalFilter {
                            time: t.time,
                            offset_ms: t.offset_ms,
                            inclusive: t.inclusive,
                        },
                        node,
                        schema,
                    );
                    self.graph.nodes[node].changelog = true;
                }
                Ok(node)
            }
            LogicalPlan::SubqueryAlias(alias) => {
                // Only the qualifiers change; relabel the input node's output.
                let input = self.lower(&alias.input)?;
                self.graph.nodes[input].schema = alias.schema.clone();
                Ok(input)
            }
            LogicalPlan::Aggregate(agg) => self.lower_aggregate(agg),
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let group_exprs: Vec<Expr> = input
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                let agg = Aggregate::try_new(input.clone(), group_exprs, vec![])?;
                self.lower_aggregate(&agg)
            }
            LogicalPlan::Distinct(Distinct::On(_)) => Err(unsupported("DISTINCT ON")),
            // A view's rows have no order; ORDER BY without LIMIT is accepted and ignored,
            // as PostgreSQL does not keep a materialized view's order either.
            LogicalPlan::Sort(sort) if sort.fetch.is_none() => self.lower(&sort.input),
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => Err(unsupported("LIMIT (Top-N)")),
            LogicalPlan::Join(join) => self.lower_join(join),
            LogicalPlan::Window(window) => self.lower_window(window),
            LogicalPlan::Union(union) => {
                let mut inputs = Vec::with_capacity(union.inputs.len());
                let mut changelog = false;
                for input in &union.inputs {
                    let node = self.lower(input)?;
                    changelog |= self.graph.nodes[node].changelog;
                    // Spread each input over the union's subtasks by all its columns.
                    let keys = self.graph.nodes[node]
                        .schema
                        .columns()
                        .into_iter()
                        .map(Expr::Column)
                        .collect();
                    inputs.push(StreamEdge {
                        from: node,
                        exchange: Exchange::Hash(keys),
                    });
                }
                Ok(self.add(
                    StreamOperator::Union,
                    inputs,
                    union.schema.clone(),
                    changelog,
                    self.parallelism,
                ))
            }
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                Err(SluiceError::unsupported(
                    "a materialized view must read from a table, source or materialized view",
                ))
            }
            LogicalPlan::Unnest(unnest) => self.lower_unnest(unnest),
            LogicalPlan::Subquery(_) => Err(unsupported("a subquery")),
            other => Err(SluiceError::unsupported(format!(
                "{} is not supported in materialized views",
                other.display()
            ))),
        }
    }

    fn lower_scan(&mut self, scan: &TableScan) -> Result<usize> {
        let name = relation_name(&scan.table_name)?;
        let relation = self
            .catalog
            .get(&name)
            .ok_or_else(|| SluiceError::undefined_table(&name))?;
        if scan.fetch.is_some() {
            return Err(unsupported("LIMIT (Top-N)"));
        }
        let full_schema = Arc::new(DFSchema::try_from_qualified_schema(
            scan.table_name.clone(),
            &relation.schema,
        )?);
        let (operator, changelog, parallelism) = match &relation.kind {
            // A table is one partition: its writes are ordered by one writer. Tables
            // without APPEND ONLY take UPDATE and DELETE, so their stream retracts.
            RelationKind::Table { append_only, .. } => (
                StreamOperator::TableScan {
                    table: name.clone(),
                },
                !*append_only,
                1,
            ),
            RelationKind::Source { options } => (
                StreamOperator::SourceScan {
                    source: name.clone(),
                    options: options.clone(),
                },
                false,
                self.source_parallelism.unwrap_or(self.parallelism),
            ),
            RelationKind::MaterializedView {
                changelog,
                partitions,
                ..
            } => (
                StreamOperator::ViewScan { view: name.clone() },
                *changelog,
                *partitions,
            ),
            RelationKind::Sink { .. } | RelationKind::Subscription { .. } => {
                let kind = relation.object_kind().sql_name().to_lowercase();
                return Err(SluiceError::new(
                    SqlState::WRONG_OBJECT_TYPE,
                    format!("\"{name}\" is a {kind}; a query cannot read it"),
                ));
            }
        };
        let mut node = self.add(operator, vec![], full_schema, changelog, parallelism);
        if let Some(watermark) = &relation.watermark {
            let schema = self.graph.nodes[node].schema.clone();
            node = self.add_forward(
                StreamOperator::WatermarkAssign {
                    expr: watermark.expr.clone(),
                },
                node,
                schema,
            );
        }
        if !scan.filters.is_empty() {
            let predicate = scan
                .filters
                .iter()
                .cloned()
                .reduce(Expr::and)
                .expect("checked non-empty");
            let schema = self.graph.nodes[node].schema.clone();
            node = self.add_forward(StreamOperator::Filter { predicate }, node, schema);
        }
        if let Some(projection) = &scan.projection {
            let input_schema = self.graph.nodes[node].schema.clone();
            let exprs = projection
                .iter()
                .map(|&i| Expr::Column(input_schema.columns()[i].clone()))
                .collect();
            node = self.add_forward(
                StreamOperator::Project { exprs },
                node,
                scan.projected_schema.clone(),
            );
        }
        Ok(node)
    }

    /// The parallelism of an operator keyed by `keys` over `input`, and its input edge's
    /// exchange: without keys one subtask, else the job's parallelism, hash-partitioned.
    fn keyed(&self, input: usize, keys: &[Expr]) -> (usize, Exchange) {
        let parallelism = if keys.is_empty() { 1 } else { self.parallelism };
        let exchange = if parallelism == 1 && self.graph.nodes[input].parallelism == 1 {
            Exchange::Forward
        } else {
            Exchange::Hash(keys.to_vec())
        };
        (parallelism, exchange)
    }

    /// The index of `node`'s event-time column: the column its input's `WATERMARK FOR`
    /// names, followed through filters and projections that pass it on unchanged.
    fn event_time_index(&self, node: usize) -> Option<usize> {
        let n = &self.graph.nodes[node];
        match &n.operator {
            StreamOperator::WatermarkAssign { expr } => {
                let refs = expr.column_refs();
                let [column] = refs.into_iter().collect::<Vec<_>>()[..] else {
                    return None;
                };
                n.schema
                    .fields()
                    .iter()
                    .position(|f| f.name() == &column.name)
            }
            StreamOperator::Filter { .. } | StreamOperator::TemporalFilter { .. } => {
                self.event_time_index(n.inputs[0].from)
            }
            StreamOperator::Project { exprs } => {
                let input = n.inputs[0].from;
                let time = self.event_time_index(input)?;
                let input_schema = &self.graph.nodes[input].schema;
                exprs.iter().position(|e| {
                    matches!(e.clone().unalias(), Expr::Column(c)
                        if input_schema.index_of_column(&c).ok() == Some(time))
                })
            }
            _ => None,
        }
    }

    fn lower_join(&mut self, join: &Join) -> Result<usize> {
        let marker_above = std::mem::take(&mut self.temporal_join_above);
        if let Some(filter) = crate::temporal_join::take_marker(join.filter.as_ref()) {
            self.condition_above_join = None;
            return self.lower_temporal_join(join, filter);
        }
        if marker_above {
            self.condition_above_join = None;
            return self.lower_temporal_join(join, join.filter.clone());
        }
        let condition_above = self.condition_above_join.take();
        let (outer, semi_anti) = match join.join_type {
            JoinType::Inner => (false, false),
            JoinType::Left | JoinType::Right | JoinType::Full => (true, false),
            JoinType::LeftSemi | JoinType::LeftAnti => (false, true),
            other => return Err(unsupported(&format!("a {other} join"))),
        };
        if semi_anti && join.filter.is_some() {
            return Err(unsupported(
                "an IN/EXISTS subquery or INTERSECT/EXCEPT with conditions other than key equalities",
            ));
        }
        if join.on.is_empty() {
            return Err(unsupported(
                "a join without an equality condition (write JOIN ... ON a.key = b.key)",
            ));
        }
        let nulls_equal = join.null_equality == NullEquality::NullEqualsNull;
        if nulls_equal && !semi_anti {
            return Err(unsupported("a join on IS NOT DISTINCT FROM"));
        }
        if let Some(filter) = &join.filter {
            check_no_subqueries(std::slice::from_ref(filter))?;
        }
        let left = self.lower(&join.left)?;
        let right = self.lower(&join.right)?;
        let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = join.on.iter().cloned().unzip();
        // An inner join of append-only inputs whose condition bounds event times is an
        // interval join: rows are forgotten once the watermark passes their bounds.
        let append_only = !self.graph.nodes[left].changelog && !self.graph.nodes[right].changelog;
        let condition = [join.filter.clone(), condition_above]
            .into_iter()
            .flatten()
            .reduce(Expr::and);
        let intervals = match &condition {
            Some(condition) if join.join_type == JoinType::Inner && append_only => interval_bounds(
                condition,
                [join.left.schema(), join.right.schema()],
                [self.event_time_index(left), self.event_time_index(right)],
            )
            .map(Box::new),
            _ => None,
        };
        // An outer join retracts padded rows when matches arrive; an anti join retracts a
        // row when its first match arrives.
        let changelog = outer
            || join.join_type == JoinType::LeftAnti
            || self.graph.nodes[left].changelog
            || self.graph.nodes[right].changelog;
        Ok(self.add(
            StreamOperator::Join {
                join_type: join.join_type,
                left_keys: left_keys.clone(),
                right_keys: right_keys.clone(),
                filter: join.filter.clone(),
                nulls_equal,
                null_aware: join.null_aware,
                // Both inputs append-only and a key pair window_end = window_end: a
                // window join, whose windows close as the watermark passes them.
                windows: (!semi_anti && append_only)
                    .then(|| {
                        left_keys
                            .iter()
                            .zip(&right_keys)
                            .position(|(l, r)| is_window_end(l) && is_window_end(r))
                    })
                    .flatten()
                    .map(|index| WindowKey {
                        index,
                        allowed_lateness_ms: self.allowed_lateness_ms,
                    }),
                intervals,
            },
            hash_inputs(left, left_keys, right, right_keys),
            join.schema.clone(),
            changelog,
            // NOT IN judges rows by facts about the whole subquery: one subtask.
            if join.null_aware { 1 } else { self.parallelism },
        ))
    }

    /// `JOIN t FOR SYSTEM_TIME AS OF PROCTIME()` (see [`crate::temporal_join`]), with the
    /// rest of its ON condition `filter`.
    fn lower_temporal_join(&mut self, join: &Join, filter: Option<Expr>) -> Result<usize> {
        let outer = match join.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            other => return Err(unsupported(&format!("a {other} temporal join"))),
        };
        if join.on.is_empty() {
            return Err(unsupported(
                "a temporal join without an equality condition (write ON s.key = t.key)",
            ));
        }
        if join.null_equality == NullEquality::NullEqualsNull {
            return Err(unsupported("a temporal join on IS NOT DISTINCT FROM"));
        }
        if let Some(filter) = &filter {
            check_no_subqueries(std::slice::from_ref(filter))?;
        }
        let left = self.lower(&join.left)?;
        if self.graph.nodes[left].changelog {
            return Err(unsupported(
                "a temporal join whose left input updates or deletes rows (it must be append-only: a source, an APPEND ONLY table, or a view of them)",
            ));
        }
        let right = self.lower(&join.right)?;
        let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = join.on.iter().cloned().unzip();
        Ok(self.add(
            StreamOperator::TemporalJoin {
                outer,
                left_keys: left_keys.clone(),
                right_keys: right_keys.clone(),
                filter,
            },
            hash_inputs(left, left_keys, right, right_keys),
            join.schema.clone(),
            false,
            self.parallelism,
        ))
    }

    /// UNNEST of list columns (what HOP and CUMULATE windows become).
    fn lower_unnest(&mut self, unnest: &Unnest) -> Result<usize> {
        if !unnest.struct_type_columns.is_empty() {
            return Err(unsupported("UNNEST of a struct"));
        }
        if unnest.options.recursions.iter().any(|r| r.depth != 1)
            || unnest.list_type_columns.iter().any(|(_, l)| l.depth != 1)
        {
            return Err(unsupported("UNNEST of nested lists"));
        }
        let input = self.lower(&unnest.input)?;
        let input_schema = &self.graph.nodes[input].schema;
        let mut lists: Vec<usize> = unnest.list_type_columns.iter().map(|(i, _)| *i).collect();
        lists.dedup();
        for &i in &lists {
            let data_type = input_schema.field(i).data_type();
            if !matches!(data_type, arrow::datatypes::DataType::List(_)) {
                return Err(unsupported(&format!("UNNEST of {data_type}")));
            }
        }
        Ok(self.add_forward(
            StreamOperator::Unnest {
                lists,
                sources: unnest.dependency_indices.clone(),
                null_handling: unnest.options.null_handling,
            },
            input,
            unnest.schema.clone(),
        ))
    }

    /// Window functions: ROW_NUMBER under a filter that limits it (Top-N), and the
    /// session window functions of `SESSION(...)`.
    /// OVER aggregates (see [`crate::over`]).
    fn lower_over(&mut self, window: &Window, over: crate::over::OverSpec) -> Result<usize> {
        let input = self.lower(&window.input)?;
        if self.graph.nodes[input].changelog {
            return Err(unsupported(
                "an OVER aggregate over an input that updates or deletes rows (it must be append-only)",
            ));
        }
        let order_index = match &over.order_by {
            Expr::Column(c) => window.input.schema().index_of_column(c).ok(),
            _ => None,
        };
        let time = self.event_time_index(input);
        if time.is_none() || time != order_index {
            return Err(unsupported(
                "an OVER aggregate whose ORDER BY is not its input's event-time column (the column of a WATERMARK FOR)",
            ));
        }
        let (parallelism, exchange) = self.keyed(input, &over.partition_by);
        Ok(self.add(
            StreamOperator::OverAggregate {
                partition_by: over.partition_by,
                time: over.order_by,
                aggr_exprs: over.aggr_exprs,
                frame: over.frame,
            },
            vec![StreamEdge {
                from: input,
                exchange,
            }],
            window.schema.clone(),
            false,
            parallelism,
        ))
    }

    fn lower_window(&mut self, window: &Window) -> Result<usize> {
        if let [e] = window.window_expr.as_slice()
            && let Expr::WindowFunction(f) = e.clone().unalias()
            && matches!(&f.fun, WindowFunctionDefinition::WindowUDF(udf) if udf.name() == "row_number")
        {
            let column = window.schema.field(window.schema.fields().len() - 1).name();
            let limit = match self.top_n_limit.take() {
                Some((name, limit)) if &name == column => limit,
                _ => {
                    return Err(unsupported(
                        "ROW_NUMBER() without a filter that limits it (write WHERE rn <= N for a Top-N)",
                    ));
                }
            };
            let input = self.lower(&window.input)?;
            let partition_by = f.params.partition_by.clone();
            let (parallelism, exchange) = self.keyed(input, &partition_by);
            let windows = partition_by
                .iter()
                .position(is_window_end)
                .map(|index| WindowKey {
                    index,
                    allowed_lateness_ms: self.allowed_lateness_ms,
                });
            return Ok(self.add(
                StreamOperator::TopN {
                    partition_by,
                    order_by: f.params.order_by.clone(),
                    limit,
                    windows,
                },
                vec![StreamEdge {
                    from: input,
                    exchange,
                }],
                window.schema.clone(),
                true,
                parallelism,
            ));
        }
        if let Some(over) = crate::over::over_aggregates(window)? {
            return self.lower_over(window, over);
        }
        let mut session: Option<(&WindowFunction, Vec<bool>)> = None;
        for e in &window.window_expr {
            let f: &WindowFunction = match e {
                Expr::WindowFunction(f) => f,
                Expr::Alias(a) => match a.expr.as_ref() {
                    Expr::WindowFunction(f) => f,
                    _ => return Err(unsupported("a window function (OVER)")),
                },
                _ => return Err(unsupported("a window function (OVER)")),
            };
            let start = match &f.fun {
                WindowFunctionDefinition::WindowUDF(udf) => match udf.name() {
                    crate::windows::SESSION_WINDOW_START => true,
                    crate::windows::SESSION_WINDOW_END => false,
                    _ => return Err(unsupported("a window function (OVER)")),
                },
                _ => return Err(unsupported("a window function (OVER)")),
            };
            match &mut session {
                None => session = Some((f, vec![start])),
                Some((first, bounds)) => {
                    if first.params.args != f.params.args
                        || first.params.partition_by != f.params.partition_by
                    {
                        return Err(unsupported("two different SESSION windows in one query"));
                    }
                    bounds.push(start);
                }
            }
        }
        let (f, bounds) = session.ok_or_else(|| unsupported("a window function (OVER)"))?;
        let (time, gap) = match f.params.args.as_slice() {
            [time, Expr::Literal(gap, _)] => (time.clone(), gap.clone()),
            [_, gap] => {
                return Err(SluiceError::unsupported(format!(
                    "a SESSION window's gap must be a constant interval, not {gap}"
                )));
            }
            _ => {
                return Err(SluiceError::internal(
                    "session window functions take (time, gap)",
                ));
            }
        };
        check_positive_gap(&gap)?;
        let emit_on_close = self.emit_on_window_close;
        self.window_close_claimed |= emit_on_close;
        let input = self.lower(&window.input)?;
        if self.graph.nodes[input].changelog {
            return Err(SluiceError::unsupported(
                "SESSION windows need an append-only input (an APPEND ONLY table, a source, or a view without retractions)",
            ));
        }
        let partition_by = f.params.partition_by.clone();
        let (parallelism, exchange) = self.keyed(input, &partition_by);
        Ok(self.add(
            StreamOperator::SessionWindow {
                partition_by,
                time,
                gap,
                bounds,
                emit_on_close,
                allowed_lateness_ms: self.allowed_lateness_ms,
            },
            vec![StreamEdge {
                from: input,
                exchange,
            }],
            window.schema.clone(),
            !emit_on_close,
            parallelism,
        ))
    }

    fn lower_aggregate(&mut self, agg: &Aggregate) -> Result<usize> {
        if agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Err(unsupported("GROUPING SETS, ROLLUP and CUBE"));
        }
        check_no_subqueries(&agg.aggr_expr)?;
        check_no_now(&agg.aggr_expr)?;
        check_no_now(&agg.group_expr)?;
        for e in &agg.aggr_expr {
            let mut ordered = false;
            e.apply(|e| {
                if let Expr::AggregateFunction(f) = e {
                    ordered |= !f.params.order_by.is_empty();
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })?;
            if ordered {
                return Err(unsupported("an aggregate with ORDER BY"));
            }
        }
        // The top-most aggregate claims EMIT ON WINDOW CLOSE; decide before lowering
        // the input, which may hold aggregates of its own.
        let claims_window_close = self.emit_on_window_close && !self.window_close_claimed;
        self.window_close_claimed |= claims_window_close;
        let input = self.lower(&agg.input)?;
        let (parallelism, exchange) = self.keyed(input, &agg.group_expr);
        // A GROUP BY over window_end is a window aggregate: windows close as the watermark
        // passes them. Over a retracting input groups stay open (a retraction may come for
        // any window), and EMIT ON WINDOW CLOSE is refused.
        let end_index = agg.group_expr.iter().position(is_window_end);
        let append_only = !self.graph.nodes[input].changelog;
        if claims_window_close {
            if !append_only {
                return Err(SluiceError::unsupported(
                    "EMIT ON WINDOW CLOSE needs an append-only input (an APPEND ONLY table or a source)",
                ));
            }
            if end_index.is_none() {
                return Err(SluiceError::unsupported(
                    "EMIT ON WINDOW CLOSE needs window_end (of a TUMBLE, HOP, CUMULATE or SESSION window) in the GROUP BY",
                ));
            }
        }
        let window = end_index
            .filter(|_| append_only)
            .map(|end_index| WindowAggregate {
                end_index,
                emit_on_close: claims_window_close,
                allowed_lateness_ms: self.allowed_lateness_ms,
            });
        Ok(self.add(
            StreamOperator::Aggregate {
                group_exprs: agg.group_expr.clone(),
                aggr_exprs: agg.aggr_expr.clone(),
                window,
            },
            vec![StreamEdge {
                from: input,
                exchange,
            }],
            agg.schema.clone(),
            // A window emitted on close is final: the output is append-only.
            !claims_window_close,
            parallelism,
        ))
    }
}

/// The catalog name of a table reference: `t`, `public.t` or `sluice.public.t`.
pub fn relation_name(reference: &TableReference) -> Result<String> {
    let schema_ok = reference.schema().is_none_or(|s| s == "public");
    let catalog_ok = match reference {
        TableReference::Full { catalog, .. } => catalog.as_ref() == "sluice",
        _ => true,
    };
    if !schema_ok || !catalog_ok {
        return Err(SluiceError::unsupported(format!(
            "materialized views can read only Sluice's own tables, sources and views, not {reference}"
        )));
    }
    Ok(reference.table().to_string())
}

/// `rn <= N`, `rn < N` or `rn = 1` among a filter's conjuncts, where `rn` is (through
/// projections and aliases) the column of a window function below: that column's name in
/// the window's output, and N.
fn row_number_limit(filter: &datafusion::logical_expr::Filter) -> Option<(String, usize)> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    for conjunct in datafusion::logical_expr::utils::split_conjunction(&filter.predicate) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
            continue;
        };
        // Type coercion may have cast either side (the row number is unsigned).
        fn uncast(e: &Expr) -> &Expr {
            match e {
                Expr::Cast(c) => uncast(&c.expr),
                Expr::TryCast(c) => uncast(&c.expr),
                other => other,
            }
        }
        let (column, op, value) = match (uncast(left), uncast(right)) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => (c, op.swap()?, v),
            _ => continue,
        };
        let n = match value.cast_to(&arrow::datatypes::DataType::Int64).ok()? {
            ScalarValue::Int64(Some(n)) => n,
            _ => continue,
        };
        let limit = match op {
            Operator::LtEq => n,
            Operator::Lt => n - 1,
            Operator::Eq if n == 1 => 1,
            _ => continue,
        };
        if limit < 1 {
            continue;
        }
        if let Some(name) = window_column(&filter.input, column) {
            return Some((name, limit as usize));
        }
    }
    None
}

/// Follows `column` down through aliases and projections that pass it on; if a window
/// function computes it, the column's name in that window's output.
fn window_column(plan: &LogicalPlan, column: &datafusion::common::Column) -> Option<String> {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => {
            let (_, field) = alias.schema.qualified_field_from_column(column).ok()?;
            window_column(
                &alias.input,
                &datafusion::common::Column::new_unqualified(field.name()),
            )
        }
        LogicalPlan::Projection(p) => {
            let index = p.schema.index_of_column(column).ok()?;
            match p.expr[index].clone().unalias() {
                Expr::Column(c) => window_column(&p.input, &c),
                _ => None,
            }
        }
        LogicalPlan::Window(w) => {
            let index = w.schema.index_of_column(column).ok().or_else(|| {
                w.schema
                    .fields()
                    .iter()
                    .position(|f| f.name() == &column.name)
            })?;
            (index >= w.input.schema().fields().len()).then(|| w.schema.field(index).name().clone())
        }
        _ => None,
    }
}

/// A two-input operator's edges, each hash-partitioned by its side's keys.
fn hash_inputs(
    left: usize,
    left_keys: Vec<Expr>,
    right: usize,
    right_keys: Vec<Expr>,
) -> Vec<StreamEdge> {
    vec![
        StreamEdge {
            from: left,
            exchange: Exchange::Hash(left_keys),
        },
        StreamEdge {
            from: right,
            exchange: Exchange::Hash(right_keys),
        },
    ]
}

/// Whether `e` is a column named `window_end` (of a window table function).
fn is_window_end(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == "window_end")
}

/// A session gap must be a positive fixed interval.
fn check_positive_gap(gap: &ScalarValue) -> Result<()> {
    let nanos =
        crate::windows::interval_in_units(gap, arrow::datatypes::TimeUnit::Nanosecond, "gap")?;
    if nanos <= 0 {
        return Err(SluiceError::new(
            SqlState::INVALID_PARAMETER_VALUE,
            "a SESSION window's gap must be positive",
        ));
    }
    Ok(())
}

fn check_no_subqueries(exprs: &[Expr]) -> Result<()> {
    for e in exprs {
        let found = e.exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
            ))
        })?;
        if found {
            return Err(unsupported("a subquery"));
        }
    }
    Ok(())
}

fn check_unique_column_names(schema: &DFSchema) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for field in schema.fields() {
        if !seen.insert(field.name().as_str()) {
            return Err(SluiceError::new(
                SqlState::DUPLICATE_OBJECT,
                format!(
                    "column \"{}\" appears more than once in the view's output; give each column its own alias",
                    field.name()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Relation;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    async fn graph(sql: &str, parallelism: usize) -> Result<StreamGraph> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let ctx = SessionContext::new();
        crate::register_functions(&ctx);
        for name in ["t", "s"] {
            let table = MemTable::try_new(schema.clone(), vec![vec![]]).unwrap();
            ctx.register_table(name, Arc::new(table)).unwrap();
        }
        let mut catalog = Catalog::new();
        catalog
            .insert(Relation {
                id: 1,
                name: "t".into(),
                schema: schema.clone(),
                kind: RelationKind::Table {
                    primary_key: vec![],
                    append_only: true,
                },
                watermark: None,
            })
            .unwrap();
        catalog
            .insert(Relation {
                id: 2,
                name: "s".into(),
                schema,
                kind: RelationKind::Source {
                    options: [("connector".to_string(), "datagen".to_string())].into(),
                },
                watermark: None,
            })
            .unwrap();
        let plan = ctx.state().create_logical_plan(sql).await?;
        let state = ctx.state();
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})?;
        plan_stream_graph(&plan, "v", &catalog, parallelism, ViewOptions::default())
    }

    fn operators(g: &StreamGraph) -> Vec<&'static str> {
        g.nodes.iter().map(|n| n.operator.name()).collect()
    }

    #[tokio::test]
    async fn group_by_hash_partitions_by_the_group_keys_and_outputs_a_changelog() {
        let g = graph("SELECT k, count(*) AS n FROM t WHERE v > 0 GROUP BY k", 4)
            .await
            .unwrap();
        assert_eq!(
            operators(&g),
            vec!["TableScan", "Filter", "Aggregate", "Project", "Materialize"]
        );
        let agg = &g.nodes[2];
        assert!(matches!(&agg.inputs[0].exchange, Exchange::Hash(keys) if keys.len() == 1));
        assert!(agg.changelog && !g.nodes[1].changelog);
        assert_eq!(agg.parallelism, 4);
        // Scan and filter chain into one task; aggregate, project and sink into another.
        assert_eq!(g.chains(), vec![vec![0, 1], vec![2, 3, 4]]);
        let text = g.to_string();
        assert!(text.contains("Exchange [hash(t.k)]"), "{text}");
    }

    #[tokio::test]
    async fn global_aggregate_runs_on_one_subtask() {
        let g = graph("SELECT sum(v) FROM s", 4).await.unwrap();
        assert_eq!(
            g.nodes[0].parallelism, 4,
            "a source scans at the job's parallelism"
        );
        let agg = g
            .nodes
            .iter()
            .find(|n| n.operator.name() == "Aggregate")
            .unwrap();
        assert_eq!(agg.parallelism, 1);
        assert!(matches!(&agg.inputs[0].exchange, Exchange::Hash(keys) if keys.is_empty()));
    }

    #[tokio::test]
    async fn stateless_view_is_one_append_only_chain() {
        let g = graph(
            "SELECT k + 1 AS k1, upper(CAST(v AS VARCHAR)) AS s FROM t",
            2,
        )
        .await
        .unwrap();
        assert_eq!(g.chains().len(), 1);
        assert!(!g.sink().changelog);
    }

    #[tokio::test]
    async fn constructs_without_a_streaming_operator_are_named_in_the_error() {
        for (sql, construct) in [
            (
                "SELECT a.k FROM t a LEFT JOIN t b ON a.v < b.v",
                "a join without an equality condition",
            ),
            ("SELECT k FROM t ORDER BY k LIMIT 3", "LIMIT"),
            (
                "SELECT k, row_number() OVER (ORDER BY v) FROM t",
                "ROW_NUMBER() without a filter that limits it",
            ),
            (
                "SELECT k, sum(v) OVER (ORDER BY v) FROM t",
                "OVER aggregate whose ORDER BY is not its input's event-time column",
            ),
            (
                "SELECT k, lag(v) OVER (ORDER BY v) FROM t",
                "window function",
            ),
            ("SELECT 1", "must read from a table"),
        ] {
            let err = graph(sql, 1).await.unwrap_err();
            assert_eq!(err.state, SqlState::FEATURE_NOT_SUPPORTED, "{sql}");
            assert!(err.message.contains(construct), "{sql}: {}", err.message);
        }
    }
}
