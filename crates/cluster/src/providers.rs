//! DataFusion table providers for Sluice's relations, so batch `SELECT` and `INSERT` run
//! through DataFusion: tables read their log and take inserts through a [`DataSink`];
//! views read their materialized state; sources refuse batch reads.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream,
};
use futures::StreamExt;
use parking_lot::Mutex;
use sluice_common::error::{SluiceError, SqlState};
use sluice_runtime::operators::materialize::ViewPartition;
use sluice_state::TableLog;

fn external(e: SluiceError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A table: its log, and the set of primary keys written so far.
pub struct TableStorage {
    pub name: String,
    pub log: Arc<TableLog>,
    primary_key: Vec<usize>,
    /// Row-format primary keys present in the table. Tables are append-only for now, so
    /// a key once written stays.
    keys: Mutex<HashSet<Box<[u8]>>>,
}

impl fmt::Debug for TableStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableStorage")
            .field("name", &self.name)
            .finish()
    }
}

impl TableStorage {
    pub fn new(name: String, schema: SchemaRef, primary_key: Vec<usize>) -> Arc<Self> {
        Arc::new(TableStorage {
            name,
            log: TableLog::new(schema),
            primary_key,
            keys: Mutex::new(HashSet::new()),
        })
    }

    fn schema(&self) -> &SchemaRef {
        self.log.schema()
    }

    /// Validates and appends one INSERT's rows as one log entry; returns the row count.
    /// Nothing is appended when any row is invalid.
    fn append(&self, batches: Vec<RecordBatch>) -> Result<u64, SluiceError> {
        let schema = self.schema().clone();
        if batches.is_empty() {
            return Ok(0);
        }
        let combined = concat_batches(&batches[0].schema(), &batches)?;
        for (i, field) in schema.fields().iter().enumerate() {
            if !field.is_nullable() && combined.column(i).null_count() > 0 {
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
        let batch = RecordBatch::try_new(schema.clone(), combined.columns().to_vec())?;
        if !self.primary_key.is_empty() {
            let fields = self
                .primary_key
                .iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect();
            let converter = RowConverter::new(fields)?;
            let key_columns: Vec<_> = self
                .primary_key
                .iter()
                .map(|&i| batch.column(i).clone())
                .collect();
            let rows = converter.convert_columns(&key_columns)?;
            let mut keys = self.keys.lock();
            let mut fresh: HashSet<Box<[u8]>> = HashSet::with_capacity(rows.num_rows());
            for (i, row) in rows.iter().enumerate() {
                let key: Box<[u8]> = row.data().into();
                if keys.contains(&key) || !fresh.insert(key) {
                    let names: Vec<&str> = self
                        .primary_key
                        .iter()
                        .map(|&c| schema.field(c).name().as_str())
                        .collect();
                    let values: Vec<String> = self
                        .primary_key
                        .iter()
                        .map(|&c| {
                            arrow::util::display::array_value_to_string(batch.column(c), i)
                                .unwrap_or_else(|_| "?".into())
                        })
                        .collect();
                    return Err(SluiceError::new(
                        SqlState::UNIQUE_VIOLATION,
                        format!(
                            "duplicate key value violates unique constraint \"{}_pkey\": key ({})=({}) already exists",
                            self.name,
                            names.join(", "),
                            values.join(", ")
                        ),
                    ));
                }
            }
            keys.extend(fresh);
        }
        let rows = batch.num_rows() as u64;
        self.log.append(batch);
        Ok(rows)
    }
}

/// The batch view of a table.
#[derive(Debug)]
pub struct TableProviderImpl {
    pub storage: Arc<TableStorage>,
}

#[async_trait]
impl TableProvider for TableProviderImpl {
    fn schema(&self) -> SchemaRef {
        self.storage.schema().clone()
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
        let snapshot = self.storage.log.snapshot();
        Ok(MemorySourceConfig::try_new_exec(
            &[snapshot],
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
}

/// Writes an INSERT's rows to a table's log, all or nothing.
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
    fn schema(&self) -> &SchemaRef {
        self.storage.schema()
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
        self.storage.append(batches).map_err(external)
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
