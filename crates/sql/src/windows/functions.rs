//! The functions window table functions are rewritten into (see the module above).
//!
//! - `hop_window_starts(ts, slide, size [, offset])`: the starts of every HOP window
//!   holding `ts`, as a list, for `unnest` to turn one row into one row per window.
//! - `cumulate_window_ends(ts, step, size [, offset])`: the ends of every CUMULATE window
//!   holding `ts` (they share the start `date_bin(size, ts)`).
//! - `session_window_start(ts, gap)` / `session_window_end(ts, gap)`: window functions
//!   (`OVER (PARTITION BY key)`) that give each row the bounds of its session: the rows of
//!   a partition sorted by time, split where two neighbours are more than `gap` apart.
//!   Batch queries evaluate them over a whole partition; the streaming planner replaces
//!   them with the session window operator, which computes the same bounds incrementally.
//!
//! - `proctime()`: processing time, the wall clock when a batch is processed, for
//!   processing-time windows (`TUMBLE(t, PROCTIME(), size)`).
//!
//! Window sizes are fixed durations (no months) in whole units of the time column.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, DurationMicrosecondArray, DurationMillisecondArray,
    DurationNanosecondArray, DurationSecondArray, Int64Array, ListArray, Scalar,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, IntervalUnit, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    ColumnarValue, PartitionEvaluator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TypeSignature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::prelude::SessionContext;

pub const HOP_WINDOW_STARTS: &str = "hop_window_starts";
pub const CUMULATE_WINDOW_ENDS: &str = "cumulate_window_ends";
pub const SESSION_WINDOW_START: &str = "session_window_start";
pub const SESSION_WINDOW_END: &str = "session_window_end";
pub const PROCTIME: &str = "proctime";
pub const WINDOW_END_OF: &str = "window_end_of";

/// Registers the window functions with a DataFusion context.
pub fn register_window_functions(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(WindowList::new(ListKind::HopStarts)));
    ctx.register_udf(ScalarUDF::from(WindowList::new(ListKind::CumulateEnds)));
    ctx.register_udwf(WindowUDF::from(SessionBound::new(true)));
    ctx.register_udwf(WindowUDF::from(SessionBound::new(false)));
    ctx.register_udf(ScalarUDF::from(ProcTime::new()));
    ctx.register_udf(ScalarUDF::from(WindowEndOf::new()));
}

/// `window_end_of(window_start, size)`: `window_start + size` for a window of fixed
/// `size`, as one vectorized integer addition in the time column's unit. DataFusion's
/// timestamp + interval adds months, days and nanoseconds as calendar arithmetic per
/// row, which a window's end, computed for every row (several per row for HOP), does not
/// need.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowEndOf {
    signature: Signature,
}

impl WindowEndOf {
    fn new() -> WindowEndOf {
        WindowEndOf {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// The window size in units of the time column (`None` when not a constant).
    fn size(unit: TimeUnit, size: Option<&ScalarValue>) -> Result<i64> {
        match size {
            Some(size) => interval_in_units(size, unit, "size"),
            None => plan_err!("the window size must be a constant INTERVAL"),
        }
    }
}

impl ScalarUDFImpl for WindowEndOf {
    fn name(&self) -> &str {
        WINDOW_END_OF
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_time_and_intervals(self.name(), args, &[2])
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let time_type = args.args[0].data_type();
        let size = match &args.args[1] {
            ColumnarValue::Scalar(v) => Some(v),
            ColumnarValue::Array(_) => None,
        };
        let size = Self::size(time_unit(&time_type), size)?;
        let duration: ArrayRef = match time_unit(&time_type) {
            TimeUnit::Second => Arc::new(DurationSecondArray::from(vec![size])),
            TimeUnit::Millisecond => Arc::new(DurationMillisecondArray::from(vec![size])),
            TimeUnit::Microsecond => Arc::new(DurationMicrosecondArray::from(vec![size])),
            TimeUnit::Nanosecond => Arc::new(DurationNanosecondArray::from(vec![size])),
        };
        let starts = args.args[0].to_array(args.number_rows)?;
        let ends = arrow::compute::kernels::numeric::add(&starts, &Scalar::new(duration))?;
        Ok(ColumnarValue::Array(ends))
    }
}

/// `proctime()` (see the module docs). Volatile, so DataFusion evaluates it on every
/// batch instead of folding it into a constant when the view is planned.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ProcTime {
    signature: Signature,
}

impl ProcTime {
    fn new() -> ProcTime {
        ProcTime {
            signature: Signature::new(TypeSignature::Nullary, Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        PROCTIME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
            Some(now),
            None,
        )))
    }
}

/// Nanoseconds per unit of a timestamp column.
fn nanos_per_unit(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// A constant interval argument as a count of `unit`s; `what` names it in errors.
pub fn interval_in_units(value: &ScalarValue, unit: TimeUnit, what: &str) -> Result<i64> {
    let ScalarValue::IntervalMonthDayNano(Some(interval)) = value else {
        return plan_err!("the window {what} must be a constant INTERVAL, not {value}");
    };
    if interval.months != 0 {
        return plan_err!(
            "the window {what} must be a fixed duration (days, hours, ...), not months or years"
        );
    }
    let nanos = i64::from(interval.days)
        .checked_mul(86_400_000_000_000)
        .and_then(|d| d.checked_add(interval.nanoseconds));
    let per_unit = nanos_per_unit(unit);
    match nanos {
        Some(n) if n % per_unit == 0 => Ok(n / per_unit),
        _ => plan_err!("the window {what} must be a whole number of {unit:?}s of the time column"),
    }
}

/// Checks the argument types: a timestamp, then intervals.
fn coerce_time_and_intervals(
    name: &str,
    args: &[DataType],
    counts: &[usize],
) -> Result<Vec<DataType>> {
    if !counts.contains(&args.len()) {
        return plan_err!("{name} takes a time column and {} intervals", counts[0] - 1);
    }
    if !matches!(args[0], DataType::Timestamp(_, _)) {
        return plan_err!(
            "the time column of a window must be a TIMESTAMP, not {}",
            args[0]
        );
    }
    let mut coerced = vec![args[0].clone()];
    coerced.extend((1..args.len()).map(|_| DataType::Interval(IntervalUnit::MonthDayNano)));
    Ok(coerced)
}

fn time_unit(data_type: &DataType) -> TimeUnit {
    match data_type {
        DataType::Timestamp(unit, _) => *unit,
        _ => TimeUnit::Nanosecond,
    }
}

fn floor_to(value: i64, step: i64, offset: i64) -> i64 {
    (value - offset).div_euclid(step) * step + offset
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ListKind {
    HopStarts,
    CumulateEnds,
}

/// `hop_window_starts` and `cumulate_window_ends` (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowList {
    kind: ListKind,
    signature: Signature,
}

impl WindowList {
    fn new(kind: ListKind) -> WindowList {
        WindowList {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// `(slide or step, size, offset)` in units of the time column, from the constant
    /// arguments after the time column (`None` where an argument is not a constant).
    fn parameters(&self, unit: TimeUnit, args: &[Option<ScalarValue>]) -> Result<(i64, i64, i64)> {
        let names = match self.kind {
            ListKind::HopStarts => ["slide", "size", "offset"],
            ListKind::CumulateEnds => ["step", "size", "offset"],
        };
        let mut values = [0i64; 3];
        for (i, name) in names.iter().enumerate() {
            values[i] = match args.get(i + 1) {
                Some(Some(v)) => interval_in_units(v, unit, name)?,
                Some(None) => return plan_err!("the window {name} must be a constant INTERVAL"),
                None => 0,
            };
        }
        let [every, size, offset] = values;
        if every <= 0 || size <= 0 {
            return plan_err!("the window {} and size must be positive", names[0]);
        }
        if self.kind == ListKind::CumulateEnds && size % every != 0 {
            return plan_err!("a CUMULATE window's size must be a whole multiple of its step");
        }
        Ok((every, size, offset))
    }

    /// The window bounds holding `ts`, in ascending order, given the window parameters
    /// `(slide or step, size, offset)` in the time column's units.
    fn bounds(&self, ts: i64, every: i64, size: i64, offset: i64, out: &mut Vec<i64>) {
        match self.kind {
            ListKind::HopStarts => {
                let last = floor_to(ts, every, offset);
                let first = floor_to(ts - size, every, offset) + every;
                out.extend((0..).map(|k| first + k * every).take_while(|s| *s <= last));
            }
            ListKind::CumulateEnds => {
                let start = floor_to(ts, size, offset);
                out.extend(
                    (1..=size / every)
                        .map(|k| start + k * every)
                        .filter(|end| *end > ts),
                );
            }
        }
    }
}

impl ScalarUDFImpl for WindowList {
    fn name(&self) -> &str {
        match self.kind {
            ListKind::HopStarts => HOP_WINDOW_STARTS,
            ListKind::CumulateEnds => CUMULATE_WINDOW_ENDS,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_time_and_intervals(self.name(), args, &[3, 4])
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(
            args[0].clone(),
            false,
        ))))
    }

    /// Checks the arguments at planning time: the window parameters must be constants.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let time_type = args.arg_fields[0].data_type().clone();
        let constants: Vec<Option<ScalarValue>> =
            args.scalar_arguments.iter().map(|v| v.cloned()).collect();
        self.parameters(time_unit(&time_type), &constants)?;
        Ok(Arc::new(Field::new(
            self.name(),
            self.return_type(&[time_type])?,
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let time_type = args.args[0].data_type();
        let constants: Vec<Option<ScalarValue>> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(v) => Some(v.clone()),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let (every, size, offset) = self.parameters(time_unit(&time_type), &constants)?;
        let times = args.args[0].to_array(args.number_rows)?;
        let times = arrow::compute::cast(&times, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let mut values = Vec::with_capacity(times.len() * (size / every).min(64) as usize);
        let mut lengths = Vec::with_capacity(times.len());
        for ts in times.iter() {
            let before = values.len();
            // A row without a time is in no window.
            if let Some(ts) = ts {
                self.bounds(ts, every, size, offset, &mut values);
            }
            lengths.push(values.len() - before);
        }
        let values = arrow::compute::cast(&Int64Array::from(values), &time_type)?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(time_type, false)),
            OffsetBuffer::from_lengths(lengths),
            values,
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// `session_window_start` / `session_window_end` (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionBound {
    start: bool,
    signature: Signature,
}

impl SessionBound {
    fn new(start: bool) -> SessionBound {
        SessionBound {
            start,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for SessionBound {
    fn name(&self) -> &str {
        if self.start {
            SESSION_WINDOW_START
        } else {
            SESSION_WINDOW_END
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_time_and_intervals(self.name(), args, &[2])
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(SessionEvaluator { start: self.start }))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let time_type = args
            .input_fields()
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Timestamp(TimeUnit::Nanosecond, None));
        Ok(Arc::new(Field::new(args.name(), time_type, true)))
    }
}

#[derive(Debug)]
struct SessionEvaluator {
    start: bool,
}

impl PartitionEvaluator for SessionEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let time_type = values[0].data_type().clone();
        let gap_value = ScalarValue::try_from_array(&values[1], 0)?;
        let gap = interval_in_units(&gap_value, time_unit(&time_type), "gap")?;
        if gap <= 0 {
            return exec_err!("a SESSION window's gap must be positive");
        }
        let times = arrow::compute::cast(&values[0], &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let bounds = session_bounds(times, gap);
        let out: Int64Array = (0..num_rows)
            .map(|i| bounds[i].map(|(start, end)| if self.start { start } else { end }))
            .collect();
        Ok(arrow::compute::cast(&out, &time_type)?)
    }
}

/// Each row's session `(start, end)`: rows sorted by time form one session while each is
/// at most `gap` after the previous one; the session spans its first time to its last
/// time plus `gap`. Rows without a time are in no session.
pub fn session_bounds(times: &arrow::array::Int64Array, gap: i64) -> Vec<Option<(i64, i64)>> {
    let mut order: Vec<usize> = (0..times.len()).filter(|&i| times.is_valid(i)).collect();
    order.sort_by_key(|&i| times.value(i));
    let mut bounds = vec![None; times.len()];
    let mut run_start = 0;
    for k in 0..=order.len() {
        let ends_run = k == order.len()
            || (k > run_start && times.value(order[k]) - times.value(order[k - 1]) > gap);
        if ends_run && k > run_start {
            let start = times.value(order[run_start]);
            let end = times.value(order[k - 1]) + gap;
            for &i in &order[run_start..k] {
                bounds[i] = Some((start, end));
            }
            run_start = k;
        }
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(kind: ListKind, ts: i64, every: i64, size: i64, offset: i64) -> Vec<i64> {
        let mut out = vec![];
        WindowList::new(kind).bounds(ts, every, size, offset, &mut out);
        out
    }

    #[tokio::test]
    async fn window_end_of_adds_a_fixed_size_and_refuses_calendar_intervals() {
        let ctx = SessionContext::new();
        register_window_functions(&ctx);
        let batches = ctx
            .sql(
                "SELECT window_end_of(CAST(ts AS TIMESTAMP(3)), INTERVAL '1 day 10 seconds') FROM \
                 (VALUES (TIMESTAMP '2024-02-28 23:59:55'), (NULL)) AS t(ts)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let ends = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(ends.contains("2024-03-01T00:00:05"), "{ends}");
        let months = ctx
            .sql("SELECT window_end_of(TIMESTAMP '2024-01-01 00:00:00', INTERVAL '1' MONTH)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(months.to_string().contains("fixed duration"), "{months}");
    }

    #[test]
    fn hop_windows_are_every_slide_aligned_start_within_size_of_the_row() {
        assert_eq!(list(ListKind::HopStarts, 12, 5, 10, 0), vec![5, 10]);
        assert_eq!(list(ListKind::HopStarts, 10, 5, 10, 0), vec![5, 10]);
        assert_eq!(list(ListKind::HopStarts, 9, 5, 10, 0), vec![0, 5]);
        // Size not a multiple of the slide: windows [0,7) [3,10) [6,13) hold 6.
        assert_eq!(list(ListKind::HopStarts, 6, 3, 7, 0), vec![0, 3, 6]);
        assert_eq!(list(ListKind::HopStarts, -1, 5, 10, 0), vec![-10, -5]);
        assert_eq!(list(ListKind::HopStarts, 12, 5, 10, 2), vec![7, 12]);
    }

    #[test]
    fn cumulate_windows_share_a_start_and_end_every_step_after_the_row() {
        assert_eq!(list(ListKind::CumulateEnds, 0, 2, 6, 0), vec![2, 4, 6]);
        assert_eq!(list(ListKind::CumulateEnds, 3, 2, 6, 0), vec![4, 6]);
        assert_eq!(list(ListKind::CumulateEnds, 7, 2, 6, 0), vec![8, 10, 12]);
    }

    #[test]
    fn sessions_split_where_rows_are_more_than_a_gap_apart() {
        let times = Int64Array::from(vec![Some(10), Some(1), None, Some(3), Some(30), Some(14)]);
        let bounds = session_bounds(&times, 4);
        assert_eq!(
            bounds,
            vec![
                Some((10, 18)),
                Some((1, 7)),
                None,
                Some((1, 7)),
                Some((30, 34)),
                Some((10, 18)),
            ]
        );
        // Exactly a gap apart: the windows [3, 7) and [7, 11) touch and merge, as in Flink.
        let bounds = session_bounds(&Int64Array::from(vec![3, 7]), 4);
        assert_eq!(bounds, vec![Some((3, 11)), Some((3, 11))]);
    }
}
