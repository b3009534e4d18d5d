//! Window table functions in FROM, rewritten to plain SQL before planning.
//!
//! Each window function becomes a derived table that adds the window's bounds,
//! `window_start` and `window_end`, to the rows of its table:
//!
//! - `TUMBLE(t, ts, size [, offset])`: `date_bin(size, ts [, origin])` and that plus `size`
//!   (`window_end_of(start, size)`: an integer addition, not calendar arithmetic);
//! - `HOP(t, ts, slide, size [, offset])`: one row per window holding `ts`, through
//!   `unnest(hop_window_starts(ts, slide, size))`, and `window_end_of` of each;
//! - `CUMULATE(t, ts, step, size [, offset])`: windows that share the start
//!   `date_bin(size, ts)` and end every `step`, through
//!   `unnest(cumulate_window_ends(ts, step, size))`;
//! - `SESSION(TABLE t [PARTITION BY k], DESCRIPTOR(ts), gap)`: the window functions
//!   `session_window_start/end(ts, gap) OVER (PARTITION BY k)`.
//!
//! Both RisingWave's spelling (`FROM HOP(t, ts, ...)`) and Flink's TVFs (`FROM
//! TABLE(HOP(TABLE t, DESCRIPTOR(ts), ...))`, which also add `window_time`, the window's
//! last instant) are accepted. So DataFusion plans windows like any query, batch queries
//! and views alike; the streaming planner lowers `unnest` to its unnest operator and the
//! session functions to its session window operator. A `GROUP BY window_start,
//! window_end` is then an ordinary (updating) aggregate, or, with `EMIT ON WINDOW CLOSE`,
//! one that emits each window once when the watermark passes its end.

mod functions;

pub use functions::{
    CUMULATE_WINDOW_ENDS, HOP_WINDOW_STARTS, PROCTIME, SESSION_WINDOW_END, SESSION_WINDOW_START,
    WINDOW_END_OF, interval_in_units, register_window_functions, session_bounds,
};

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, Ident, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use sluice_common::error::{Result, SluiceError};

use crate::parser::PARTITION_BY_ARGUMENT;

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
        let Some(kind) = WindowKind::parse(&name.to_lowercase()) else {
            return ControlFlow::Continue(());
        };
        let rewritten = window_table(kind, &args, alias, flink);
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

/// The kinds of window table functions, with their SQL argument lists for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowKind {
    Tumble,
    Hop,
    Cumulate,
    Session,
}

impl WindowKind {
    fn parse(name: &str) -> Option<WindowKind> {
        Some(match name {
            "tumble" => WindowKind::Tumble,
            "hop" => WindowKind::Hop,
            "cumulate" => WindowKind::Cumulate,
            "session" => WindowKind::Session,
            _ => return None,
        })
    }

    fn usage(self) -> SluiceError {
        SluiceError::syntax(match self {
            WindowKind::Tumble => {
                "TUMBLE takes (table, time column, size [, offset]), e.g. TUMBLE(bids, date_time, INTERVAL '10' SECOND)"
            }
            WindowKind::Hop => {
                "HOP takes (table, time column, slide, size [, offset]), e.g. HOP(bids, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)"
            }
            WindowKind::Cumulate => {
                "CUMULATE takes (table, time column, step, max size [, offset]), e.g. CUMULATE(bids, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)"
            }
            WindowKind::Session => {
                "SESSION takes (TABLE t [PARTITION BY key, ...], DESCRIPTOR(time column), gap), e.g. SESSION(TABLE bids PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND)"
            }
        })
    }

    /// How many arguments follow the table and the time column.
    fn parameter_counts(self) -> std::ops::RangeInclusive<usize> {
        match self {
            WindowKind::Tumble => 1..=2,
            WindowKind::Hop | WindowKind::Cumulate => 2..=3,
            WindowKind::Session => 1..=1,
        }
    }
}

/// A window table function as a derived table (see the module docs); Flink's spelling
/// also gets `window_time` (the window's last instant: its end minus one millisecond).
fn window_table(
    kind: WindowKind,
    args: &[FunctionArg],
    alias: Option<TableAlias>,
    flink: bool,
) -> Result<TableFactor> {
    let mut exprs: Vec<&ast::Expr> = args
        .iter()
        .map(plain_arg)
        .collect::<Option<_>>()
        .ok_or_else(|| kind.usage())?;
    let partition_by = match exprs.get(1) {
        Some(ast::Expr::Function(f))
            if f.name
                .to_string()
                .eq_ignore_ascii_case(PARTITION_BY_ARGUMENT) =>
        {
            let keys = match &f.args {
                ast::FunctionArguments::List(list) => list
                    .args
                    .iter()
                    .map(plain_arg)
                    .map(|k| k.cloned())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| kind.usage())?,
                _ => return Err(kind.usage()),
            };
            exprs.remove(1);
            keys
        }
        _ => vec![],
    };
    if exprs.len() < 2 || !kind.parameter_counts().contains(&(exprs.len() - 2)) {
        return Err(kind.usage());
    }
    let table = match exprs[0] {
        ast::Expr::Identifier(ident) => vec![ident.clone()],
        ast::Expr::CompoundIdentifier(parts) => parts.clone(),
        _ => return Err(kind.usage()),
    };
    if !partition_by.is_empty() && kind != WindowKind::Session {
        return Err(kind.usage());
    }
    // The time column, or PROCTIME() for processing-time windows (not SESSION: its
    // window functions need a column).
    let proctime = matches!(exprs[1], ast::Expr::Function(f)
        if f.name.to_string().eq_ignore_ascii_case(PROCTIME)
            && matches!(&f.args, ast::FunctionArguments::List(l) if l.args.is_empty()));
    if !(matches!(
        exprs[1],
        ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_)
    ) || proctime && kind != WindowKind::Session)
    {
        return Err(kind.usage());
    }
    let table_sql = table
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(".");
    let column = exprs[1].to_string();
    let params: Vec<String> = exprs[2..].iter().map(|e| e.to_string()).collect();
    let origin = |offset: Option<&String>| match offset {
        Some(offset) => format!(", TIMESTAMP '1970-01-01 00:00:00' + {offset}"),
        None => String::new(),
    };
    let sql = match kind {
        WindowKind::Tumble => {
            let (size, offset) = (&params[0], params.get(1));
            let bin = format!("date_bin({size}, {column}{})", origin(offset));
            format!(
                "SELECT *, {bin} AS window_start, {WINDOW_END_OF}({bin}, {size}) AS window_end FROM {table_sql}"
            )
        }
        WindowKind::Hop => {
            let size = &params[1];
            let args = params.join(", ");
            format!(
                "SELECT *, {WINDOW_END_OF}(window_start, {size}) AS window_end FROM \
                 (SELECT *, unnest({HOP_WINDOW_STARTS}({column}, {args})) AS window_start FROM {table_sql}) AS {INNER_ALIAS}",
            )
        }
        WindowKind::Cumulate => {
            let size = &params[1];
            let args = params.join(", ");
            format!(
                "SELECT *, date_bin({size}, {column}{}) AS window_start FROM \
                 (SELECT *, unnest({CUMULATE_WINDOW_ENDS}({column}, {args})) AS window_end FROM {table_sql}) AS {INNER_ALIAS}",
                origin(params.get(2))
            )
        }
        WindowKind::Session => {
            let gap = &params[0];
            let over = if partition_by.is_empty() {
                "OVER ()".to_string()
            } else {
                let keys: Vec<String> = partition_by.iter().map(|k| k.to_string()).collect();
                format!("OVER (PARTITION BY {})", keys.join(", "))
            };
            format!(
                "SELECT *, {SESSION_WINDOW_START}({column}, {gap}) {over} AS window_start, \
                 {SESSION_WINDOW_END}({column}, {gap}) {over} AS window_end FROM {table_sql}"
            )
        }
    };
    // Flink's window_time: the last instant of the window.
    let sql = if flink {
        format!(
            "SELECT *, window_end - INTERVAL '1' MILLISECOND AS window_time FROM ({sql}) AS {INNER_ALIAS}"
        )
    } else {
        sql
    };
    let subquery = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| SluiceError::syntax(format!("invalid window arguments: {e}")))?;
    let alias = alias.unwrap_or_else(|| TableAlias {
        explicit: true,
        name: table
            .last()
            .cloned()
            .unwrap_or_else(|| Ident::new("window")),
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

/// The alias of the inner derived tables the rewrite introduces.
const INNER_ALIAS: &str = "__sluice_window";

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
                 window_end_of(date_bin(INTERVAL '10' SECOND, date_time), INTERVAL '10' SECOND) AS window_end FROM bids) AS bids"
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
        assert!(
            sql.contains("window_end - INTERVAL '1' MILLISECOND AS window_time"),
            "{sql}"
        );
        assert!(sql.ends_with(") AS w"), "{sql}");
    }

    #[test]
    fn hop_and_cumulate_unnest_their_window_lists() {
        let hop = rewrite("SELECT * FROM HOP(bids, ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND)")
            .unwrap();
        assert!(
            hop.contains("unnest(hop_window_starts(ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND)) AS window_start"),
            "{hop}"
        );
        assert!(
            hop.contains("window_end_of(window_start, INTERVAL '5' SECOND) AS window_end"),
            "{hop}"
        );
        let cumulate = rewrite(
            "SELECT * FROM TABLE(CUMULATE(bids, DESCRIPTOR(ts), INTERVAL '1' SECOND, INTERVAL '4' SECOND)) AS c",
        )
        .unwrap();
        assert!(
            cumulate.contains("date_bin(INTERVAL '4' SECOND, ts) AS window_start"),
            "{cumulate}"
        );
        assert!(cumulate.contains("AS window_time"), "{cumulate}");
    }

    /// Parses with Sluice's parser, which turns Flink's table arguments into plain ones.
    fn rewrite_flink(sql: &str) -> Result<String> {
        let statement = crate::parse_sql(sql)?.remove(0);
        let crate::Statement::Query(mut query) = statement.statement else {
            panic!("not a query: {sql}");
        };
        rewrite_window_functions(&mut query)?;
        Ok(query.to_string())
    }

    #[test]
    fn session_windows_partition_by_the_table_argument_keys() {
        let one = rewrite_flink(
            "SELECT * FROM TABLE(SESSION(TABLE clicks PARTITION BY usr, DESCRIPTOR(ts), INTERVAL '5' SECOND))",
        )
        .unwrap();
        assert!(
            one.contains("session_window_start(ts, INTERVAL '5' SECOND) OVER (PARTITION BY usr) AS window_start"),
            "{one}"
        );
        let two = rewrite_flink(
            "SELECT * FROM TABLE(SESSION(TABLE clicks PARTITION BY (usr, page), DESCRIPTOR(ts), INTERVAL '5' SECOND)) AS s",
        )
        .unwrap();
        assert!(
            two.contains("OVER (PARTITION BY usr, page) AS window_end"),
            "{two}"
        );
        let global =
            rewrite_flink("SELECT * FROM SESSION(clicks, ts, INTERVAL '5' SECOND)").unwrap();
        assert!(global.contains("OVER () AS window_start"), "{global}");
        let bad = rewrite_flink(
            "SELECT * FROM TABLE(HOP(TABLE clicks PARTITION BY usr, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))",
        )
        .unwrap_err();
        assert!(bad.message.contains("HOP takes"), "{}", bad.message);
    }

    #[test]
    fn bad_window_arguments_are_refused_with_the_expected_form() {
        let bad = rewrite("SELECT * FROM TUMBLE(t, ts)").unwrap_err();
        assert!(bad.message.contains("TUMBLE takes"), "{}", bad.message);
        let bad = rewrite("SELECT * FROM HOP(t, ts, INTERVAL '1' SECOND)").unwrap_err();
        assert!(bad.message.contains("HOP takes"), "{}", bad.message);
    }
}
