//! DataFusion table providers for Sluice's relations, so batch `SELECT` and `INSERT` run
//! through DataFusion: tables read their log and take inserts through a [`DataSink`];
//! views read their materialized state; sources refuse batch reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Int8Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream,
};
use futures::StreamExt;
use sluice_common::error::{SluiceError, SqlState};
use sluice_runtime::message::{CheckpointBarrier, Message, RowKind, changelog_schema};
use sluice_runtime::operators::materialize::{Subscription, ViewPartition};
use sluice_state::wal::LogRecord;
use sluice_state::{DEFAULT_KEY_GROUPS, StateTable};

use crate::metadata::MetadataStore;

fn external(e: SluiceError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Primary key → row, both in Arrow's row format.
type KeyIndex = HashMap<Box<[u8]>, Box<[u8]>>;

/// What a table's writer lock guards.
#[derive(Default)]
struct Writer {
    /// The primary-key index (empty without a key).
    index: KeyIndex,
    /// Sequence number of the last change applied (the table's log position).
    seq: u64,
}

/// Holds a table's writes off: see [`TableStorage::pause_writes`].
pub struct WritesPaused<'a> {
    _writer: tokio::sync::MutexGuard<'a, Writer>,
}

/// Where a durable table writes its changes before applying them.
pub struct Durability {
    /// The table log's store: the data directory, or PostgreSQL.
    pub log: Arc<dyn MetadataStore>,
    pub table_id: u64,
    /// Keep every change since the last completed checkpoint in memory too, so that a
    /// failed job can be restarted from that checkpoint (see [`TableStorage::retain_after`]).
    pub retain: bool,
}

/// The changes after the table's position in the last completed checkpoint: what a view
/// restored from it replays.
#[derive(Default)]
struct Retained {
    /// Every change after this log position is in `records`.
    after: u64,
    records: Vec<LogRecord>,
}

impl Retained {
    fn last(&self) -> u64 {
        self.records.last().map_or(self.after, |r| r.seq)
    }
}

/// A table: its rows (a single-partition store that views subscribe to, like a view's
/// result) and the index of its primary key.
pub struct TableStorage {
    pub name: String,
    schema: SchemaRef,
    /// `schema` with every column nullable, as DataFusion sees the table.
    nullable_schema: SchemaRef,
    primary_key: Vec<usize>,
    append_only: bool,
    /// The rows, and the views reading them.
    pub partition: Arc<ViewPartition>,
    /// Row format of the primary key columns (when there is a key).
    key_converter: Option<RowConverter>,
    /// Held by every write and barrier injection, so changes reach views in the order
    /// they were applied.
    writer: tokio::sync::Mutex<Writer>,
    /// The write-ahead log; `None` for an ephemeral server.
    durability: Option<Durability>,
    /// The changes a view restored from the last completed checkpoint replays.
    retained: parking_lot::Mutex<Retained>,
}

impl fmt::Debug for TableStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableStorage")
            .field("name", &self.name)
            .finish()
    }
}

fn count_batch(n: u64) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt64Array::from(vec![n]))])?;
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema,
        None,
    )?)
}

impl TableStorage {
    pub fn new(
        name: String,
        schema: SchemaRef,
        primary_key: Vec<usize>,
        append_only: bool,
        state: Arc<dyn StateTable>,
        durability: Option<Durability>,
    ) -> Result<Arc<Self>, SluiceError> {
        let key_converter = if primary_key.is_empty() {
            None
        } else {
            let fields = primary_key
                .iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect();
            Some(RowConverter::new(fields)?)
        };
        let partition = ViewPartition::new(
            schema.clone(),
            !append_only,
            DEFAULT_KEY_GROUPS,
            None,
            state,
        )?;
        let nullable_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        Ok(Arc::new(TableStorage {
            name,
            nullable_schema,
            schema,
            primary_key,
            append_only,
            partition,
            key_converter,
            writer: tokio::sync::Mutex::new(Writer::default()),
            durability,
            retained: parking_lot::Mutex::new(Retained::default()),
        }))
    }

    /// A subscription for a view restored from a checkpoint that recorded this table at
    /// log position `position`: the changes after it, then every later change. No write
    /// may run meanwhile (the caller holds [`Self::pause_writes`], or nothing writes yet).
    pub fn subscribe_from(&self, position: u64) -> Result<Subscription, SluiceError> {
        let mut subscription = self.partition.subscribe_changes()?;
        let retained = self.retained.lock();
        if position < retained.after {
            return Err(SluiceError::internal(format!(
                "the changes of table \"{}\" after position {position} are no longer kept (only those after {})",
                self.name, retained.after
            )));
        }
        let last = retained.last();
        if position > last {
            return Err(SluiceError::corrupted(format!(
                "a checkpoint saw {position} changes of table \"{}\", but its log holds {last}",
                self.name
            )));
        }
        subscription.snapshot = retained
            .records
            .iter()
            .filter(|r| r.seq > position)
            .map(|r| r.batch.clone())
            .collect();
        Ok(subscription)
    }

    /// Whether [`Self::subscribe_from`] can replay from `position`.
    pub fn retains_after(&self, position: u64) -> bool {
        position >= self.retained.lock().after
    }

    /// Forgets the retained changes up to `position`, once a checkpoint that saw them
    /// has completed (or, with `None`, all of them: nothing will restore from them).
    pub fn retain_after(&self, position: Option<u64>) {
        let mut retained = self.retained.lock();
        let through = position.unwrap_or_else(|| retained.last());
        retained.records.retain(|r| r.seq > through);
        retained.after = retained.after.max(through);
    }

    /// Holds off every write (and barrier) to this table until the guard is dropped.
    pub async fn pause_writes(&self) -> WritesPaused<'_> {
        WritesPaused {
            _writer: self.writer.lock().await,
        }
    }

    /// Applies the changes read back from the log at startup, in order, and rebuilds the
    /// primary-key index; with `keep_for_restore` also retains them for
    /// [`Self::subscribe_from`]. Fails if a change is missing (a gap in sequence numbers).
    pub async fn replay(
        &self,
        records: Vec<LogRecord>,
        keep_for_restore: bool,
    ) -> Result<(), SluiceError> {
        let mut writer = self.writer.lock().await;
        for record in records {
            if record.seq != writer.seq + 1 {
                return Err(SluiceError::corrupted(format!(
                    "the table log misses changes of table \"{}\": change {} follows change {}",
                    self.name, record.seq, writer.seq
                )));
            }
            self.partition.write(record.batch.clone()).await?;
            writer.seq = record.seq;
            let mut retained = self.retained.lock();
            if keep_for_restore {
                retained.records.push(record);
            } else {
                retained.after = writer.seq;
            }
        }
        if self.key_converter.is_some() {
            writer.index.clear();
            for batch in self.partition.scan()? {
                let keys = self
                    .keys_of(&batch)?
                    .expect("a table with a key converter has keys");
                let rows = self
                    .partition
                    .converter()
                    .convert_columns(batch.columns())?;
                for (i, key) in keys.iter().enumerate() {
                    writer
                        .index
                        .insert(key.data().into(), rows.row(i).data().into());
                }
            }
        }
        Ok(())
    }

    /// Makes `changes` durable (when the table is), then applies them and passes them to
    /// the views reading the table. The caller holds the writer lock.
    async fn commit(&self, writer: &mut Writer, changes: RecordBatch) -> Result<(), SluiceError> {
        let seq = writer.seq + 1;
        if let Some(durability) = &self.durability {
            let log = durability.log.clone();
            let table_id = durability.table_id;
            let batch = changes.clone();
            tokio::task::spawn_blocking(move || log.append(table_id, seq, &batch))
                .await
                .map_err(|e| SluiceError::internal(format!("table log writer stopped: {e}")))??;
            let mut retained = self.retained.lock();
            if durability.retain {
                retained.records.push(LogRecord {
                    table_id,
                    seq,
                    batch: changes.clone(),
                });
            } else {
                retained.after = seq;
            }
        }
        writer.seq = seq;
        self.partition.write(changes).await
    }

    /// The table's columns, all nullable: what DataFusion plans inserts against, so that
    /// NOT NULL violations reach [`Self::insert`] and are reported like PostgreSQL does.
    pub fn insert_schema(&self) -> &SchemaRef {
        &self.nullable_schema
    }

    /// Passes a barrier to the views reading this table, after every write before it.
    /// Returns the table's log position at the barrier: the changes a view's state at
    /// this barrier includes.
    pub async fn inject(&self, barrier: CheckpointBarrier) -> u64 {
        let writer = self.writer.lock().await;
        self.partition
            .write_control(Message::Barrier(barrier))
            .await;
        writer.seq
    }

    fn check_not_null(&self, batch: &RecordBatch) -> Result<(), SluiceError> {
        for (i, field) in self.schema.fields().iter().enumerate() {
            if !field.is_nullable() && batch.column(i).null_count() > 0 {
                return Err(SluiceError::new(
                    SqlState::NOT_NULL_VIOLATION,
                    format!(
                        "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                        field.name(),
                        self.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn keys_of(&self, batch: &RecordBatch) -> Result<Option<arrow::row::Rows>, SluiceError> {
        let Some(converter) = &self.key_converter else {
            return Ok(None);
        };
        let columns: Vec<_> = self
            .primary_key
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        Ok(Some(converter.convert_columns(&columns)?))
    }

    fn duplicate_key(&self, batch: &RecordBatch, row: usize) -> SluiceError {
        let names: Vec<&str> = self
            .primary_key
            .iter()
            .map(|&c| self.schema.field(c).name().as_str())
            .collect();
        let values: Vec<String> = self
            .primary_key
            .iter()
            .map(|&c| {
                arrow::util::display::array_value_to_string(batch.column(c), row)
                    .unwrap_or_else(|_| "?".into())
            })
            .collect();
        SluiceError::new(
            SqlState::UNIQUE_VIOLATION,
            format!(
                "duplicate key value violates unique constraint \"{}_pkey\": key ({})=({}) already exists",
                self.name,
                names.join(", "),
                values.join(", ")
            ),
        )
    }

    /// The changelog batch `retracted` rows (row format) with `retract_op`, followed by
    /// `added` with their ops.
    fn changes(
        &self,
        retracted: &[Box<[u8]>],
        retract_op: RowKind,
        added: Option<(&RecordBatch, Vec<RowKind>)>,
    ) -> Result<RecordBatch, SluiceError> {
        let converter = self.partition.converter();
        let parser = converter.parser();
        let mut parts = Vec::new();
        let mut ops: Vec<i8> = Vec::new();
        if !retracted.is_empty() {
            let columns = converter.convert_rows(retracted.iter().map(|r| parser.parse(r)))?;
            parts.push(RecordBatch::try_new(self.schema.clone(), columns)?);
            ops.extend(std::iter::repeat_n(retract_op as i8, retracted.len()));
        }
        if let Some((batch, kinds)) = added {
            parts.push(batch.clone());
            ops.extend(kinds.into_iter().map(|k| k as i8));
        }
        let data = concat_batches(&self.schema, &parts)?;
        let mut columns = data.columns().to_vec();
        columns.push(Arc::new(Int8Array::from(ops)));
        Ok(RecordBatch::try_new(
            changelog_schema(&self.schema),
            columns,
        )?)
    }

    /// INSERT: all rows or none. On a table with a primary key and without APPEND ONLY a
    /// row whose key exists replaces the old row (upsert); on an APPEND ONLY table it is
    /// refused with `23505`.
    pub async fn insert(&self, batches: Vec<RecordBatch>) -> Result<u64, SluiceError> {
        if batches.is_empty() {
            return Ok(0);
        }
        let mut writer = self.writer.lock().await;
        let combined = concat_batches(&batches[0].schema(), &batches)?;
        self.check_not_null(&combined)?;
        let batch = RecordBatch::try_new(self.schema.clone(), combined.columns().to_vec())?;
        let rows = batch.num_rows() as u64;
        let Some(keys) = self.keys_of(&batch)? else {
            let out = if self.append_only {
                batch
            } else {
                self.changes(
                    &[],
                    RowKind::Insert,
                    Some((&batch, vec![RowKind::Insert; rows as usize])),
                )?
            };
            self.commit(&mut writer, out).await?;
            return Ok(rows);
        };
        let index = &writer.index;
        if self.append_only {
            let mut fresh: HashMap<Box<[u8]>, Box<[u8]>> = HashMap::with_capacity(keys.num_rows());
            for (i, key) in keys.iter().enumerate() {
                let key: Box<[u8]> = key.data().into();
                if index.contains_key(&key) || fresh.insert(key, Box::default()).is_some() {
                    return Err(self.duplicate_key(&batch, i));
                }
            }
            self.commit(&mut writer, batch).await?;
            writer.index.extend(fresh);
            return Ok(rows);
        }
        // Upsert. Within one INSERT the last row of a key wins, as if rows came one by one.
        let full_rows = self
            .partition
            .converter()
            .convert_columns(batch.columns())?;
        let mut position_of_key: HashMap<Box<[u8]>, usize> = HashMap::new();
        let mut kept: Vec<(usize, bool)> = Vec::new();
        let mut retracted: Vec<Box<[u8]>> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let key: Box<[u8]> = key.data().into();
            if let Some(&pos) = position_of_key.get(&key) {
                kept[pos].0 = i;
                continue;
            }
            let replaces = match index.get(&key) {
                Some(old) => {
                    retracted.push(old.clone());
                    true
                }
                None => false,
            };
            position_of_key.insert(key, kept.len());
            kept.push((i, replaces));
        }
        let indices = UInt32Array::from(kept.iter().map(|(i, _)| *i as u32).collect::<Vec<_>>());
        let added = take_record_batch(&batch, &indices)?;
        let kinds = kept
            .iter()
            .map(|(_, replaces)| {
                if *replaces {
                    RowKind::UpdateAfter
                } else {
                    RowKind::Insert
                }
            })
            .collect();
        let out = self.changes(&retracted, RowKind::UpdateBefore, Some((&added, kinds)))?;
        self.commit(&mut writer, out).await?;
        for (key, pos) in position_of_key {
            writer
                .index
                .insert(key, full_rows.row(kept[pos].0).data().into());
        }
        Ok(rows)
    }

    /// The rows matching every predicate, from the current contents.
    fn matching(&self, filters: &[Arc<dyn PhysicalExpr>]) -> Result<RecordBatch, SluiceError> {
        let current = concat_batches(&self.schema, &self.partition.scan()?)?;
        let mut mask = BooleanArray::from(vec![true; current.num_rows()]);
        for f in filters {
            let value = f.evaluate(&current)?.into_array(current.num_rows())?;
            let value = value
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| SluiceError::internal("WHERE clause is not boolean"))?;
            mask = arrow::compute::and_kleene(&mask, value)?;
        }
        Ok(filter_record_batch(&current, &mask)?)
    }

    fn refuse_if_append_only(&self, what: &str) -> Result<(), SluiceError> {
        if self.append_only {
            return Err(SluiceError::unsupported(format!(
                "{what} on table \"{}\" is not allowed: it is APPEND ONLY",
                self.name
            )));
        }
        Ok(())
    }

    /// DELETE: removes the rows matching every predicate.
    pub async fn delete(&self, filters: &[Arc<dyn PhysicalExpr>]) -> Result<u64, SluiceError> {
        self.refuse_if_append_only("DELETE")?;
        let mut writer = self.writer.lock().await;
        let matching = self.matching(filters)?;
        let rows = matching.num_rows() as u64;
        if rows == 0 {
            return Ok(0);
        }
        let out = self.changes(
            &[],
            RowKind::Delete,
            Some((&matching, vec![RowKind::Delete; rows as usize])),
        )?;
        self.commit(&mut writer, out).await?;
        if let Some(keys) = self.keys_of(&matching)? {
            for key in keys.iter() {
                writer.index.remove(key.data());
            }
        }
        Ok(rows)
    }

    /// UPDATE: replaces each row matching every predicate with `assignments` applied
    /// (column index → new value over the old row).
    pub async fn update(
        &self,
        assignments: &[(usize, Arc<dyn PhysicalExpr>)],
        filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<u64, SluiceError> {
        self.refuse_if_append_only("UPDATE")?;
        let mut writer = self.writer.lock().await;
        let old = self.matching(filters)?;
        let rows = old.num_rows();
        if rows == 0 {
            return Ok(0);
        }
        let mut columns = old.columns().to_vec();
        for (column, expr) in assignments {
            let value = expr.evaluate(&old)?.into_array(rows)?;
            columns[*column] =
                arrow::compute::cast(&value, self.schema.field(*column).data_type())?;
        }
        self.check_not_null(&RecordBatch::try_new(
            self.nullable_schema.clone(),
            columns.clone(),
        )?)?;
        let new = RecordBatch::try_new(self.schema.clone(), columns)?;
        // The index changes, checked now and applied once the change is committed.
        let mut index_changes: Option<(Vec<Box<[u8]>>, KeyIndex)> = None;
        if let (Some(old_keys), Some(new_keys)) = (self.keys_of(&old)?, self.keys_of(&new)?) {
            let old_keys: Vec<Box<[u8]>> = old_keys.iter().map(|k| k.data().into()).collect();
            let mut taken: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
            for (i, key) in new_keys.iter().enumerate() {
                let exists_elsewhere = writer.index.contains_key(key.data())
                    && !old_keys.iter().any(|k| **k == *key.data());
                if exists_elsewhere || !taken.insert(key.data()) {
                    return Err(self.duplicate_key(&new, i));
                }
            }
            let full_rows = self.partition.converter().convert_columns(new.columns())?;
            let inserted = new_keys
                .iter()
                .enumerate()
                .map(|(i, key)| (key.data().into(), full_rows.row(i).data().into()))
                .collect();
            index_changes = Some((old_keys, inserted));
        }
        let old_rows: Vec<Box<[u8]>> = self
            .partition
            .converter()
            .convert_columns(old.columns())?
            .iter()
            .map(|r| r.data().into())
            .collect();
        let out = self.changes(
            &old_rows,
            RowKind::UpdateBefore,
            Some((&new, vec![RowKind::UpdateAfter; rows])),
        )?;
        self.commit(&mut writer, out).await?;
        if let Some((removed, inserted)) = index_changes {
            for key in &removed {
                writer.index.remove(key);
            }
            writer.index.extend(inserted);
        }
        Ok(rows as u64)
    }
}

/// The batch view of a table.
#[derive(Debug)]
pub struct TableProviderImpl {
    pub storage: Arc<TableStorage>,
}

impl TableProviderImpl {
    fn physical(&self, state: &dyn Session, expr: Expr) -> DfResult<Arc<dyn PhysicalExpr>> {
        let schema = DFSchema::try_from(self.storage.schema.as_ref().clone())?;
        state.create_physical_expr(expr, &schema)
    }
}

#[async_trait]
impl TableProvider for TableProviderImpl {
    /// All columns nullable: NOT NULL is checked by [`TableStorage::insert`], which
    /// reports violations the way PostgreSQL does (`23502`, naming the column).
    fn schema(&self) -> SchemaRef {
        self.storage.nullable_schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let rows = self.storage.partition.scan().map_err(external)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[rows],
            self.schema(),
            projection.cloned(),
        )?)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(external(SluiceError::unsupported(format!(
                "{insert_op} is not supported; tables accept INSERT INTO only"
            ))));
        }
        let sink = TableSink {
            storage: self.storage.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    /// Runs the DELETE while planning; Sluice never plans DML without executing it
    /// (`EXPLAIN` is refused for DML).
    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let filters = filters
            .into_iter()
            .map(|f| self.physical(state, f))
            .collect::<DfResult<Vec<_>>>()?;
        count_batch(self.storage.delete(&filters).await.map_err(external)?)
    }

    /// Runs the UPDATE while planning, like [`Self::delete_from`].
    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let filters = filters
            .into_iter()
            .map(|f| self.physical(state, f))
            .collect::<DfResult<Vec<_>>>()?;
        let assignments = assignments
            .into_iter()
            .map(|(column, expr)| {
                let index = self.storage.schema.index_of(&column)?;
                Ok((index, self.physical(state, expr)?))
            })
            .collect::<DfResult<Vec<_>>>()?;
        count_batch(
            self.storage
                .update(&assignments, &filters)
                .await
                .map_err(external)?,
        )
    }
}

/// Writes an INSERT's rows to a table, all or nothing.
struct TableSink {
    storage: Arc<TableStorage>,
}

impl fmt::Debug for TableSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableSink({})", self.storage.name)
    }
}

impl DisplayAs for TableSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableSink: table={}", self.storage.name)
    }
}

#[async_trait]
impl DataSink for TableSink {
    /// The schema DataFusion plans inserts against (see [`TableProviderImpl::schema`]).
    fn schema(&self) -> &SchemaRef {
        self.storage.insert_schema()
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let mut batches = Vec::new();
        while let Some(batch) = data.next().await {
            batches.push(batch?);
        }
        self.storage.insert(batches).await.map_err(external)
    }
}

/// The batch view of a source: refuses reads (a source's data is read by views).
#[derive(Debug)]
pub struct SourceProvider {
    pub name: String,
    pub schema: SchemaRef,
}

#[async_trait]
impl TableProvider for SourceProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(external(SluiceError::unsupported(format!(
            "source \"{}\" cannot be queried directly; create a materialized view over it and query the view",
            self.name
        ))))
    }
}

/// The batch view of a materialized view: its current rows.
pub struct ViewProvider {
    pub schema: SchemaRef,
    pub partitions: Vec<Arc<ViewPartition>>,
}

impl fmt::Debug for ViewProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ViewProvider({} partitions)", self.partitions.len())
    }
}

#[async_trait]
impl TableProvider for ViewProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let partitions = self
            .partitions
            .iter()
            .map(|p| p.scan().map_err(external))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &partitions,
            self.schema(),
            projection.cloned(),
        )?)
    }
}
