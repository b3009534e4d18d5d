//! Rows as text, for comparing results as multisets.
//!
//! A row's text is its values formatted by Arrow's display formatter (`NULL` for
//! nulls), joined by a tab. Comparing text rather than typed values lets a view and a
//! batch query agree when their types differ only in representation (nullability,
//! string encodings).

use std::fmt::Write;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::Result;

/// Calls `f` with the text of every row of `batches`, in order.
pub fn for_each_row(batches: &[RecordBatch], mut f: impl FnMut(&str)) -> Result<()> {
    let options = FormatOptions::default().with_null("NULL");
    let mut line = String::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            line.clear();
            for (i, formatter) in formatters.iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                write!(line, "{}", formatter.value(row)).expect("writing to a String");
            }
            f(&line);
        }
    }
    Ok(())
}

/// The text of every row, sorted: a multiset that compares with `==`.
pub fn sorted_rows(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for_each_row(batches, |r| rows.push(r.to_string()))?;
    rows.sort_unstable();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: Vec<Option<i64>>, names: Vec<&str>) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_render_nulls_and_tab_separated_values() {
        let rows = sorted_rows(&[batch(vec![Some(2), None], vec!["b", "a"])]).unwrap();
        assert_eq!(rows, ["2\tb", "NULL\ta"]);
    }
}
