//! A Sluice engine embedded in this process: a fresh coordinator with its one worker.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use sluice_cluster::{Coordinator, Session, SinkInfo, StatementResult};
use sluice_common::config::ServeConfig;

use crate::sources::SOURCES;
use crate::{Error, Result};

/// A coordinator and one session on it.
pub struct Engine {
    coordinator: Arc<Coordinator>,
    session: Session,
}

impl Engine {
    /// Starts a fresh coordinator (empty catalog, in-memory state).
    pub async fn start() -> Result<Engine> {
        Engine::start_with(ServeConfig::ephemeral()).await
    }

    /// Starts a coordinator with `config`.
    pub async fn start_with(config: ServeConfig) -> Result<Engine> {
        let coordinator = Coordinator::start(config).await?;
        let session = coordinator.new_session();
        Ok(Engine {
            coordinator,
            session,
        })
    }

    /// Runs every statement of `sql` and returns the last result. Fails with the
    /// statement's error, prefixed by the SQL.
    pub async fn run(&mut self, sql: &str) -> Result<StatementResult> {
        let context = |e: sluice_common::error::SluiceError| {
            Error::new(format!("{sql}: {} (SQLSTATE {:?})", e.message, e.state))
        };
        let mut last = None;
        for stmt in self.coordinator.parse(sql).map_err(context)? {
            last = Some(
                self.coordinator
                    .execute(&mut self.session, &stmt, &[])
                    .await
                    .map_err(context)?,
            );
        }
        last.ok_or_else(|| Error::new(format!("no statement in `{sql}`")))
    }

    /// The batches of a query.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        match self.run(sql).await? {
            StatementResult::Rows { batches, .. } => Ok(batches),
            other => Err(Error::new(format!("{sql}: expected rows, got {other:?}"))),
        }
    }

    /// Sets `streaming_parallelism` for the views created next.
    pub async fn set_parallelism(&mut self, parallelism: usize) -> Result<()> {
        self.run(&format!("SET streaming_parallelism = {parallelism}"))
            .await
            .map(drop)
    }

    /// Creates `person`, `auction` and `bid`, bounded to `events` events.
    pub async fn create_sources(&mut self, events: u64) -> Result<()> {
        for source in &SOURCES {
            self.run(&source.ddl(events)).await?;
        }
        Ok(())
    }

    /// Creates `person`, `auction` and `bid` over the Parquet files under `dir`.
    pub async fn create_parquet_sources(&mut self, dir: &std::path::Path) -> Result<()> {
        for source in &SOURCES {
            self.run(&source.parquet_ddl(dir)).await?;
        }
        Ok(())
    }

    /// The schema Sluice gave a relation.
    pub fn schema(&self, name: &str) -> Result<SchemaRef> {
        self.coordinator
            .relations()
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.schema)
            .ok_or_else(|| Error::new(format!("no relation `{name}` in the catalog")))
    }

    /// What sink `name` has received.
    pub fn sink(&self, name: &str) -> Result<SinkInfo> {
        self.coordinator
            .sinks()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::new(format!("no sink `{name}`")))
    }

    /// Waits until every view and sink reflects its sources completely (bounded sources
    /// are read to their end), then fails if a job failed on the way.
    pub async fn flush(&mut self) -> Result<()> {
        self.run("FLUSH").await?;
        for job in self.coordinator.jobs() {
            if let Some(error) = job.error {
                return Err(Error::new(format!(
                    "the job of `{}` failed: {error}",
                    job.name
                )));
            }
            if job.status == "FAILED" {
                return Err(Error::new(format!("the job of `{}` failed", job.name)));
            }
        }
        Ok(())
    }
}
