//! OVER aggregations: `agg(x) OVER (PARTITION BY k ORDER BY ts <frame>)` in a view.
//!
//! As in Flink, the input must be append-only and ordered by its event time (the column
//! its `WATERMARK FOR` names): rows are emitted once the watermark passes them, each
//! with its aggregates over the frame of its partition in time order, so the result
//! never changes once emitted. Frames end at the current row and start a number of rows
//! back (`ROWS`), an interval back (`RANGE`), or at the partition's first row
//! (`UNBOUNDED PRECEDING`, the default with ORDER BY).

use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, WindowFunction};
use datafusion::logical_expr::{
    Expr, SortExpr, Window, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use datafusion::scalar::ScalarValue;
use sluice_common::error::{Result, SluiceError};

use crate::graph::OverFrame;

/// What one `Window` node of OVER aggregates computes.
pub struct OverSpec {
    pub partition_by: Vec<Expr>,
    /// The ORDER BY expression (checked against the event time by the planner).
    pub order_by: Expr,
    /// The window expressions as aggregate function expressions.
    pub aggr_exprs: Vec<Expr>,
    pub frame: OverFrame,
}

/// The OVER aggregates of `window`, or `None` when its functions are not aggregates.
/// Fails with `0A000` for what the streaming operator cannot compute.
pub fn over_aggregates(window: &Window) -> Result<Option<OverSpec>> {
    let mut spec: Option<OverSpec> = None;
    for e in &window.window_expr {
        let f: &WindowFunction = match e.clone().unalias() {
            Expr::WindowFunction(_) => match e {
                Expr::WindowFunction(f) => f,
                Expr::Alias(a) => match a.expr.as_ref() {
                    Expr::WindowFunction(f) => f,
                    _ => return Ok(None),
                },
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let WindowFunctionDefinition::AggregateUDF(udf) = &f.fun else {
            return Ok(None);
        };
        let params = &f.params;
        if params.distinct || params.filter.is_some() {
            return Err(unsupported("DISTINCT or FILTER in an OVER aggregate"));
        }
        let order_by = match params.order_by.as_slice() {
            [
                SortExpr {
                    expr, asc: true, ..
                },
            ] => expr.clone(),
            _ => {
                return Err(unsupported(
                    "an OVER aggregate needs ORDER BY the event-time column, ascending",
                ));
            }
        };
        let frame = frame_of(f)?;
        let aggregate = Expr::AggregateFunction(AggregateFunction {
            func: udf.clone(),
            params: AggregateFunctionParams {
                args: params.args.clone(),
                distinct: false,
                filter: None,
                order_by: Vec::new(),
                null_treatment: params.null_treatment,
            },
        });
        match &mut spec {
            None => {
                spec = Some(OverSpec {
                    partition_by: params.partition_by.clone(),
                    order_by,
                    aggr_exprs: vec![aggregate],
                    frame,
                })
            }
            Some(spec) => {
                if spec.partition_by != params.partition_by
                    || spec.order_by != order_by
                    || spec.frame != frame
                {
                    return Err(unsupported(
                        "OVER aggregates with different windows in one query (use one PARTITION BY, ORDER BY and frame)",
                    ));
                }
                spec.aggr_exprs.push(aggregate);
            }
        }
    }
    Ok(spec)
}

/// The frame of `f`, which must end at the current row.
fn frame_of(f: &WindowFunction) -> Result<OverFrame> {
    let frame = &f.params.window_frame;
    if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
        return Err(unsupported(
            "an OVER frame that ends after the current row (write ... AND CURRENT ROW)",
        ));
    }
    let preceding = match &frame.start_bound {
        WindowFrameBound::Preceding(v) if v.is_null() => None,
        WindowFrameBound::Preceding(v) => Some(v.clone()),
        WindowFrameBound::CurrentRow => Some(ScalarValue::UInt64(Some(0))),
        WindowFrameBound::Following(_) => {
            return Err(unsupported(
                "an OVER frame that starts after the current row",
            ));
        }
    };
    match frame.units {
        WindowFrameUnits::Rows => Ok(OverFrame::Rows(
            preceding
                .map(|v| {
                    v.cast_to(&arrow::datatypes::DataType::UInt64)
                        .ok()
                        .and_then(|v| match v {
                            ScalarValue::UInt64(n) => n,
                            _ => None,
                        })
                        .ok_or_else(|| unsupported("a ROWS frame whose bound is not a row count"))
                })
                .transpose()?,
        )),
        WindowFrameUnits::Range => Ok(OverFrame::Range(
            preceding
                .map(|v| {
                    if v == ScalarValue::UInt64(Some(0)) {
                        return Ok(0);
                    }
                    crate::windows::interval_in_units(
                        &v,
                        arrow::datatypes::TimeUnit::Millisecond,
                        "RANGE frame",
                    )
                })
                .transpose()?,
        )),
        WindowFrameUnits::Groups => Err(unsupported("a GROUPS frame in an OVER aggregate")),
    }
}

fn unsupported(what: &str) -> SluiceError {
    SluiceError::unsupported(format!("{what} is not supported in materialized views"))
}
