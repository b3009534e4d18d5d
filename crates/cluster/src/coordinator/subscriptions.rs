//! Subscriptions and their cursors, as in RisingWave: reading a materialized view's
//! changes since a point, over plain SQL.
//!
//! `CREATE SUBSCRIPTION s FROM v WITH (retention = '1 day')` makes every partition of
//! `v` log the changes it applies (`sluice_runtime::operators::change_log`), labelled
//! with the epoch of the barrier after them and kept for the retention (the longest of
//! the view's subscriptions'). `DECLARE c SUBSCRIPTION CURSOR FOR s [SINCE ...]` places
//! a cursor in that log, and `FETCH n FROM c` returns the next `n` changes as rows: the
//! view's columns, the change's kind (`op`) and the time its epoch was applied
//! (`changed_at_ms`).
//!
//! A cursor reads an epoch once every partition has applied its barrier (after FLUSH,
//! a checkpoint, or the end of a bounded input), so what it reads is always a
//! consistent cut of the view. Its position is (epoch, rows of that epoch already
//! read), in the order epoch, partition, change.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::ObjectName;
use sluice_common::SqlState;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::message::{RowKind, split_changelog};
use sluice_runtime::operators::materialize::ViewPartition;
use sluice_sql::{CursorStart, ObjectKind, Relation, RelationKind};

use super::{CommandTag, Coordinator, Inner, Session, StatementResult, object_name};
use crate::metadata::Definition;
use crate::results::text_result;

/// A session's cursor over a subscription.
#[derive(Debug, Clone)]
pub struct Cursor {
    subscription: String,
    view: String,
    /// The rows FETCH returns: the view's columns, `op` and `changed_at_ms`.
    schema: SchemaRef,
    /// The next epoch to read.
    epoch: u64,
    /// Rows of `epoch` already read.
    skip: usize,
    /// `SINCE` a time: epochs applied before it are not read (it may be in the future).
    not_before_ms: Option<i64>,
}

impl Cursor {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

/// The rows a cursor over a view of `schema` returns.
fn cursor_schema(view: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = view.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("op", DataType::Utf8, false));
    fields.push(Field::new("changed_at_ms", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

impl Coordinator {
    pub(super) async fn create_subscription(
        &self,
        name: &ObjectName,
        if_not_exists: bool,
        view: &ObjectName,
        retention_ms: i64,
        sql: &str,
    ) -> Result<StatementResult> {
        let tag = StatementResult::Command(CommandTag::new("CREATE SUBSCRIPTION"));
        let (name, view) = (object_name(name)?, object_name(view)?);
        let _ddl = self.ddl.lock().await;
        let mut inner = self.inner.lock();
        if if_not_exists && inner.catalog.get(&name).is_some() {
            return Ok(tag);
        }
        inner.catalog.check_free(&name)?;
        let schema = cursor_schema(
            &inner
                .catalog
                .get_kind(&view, ObjectKind::MaterializedView)?
                .schema,
        );
        let id = inner.catalog.allocate_id();
        inner.catalog.insert(Relation {
            id,
            name: name.clone(),
            schema,
            kind: RelationKind::Subscription {
                view: vec![view.clone()],
                retention_ms,
            },
            watermark: None,
        })?;
        refresh_change_logs(&inner, &view);
        self.record_definition(&mut inner, Definition::without_job(id, name, sql))?;
        Ok(tag)
    }

    pub(super) fn declare_cursor(
        &self,
        session: &mut Session,
        name: &str,
        subscription: &ObjectName,
        since: CursorStart,
    ) -> Result<StatementResult> {
        if session.cursors.contains_key(name) {
            return Err(SluiceError::new(
                SqlState::DUPLICATE_CURSOR,
                format!("cursor \"{name}\" already exists"),
            ));
        }
        let subscription = object_name(subscription)?;
        let (view, schema, partitions) = self.subscription_view(&subscription)?;
        let readable = readable_epoch(&partitions);
        let epoch = match since {
            CursorStart::Now => readable.saturating_add(1),
            CursorStart::Begin => {
                let mut dropped = 0;
                for partition in &partitions {
                    dropped = dropped.max(partition.changes_dropped_through()?);
                }
                dropped + 1
            }
            CursorStart::Time(ms) => {
                let mut start = readable.saturating_add(1);
                for partition in &partitions {
                    let (first, dropped_time) = partition.first_epoch_since(ms)?;
                    if dropped_time.is_some_and(|t| t >= ms) {
                        return Err(SluiceError::new(
                            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                            format!(
                                "subscription \"{subscription}\" no longer holds the changes since {ms}: they are older than its retention"
                            ),
                        ));
                    }
                    start = start.min(first.unwrap_or(u64::MAX));
                }
                start
            }
        };
        session.cursors.insert(
            name.to_string(),
            Cursor {
                subscription,
                view,
                schema,
                epoch,
                skip: 0,
                not_before_ms: match since {
                    CursorStart::Time(ms) => Some(ms),
                    _ => None,
                },
            },
        );
        Ok(StatementResult::Command(CommandTag::new("DECLARE CURSOR")))
    }

    /// The next `count` changes of a cursor.
    pub(super) fn fetch(
        &self,
        session: &mut Session,
        name: &str,
        count: usize,
    ) -> Result<StatementResult> {
        let cursor = session
            .cursors
            .get_mut(name)
            .ok_or_else(|| no_cursor(name))?;
        let (view, _, partitions) = self.subscription_view(&cursor.subscription)?;
        if view != cursor.view {
            return Err(SluiceError::new(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "subscription \"{}\" was dropped and created again; declare the cursor again",
                    cursor.subscription
                ),
            ));
        }
        let readable = readable_epoch(&partitions);
        // Epoch → its changes in partition order, with each batch's time.
        let mut epochs: BTreeMap<u64, Vec<(i64, RecordBatch)>> = BTreeMap::new();
        if cursor.epoch <= readable {
            for partition in &partitions {
                let (changes, dropped) = partition.read_changes(cursor.epoch, readable)?;
                if dropped >= cursor.epoch {
                    return Err(SluiceError::new(
                        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        format!(
                            "cursor \"{name}\" fell behind subscription \"{}\": the changes it would read next are older than the retention",
                            cursor.subscription
                        ),
                    ));
                }
                let not_before = cursor.not_before_ms.unwrap_or(i64::MIN);
                for change in changes.into_iter().filter(|c| c.time_ms >= not_before) {
                    epochs
                        .entry(change.epoch)
                        .or_default()
                        .push((change.time_ms, change.batch));
                }
            }
        }
        let mut rows = Vec::new();
        let mut remaining = count;
        let mut position = (readable.saturating_add(1).max(cursor.epoch), 0);
        for (epoch, batches) in epochs {
            let skip = if epoch == cursor.epoch {
                cursor.skip
            } else {
                0
            };
            let changes = epoch_rows(&cursor.schema, &batches)?;
            let take = remaining.min(changes.num_rows().saturating_sub(skip));
            rows.push(changes.slice(skip.min(changes.num_rows()), take));
            remaining -= take;
            if skip + take < changes.num_rows() {
                position = (epoch, skip + take);
                break;
            }
        }
        (cursor.epoch, cursor.skip) = position;
        Ok(StatementResult::Rows {
            schema: cursor.schema.clone(),
            batches: rows,
        })
    }

    pub(super) fn close_cursor(
        &self,
        session: &mut Session,
        name: Option<&str>,
    ) -> Result<StatementResult> {
        match name {
            None => session.cursors.clear(),
            Some(name) => {
                session
                    .cursors
                    .remove(name)
                    .ok_or_else(|| no_cursor(name))?;
            }
        }
        Ok(StatementResult::Command(CommandTag::new("CLOSE CURSOR")))
    }

    /// `SHOW SUBSCRIPTIONS`: name, view, retention.
    pub(super) fn show_subscriptions(&self) -> Result<StatementResult> {
        let inner = self.inner.lock();
        let rows = inner
            .catalog
            .relations()
            .filter_map(|r| match &r.kind {
                RelationKind::Subscription { view, retention_ms } => Some(vec![
                    Some(r.name.clone()),
                    view.first().cloned(),
                    Some(format_duration(*retention_ms)),
                ]),
                _ => None,
            })
            .collect();
        text_result(&SUBSCRIPTION_COLUMNS, rows)
    }

    /// The view a subscription reads, a cursor's schema over it, and its partitions.
    fn subscription_view(
        &self,
        subscription: &str,
    ) -> Result<(String, SchemaRef, Vec<Arc<ViewPartition>>)> {
        let inner = self.inner.lock();
        let relation = inner
            .catalog
            .get_kind(subscription, ObjectKind::Subscription)?;
        let RelationKind::Subscription { view, .. } = &relation.kind else {
            return Err(SluiceError::internal("a subscription of another kind"));
        };
        let view = view.first().cloned().unwrap_or_default();
        let partitions = inner.views.get(&view).cloned().unwrap_or_default();
        Ok((view, relation.schema.clone(), partitions))
    }
}

/// The columns of `SHOW SUBSCRIPTIONS`.
pub(super) const SUBSCRIPTION_COLUMNS: [&str; 3] = ["Name", "View", "Retention"];

/// Makes `view`'s partitions keep their changes for the longest retention of its
/// subscriptions, or keep none when it has none.
pub(super) fn refresh_change_logs(inner: &Inner, view: &str) {
    let retention = inner
        .catalog
        .relations()
        .filter_map(|r| match &r.kind {
            RelationKind::Subscription {
                view: read,
                retention_ms,
            } if read.first().is_some_and(|v| v == view) => Some(*retention_ms),
            _ => None,
        })
        .max();
    for partition in inner.views.get(view).into_iter().flatten() {
        partition.retain_changes(retention);
    }
}

/// The last epoch every partition has applied.
fn readable_epoch(partitions: &[Arc<ViewPartition>]) -> u64 {
    partitions
        .iter()
        .map(|p| p.readable_epoch())
        .min()
        .unwrap_or(0)
}

/// One epoch's changes as cursor rows, in partition order.
fn epoch_rows(schema: &SchemaRef, batches: &[(i64, RecordBatch)]) -> Result<RecordBatch> {
    let mut rows = Vec::with_capacity(batches.len());
    for (time_ms, batch) in batches {
        let (data, ops) = split_changelog(batch);
        let mut columns: Vec<ArrayRef> = data.columns().to_vec();
        columns.push(Arc::new(
            ops.values()
                .iter()
                .map(|&op| Some(RowKind::name(op)))
                .collect::<StringArray>(),
        ));
        columns.push(Arc::new(Int64Array::from(vec![*time_ms; data.num_rows()])));
        rows.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(concat_batches(schema, &rows)?)
}

fn no_cursor(name: &str) -> SluiceError {
    SluiceError::new(
        SqlState::INVALID_CURSOR_NAME,
        format!("cursor \"{name}\" does not exist"),
    )
}

/// A duration in the largest unit that divides it (`1 day`, `90 minutes`).
fn format_duration(ms: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (86_400_000, "day"),
        (3_600_000, "hour"),
        (60_000, "minute"),
        (1_000, "second"),
        (1, "millisecond"),
    ];
    let (size, unit) = UNITS
        .into_iter()
        .find(|(size, _)| ms % size == 0)
        .unwrap_or((1, "millisecond"));
    let n = ms / size;
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_in_the_largest_unit_that_divides_them() {
        assert_eq!(format_duration(86_400_000), "1 day");
        assert_eq!(format_duration(90 * 60_000), "90 minutes");
        assert_eq!(format_duration(1_500), "1500 milliseconds");
    }
}
