//! Temporal filters: `WHERE ts > now() - INTERVAL '1' HOUR` in a materialized view.
//!
//! DataFusion folds `now()` into a constant when it optimizes a batch query; a view must
//! instead keep a row while the condition holds as the clock moves, and retract it when it
//! stops holding. The planner splits such a condition off a filter into a
//! `TemporalFilter` node: the row's time expression, and how far behind the clock the
//! bound is (`offset_ms`, here one hour), found by evaluating the bound at a known instant.
//! `now()` anywhere else in a view is refused.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Int64Type, Schema, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use sluice_common::error::{Result, SluiceError};

/// A row passes while `time > now() - offset` (or `>=` when `inclusive`).
#[derive(Debug, Clone)]
pub struct TemporalCondition {
    pub time: Expr,
    pub offset_ms: i64,
    pub inclusive: bool,
}

fn is_now(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(f) if f.name() == "now")
}

fn mentions_now(e: &Expr) -> bool {
    e.exists(|e| Ok(is_now(e))).unwrap_or(false)
}

fn usage() -> SluiceError {
    SluiceError::unsupported(
        "now() in a materialized view works only as a lower bound on a row's time in WHERE, \
         e.g. WHERE ts > now() - INTERVAL '1' HOUR",
    )
}

/// Refuses `now()` in expressions that are not a temporal filter.
pub fn check_no_now(exprs: &[Expr]) -> Result<()> {
    if exprs.iter().any(mentions_now) {
        return Err(usage());
    }
    Ok(())
}

/// Splits a filter predicate into its temporal condition (if any) and the rest.
pub fn split_temporal(predicate: &Expr) -> Result<(Option<TemporalCondition>, Option<Expr>)> {
    let mut temporal = None;
    let mut rest = Vec::new();
    for conjunct in split_conjunction(predicate) {
        if !mentions_now(conjunct) {
            rest.push(conjunct.clone());
            continue;
        }
        if temporal.is_some() {
            return Err(SluiceError::unsupported(
                "a materialized view's filter may compare with now() once",
            ));
        }
        temporal = Some(temporal_condition(conjunct)?);
    }
    Ok((temporal, rest.into_iter().reduce(Expr::and)))
}

fn temporal_condition(conjunct: &Expr) -> Result<TemporalCondition> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
        return Err(usage());
    };
    // `time > bound` or `bound < time`, where only the bound mentions now().
    let (time, bound, inclusive) = match op {
        Operator::Gt | Operator::GtEq if mentions_now(right) && !mentions_now(left) => {
            (left, right, *op == Operator::GtEq)
        }
        Operator::Lt | Operator::LtEq if mentions_now(left) && !mentions_now(right) => {
            (right, left, *op == Operator::LtEq)
        }
        _ => return Err(usage()),
    };
    if !bound.column_refs().is_empty() {
        return Err(usage());
    }
    // The bound at a known instant; the offset is how far it is behind that instant.
    let instant_ms: i64 = 1_700_000_000_000;
    let at_instant = bound
        .as_ref()
        .clone()
        .transform(|e| {
            Ok(if is_now(&e) {
                Transformed::yes(Expr::Literal(
                    ScalarValue::TimestampNanosecond(
                        Some(instant_ms * 1_000_000),
                        Some("+00:00".into()),
                    ),
                    None,
                ))
            } else {
                Transformed::no(e)
            })
        })?
        .data;
    let bound_ms = evaluate_millis(&at_instant)?;
    Ok(TemporalCondition {
        time: time.as_ref().clone(),
        offset_ms: instant_ms - bound_ms,
        inclusive,
    })
}

/// A constant timestamp expression's value, in milliseconds since the epoch.
fn evaluate_millis(expr: &Expr) -> Result<i64> {
    let physical = datafusion::physical_expr::create_physical_expr(
        expr,
        &DFSchema::empty(),
        &ExecutionProps::new(),
        &Default::default(),
    )?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let value = physical.evaluate(&one_row)?.into_array(1)?;
    let millis = arrow::compute::cast(&value, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let millis = arrow::compute::cast(&millis, &DataType::Int64)?;
    let millis = millis.as_primitive::<Int64Type>();
    if millis.is_null(0) {
        return Err(usage());
    }
    Ok(millis.value(0))
}
