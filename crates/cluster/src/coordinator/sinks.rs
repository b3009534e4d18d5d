//! Sinks as the coordinator sees them: `SHOW SINKS` and `GET /sinks`.
//!
//! A sink is created like a materialized view (`create_materialized_view` plans both,
//! and a sink's job is a view's job whose end writes to a connector instead of view
//! partitions), is checkpointed and restarted like one, and is committed after each
//! completed checkpoint (`Coordinator::checkpoint`).

use sluice_sql::RelationKind;

use super::Coordinator;

/// One sink and what it has received, summed over its subtasks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkInfo {
    pub name: String,
    pub connector: String,
    /// The query as written (`FROM v` for `CREATE SINK s FROM v`).
    pub query: String,
    /// Rows added (+I, +U) and retracted (-D, -U).
    pub inserts: u64,
    pub deletes: u64,
    /// Order-independent checksum of the rows the changelog leaves
    /// (`sluice_runtime::sink::rows_checksum` of them).
    pub checksum: u64,
    /// The last checkpoint the sink committed (0: none yet).
    pub committed_epoch: u64,
}

impl SinkInfo {
    /// Rows the changelog leaves: insertions minus retractions.
    pub fn rows(&self) -> i64 {
        self.inserts as i64 - self.deletes as i64
    }
}

impl Coordinator {
    /// Every sink, by name.
    pub fn sinks(&self) -> Vec<SinkInfo> {
        let inner = self.inner.lock();
        inner
            .catalog
            .relations()
            .filter_map(|r| {
                let RelationKind::Sink { query, options, .. } = &r.kind else {
                    return None;
                };
                let job = inner.jobs.get(&r.name);
                let counts = job.map(|j| j.sink_counts()).unwrap_or_default();
                Some(SinkInfo {
                    name: r.name.clone(),
                    connector: options.get("connector").cloned().unwrap_or_default(),
                    query: query.clone(),
                    inserts: counts.inserts,
                    deletes: counts.deletes,
                    checksum: counts.checksum,
                    committed_epoch: job.map_or(0, |j| j.sink_committed_epoch()),
                })
            })
            .collect()
    }
}
