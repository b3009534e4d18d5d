//! The write-ahead log of table changes: what makes an acknowledged `INSERT`, `UPDATE` or
//! `DELETE` survive `kill -9`.
//!
//! Every change a table applies is first appended here as one record and synced to disk
//! (`fdatasync`); only then is it applied and acknowledged. On startup the log is read
//! back in order and every record is applied again, which rebuilds each table exactly as
//! it was acknowledged. The same records, with their per-table sequence numbers, are what
//! a view restored from a checkpoint replays past the position the checkpoint recorded.
//!
//! Format: one file, a sequence of records
//! `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`, where the payload is
//! `[table id: u64 LE][sequence: u64 LE][one Arrow IPC stream holding one batch]`.
//! A crash can leave a torn record at the end; reading stops at the first record that is
//! short or fails its checksum, and the file is truncated there, so the next append
//! starts on a clean boundary. Only an unsynced (hence unacknowledged) write can be torn.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use parking_lot::Mutex;
use sluice_common::error::{Result, SluiceError};

/// Bytes of a record's header: payload length and checksum.
const HEADER_BYTES: usize = 8;
/// Bytes of a payload's fixed part: table id and sequence number.
const PAYLOAD_PREFIX_BYTES: usize = 16;
/// A record larger than this is corrupt (a torn length), not real: tables write batches
/// of one statement, far below it.
const MAX_RECORD_BYTES: u32 = 1 << 30;

/// One change of one table, as read back from the log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub table_id: u64,
    /// The table's sequence number of this change: 1 for its first change, then +1.
    pub seq: u64,
    pub batch: RecordBatch,
}

/// The write-ahead log. Appends are serialized by an internal lock.
#[derive(Debug)]
pub struct TableLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl TableLog {
    /// Opens (creating if needed) the log at `path` and returns every intact record in it,
    /// in append order. A torn tail is cut off and reported in the log output.
    pub fn open(path: &Path) -> Result<(TableLog, Vec<LogRecord>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| SluiceError::io(format!("cannot open table log {}", path.display()), e))?;
        let (records, intact_bytes) = read_records(&mut file, path)?;
        let total = file
            .metadata()
            .map_err(|e| SluiceError::io(format!("cannot stat {}", path.display()), e))?
            .len();
        if intact_bytes < total {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = intact_bytes,
                dropped_bytes = total - intact_bytes,
                "table log ends with a torn record (an unacknowledged write cut off by a crash); truncating it"
            );
            file.set_len(intact_bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| SluiceError::io(format!("cannot truncate {}", path.display()), e))?;
        }
        Ok((
            TableLog {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            },
            records,
        ))
    }

    /// Appends one change and syncs it to disk. When this returns `Ok` the change is
    /// durable; when it fails nothing may be acknowledged.
    pub fn append(&self, table_id: u64, seq: u64, batch: &RecordBatch) -> Result<()> {
        let payload = encode_payload(table_id, seq, batch)?;
        let length = payload.len() as u32;
        let mut record = Vec::with_capacity(HEADER_BYTES + payload.len());
        record.extend_from_slice(&length.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let mut file = self.file.lock();
        file.write_all(&record)
            .and_then(|()| file.sync_data())
            .map_err(|e| {
                SluiceError::io(
                    format!("cannot append to table log {}", self.path.display()),
                    e,
                )
            })
    }
}

/// Encodes one change as a record's payload: `[table id][sequence][Arrow IPC stream]`.
/// Fails when the change is too large for one record. Every store of the table log
/// (this file, or PostgreSQL for a coordinator pair) keeps changes in this form.
pub fn encode_payload(table_id: u64, seq: u64, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut payload = Vec::with_capacity(PAYLOAD_PREFIX_BYTES + 256);
    payload.extend_from_slice(&table_id.to_le_bytes());
    payload.extend_from_slice(&seq.to_le_bytes());
    {
        let mut writer = StreamWriter::try_new(&mut payload, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    if payload.len() > MAX_RECORD_BYTES as usize {
        return Err(SluiceError::new(
            sluice_common::SqlState::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "one statement changed {} bytes of table data; the limit is {MAX_RECORD_BYTES}: split it into smaller statements",
                payload.len()
            ),
        ));
    }
    Ok(payload)
}

/// Reads records from the start of `file`; returns them and the length of the intact prefix.
fn read_records(file: &mut File, path: &Path) -> Result<(Vec<LogRecord>, u64)> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| SluiceError::io(format!("cannot read {}", path.display()), e))?;
    let mut reader = BufReader::new(&mut *file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut header = [0u8; HEADER_BYTES];
        if !read_full(&mut reader, &mut header, path)? {
            break;
        }
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if length > MAX_RECORD_BYTES || (length as usize) < PAYLOAD_PREFIX_BYTES {
            break;
        }
        let mut payload = vec![0u8; length as usize];
        if !read_full(&mut reader, &mut payload, path)? || crc32fast::hash(&payload) != crc {
            break;
        }
        let record = decode_payload(&payload).map_err(|e| {
            SluiceError::corrupted(format!(
                "table log {} has a record at byte {offset} that passes its checksum but does not decode: {}",
                path.display(),
                e.message
            ))
        })?;
        records.push(record);
        offset += (HEADER_BYTES + payload.len()) as u64;
    }
    Ok((records, offset))
}

/// Fills `buf`; `false` when the file ends first (a clean end or a torn record).
fn read_full(reader: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(SluiceError::io(
                    format!("cannot read {}", path.display()),
                    e,
                ));
            }
        }
    }
    Ok(true)
}

/// Decodes a payload written by [`encode_payload`].
pub fn decode_payload(payload: &[u8]) -> Result<LogRecord> {
    if payload.len() < PAYLOAD_PREFIX_BYTES {
        return Err(SluiceError::corrupted(format!(
            "a table log record of {} bytes is shorter than its header",
            payload.len()
        )));
    }
    let table_id = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let seq = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
    let mut reader = StreamReader::try_new(&payload[PAYLOAD_PREFIX_BYTES..], None)?;
    let batch = reader
        .next()
        .ok_or_else(|| SluiceError::corrupted("a table log record holds no batch"))??;
    Ok(LogRecord {
        table_id,
        seq,
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    use crate::test_support::TempDir;

    /// The log file in a fresh directory.
    fn log_path(dir: &TempDir) -> PathBuf {
        std::fs::create_dir_all(&dir.0).unwrap();
        dir.0.join("tables.log")
    }

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    fn values(record: &LogRecord) -> Vec<i64> {
        record
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[test]
    fn records_come_back_in_order_after_reopening() {
        let dir = TempDir::new("order");
        let path = log_path(&dir);
        {
            let (log, records) = TableLog::open(&path).unwrap();
            assert!(records.is_empty());
            log.append(1, 1, &batch(vec![1, 2])).unwrap();
            log.append(2, 1, &batch(vec![3])).unwrap();
            log.append(1, 2, &batch(vec![4])).unwrap();
        }
        let (_log, records) = TableLog::open(&path).unwrap();
        let seen: Vec<(u64, u64, Vec<i64>)> = records
            .iter()
            .map(|r| (r.table_id, r.seq, values(r)))
            .collect();
        assert_eq!(
            seen,
            vec![(1, 1, vec![1, 2]), (2, 1, vec![3]), (1, 2, vec![4])]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_every_length_and_appends_continue_after_it() {
        let dir = TempDir::new("torn");
        let path = log_path(&dir);
        {
            let (log, _) = TableLog::open(&path).unwrap();
            log.append(7, 1, &batch(vec![10])).unwrap();
            log.append(7, 2, &batch(vec![20, 30])).unwrap();
        }
        let full = std::fs::read(&path).unwrap();
        assert_eq!(TableLog::open(&path).unwrap().1.len(), 2);
        let first_len = HEADER_BYTES + u32::from_le_bytes(full[..4].try_into().unwrap()) as usize;
        // Cut the second record at every length: only the first survives, and a new
        // append after reopening is readable.
        for cut in first_len..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (log, records) = TableLog::open(&path).unwrap();
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, first_len);
            log.append(7, 2, &batch(vec![99])).unwrap();
            drop(log);
            let (_, records) = TableLog::open(&path).unwrap();
            assert_eq!(values(&records[1]), vec![99], "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_fails_its_checksum() {
        let dir = TempDir::new("flip");
        let path = log_path(&dir);
        {
            let (log, _) = TableLog::open(&path).unwrap();
            log.append(1, 1, &batch(vec![1])).unwrap();
            log.append(1, 2, &batch(vec![2])).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, records) = TableLog::open(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(values(&records[0]), vec![1]);
    }
}
