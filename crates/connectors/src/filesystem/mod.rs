//! The `filesystem` source: Parquet files in a directory of object storage.
//!
//! ```sql
//! CREATE SOURCE bid (auction BIGINT, price BIGINT, date_time TIMESTAMP(3))
//! WITH (connector = 'filesystem', path = 's3://bucket/bids/', format = 'parquet');
//! ```
//!
//! - `path`: a directory as a local path, `file:///dir` or `s3://bucket/prefix` (S3's
//!   endpoint, credentials and region come from the `AWS_*` environment variables).
//!   Every object under it whose name ends in `.parquet` is read, in path order.
//! - `format`: `parquet` (the default; CSV and JSON are not supported yet).
//!
//! The source is bounded: it reads the files present when its job starts, then ends.
//! Files are spread over the source's splits by position in path order (split `i` of
//! `n` reads files `i, i + n, ...`), so the union of the splits is every file once,
//! whatever the parallelism. Columns are matched by name and cast to the declared
//! types; a file without a declared column is an error naming both. A split's position
//! is the number of rows it has returned, so a restored split skips that many rows.
//! Files are read a row group at a time (the Parquet crate's async reader over
//! `object_store`), so a file need not fit in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::{
    AsyncFileReader, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::source::{SourceEvent, SourceReader};
use sluice_state::object_url::open_object_location;

use crate::check_known_options;

/// Rows per batch read from a file.
const BATCH_ROWS: usize = 8192;

/// The batches of one file, read a row group at a time.
type FileStream = ParquetRecordBatchStream<ObjectFile>;

/// One Parquet file in object storage, read by byte ranges: the Parquet crate's
/// `AsyncFileReader` over `object_store` (the crate's own `ParquetObjectReader` is
/// deprecated in favour of implementing this).
struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectFile {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// The options of a filesystem source, checked.
struct FileOptions {
    path: String,
}

impl FileOptions {
    fn parse(options: &BTreeMap<String, String>) -> Result<FileOptions> {
        check_known_options("filesystem", options, &["path", "format"])?;
        let format = options
            .get("format")
            .map_or("parquet".to_string(), |f| f.trim().to_ascii_lowercase());
        match format.as_str() {
            "parquet" => {}
            "csv" | "json" => {
                return Err(SluiceError::unsupported(format!(
                    "the filesystem source reads format = 'parquet' only; '{format}' is not supported yet"
                )));
            }
            other => {
                return Err(SluiceError::invalid_parameter(format!(
                    "unknown filesystem format '{other}'; the known format is parquet"
                )));
            }
        }
        let path = options.get("path").cloned().ok_or_else(|| {
            SluiceError::invalid_parameter(
                "a filesystem source needs the option path = '<directory or s3://bucket/prefix>'",
            )
        })?;
        Ok(FileOptions { path })
    }
}

/// Checks a filesystem source's options: a known format and a usable path (a local
/// directory must exist).
pub fn validate_options(options: &BTreeMap<String, String>) -> Result<()> {
    let options = FileOptions::parse(options)?;
    open_object_location(&options.path, "source path", &[], false).map(drop)
}

/// Reads one split of a filesystem source.
pub struct FileReader {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    schema: SchemaRef,
    split: usize,
    splits: usize,
    /// This split's files and their sizes, listed on the first read.
    files: Option<Vec<(Path, u64)>>,
    next_file: usize,
    current: Option<(Path, FileStream)>,
    /// Rows returned, including those a restore skipped.
    position: u64,
    /// Rows still to skip after a restore.
    skip: u64,
    ended: bool,
}

impl FileReader {
    pub fn new(
        options: &BTreeMap<String, String>,
        schema: SchemaRef,
        split: usize,
        splits: usize,
    ) -> Result<FileReader> {
        let options = FileOptions::parse(options)?;
        let location = open_object_location(&options.path, "source path", &[], false)?;
        Ok(FileReader {
            url: options.path,
            store: location.store,
            prefix: location.prefix,
            schema,
            split,
            splits,
            files: None,
            next_file: 0,
            current: None,
            position: 0,
            skip: 0,
            ended: false,
        })
    }

    /// Lists this split's files. Cancel-safe: nothing is kept until the listing is whole.
    /// (`&mut self` across the awaits, as `next_event` holds it: the reader is `Send`,
    /// not `Sync`.)
    async fn list_files(&mut self) -> Result<Vec<(Path, u64)>> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| self.error(&format!("cannot list files: {e}")))?;
        let mut paths: Vec<(Path, u64)> = objects
            .into_iter()
            .map(|o| (o.location, o.size))
            .filter(|(p, _)| p.as_ref().ends_with(".parquet"))
            .collect();
        paths.sort();
        Ok(paths
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.splits == self.split)
            .map(|(_, p)| p)
            .collect())
    }

    /// Opens a file for reading the declared columns. Reads its footer now and its row
    /// groups as they are needed, so memory holds one row group's columns, not the file.
    async fn open(&mut self, path: &Path, size: u64) -> Result<FileStream> {
        let file = ObjectFile {
            store: self.store.clone(),
            path: path.clone(),
            size,
        };
        let builder = ParquetRecordBatchStreamBuilder::new(file).await;
        let bad = |e: &dyn std::fmt::Display| {
            self.error(&format!("{path} is not a readable Parquet file: {e}"))
        };
        let builder = builder.map_err(|e| bad(&e))?;
        let file_schema = builder.schema().clone();
        let mut roots = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let index = file_schema
                .index_of(field.name())
                .map_err(|_| self.error(&format!("{path} has no column \"{}\"", field.name())))?;
            roots.push(index);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| bad(&e))
    }

    /// A batch of a file in the declared schema: columns by name, cast where the file's
    /// types differ.
    fn conform(&self, path: &Path, batch: RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| {
                let column = batch.column_by_name(field.name()).ok_or_else(|| {
                    self.error(&format!("{path} has no column \"{}\"", field.name()))
                })?;
                if column.data_type() == field.data_type() {
                    return Ok(column.clone());
                }
                cast(column, field.data_type()).map_err(|e| {
                    self.error(&format!(
                        "column \"{}\" of {path} is {}, which does not convert to {}: {e}",
                        field.name(),
                        column.data_type(),
                        field.data_type()
                    ))
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn error(&self, what: &str) -> SluiceError {
        SluiceError::new(
            sluice_common::SqlState::DATA_EXCEPTION,
            format!("filesystem source {}: {what}", self.url),
        )
    }
}

#[async_trait]
impl SourceReader for FileReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn next_event(&mut self) -> Result<SourceEvent> {
        loop {
            if self.ended {
                return Ok(SourceEvent::End);
            }
            if let Some((path, reader)) = &mut self.current {
                let next = reader.try_next().await;
                match next {
                    Ok(Some(batch)) => {
                        let path = path.clone();
                        let mut batch = self.conform(&path, batch)?;
                        if self.skip > 0 {
                            let skipped = self.skip.min(batch.num_rows() as u64) as usize;
                            self.skip -= skipped as u64;
                            batch = batch.slice(skipped, batch.num_rows() - skipped);
                        }
                        if batch.num_rows() == 0 {
                            continue;
                        }
                        self.position += batch.num_rows() as u64;
                        return Ok(SourceEvent::Batch(batch));
                    }
                    Ok(None) => self.current = None,
                    Err(e) => {
                        let path = path.clone();
                        return Err(self.error(&format!("cannot read {path}: {e}")));
                    }
                }
            }
            let files = match &self.files {
                Some(files) => files,
                None => {
                    let files = self.list_files().await?;
                    self.files.insert(files)
                }
            };
            let Some((path, size)) = files.get(self.next_file).cloned() else {
                if self.skip > 0 {
                    return Err(self.error(&format!(
                        "cannot resume: the checkpoint is {} rows further than the files hold",
                        self.skip
                    )));
                }
                self.ended = true;
                continue;
            };
            let reader = self.open(&path, size).await?;
            self.next_file += 1;
            self.current = Some((path, reader));
        }
    }

    fn position(&self) -> u64 {
        self.position
    }

    /// Bounded: a FLUSH waits for the end of the files.
    fn flush_target(&self) -> u64 {
        u64::MAX
    }

    fn seek(&mut self, position: u64) -> Result<()> {
        if self.position != 0 || self.files.is_some() {
            return Err(SluiceError::internal(
                "a filesystem split can only be moved before it reads",
            ));
        }
        self.position = position;
        self.skip = position;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
