//! Savepoints and changing a view's parallelism.
//!
//! `ALTER MATERIALIZED VIEW v SAVEPOINT` takes a checkpoint that retention never deletes.
//! `ALTER MATERIALIZED VIEW v SET PARALLELISM = n` does what Flink's stop-with-savepoint
//! and restart at another parallelism do, in one statement: it takes a savepoint, replans
//! the view at `n`, and runs the global recovery ([`super::recovery`]) with the new job
//! in place of the old. The restore gives each new subtask the state of the key groups
//! it owns (checkpoints record every job's layout), and each new view partition the rows
//! of its key groups (an updating view's rows are routed by the whole row, so that is
//! where their retractions arrive). Without a data directory there is no savepoint: the
//! view is recomputed from its inputs at the new parallelism.
//!
//! Connector sources keep the parallelism they were read at (their positions are per
//! split), recorded in the catalog so a restart plans the same layout. Refused, with the
//! reason: views other views, sinks or subscriptions read (they read it partition by
//! partition), and views whose changed operators keep state that is not divided by key
//! (the temporal filter, NOT IN).

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::ObjectName;
use sluice_common::error::{Result, SluiceError, SqlState};
use sluice_runtime::operators::materialize::ViewPartition;
use sluice_sql::{ObjectKind, RelationKind, Statement, StreamGraph, StreamOperator, parse_sql};
use sluice_state::DEFAULT_KEY_GROUPS;
use sluice_state::checkpoint::CheckpointKind;

use super::StatementResult;
use super::{Coordinator, Inner, JobCheckpoint, Session, object_name, view_state_table};
use crate::CommandTag;
use crate::job::{JobState, Layout};
use crate::results::checkpoints_result;

/// A view to redeploy with a new graph during a recovery.
pub(super) struct Rescale {
    pub id: u64,
    pub view: String,
    pub parallelism: usize,
    pub graph: StreamGraph,
}

impl Coordinator {
    /// `ALTER MATERIALIZED VIEW v SAVEPOINT`: a savepoint of every job (checkpoints are
    /// global), shown like a row of SHOW CHECKPOINTS.
    pub(super) async fn savepoint(&self, view: &ObjectName) -> Result<StatementResult> {
        let name = object_name(view)?;
        self.inner
            .lock()
            .catalog
            .get_kind(&name, ObjectKind::MaterializedView)?;
        let savepoint = self.checkpoint(CheckpointKind::Savepoint).await?;
        checkpoints_result(&[savepoint])
    }

    /// `POST /jobs/{id}/savepoints`: a savepoint, as it concerns job `id` (`None`: no
    /// such job).
    pub async fn job_savepoint(&self, id: u64) -> Result<Option<JobCheckpoint>> {
        if self.job(id).is_none() {
            return Ok(None);
        }
        let savepoint = self.checkpoint(CheckpointKind::Savepoint).await?;
        let listed = self.job_checkpoints(id).await?.unwrap_or_default();
        Ok(listed.into_iter().find(|c| c.epoch == savepoint.epoch))
    }

    /// `ALTER MATERIALIZED VIEW v SET PARALLELISM = n`.
    pub(super) async fn alter_parallelism(
        &self,
        view: &ObjectName,
        parallelism: usize,
    ) -> Result<StatementResult> {
        let name = object_name(view)?;
        if parallelism > DEFAULT_KEY_GROUPS as usize {
            return Err(SluiceError::invalid_parameter(format!(
                "parallelism {parallelism} is more than the {DEFAULT_KEY_GROUPS} key groups a view's state is divided into"
            )));
        }
        let rescale = {
            let _ddl = self.ddl.lock().await;
            let Some(rescale) = self.plan_rescale(&name, parallelism).await? else {
                return Ok(altered());
            };
            rescale
        };
        if self.durable.is_some() {
            self.checkpoint(CheckpointKind::Savepoint).await?;
        }
        self.recover_with(Some(rescale)).await?;
        Ok(altered())
    }

    /// Replans view `name` at `parallelism` and checks its state can follow (`None`: it
    /// already runs at that parallelism).
    async fn plan_rescale(&self, name: &str, parallelism: usize) -> Result<Option<Rescale>> {
        let (definition, old_graph) = {
            let inner = self.inner.lock();
            let relation = inner.catalog.get_kind(name, ObjectKind::MaterializedView)?;
            let readers = inner.catalog.dependents(name);
            if let Some(reader) = readers.first() {
                return Err(SluiceError::unsupported(format!(
                    "materialized view \"{name}\" is read by \"{reader}\"; a view other views, sinks or subscriptions read cannot change its parallelism"
                )));
            }
            let definition = inner.definitions.get(&relation.id).cloned();
            let job = inner.jobs.get(name);
            let ended = match job.map(|job| job.state()) {
                Some(JobState::Failed(error)) => Some(match self.restarts.status(name) {
                    (_, true) => format!(
                        "the job of materialized view \"{name}\" is about to restart after a failure; try again once it runs"
                    ),
                    _ => format!(
                        "the job of materialized view \"{name}\" has failed ({error}); drop and recreate the view"
                    ),
                }),
                Some(JobState::Canceled) => Some(format!(
                    "the job of materialized view \"{name}\" was cancelled; drop and recreate the view"
                )),
                _ => None,
            };
            if let Some(message) = ended {
                return Err(SluiceError::new(
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    message,
                ));
            }
            (definition, job.map(|job| job.graph.clone()))
        };
        let (Some(definition), Some(old_graph)) = (definition, old_graph) else {
            return Err(SluiceError::internal(format!(
                "materialized view \"{name}\" has no recorded definition or job"
            )));
        };
        if definition.parallelism == parallelism {
            return Ok(None);
        }
        let statement = parse_sql(&definition.sql)?.into_iter().next();
        let Some(Statement::CreateMaterializedView { query, options, .. }) =
            statement.as_ref().map(|s| &s.statement)
        else {
            return Err(SluiceError::internal(format!(
                "the recorded definition of \"{name}\" is not CREATE MATERIALIZED VIEW"
            )));
        };
        // Connector sources keep the parallelism they were read at: their positions are
        // per split and cannot be re-split.
        let session = Session {
            streaming_parallelism: parallelism,
            state_ttl_ms: definition.state_ttl_ms,
            source_parallelism: source_parallelism(&old_graph),
            ..Session::default()
        };
        let graph = self.plan_view(&session, name, query, *options).await?;
        if let Some(why) = Layout::of(&old_graph).incompatibility(&graph) {
            return Err(SluiceError::unsupported(format!(
                "materialized view \"{name}\" cannot change its parallelism: {why}"
            )));
        }
        Ok(Some(Rescale {
            id: definition.id,
            view: name.to_string(),
            parallelism,
            graph,
        }))
    }

    /// Puts `rescale`'s graph and partitions in place of its view's (whose job has been
    /// stopped) and records the new parallelism. Returns the graph and partitions to
    /// deploy.
    pub(super) fn apply_rescale(
        &self,
        inner: &mut Inner,
        rescale: &Rescale,
    ) -> Result<(StreamGraph, Vec<Arc<ViewPartition>>)> {
        let relation = inner
            .catalog
            .get_kind(&rescale.view, ObjectKind::MaterializedView)?
            .clone();
        // The DDL lock was let go between planning and this recovery.
        let readers = inner.catalog.dependents(&rescale.view);
        if relation.id != rescale.id || !readers.is_empty() {
            return Err(SluiceError::new(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "materialized view \"{}\" was replaced, or became read by another object, while its parallelism changed",
                    rescale.view
                ),
            ));
        }
        let partitions = self.view_partitions(rescale.id, &rescale.graph)?;
        let count = partitions.len();
        let old = inner.views.get(&rescale.view).map_or(0, |p| p.len());
        for p in count..old {
            self.backend.drop_table(&view_state_table(rescale.id, p));
        }
        let mut relation = relation;
        if let RelationKind::MaterializedView { partitions: n, .. } = &mut relation.kind {
            *n = count;
        }
        inner.catalog.remove(&rescale.view);
        inner.catalog.insert(relation)?;
        let schema = Arc::new(rescale.graph.sink().schema.as_arrow().clone());
        self.publish_view(inner, &rescale.view, schema, partitions.clone())?;
        if let Some(definition) = inner.definitions.get_mut(&rescale.id) {
            definition.parallelism = rescale.parallelism;
            definition.source_parallelism = source_parallelism(&rescale.graph);
        }
        self.save_catalog(inner)?;
        Ok((rescale.graph.clone(), partitions))
    }
}

/// The parallelism `graph` reads its connector sources at (`None`: it reads none).
fn source_parallelism(graph: &StreamGraph) -> Option<usize> {
    graph
        .nodes
        .iter()
        .find(|n| matches!(n.operator, StreamOperator::SourceScan { .. }))
        .map(|n| n.parallelism)
}

fn altered() -> StatementResult {
    StatementResult::Command(CommandTag::new("ALTER MATERIALIZED VIEW"))
}
