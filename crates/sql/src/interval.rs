//! Interval joins: an inner join whose condition bounds one side's event time by the
//! other side's columns (`b.ts BETWEEN a.ts AND a.expires`, `a.ts <= b.ts + INTERVAL
//! '1' MINUTE`) can forget rows once the watermark has passed those bounds.
//!
//! A conjunct `s.t <= e(o)` (or `<`, or written `e(o) >= s.t`), where `s.t` is side
//! `s`'s event-time column (the one its `WATERMARK FOR` names) and `e` reads only the
//! other side `o`, means an `o` row can only match `s` rows with time at most `e(o)`.
//! Rows of `s` that are not late have a time above the watermark, so once the watermark
//! reaches `e(o)` the `o` row can match nothing more and is dropped from state. `s` rows
//! that arrive late (time at or below the watermark) are dropped and counted, as Flink's
//! interval join does, since the rows they could have matched may be gone.

use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// Per join side: the expression (over that side's columns) of the event time after
/// which its rows can be forgotten, and whether the side's own rows must arrive on time.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntervalBounds {
    /// `expiry[side]`: rows of `side` are forgotten once the watermark reaches it.
    #[serde(with = "crate::codec::opt_expr_pair")]
    pub expiry: [Option<Expr>; 2],
    /// `time[side]`: the event-time column of `side`, when the other side's expiry
    /// relies on its rows arriving on time (late ones are dropped).
    #[serde(with = "crate::codec::opt_expr_pair")]
    pub time: [Option<Expr>; 2],
}

/// The bounds an inner join's `filter` sets (see the module docs). `schemas` are the two
/// inputs' schemas and `times` the index of each input's event-time column, if it has one.
pub fn interval_bounds(
    filter: &Expr,
    schemas: [&DFSchema; 2],
    times: [Option<usize>; 2],
) -> Option<IntervalBounds> {
    let side_of =
        |c: &Column| -> Option<usize> { (0..2).find(|&s| schemas[s].index_of_column(c).is_ok()) };
    // The one side an expression reads, if it reads exactly one.
    let reads_only = |e: &Expr| -> Option<usize> {
        let sides: Vec<Option<usize>> = e.column_refs().into_iter().map(side_of).collect();
        match sides.first() {
            Some(Some(s)) if sides.iter().all(|x| *x == Some(*s)) => Some(*s),
            _ => None,
        }
    };
    let is_time_of = |e: &Expr| -> Option<usize> {
        let Expr::Column(c) = e else { return None };
        let side = side_of(c)?;
        (times[side]? == schemas[side].index_of_column(c).ok()?).then_some(side)
    };
    let mut bounds = IntervalBounds::default();
    for (low, high) in inequalities(filter) {
        // `low <= high`: if `low` is side s's time and `high` reads only the other side o,
        // o's rows expire at `high`.
        if let (Some(s), Some(o)) = (is_time_of(&low), reads_only(&high))
            && s != o
            && bounds.expiry[o].is_none()
        {
            bounds.expiry[o] = Some(high);
            bounds.time[s] = Some(low);
        }
    }
    (bounds.expiry[0].is_some() || bounds.expiry[1].is_some()).then_some(bounds)
}

/// Every conjunct `a <= b` / `a < b` (flipping `>=` and `>`, and splitting BETWEEN) as
/// `(a, b)`.
fn inequalities(filter: &Expr) -> Vec<(Expr, Expr)> {
    let mut pairs = Vec::new();
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::Lt | Operator::LtEq => pairs.push((*left.clone(), *right.clone())),
                Operator::Gt | Operator::GtEq => pairs.push((*right.clone(), *left.clone())),
                _ => {}
            },
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                pairs.push((*low.clone(), *expr.clone()));
                pairs.push((*expr.clone(), *high.clone()));
            }
            _ => {}
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::logical_expr::{col, lit};
    use datafusion::scalar::ScalarValue;

    fn schema(qualifier: &str, columns: &[&str]) -> DFSchema {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(*c, ts.clone(), true))
            .collect();
        DFSchema::try_from_qualified_schema(qualifier, &Schema::new(fields)).unwrap()
    }

    #[test]
    fn between_bounds_give_each_side_an_expiry() {
        let a = schema("a", &["ts", "expires"]);
        let b = schema("b", &["ts"]);
        // b.ts BETWEEN a.ts AND a.expires
        let filter = col("b.ts").between(col("a.ts"), col("a.expires"));
        let bounds = interval_bounds(&filter, [&a, &b], [Some(0), Some(0)]).unwrap();
        // b.ts <= a.expires: a's rows expire at a.expires, and b's rows must be on time.
        assert_eq!(bounds.expiry[0], Some(col("a.expires")));
        // a.ts <= b.ts: b's rows expire at b.ts, and a's rows must be on time.
        assert_eq!(bounds.expiry[1], Some(col("b.ts")));
        assert_eq!(bounds.time, [Some(col("a.ts")), Some(col("b.ts"))]);
    }

    #[test]
    fn only_bounds_on_an_event_time_column_count() {
        let a = schema("a", &["ts", "other"]);
        let b = schema("b", &["ts"]);
        let interval = lit(ScalarValue::new_interval_mdn(0, 0, 60_000_000_000));
        // a.other is not a's event time; b.ts <= a.ts + 1 minute is.
        let filter = col("a.other")
            .lt_eq(col("b.ts"))
            .and(col("b.ts").lt_eq(col("a.ts") + interval.clone()));
        let bounds = interval_bounds(&filter, [&a, &b], [Some(0), Some(0)]).unwrap();
        assert_eq!(bounds.expiry[0], Some(col("a.ts") + interval));
        assert_eq!(bounds.expiry[1], None);
        // Without a watermark on b, nothing can expire.
        assert!(interval_bounds(&filter, [&a, &b], [Some(0), None]).is_none());
    }
}
