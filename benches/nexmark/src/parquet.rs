//! The engine-only mode's input: the Nexmark events written once to Parquet files, read
//! back by the `filesystem` source connector, so a measured run pays for decoding Parquet
//! instead of generating events.
//!
//! Layout: `<dir>/events-<N>/<source>/part-00000.parquet, ...`, files of at most
//! [`ROWS_PER_FILE`] rows (so up to ⌈rows / ROWS_PER_FILE⌉ splits read in parallel), and
//! a `_complete` marker written last: a directory without it is generated again.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::parquet::arrow::ArrowWriter;
use sluice_runtime::source::SourceEvent;

use crate::engine::Engine;
use crate::sources::SOURCES;
use crate::{Error, Result};

/// Rows per Parquet file.
pub const ROWS_PER_FILE: usize = 1 << 20;

const COMPLETE: &str = "_complete";

/// The directory holding the events of the three sources bounded to `events`, under
/// `dir`: written now unless a complete one is there. Fails naming the file it could
/// not write.
pub async fn ensure_parquet(dir: &Path, events: u64) -> Result<PathBuf> {
    let root = dir.join(format!("events-{events}"));
    if root.join(COMPLETE).exists() {
        return Ok(root);
    }
    let io = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::new(format!("cannot {what} {}: {e}", path.display()))
    };
    let _ = std::fs::remove_dir_all(&root);
    let mut engine = Engine::start().await?;
    engine.create_sources(events).await?;
    for source in &SOURCES {
        eprintln!("parquet: writing {} of {events} events", source.name);
        let schema = engine.schema(source.name)?;
        let mut reader =
            sluice_connectors::create_source_reader(&source.options(events), schema.clone(), 0, 1)?;
        let source_dir = root.join(source.name);
        std::fs::create_dir_all(&source_dir).map_err(|e| io("create", &source_dir, &e))?;
        let mut writer: Option<(PathBuf, ArrowWriter<File>)> = None;
        let (mut files, mut rows_in_file) = (0, 0);
        loop {
            let batch = match reader.next_event().await? {
                SourceEvent::Batch(batch) => batch,
                SourceEvent::Progress => continue,
                SourceEvent::End => break,
            };
            let (path, file) = match &mut writer {
                Some(open) => open,
                None => {
                    let path = source_dir.join(format!("part-{files:05}.parquet"));
                    files += 1;
                    let file = File::create(&path).map_err(|e| io("create", &path, &e))?;
                    let file = ArrowWriter::try_new(file, schema.clone(), None)
                        .map_err(|e| io("write", &path, &e))?;
                    writer.insert((path, file))
                }
            };
            file.write(&batch).map_err(|e| io("write", path, &e))?;
            rows_in_file += batch.num_rows();
            if rows_in_file >= ROWS_PER_FILE {
                rows_in_file = 0;
                let (path, file) = writer.take().expect("open above");
                file.close().map_err(|e| io("write", &path, &e))?;
            }
        }
        if let Some((path, file)) = writer {
            file.close().map_err(|e| io("write", &path, &e))?;
        }
    }
    let marker = root.join(COMPLETE);
    File::create(&marker).map_err(|e| io("create", &marker, &e))?;
    Ok(root)
}
