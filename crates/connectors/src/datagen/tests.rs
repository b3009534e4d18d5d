//! Tests of the datagen reader through the `SourceReader` interface.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float64Type, Int16Type, Int32Type, Int64Type,
    Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampNanosecondType,
};
use sluice_common::error::SqlState;
use sluice_runtime::source::{SourceEvent, SourceReader};

use super::DatagenReader;
use crate::test_support::drain;

fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.entry("connector".into()).or_insert("datagen".into());
    map
}

/// Options with a rate high enough that tests do not wait on the clock.
fn fast(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map = options(pairs);
    map.entry("datagen.rows.per.second".into())
        .or_insert("1000000000".into());
    map
}

fn reader(
    options: &BTreeMap<String, String>,
    schema: &SchemaRef,
    split: usize,
    splits: usize,
) -> DatagenReader {
    DatagenReader::new(options, schema.clone(), split, splits).expect("valid options")
}

async fn drain_splits(
    options: &BTreeMap<String, String>,
    schema: &SchemaRef,
    splits: usize,
) -> RecordBatch {
    let mut batches = Vec::new();
    for split in 0..splits {
        batches.push(drain(&mut reader(options, schema, split, splits)).await);
    }
    concat_batches(schema, &batches).expect("same schema")
}

fn int64s(batch: &RecordBatch, column: usize) -> Vec<i64> {
    batch
        .column(column)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

/// Rows as `(id, rest...)` strings sorted by id, to compare sources regardless of order.
fn sorted_rows(batch: &RecordBatch) -> Vec<String> {
    let formatted = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = formatted
        .lines()
        .filter(|l| l.starts_with('|') && !l.contains(" id "))
        .map(str::to_string)
        .collect();
    lines.sort_by_key(|l| l.split('|').nth(1).unwrap().trim().parse::<i64>().unwrap());
    lines
}

#[tokio::test]
async fn sequence_over_one_and_three_splits_is_exactly_start_to_end() {
    let schema = schema(&[("id", DataType::Int64)]);
    let options = fast(&[
        ("fields.id.kind", "sequence"),
        ("fields.id.start", "5"),
        ("fields.id.end", "2504"),
    ]);
    for splits in [1, 3, 4] {
        let mut ids = int64s(&drain_splits(&options, &schema, splits).await, 0);
        ids.sort_unstable();
        assert_eq!(ids, (5..=2504).collect::<Vec<_>>(), "{splits} splits");
    }
}

#[tokio::test]
async fn split_i_of_n_produces_every_nth_value() {
    let schema = schema(&[("id", DataType::Int32)]);
    let options = fast(&[("fields.id.kind", "sequence"), ("fields.id.end", "9")]);
    let batch = drain(&mut reader(&options, &schema, 1, 3)).await;
    assert_eq!(
        batch
            .column(0)
            .as_primitive::<Int32Type>()
            .values()
            .to_vec(),
        vec![1, 4, 7]
    );
}

#[tokio::test]
async fn same_options_give_the_same_rows_whatever_the_split_count() {
    let schema = schema(&[
        ("id", DataType::Int64),
        ("v", DataType::Int32),
        ("name", DataType::Utf8),
        ("price", DataType::Decimal128(10, 2)),
        ("ok", DataType::Boolean),
        ("ts", DataType::Timestamp(TimeUnit::Millisecond, None)),
    ]);
    let options = fast(&[
        ("fields.id.kind", "sequence"),
        ("fields.id.end", "999"),
        ("fields.v.min", "-50"),
        ("fields.v.max", "50"),
        ("fields.ts.basetime", "2024-06-01 12:00:00"),
    ]);
    let one = sorted_rows(&drain_splits(&options, &schema, 1).await);
    let three = sorted_rows(&drain_splits(&options, &schema, 3).await);
    assert_eq!(one.len(), 1000);
    assert_eq!(one, three);
}

#[tokio::test]
async fn bounded_source_ends_and_its_flush_target_is_its_row_count() {
    let schema = schema(&[("id", DataType::Int64)]);
    let options = fast(&[("fields.id.kind", "sequence"), ("fields.id.end", "9")]);
    // Global rows 0..=9 over 3 splits: 4, 3 and 3 rows.
    for (split, rows) in [(0, 4), (1, 3), (2, 3)] {
        let mut r = reader(&options, &schema, split, 3);
        assert_eq!((r.position(), r.flush_target()), (0, rows));
        let batch = drain(&mut r).await;
        assert_eq!(batch.num_rows() as u64, rows);
        assert_eq!((r.position(), r.flush_target()), (rows, rows));
    }
}

#[tokio::test]
async fn number_of_rows_bounds_a_random_source_in_both_spellings() {
    let schema = schema(&[("v", DataType::Float64)]);
    for key in ["number-of-rows", "datagen.rows.total"] {
        let options = fast(&[(key, "7")]);
        let mut r = reader(&options, &schema, 0, 2);
        assert_eq!(r.flush_target(), 4);
        assert_eq!(drain(&mut r).await.num_rows(), 4);
    }
    // The smaller bound wins when both a sequence end and a row count are given.
    let schema2 = self::schema(&[("id", DataType::Int64)]);
    let options = fast(&[
        ("fields.id.kind", "sequence"),
        ("fields.id.end", "99"),
        ("number-of-rows", "10"),
    ]);
    assert_eq!(
        drain(&mut reader(&options, &schema2, 0, 1))
            .await
            .num_rows(),
        10
    );
}

#[tokio::test]
async fn split_with_no_rows_of_a_bounded_source_ends_at_once() {
    let schema = schema(&[("id", DataType::Int64)]);
    let options = fast(&[("fields.id.kind", "sequence"), ("fields.id.end", "1")]);
    let mut r = reader(&options, &schema, 2, 3);
    assert_eq!(r.flush_target(), 0);
    assert!(matches!(r.next_event().await, Ok(SourceEvent::End)));
}

#[tokio::test]
async fn unbounded_source_flush_target_follows_its_position() {
    let schema = schema(&[("id", DataType::Int64), ("v", DataType::Int64)]);
    let options = fast(&[("fields.id.kind", "sequence")]);
    let mut r = reader(&options, &schema, 0, 1);
    assert_eq!(r.flush_target(), 0);
    let mut rows = 0;
    while rows < 5000 {
        let SourceEvent::Batch(batch) = r.next_event().await.unwrap() else {
            panic!("an unbounded source only returns batches");
        };
        assert!(batch.num_rows() as u64 <= super::MAX_BATCH_ROWS);
        rows += batch.num_rows() as u64;
        assert_eq!((r.position(), r.flush_target()), (rows, rows));
    }
}

#[tokio::test]
async fn sequence_without_end_stops_where_its_type_ends_without_being_bounded() {
    let schema = schema(&[("id", DataType::Int16)]);
    let options = fast(&[("fields.id.kind", "sequence"), ("fields.id.start", "32760")]);
    let mut r = reader(&options, &schema, 0, 1);
    assert_eq!(r.flush_target(), 0, "no end given: not bounded");
    let batch = drain(&mut r).await;
    let values = batch
        .column(0)
        .as_primitive::<Int16Type>()
        .values()
        .to_vec();
    assert_eq!(values, (32760..=32767).collect::<Vec<i16>>());
}

#[tokio::test]
async fn random_values_respect_min_max_and_are_deterministic() {
    let schema = schema(&[
        ("i", DataType::Int64),
        ("f", DataType::Float64),
        ("d", DataType::Decimal128(6, 2)),
        ("s", DataType::Utf8),
        ("ts", DataType::Timestamp(TimeUnit::Millisecond, None)),
    ]);
    let options = fast(&[
        ("number-of-rows", "3000"),
        ("fields.i.min", "-3"),
        ("fields.i.max", "3"),
        ("fields.f.min", "0.5"),
        ("fields.f.max", "1.5"),
        ("fields.d.min", "-1.25"),
        ("fields.d.max", "2.50"),
        ("fields.s.length", "17"),
        ("fields.ts.basetime", "2024-06-01 12:00:00"),
        ("fields.ts.max_past", "2h 30min"),
    ]);
    let batch = drain(&mut reader(&options, &schema, 0, 1)).await;
    let ints = int64s(&batch, 0);
    assert!(ints.iter().all(|v| (-3..=3).contains(v)));
    for v in -3..=3 {
        assert!(ints.contains(&v), "{v} never drawn in 3000 rows");
    }
    let floats = batch.column(1).as_primitive::<Float64Type>();
    assert!(floats.values().iter().all(|v| (0.5..=1.5).contains(v)));
    let decimals = batch.column(2).as_primitive::<Decimal128Type>();
    assert!(decimals.values().iter().all(|v| (-125..=250).contains(v)));
    assert!(decimals.values().contains(&-125) && decimals.values().contains(&250));
    let strings: &StringArray = batch.column(3).as_string();
    assert!(strings.iter().all(|s| {
        let s = s.unwrap();
        s.len() == 17 && s.bytes().all(|b| b.is_ascii_alphanumeric())
    }));
    let base = 1_717_243_200_000_i64; // 2024-06-01T12:00:00Z in ms
    let ts: &TimestampMillisecondArray = batch.column(4).as_primitive();
    assert!(
        ts.values()
            .iter()
            .all(|t| (base - 9_000_000..=base).contains(t))
    );

    let again = drain(&mut reader(&options, &schema, 0, 1)).await;
    assert_eq!(batch, again, "same options, same rows");

    let mut reseeded = options.clone();
    reseeded.insert("fields.i.seed".into(), "42".into());
    let other = drain(&mut reader(&reseeded, &schema, 0, 1)).await;
    assert_ne!(int64s(&other, 0), ints, "another seed, other values");
    assert_eq!(
        other.column(1),
        batch.column(1),
        "a seed affects only its column"
    );
}

#[tokio::test]
async fn every_supported_type_generates_its_arrow_type() {
    let columns = [
        ("b", DataType::Boolean),
        ("i16", DataType::Int16),
        ("i32", DataType::Int32),
        ("i64", DataType::Int64),
        ("f32", DataType::Float32),
        ("f64", DataType::Float64),
        ("dec", DataType::Decimal128(12, 3)),
        ("txt", DataType::Utf8),
        ("day", DataType::Date32),
        ("ts_ms", DataType::Timestamp(TimeUnit::Millisecond, None)),
        ("ts_us", DataType::Timestamp(TimeUnit::Microsecond, None)),
        ("ts_ns", DataType::Timestamp(TimeUnit::Nanosecond, None)),
        (
            "tstz",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        ),
    ];
    let schema = schema(&columns);
    let batch = drain(&mut reader(
        &fast(&[("number-of-rows", "50")]),
        &schema,
        0,
        1,
    ))
    .await;
    assert_eq!(batch.num_rows(), 50);
    for (i, (_, t)) in columns.iter().enumerate() {
        assert_eq!(batch.column(i).data_type(), t);
        assert_eq!(batch.column(i).null_count(), 0);
    }
}

#[tokio::test]
async fn sequences_of_text_decimal_dates_and_timestamps() {
    let schema = schema(&[
        ("txt", DataType::Utf8),
        ("dec", DataType::Decimal128(8, 2)),
        ("day", DataType::Date32),
        ("ts_us", DataType::Timestamp(TimeUnit::Microsecond, None)),
        (
            "ts_ns",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        ),
    ]);
    let options = fast(&[
        ("fields.txt.kind", "sequence"),
        ("fields.txt.start", "98"),
        ("fields.dec.kind", "sequence"),
        ("fields.dec.start", "1.5"),
        ("fields.day.kind", "sequence"),
        ("fields.day.start", "2024-02-28"),
        ("fields.day.end", "2024-03-01"),
        ("fields.ts_us.kind", "sequence"),
        ("fields.ts_us.start", "2024-01-01 00:00:00"),
        ("fields.ts_ns.kind", "sequence"),
        ("fields.ts_ns.start", "2024-01-01T00:00:00Z"),
        ("fields.ts_ns.step", "250ms"),
    ]);
    let batch = drain(&mut reader(&options, &schema, 0, 1)).await;
    assert_eq!(batch.num_rows(), 3, "the date's end bounds the source");
    let txt: Vec<_> = batch
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    assert_eq!(txt, ["98", "99", "100"]);
    assert_eq!(
        batch
            .column(1)
            .as_primitive::<Decimal128Type>()
            .values()
            .to_vec(),
        vec![150, 250, 350]
    );
    let feb_28 = 19_781;
    assert_eq!(
        batch
            .column(2)
            .as_primitive::<Date32Type>()
            .values()
            .to_vec(),
        vec![feb_28, feb_28 + 1, feb_28 + 2]
    );
    let jan_1_us = 1_704_067_200_000_000_i64;
    assert_eq!(
        batch
            .column(3)
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec(),
        vec![jan_1_us, jan_1_us + 1_000_000, jan_1_us + 2_000_000]
    );
    let jan_1_ns = jan_1_us * 1000;
    assert_eq!(
        batch
            .column(4)
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .to_vec(),
        vec![jan_1_ns, jan_1_ns + 250_000_000, jan_1_ns + 500_000_000]
    );
}

/// Option pairs, and the texts an error message about them must contain.
type Options = &'static [(&'static str, &'static str)];
type Needles = &'static [&'static str];

#[test]
fn bad_options_name_the_option_and_value() {
    let schema = schema(&[
        ("id", DataType::Int64),
        ("small", DataType::Int16),
        ("ts", DataType::Timestamp(TimeUnit::Millisecond, None)),
        ("ok", DataType::Boolean),
    ]);
    let cases: &[(Options, Needles)] = &[
        (
            &[("fields.id.kind", "sequenze")],
            &["fields.id.kind", "sequenze", "'sequence' or 'random'"],
        ),
        (
            &[("fields.nope.kind", "sequence")],
            &["fields.nope.kind", "nope", "id, small, ts, ok"],
        ),
        (
            &[("fields.id.colour", "red")],
            &["fields.id.colour", "colour", "kind"],
        ),
        (
            &[("rows.per.second", "5")],
            &["rows.per.second", "datagen.rows.per.second"],
        ),
        (
            &[("datagen.rows.per.second", "0")],
            &["datagen.rows.per.second", "\"0\"", "positive"],
        ),
        (&[("rows-per-second", "fast")], &["rows-per-second", "fast"]),
        (
            &[("rows-per-second", "5"), ("datagen.rows.per.second", "6")],
            &["rows-per-second", "datagen.rows.per.second", "disagree"],
        ),
        (&[("number-of-rows", "-1")], &["number-of-rows", "-1"]),
        (
            &[("fields.small.max", "40000")],
            &["fields.small.max", "40000", "32767"],
        ),
        (
            &[("fields.id.min", "5"), ("fields.id.max", "1")],
            &["fields.id.min", "fields.id.max", "5", "1"],
        ),
        (
            &[
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "9"),
                ("fields.id.end", "1"),
            ],
            &["fields.id.start", "fields.id.end"],
        ),
        (
            &[("fields.id.kind", "sequence"), ("fields.id.min", "1")],
            &["fields.id.min", "sequence"],
        ),
        (&[("fields.id.length", "5")], &["fields.id.length", "id"]),
        (
            &[("fields.ts.max_past", "2 fortnights")],
            &["fields.ts.max_past", "2 fortnights", "interval"],
        ),
        (
            &[("fields.ts.kind", "sequence")],
            &["fields.ts.start", "required"],
        ),
        (
            &[("fields.ts.basetime", "yesterday")],
            &["fields.ts.basetime", "yesterday"],
        ),
        (
            &[("fields.ok.kind", "sequence")],
            &["fields.ok.kind", "BOOLEAN", "ok"],
        ),
        (
            &[("fields.ts.max_past", "1h"), ("fields.ts.max-past", "2h")],
            &["fields.ts.max_past", "fields.ts.max-past"],
        ),
    ];
    for (pairs, needles) in cases {
        let err = super::validate_options(&options(pairs), &schema)
            .expect_err(&format!("{pairs:?} must fail"));
        assert_eq!(
            err.state,
            SqlState::INVALID_PARAMETER_VALUE,
            "{pairs:?}: {}",
            err.message
        );
        for needle in *needles {
            assert!(
                err.message.contains(needle),
                "{pairs:?}: {:?} lacks {needle:?}",
                err.message
            );
        }
        // The reader checks the same way.
        let reader_err = DatagenReader::new(&options(pairs), schema.clone(), 0, 1)
            .err()
            .expect("fails");
        assert_eq!(reader_err, err);
    }
}

#[test]
fn unsupported_column_type_is_named() {
    let schema = schema(&[(
        "tags",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    )]);
    let err = super::validate_options(&options(&[]), &schema).unwrap_err();
    assert_eq!(err.state, SqlState::INVALID_PARAMETER_VALUE);
    assert!(
        err.message.contains("\"tags\"") && err.message.contains("List"),
        "{}",
        err.message
    );
}

#[test]
fn flink_and_risingwave_spellings_are_both_accepted() {
    let schema = schema(&[
        ("id", DataType::Int64),
        ("ts", DataType::Timestamp(TimeUnit::Millisecond, None)),
        ("Name", DataType::Utf8),
    ]);
    for pairs in [
        &[
            ("rows-per-second", "10"),
            ("number-of-rows", "5"),
            ("fields.ts.max-past", "5000"),
            ("fields.name.length", "3"),
        ][..],
        &[
            ("datagen.rows.per.second", "10"),
            ("datagen.split.num", "4"),
            ("fields.id.kind", "Sequence"),
            ("fields.id.end", "4"),
            ("fields.ts.max_past", "2h 37min"),
        ][..],
    ] {
        super::validate_options(&options(pairs), &schema)
            .unwrap_or_else(|e| panic!("{pairs:?}: {}", e.message));
    }
}

/// The source task races `next_event` against barrier injection; here a timeout stands
/// in for the barrier and cancels the call again and again. Rows must come out exactly
/// once, in order.
#[tokio::test]
async fn cancelled_next_event_loses_and_repeats_no_rows() {
    let schema = schema(&[("id", DataType::Int64), ("v", DataType::Int64)]);
    // 2000 rows/s: a 20-row batch every 10 ms, so a 1 ms timeout cancels most calls.
    let options = options(&[
        ("datagen.rows.per.second", "2000"),
        ("fields.id.kind", "sequence"),
        ("fields.id.end", "299"),
    ]);
    let mut r = reader(&options, &schema, 0, 1);
    let mut ids = Vec::new();
    let mut values = Vec::new();
    let mut cancelled = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(1), r.next_event()).await {
            Err(_) => cancelled += 1,
            Ok(event) => match event.unwrap() {
                SourceEvent::Batch(batch) => {
                    ids.extend(int64s(&batch, 0));
                    values.extend(int64s(&batch, 1));
                    assert_eq!(r.position(), ids.len() as u64);
                }
                SourceEvent::Progress => {}
                SourceEvent::End => break,
            },
        }
    }
    assert!(cancelled > 0, "the test must actually cancel calls");
    assert_eq!(ids, (0..300).collect::<Vec<_>>());
    let uncancelled = drain(&mut reader(
        &fast(
            &options
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .filter(|(k, _)| !k.contains("per.second"))
                .collect::<Vec<_>>(),
        ),
        &schema,
        0,
        1,
    ))
    .await;
    assert_eq!(
        values,
        int64s(&uncancelled, 1),
        "same rows as an uncancelled reader"
    );
}

#[test]
fn unknown_connector_lists_the_known_ones() {
    let schema = schema(&[("id", DataType::Int64)]);
    let mut opts = options(&[]);
    opts.insert("connector".into(), "kafkaa".into());
    let err = crate::validate_source_options(&opts, schema.clone()).unwrap_err();
    assert_eq!(err.state, SqlState::INVALID_PARAMETER_VALUE);
    assert!(
        err.message.contains("kafkaa") && err.message.contains("datagen"),
        "{}",
        err.message
    );
    assert!(crate::create_source_reader(&opts, schema.clone(), 0, 1).is_err());
    opts.insert("connector".into(), "DataGen".into());
    let reader = crate::create_source_reader(&opts, schema.clone(), 0, 1).unwrap();
    assert_eq!(reader.schema(), schema);
}
