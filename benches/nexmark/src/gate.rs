//! The correctness gate: a query's streaming view must equal, as a multiset of rows,
//! the same `SELECT` run by DataFusion in batch over the same events; and the blackhole
//! sink the measured runs write into must receive a changelog that leaves exactly those
//! rows (same count, same checksum).

use crate::engine::Engine;
use crate::queries::Query;
use crate::reference::Reference;
use crate::rows::sorted_rows;
use crate::{Error, Result};
use sluice_runtime::sink::rows_checksum;

/// How a query fared at the gate.
#[derive(Debug)]
pub struct GateReport {
    pub query: &'static str,
    pub view_rows: usize,
    pub reference_rows: usize,
    /// `None` if the view equals the reference; otherwise what differs.
    pub mismatch: Option<String>,
}

impl GateReport {
    /// Whether the view equals the reference.
    pub fn passed(&self) -> bool {
        self.mismatch.is_none()
    }
}

/// Runs `query` as a view on a fresh engine over `reference`'s events (with
/// `parallelism` if given) and compares it with the batch query. Fails if either side
/// cannot run the query; a different result is a report with a mismatch, not an error.
pub async fn check(
    query: &Query,
    reference: &Reference,
    parallelism: Option<usize>,
) -> Result<GateReport> {
    if let Some(reason) = query.unsupported() {
        return Err(Error::new(format!(
            "{} is unsupported: {reason}",
            query.name
        )));
    }
    let select = query.select_sql()?;
    let expected = sorted_rows(&reference.query(&select).await.map_err(|e| {
        Error::new(format!(
            "{}: the reference batch query failed: {e}",
            query.name
        ))
    })?)?;

    let mut engine = Engine::start().await?;
    if let Some(p) = parallelism {
        engine.set_parallelism(p).await?;
    }
    engine.create_sources(reference.events).await?;
    engine.run(&query.create_view_sql()).await?;
    engine.run(&query.create_sink_sql()?).await?;
    engine.flush().await?;
    let view = engine
        .query(&format!("SELECT * FROM {}", query.view_name()))
        .await?;
    let actual = sorted_rows(&view)?;
    let sink = engine.sink(&query.sink_name())?;
    let sink_rows = sink.rows();
    let view_checksum = rows_checksum(&view)?;
    let sink_mismatch = (sink_rows != actual.len() as i64 || sink.checksum != view_checksum)
        .then(|| {
            format!(
                "the sink's changelog leaves {sink_rows} rows (checksum {:016x}), the view has {} (checksum {view_checksum:016x})",
                sink.checksum,
                actual.len(),
            )
        });

    Ok(GateReport {
        query: query.name,
        view_rows: actual.len(),
        reference_rows: expected.len(),
        mismatch: describe_difference(&actual, &expected).or(sink_mismatch),
    })
}

/// `None` if two sorted multisets are equal; otherwise their sizes and a few rows that
/// only one of them has.
fn describe_difference(actual: &[String], expected: &[String]) -> Option<String> {
    if actual == expected {
        return None;
    }
    let (mut only_actual, mut only_expected) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < actual.len() || j < expected.len() {
        match (actual.get(i), expected.get(j)) {
            (Some(a), Some(e)) if a == e => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(e)) if a < e => {
                only_actual.push(a);
                i += 1;
            }
            (Some(a), None) => {
                only_actual.push(a);
                i += 1;
            }
            (_, Some(e)) => {
                only_expected.push(e);
                j += 1;
            }
            (None, None) => unreachable!("the loop condition"),
        }
    }
    let sample = |rows: &[&String]| -> String {
        rows.iter()
            .take(3)
            .map(|r| format!("\n    {r}"))
            .collect::<String>()
    };
    Some(format!(
        "the view has {} rows, the batch query {}; {} rows only in the view:{}\n  {} rows only in the batch result:{}",
        actual.len(),
        expected.len(),
        only_actual.len(),
        sample(&only_actual),
        only_expected.len(),
        sample(&only_expected),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_names_rows_missing_on_either_side_with_multiplicity() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(describe_difference(&s(&["a", "b"]), &s(&["a", "b"])), None);
        let d = describe_difference(&s(&["a", "a", "c"]), &s(&["a", "b"])).unwrap();
        assert!(d.contains("2 rows only in the view:\n    a\n    c"), "{d}");
        assert!(d.contains("1 rows only in the batch result:\n    b"), "{d}");
    }
}
