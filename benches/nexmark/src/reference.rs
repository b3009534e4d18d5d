//! The reference side of the gate: the same Nexmark events, read through the connector's
//! own reader, in memory tables of a plain DataFusion `SessionContext`, queried in batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use sluice_runtime::source::SourceEvent;

use crate::engine::Engine;
use crate::sources::SOURCES;
use crate::{Error, Result};

/// `person`, `auction` and `bid` of a bounded Nexmark stream, as DataFusion tables.
pub struct Reference {
    ctx: SessionContext,
    /// `nexmark.event.num` of the sources.
    pub events: u64,
}

impl Reference {
    /// Generates every event of the three sources bounded to `events` events. The
    /// schemas are the ones Sluice gives the sources' DDL, so both sides read the same
    /// types; the events come from one split, which by the connector's contract are the
    /// events of any number of splits.
    pub async fn generate(events: u64) -> Result<Reference> {
        let mut engine = Engine::start().await?;
        engine.create_sources(events).await?;
        let ctx = batch_context();
        for source in &SOURCES {
            let schema = engine.schema(source.name)?;
            let batches = read_source(&source.options(events), schema.clone()).await?;
            ctx.register_table(
                source.name,
                Arc::new(MemTable::try_new(schema, vec![batches])?),
            )?;
        }
        Ok(Reference { ctx, events })
    }

    /// Runs `sql` as a DataFusion batch query over the generated tables. Window table
    /// functions (`TUMBLE(...)`) are rewritten to plain SQL first, exactly as Sluice does,
    /// so the reference is DataFusion's own batch semantics of the same query.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let parsed = sluice_sql::parse_sql(sql)?;
        let Some(sluice_sql::Statement::Query(mut statement)) =
            parsed.into_iter().next().map(|p| p.statement)
        else {
            return Err(Error::new(format!("not a query: {sql}")));
        };
        sluice_sql::rewrite_extensions(&mut statement)?;
        Ok(self
            .ctx
            .sql(&statement.to_string())
            .await?
            .collect()
            .await?)
    }
}

/// A DataFusion context configured like Sluice's: PostgreSQL dialect, strings as `Utf8`.
fn batch_context() -> SessionContext {
    let config = SessionConfig::new()
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
    let ctx = SessionContext::new_with_config(config);
    sluice_sql::register_functions(&ctx);
    ctx
}

/// Every batch of a bounded source with these options and schema, read as one split.
pub async fn read_source(
    options: &BTreeMap<String, String>,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let mut reader = sluice_connectors::create_source_reader(options, schema, 0, 1)?;
    let mut batches = Vec::new();
    loop {
        match reader.next_event().await? {
            SourceEvent::Batch(batch) => batches.push(batch),
            SourceEvent::Progress => {}
            SourceEvent::End => return Ok(batches),
        }
    }
}
