//! Sources and sinks that connect Sluice to the outside world.
//!
//! A source connector turns a `CREATE SOURCE ... WITH (connector = '...', ...)` into
//! [`SourceReader`]s, one per parallel split. [`validate_source_options`] runs at DDL
//! time so bad options fail when the source is created, not when a job starts;
//! [`create_source_reader`] runs on the worker for each split. Sinks are the same:
//! [`validate_sink_options`] at `CREATE SINK`, [`create_sink_writer`] per sink subtask.
//! Both dispatch on the `connector` option; every connector is one module.

pub mod blackhole;
pub mod datagen;
pub mod filesystem;
pub mod nexmark;

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::sink::SinkWriter;
use sluice_runtime::source::SourceReader;

/// The source connectors this build knows, by their `connector` option value.
pub const SOURCE_CONNECTORS: [&str; 3] = ["datagen", "filesystem", "nexmark"];

/// The sink connectors this build knows, by their `connector` option value.
pub const SINK_CONNECTORS: [&str; 1] = ["blackhole"];

/// Checks a source's `WITH` options (keys lower-cased) against its schema, without
/// creating a reader. Fails with `INVALID_PARAMETER_VALUE` naming the option, its value
/// and what is allowed.
pub fn validate_source_options(
    options: &BTreeMap<String, String>,
    schema: SchemaRef,
) -> Result<()> {
    match connector(options, "source", &SOURCE_CONNECTORS)?.as_str() {
        "datagen" => datagen::validate_options(options, &schema),
        "filesystem" => filesystem::validate_options(options),
        "nexmark" => nexmark::validate_options(options, &schema),
        other => Err(unknown_connector(other, "source", &SOURCE_CONNECTORS)),
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
    match connector(options, "source", &SOURCE_CONNECTORS)?.as_str() {
        "datagen" => Ok(Box::new(datagen::DatagenReader::new(
            options, schema, split, splits,
        )?)),
        "filesystem" => Ok(Box::new(filesystem::FileReader::new(
            options, schema, split, splits,
        )?)),
        "nexmark" => Ok(Box::new(nexmark::NexmarkReader::new(
            options, schema, split, splits,
        )?)),
        other => Err(unknown_connector(other, "source", &SOURCE_CONNECTORS)),
    }
}

/// Checks a sink's `WITH` options (keys lower-cased) without creating a writer. Fails
/// with `INVALID_PARAMETER_VALUE` naming the option, its value and what is allowed.
pub fn validate_sink_options(options: &BTreeMap<String, String>) -> Result<()> {
    create_sink_writer(options).map(drop)
}

/// Creates the writer of one sink subtask for a sink with these `WITH` options (keys
/// lower-cased). Fails like [`validate_sink_options`] on bad options.
pub fn create_sink_writer(options: &BTreeMap<String, String>) -> Result<Box<dyn SinkWriter>> {
    match connector(options, "sink", &SINK_CONNECTORS)?.as_str() {
        "blackhole" => Ok(Box::new(blackhole::BlackholeWriter::new(options)?)),
        other => Err(unknown_connector(other, "sink", &SINK_CONNECTORS)),
    }
}

/// Fails with `INVALID_PARAMETER_VALUE` on an option of connector `name` that is neither
/// `connector` nor one of `known`.
pub(crate) fn check_known_options(
    name: &str,
    options: &BTreeMap<String, String>,
    known: &[&str],
) -> Result<()> {
    match options
        .keys()
        .find(|k| *k != "connector" && !known.contains(&k.as_str()))
    {
        Some(key) => Err(SluiceError::invalid_parameter(format!(
            "unknown {name} option \"{key}\"; allowed: {}",
            std::iter::once("connector")
                .chain(known.iter().copied())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Ok(()),
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

fn connector(options: &BTreeMap<String, String>, what: &str, known: &[&str]) -> Result<String> {
    options
        .get("connector")
        .map(|c| c.trim().to_ascii_lowercase())
        .ok_or_else(|| {
            SluiceError::invalid_parameter(format!(
                "a {what} needs the option connector = '...'; known {what} connectors: {}",
                known.join(", ")
            ))
        })
}

fn unknown_connector(name: &str, what: &str, known: &[&str]) -> SluiceError {
    SluiceError::invalid_parameter(format!(
        "unknown connector \"{name}\"; known {what} connectors: {}",
        known.join(", ")
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
