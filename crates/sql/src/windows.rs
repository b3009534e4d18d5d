//! Window table functions in FROM, rewritten to plain SQL before planning.
//!
//! `TUMBLE(t, ts, size [, offset])` (RisingWave's spelling) becomes a derived table that
//! adds the window's bounds to every row of `t`:
//!
//! ```sql
//! (SELECT *, date_bin(size, ts [, origin]) AS window_start,
//!            date_bin(size, ts [, origin]) + size AS window_end FROM t) AS t
//! ```
//!
//! so DataFusion plans it like any projection, batch queries and views alike, and the
//! streaming planner needs no special operator to assign windows. A `GROUP BY
//! window_start, window_end` is then an ordinary (updating) aggregate, or, with `EMIT ON
//! WINDOW CLOSE`, one that emits each window once when the watermark passes its end.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, Ident, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use sluice_common::error::{Result, SluiceError};

/// Rewrites every window table function in `statement` (see the module docs).
pub fn rewrite_window_functions(statement: &mut ast::Statement) -> Result<()> {
    match statement.visit(&mut WindowRewriter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct WindowRewriter;

impl VisitorMut for WindowRewriter {
    type Break = SluiceError;

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SluiceError> {
        // RisingWave: `FROM TUMBLE(t, ts, size)`; Flink: `FROM TABLE(TUMBLE(TABLE t,
        // DESCRIPTOR(ts), size))`, whose `TABLE t` the parser has already unwrapped.
        let (name, args, flink) = match &*factor {
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => (name.to_string(), args.args.clone(), false),
            TableFactor::TableFunction {
                expr: ast::Expr::Function(f),
                ..
            } => match &f.args {
                ast::FunctionArguments::List(list) => (f.name.to_string(), list.args.clone(), true),
                _ => return ControlFlow::Continue(()),
            },
            _ => return ControlFlow::Continue(()),
        };
        let alias = match factor {
            TableFactor::Table { alias, .. } | TableFactor::TableFunction { alias, .. } => {
                alias.clone()
            }
            _ => None,
        };
        let function = name.to_lowercase();
        let rewritten = match function.as_str() {
            "tumble" => tumble(&args, alias, flink),
            "hop" | "cumulate" | "session" => Err(SluiceError::unsupported(format!(
                "{} windows are not supported yet; TUMBLE is",
                function.to_uppercase()
            ))),
            _ => return ControlFlow::Continue(()),
        };
        match rewritten {
            Ok(derived) => {
                *factor = derived;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }
}

/// An argument's expression; Flink's `DESCRIPTOR(col)` is the column itself.
fn plain_arg(arg: &FunctionArg) -> Option<&ast::Expr> {
    let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg else {
        return None;
    };
    if let ast::Expr::Function(f) = e
        && f.name.to_string().eq_ignore_ascii_case("descriptor")
        && let ast::FunctionArguments::List(list) = &f.args
        && let [only] = list.args.as_slice()
    {
        return plain_arg(only);
    }
    Some(e)
}

/// `TUMBLE(t, ts, size [, offset])` as a derived table; Flink's spelling also gets
/// `window_time` (the window's last instant: its end minus one millisecond).
fn tumble(args: &[FunctionArg], alias: Option<TableAlias>, flink: bool) -> Result<TableFactor> {
    let usage = || {
        SluiceError::syntax(
            "TUMBLE takes (table, time column, window size [, offset]), e.g. TUMBLE(bids, date_time, INTERVAL '10' SECOND)",
        )
    };
    if !(3..=4).contains(&args.len()) {
        return Err(usage());
    }
    let exprs: Vec<&ast::Expr> = args
        .iter()
        .map(plain_arg)
        .collect::<Option<_>>()
        .ok_or_else(usage)?;
    let table = match exprs[0] {
        ast::Expr::Identifier(ident) => vec![ident.clone()],
        ast::Expr::CompoundIdentifier(parts) => parts.clone(),
        _ => return Err(usage()),
    };
    if !matches!(
        exprs[1],
        ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_)
    ) {
        return Err(usage());
    }
    let table_sql = table
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(".");
    let (column, size) = (exprs[1].to_string(), exprs[2].to_string());
    let bin = match exprs.get(3) {
        Some(offset) => {
            format!("date_bin({size}, {column}, TIMESTAMP '1970-01-01 00:00:00' + {offset})")
        }
        None => format!("date_bin({size}, {column})"),
    };
    let window_time = if flink {
        format!(", {bin} + {size} - INTERVAL '1' MILLISECOND AS window_time")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT *, {bin} AS window_start, {bin} + {size} AS window_end{window_time} FROM {table_sql}"
    );
    let subquery = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| SluiceError::syntax(format!("invalid TUMBLE arguments: {e}")))?;
    let alias = alias.unwrap_or_else(|| TableAlias {
        explicit: true,
        name: table
            .last()
            .cloned()
            .unwrap_or_else(|| Ident::new("tumble")),
        columns: vec![],
        at: None,
    });
    Ok(TableFactor::Derived {
        lateral: false,
        subquery,
        alias: Some(alias),
        sample: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> Result<String> {
        let mut statement = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_statement()
            .unwrap();
        rewrite_window_functions(&mut statement)?;
        Ok(statement.to_string())
    }

    #[test]
    fn tumble_becomes_a_derived_table_with_window_bounds() {
        let sql = rewrite("SELECT window_start, count(*) FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) GROUP BY 1")
            .unwrap();
        assert!(
            sql.contains(
                "FROM (SELECT *, date_bin(INTERVAL '10' SECOND, date_time) AS window_start, \
                 date_bin(INTERVAL '10' SECOND, date_time) + INTERVAL '10' SECOND AS window_end FROM bids) AS bids"
            ),
            "{sql}"
        );
    }

    #[test]
    fn flink_window_tvf_spelling_is_accepted() {
        let sql = rewrite(
            "SELECT window_start FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) AS w",
        )
        .unwrap();
        assert!(
            sql.contains("date_bin(INTERVAL '10' SECOND, date_time) AS window_start"),
            "{sql}"
        );
        assert!(sql.contains("AS window_time FROM bids) AS w"), "{sql}");
    }

    #[test]
    fn other_windows_and_bad_arguments_are_refused_clearly() {
        let hop = rewrite("SELECT * FROM HOP(t, ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND)")
            .unwrap_err();
        assert!(
            hop.message.contains("HOP windows are not supported yet"),
            "{}",
            hop.message
        );
        let bad = rewrite("SELECT * FROM TUMBLE(t, ts)").unwrap_err();
        assert!(bad.message.contains("TUMBLE takes"), "{}", bad.message);
    }
}
