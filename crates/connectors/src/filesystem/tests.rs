use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use sluice_runtime::source::{SourceEvent, SourceReader};

use super::*;
use crate::test_support::drain;

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-fs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes ids `ids` (as INT, with a name column) to `dir/file`.
fn write(dir: &std::path::Path, file: &str, ids: std::ops::Range<i32>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("id", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(
                ids.clone()
                    .map(|i| Some(format!("n{i}")))
                    .collect::<StringArray>(),
            ),
            Arc::new(Int32Array::from_iter_values(ids)),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(dir.join(file)).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn options(dir: &std::path::Path) -> BTreeMap<String, String> {
    [
        ("connector", "filesystem".to_string()),
        ("path", dir.display().to_string()),
        ("format", "parquet".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The declared schema: `id` first and as BIGINT, unlike the files.
fn declared() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn ids(batch: &RecordBatch) -> Vec<i64> {
    let mut ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec();
    ids.sort();
    ids
}

fn files_with_ids_0_to_25(name: &str) -> PathBuf {
    let dir = dir(name);
    write(&dir, "a.parquet", 0..10);
    write(&dir, "b.parquet", 10..20);
    write(&dir, "c.parquet", 20..25);
    std::fs::write(dir.join("notes.txt"), "not parquet").unwrap();
    dir
}

#[tokio::test]
async fn every_split_count_reads_every_row_once_in_the_declared_schema() {
    let dir = files_with_ids_0_to_25("splits");
    for splits in [1, 2, 4] {
        let mut all = Vec::new();
        for split in 0..splits {
            let mut reader = FileReader::new(&options(&dir), declared(), split, splits).unwrap();
            let batch = drain(&mut reader).await;
            assert_eq!(batch.schema(), declared());
            let names = batch
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let id_values = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for i in 0..batch.num_rows() {
                assert_eq!(names.value(i), format!("n{}", id_values.value(i)));
            }
            all.extend(ids(&batch));
        }
        all.sort();
        assert_eq!(all, (0..25).collect::<Vec<i64>>(), "{splits} splits");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_restored_split_resumes_after_the_rows_it_had_returned() {
    let dir = files_with_ids_0_to_25("seek");
    let mut whole = FileReader::new(&options(&dir), declared(), 0, 1).unwrap();
    let all = ids(&drain(&mut whole).await);
    for position in [0, 7, 10, 24, 25] {
        let mut reader = FileReader::new(&options(&dir), declared(), 0, 1).unwrap();
        reader.seek(position).unwrap();
        assert_eq!(reader.position(), position);
        let mut rest = Vec::new();
        loop {
            match reader.next_event().await.unwrap() {
                SourceEvent::Batch(b) => rest.extend(ids(&b)),
                SourceEvent::Progress => {}
                SourceEvent::End => break,
            }
        }
        assert_eq!(reader.position(), 25);
        let mut expected = all[position as usize..].to_vec();
        expected.sort();
        rest.sort();
        assert_eq!(rest, expected, "resumed at {position}");
    }
    let mut beyond = FileReader::new(&options(&dir), declared(), 0, 1).unwrap();
    beyond.seek(30).unwrap();
    let e = beyond.next_event().await.unwrap_err();
    assert!(e.message.contains("5 rows further"), "{}", e.message);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bad_options_and_files_are_errors_that_name_them() {
    let dir = files_with_ids_0_to_25("errors");
    let missing_column = Schema::new(vec![Field::new("price", DataType::Int64, true)]);
    let mut reader = FileReader::new(&options(&dir), Arc::new(missing_column), 0, 1).unwrap();
    let e = reader.next_event().await.unwrap_err();
    assert!(
        e.message.contains("a.parquet has no column \"price\""),
        "{}",
        e.message
    );

    let mut csv = options(&dir);
    csv.insert("format".into(), "csv".into());
    assert_eq!(
        validate_options(&csv).unwrap_err().state,
        sluice_common::SqlState::FEATURE_NOT_SUPPORTED
    );
    let mut nowhere = options(&dir);
    nowhere.insert("path".into(), dir.join("absent").display().to_string());
    assert!(validate_options(&nowhere).is_err());
    let mut unknown = options(&dir);
    unknown.insert("topic".into(), "x".into());
    let e = validate_options(&unknown).unwrap_err();
    assert!(
        e.message.contains("unknown filesystem option \"topic\""),
        "{}",
        e.message
    );
    let mut no_path = options(&dir);
    no_path.remove("path");
    assert!(
        validate_options(&no_path)
            .unwrap_err()
            .message
            .contains("path =")
    );
    let _ = std::fs::remove_dir_all(dir);
}
