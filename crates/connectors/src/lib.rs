//! Sources and sinks that connect Sluice to the outside world.
//!
//! A source connector turns a `CREATE SOURCE ... WITH (connector = '...', ...)` into
//! [`SourceReader`]s, one per parallel split. [`validate_source_options`] runs at DDL
//! time so bad options fail when the source is created, not when a job starts;
//! [`create_source_reader`] runs on the worker for each split. Both dispatch on the
//! `connector` option; every connector is one module.

pub mod datagen;
pub mod nexmark;

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::source::SourceReader;

/// The source connectors this build knows, by their `connector` option value.
pub const SOURCE_CONNECTORS: [&str; 2] = ["datagen", "nexmark"];

/// Checks a source's `WITH` options (keys lower-cased) against its schema, without
/// creating a reader. Fails with `INVALID_PARAMETER_VALUE` naming the option, its value
/// and what is allowed.
pub fn validate_source_options(
    options: &BTreeMap<String, String>,
    schema: SchemaRef,
) -> Result<()> {
    match connector(options)?.as_str() {
        "datagen" => datagen::validate_options(options, &schema),
        "nexmark" => nexmark::validate_options(options, &schema),
        other => Err(unknown_connector(other)),
    }
}

/// Creates the reader of split `split` (0-based) of `splits` for a source with these
/// `WITH` options (keys lower-cased) and schema. Fails like
/// [`validate_source_options`] on bad options.
pub fn create_source_reader(
    options: &BTreeMap<String, String>,
    schema: SchemaRef,
    split: usize,
    splits: usize,
) -> Result<Box<dyn SourceReader>> {
    if splits == 0 || split >= splits {
        return Err(SluiceError::internal(format!(
            "source split {split} of {splits} does not exist"
        )));
    }
    match connector(options)?.as_str() {
        "datagen" => Ok(Box::new(datagen::DatagenReader::new(
            options, schema, split, splits,
        )?)),
        "nexmark" => Ok(Box::new(nexmark::NexmarkReader::new(
            options, schema, split, splits,
        )?)),
        other => Err(unknown_connector(other)),
    }
}

/// How many of the items `0..total` belong to split `split` of `splits` when split `i`
/// takes items `i, i + splits, i + 2 * splits, ...` (how every generator spreads its
/// sequence over splits, so the union over splits is the same for any split count).
pub(crate) fn items_of_split(total: u64, split: u64, splits: u64) -> u64 {
    if total > split {
        (total - split - 1) / splits + 1
    } else {
        0
    }
}

fn connector(options: &BTreeMap<String, String>) -> Result<String> {
    options
        .get("connector")
        .map(|c| c.trim().to_ascii_lowercase())
        .ok_or_else(|| {
            SluiceError::invalid_parameter(format!(
                "a source needs the option connector = '...'; known connectors: {}",
                SOURCE_CONNECTORS.join(", ")
            ))
        })
}

fn unknown_connector(name: &str) -> SluiceError {
    SluiceError::invalid_parameter(format!(
        "unknown connector \"{name}\"; known source connectors: {}",
        SOURCE_CONNECTORS.join(", ")
    ))
}

/// Helpers shared by the connectors' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use arrow::array::RecordBatch;
    use arrow::compute::concat_batches;
    use sluice_runtime::source::{SourceEvent, SourceReader};

    /// Reads a bounded reader to its end, checking its position along the way.
    pub async fn drain<R: SourceReader + ?Sized>(reader: &mut R) -> RecordBatch {
        let mut batches = Vec::new();
        let mut rows = 0;
        loop {
            match reader.next_event().await.expect("no error") {
                SourceEvent::Batch(batch) => {
                    rows += batch.num_rows() as u64;
                    assert_eq!(reader.position(), rows);
                    batches.push(batch);
                }
                SourceEvent::Progress => {}
                SourceEvent::End => break,
            }
        }
        // Once ended, a reader stays ended.
        assert!(matches!(reader.next_event().await, Ok(SourceEvent::End)));
        concat_batches(&reader.schema(), &batches).expect("same schema")
    }
}
