//! Processing-time temporal joins: `stream [LEFT] JOIN t FOR SYSTEM_TIME AS OF PROCTIME()
//! ON ...` (RisingWave's and Flink's lookup join).
//!
//! Each row of the stream joins the rows `t` holds when the row arrives; later changes
//! of `t` do not revisit rows already joined, so the result is append-only and `t`'s
//! state is all the join keeps. The stream must be append-only.
//!
//! DataFusion ignores table versions, so before planning [`rewrite_temporal_joins`]
//! takes `FOR SYSTEM_TIME AS OF` off the table and adds the marker
//! `__sluice_temporal_join()` (always true) to the join's ON condition. A batch query
//! then joins the table as it is now, which is what the clause means for one query, and
//! the streaming planner ([`take_marker`]) lowers the marked join to a temporal join.

use std::ops::ControlFlow;

use datafusion::common::Result as DfResult;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    self, JoinConstraint, JoinOperator, Query, SetExpr, TableFactor, TableVersion, TableWithJoins,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use sluice_common::error::{Result, SluiceError};

/// The marker a temporal join's ON condition carries.
pub const TEMPORAL_JOIN_MARKER: &str = "__sluice_temporal_join";

/// Rewrites every `JOIN t FOR SYSTEM_TIME AS OF PROCTIME()` in `statement` (see the module
/// docs). Fails with `0A000` on versions it cannot run: other times than processing
/// time, outside a join's right side, or joins other than inner and left.
pub fn rewrite_temporal_joins(statement: &mut ast::Statement) -> Result<()> {
    match statement.visit(&mut TemporalJoinRewriter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct TemporalJoinRewriter;

impl VisitorMut for TemporalJoinRewriter {
    type Break = SluiceError;

    // Queries are visited before their tables, so a version still on a table when it is
    // visited was not on a join's right side.
    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<SluiceError> {
        match rewrite_set_expr(&mut query.body) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SluiceError> {
        match factor {
            TableFactor::Table {
                version: Some(version),
                ..
            } => ControlFlow::Break(SluiceError::unsupported(format!(
                "{version} is supported on the right side of a JOIN only (a temporal join)"
            ))),
            _ => ControlFlow::Continue(()),
        }
    }
}

fn rewrite_set_expr(body: &mut SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) => select.from.iter_mut().try_for_each(rewrite_joins),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left)?;
            rewrite_set_expr(right)
        }
        _ => Ok(()),
    }
}

fn rewrite_joins(from: &mut TableWithJoins) -> Result<()> {
    if let TableFactor::NestedJoin {
        table_with_joins, ..
    } = &mut from.relation
    {
        rewrite_joins(table_with_joins)?;
    }
    for join in &mut from.joins {
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = &mut join.relation
        {
            rewrite_joins(table_with_joins)?;
        }
        let TableFactor::Table { version, .. } = &mut join.relation else {
            continue;
        };
        if !matches!(version, Some(TableVersion::ForSystemTimeAsOf(_))) {
            // Other versions stay, for the table factor check to refuse.
            continue;
        }
        let Some(TableVersion::ForSystemTimeAsOf(time)) = version.take() else {
            continue;
        };
        if !is_processing_time(&time) {
            return Err(SluiceError::unsupported(format!(
                "FOR SYSTEM_TIME AS OF {time}: only processing-time temporal joins (FOR SYSTEM_TIME AS OF PROCTIME()) are supported; event-time temporal joins are not yet"
            )));
        }
        let constraint = match &mut join.join_operator {
            JoinOperator::Join(c)
            | JoinOperator::Inner(c)
            | JoinOperator::Left(c)
            | JoinOperator::LeftOuter(c) => c,
            _ => {
                return Err(SluiceError::unsupported(
                    "a temporal join (FOR SYSTEM_TIME AS OF) must be an inner or a LEFT join",
                ));
            }
        };
        let JoinConstraint::On(on) = constraint else {
            return Err(SluiceError::unsupported(
                "a temporal join (FOR SYSTEM_TIME AS OF) needs an ON condition with key equalities",
            ));
        };
        let condition = std::mem::replace(on, ast::Expr::value(ast::Value::Null));
        *on = ast::Expr::BinaryOp {
            left: Box::new(ast::Expr::Nested(Box::new(condition))),
            op: ast::BinaryOperator::And,
            right: Box::new(marker_call()?),
        };
    }
    Ok(())
}

/// `PROCTIME()`, `NOW()`, `CURRENT_TIMESTAMP` or `LOCALTIMESTAMP`.
fn is_processing_time(time: &ast::Expr) -> bool {
    let ast::Expr::Function(f) = time else {
        return false;
    };
    let no_arguments = match &f.args {
        ast::FunctionArguments::None => true,
        ast::FunctionArguments::List(list) => list.args.is_empty(),
        ast::FunctionArguments::Subquery(_) => false,
    };
    let name = f.name.to_string().to_lowercase();
    no_arguments
        && ["proctime", "now", "current_timestamp", "localtimestamp"].contains(&name.as_str())
}

fn marker_call() -> Result<ast::Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("{TEMPORAL_JOIN_MARKER}()"))
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| SluiceError::internal(format!("temporal join marker: {e}")))
}

/// If `filter` (a join's non-equality condition) holds the temporal join marker: the
/// rest of it (`None` when the marker was all of it).
pub fn take_marker(filter: Option<&Expr>) -> Option<Option<Expr>> {
    let filter = filter?;
    let parts = split_conjunction(filter);
    let is_marker =
        |e: &&Expr| matches!(e, Expr::ScalarFunction(f) if f.name() == TEMPORAL_JOIN_MARKER);
    if !parts.iter().any(is_marker) {
        return None;
    }
    Some(conjunction(
        parts.into_iter().filter(|e| !is_marker(e)).cloned(),
    ))
}

/// Registers the marker with a DataFusion context.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(TemporalJoinMarker {
        signature: Signature::new(TypeSignature::Nullary, Volatility::Volatile),
    }));
}

/// `__sluice_temporal_join()`: true. Volatile, so that no rewrite folds it away before
/// the streaming planner sees it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TemporalJoinMarker {
    signature: Signature,
}

impl ScalarUDFImpl for TemporalJoinMarker {
    fn name(&self) -> &str {
        TEMPORAL_JOIN_MARKER
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[arrow::datatypes::DataType],
    ) -> DfResult<arrow::datatypes::DataType> {
        Ok(arrow::datatypes::DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_sql;
    use crate::parser::Statement;

    fn rewrite(sql: &str) -> Result<String> {
        let Statement::Query(mut query) = parse_sql(sql)?.remove(0).statement else {
            panic!("not a query: {sql}");
        };
        rewrite_temporal_joins(&mut query)?;
        Ok(query.to_string())
    }

    #[test]
    fn a_processing_time_version_becomes_a_marked_join() {
        let sql = rewrite(
            "SELECT * FROM o LEFT JOIN r FOR SYSTEM_TIME AS OF PROCTIME() AS x ON o.k = x.k",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT * FROM o LEFT JOIN r AS x ON (o.k = x.k) AND __sluice_temporal_join()"
        );
    }

    #[test]
    fn other_versions_and_places_are_refused() {
        for sql in [
            "SELECT * FROM o JOIN r FOR SYSTEM_TIME AS OF o.ts ON o.k = r.k",
            "SELECT * FROM r FOR SYSTEM_TIME AS OF PROCTIME()",
            "SELECT * FROM o FULL JOIN r FOR SYSTEM_TIME AS OF PROCTIME() ON o.k = r.k",
            "SELECT * FROM o JOIN r FOR SYSTEM_TIME AS OF PROCTIME() USING (k)",
        ] {
            let e = rewrite(sql).expect_err(sql);
            assert_eq!(e.state.code(), "0A000", "{sql}: {}", e.message);
        }
    }
}
