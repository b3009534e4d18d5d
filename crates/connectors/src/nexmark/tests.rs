//! Tests of the nexmark reader through the `SourceReader` interface.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Fields, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sluice_common::error::SqlState;
use sluice_runtime::source::{SourceEvent, SourceReader};
use tokio::time::Instant;

use super::options::DEFAULT_BASE_TIME_MS;
use super::{MAX_BATCH_SPAN, NexmarkReader};
use crate::test_support::drain;

const TS_MS: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn bid_schema() -> SchemaRef {
    schema(&[
        ("auction", DataType::Int64),
        ("bidder", DataType::Int64),
        ("price", DataType::Int64),
        ("channel", DataType::Utf8),
        ("url", DataType::Utf8),
        ("date_time", TS_MS),
        ("extra", DataType::Utf8),
    ])
}

fn person_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("email_address", DataType::Utf8, true),
        Field::new("credit_card", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("date_time", TS_MS, true),
        Field::new("extra", DataType::Utf8, true),
    ])
}

fn bid_fields() -> Fields {
    bid_schema().fields().clone()
}

fn unified_schema() -> SchemaRef {
    schema(&[
        ("event_type", DataType::Int32),
        ("person", DataType::Struct(person_fields())),
        ("bid", DataType::Struct(bid_fields())),
        ("date_time", TS_MS),
    ])
}

/// Options without pacing, so tests do not wait on the clock.
fn fast(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert("connector".into(), "nexmark".into());
    map.entry("nexmark.min.event.gap.in.ns".into())
        .or_insert("0".into());
    map
}

fn reader(
    options: &BTreeMap<String, String>,
    schema: &SchemaRef,
    split: usize,
    splits: usize,
) -> NexmarkReader {
    NexmarkReader::new(options, schema.clone(), split, splits).expect("valid options")
}

/// Every row of `batch` as text, sorted: the batch's rows as a multiset.
fn sorted_rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable"))
        .collect();
    let mut rows: Vec<String> = (0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

async fn rows_over_splits(
    options: &BTreeMap<String, String>,
    schema: &SchemaRef,
    splits: usize,
) -> Vec<String> {
    let mut rows = Vec::new();
    for split in 0..splits {
        rows.extend(sorted_rows(
            &drain(&mut reader(options, schema, split, splits)).await,
        ));
    }
    rows.sort();
    rows
}

fn event_types(batch: &RecordBatch) -> [usize; 3] {
    let mut counts = [0; 3];
    for t in batch.column(0).as_primitive::<Int32Type>().values() {
        counts[*t as usize] += 1;
    }
    counts
}

#[tokio::test]
async fn one_split_and_four_splits_generate_the_same_bids() {
    let options = fast(&[("nexmark.table.type", "Bid"), ("nexmark.event.num", "5000")]);
    let one = rows_over_splits(&options, &bid_schema(), 1).await;
    assert_eq!(one.len(), 4600);
    assert_eq!(one, rows_over_splits(&options, &bid_schema(), 4).await);
    assert_eq!(one, rows_over_splits(&options, &bid_schema(), 3).await);

    let unified = fast(&[("nexmark.event.num", "2000")]);
    let one = rows_over_splits(&unified, &unified_schema(), 1).await;
    assert_eq!(one.len(), 2000);
    assert_eq!(one, rows_over_splits(&unified, &unified_schema(), 4).await);
}

#[tokio::test]
async fn the_bid_table_holds_exactly_the_bids_of_the_unified_stream() {
    let bids = fast(&[("nexmark.table.type", "bid"), ("nexmark.event.num", "1000")]);
    let table = sorted_rows(&drain(&mut reader(&bids, &bid_schema(), 0, 1)).await);
    let unified = fast(&[("nexmark.event.num", "1000")]);
    let events = drain(&mut reader(&unified, &unified_schema(), 0, 1)).await;
    let bid_column = events.column(2).as_struct();
    let is_bid = arrow::compute::is_not_null(bid_column).unwrap();
    let only_bids = arrow::compute::filter(bid_column, &is_bid).unwrap();
    let as_batch = RecordBatch::from(only_bids.as_struct().clone());
    assert_eq!(table, sorted_rows(&as_batch));
}

#[tokio::test]
async fn proportions_are_one_person_three_auctions_forty_six_bids() {
    let unified = fast(&[("nexmark.event.num", "5000")]);
    let events = drain(&mut reader(&unified, &unified_schema(), 0, 1)).await;
    assert_eq!(event_types(&events), [100, 300, 4600]);
    // The struct of the other types is NULL, the event's own struct is not.
    let (person, bid) = (events.column(1), events.column(2));
    assert_eq!(person.null_count(), 4900);
    assert_eq!(bid.null_count(), 400);
    let types = events.column(0).as_primitive::<Int32Type>();
    for row in 0..events.num_rows() {
        assert_eq!(person.is_valid(row), types.value(row) == 0);
        assert_eq!(bid.is_valid(row), types.value(row) == 2);
    }

    // Per-type tables over the same 5000 events: 46/50 of them are bids.
    for (table, rows) in [("person", 100), ("auction", 300), ("bid", 4600)] {
        let options = fast(&[("nexmark.table.type", table), ("nexmark.event.num", "5000")]);
        let schema = schema(&[("date_time", TS_MS)]);
        let batch = drain(&mut reader(&options, &schema, 0, 1)).await;
        assert_eq!(batch.num_rows(), rows, "{table}");
    }

    let custom = fast(&[
        ("nexmark.event.num", "1000"),
        ("nexmark.person.proportion", "2"),
        ("nexmark.auction.proportion", "3"),
        ("nexmark.bid.proportion", "5"),
    ]);
    let events = drain(&mut reader(&custom, &unified_schema(), 0, 1)).await;
    assert_eq!(event_types(&events), [200, 300, 500]);
}

#[tokio::test]
async fn events_follow_the_standard_model() {
    // The first event of the default model (the `nexmark` crate's own reference).
    let options = fast(&[
        ("nexmark.table.type", "person"),
        ("nexmark.event.num", "50"),
    ]);
    let schema = schema(&[
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        ("email_address", DataType::Utf8),
        ("credit_card", DataType::Utf8),
        ("city", DataType::Utf8),
        ("state", DataType::Utf8),
        ("date_time", TS_MS),
    ]);
    let batch = drain(&mut reader(&options, &schema, 0, 1)).await;
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(
        sorted_rows(&batch),
        vec![
            "1000|vicky noris|yplkvgz@qbxfg.com|7878 5821 1864 2539|cheyenne|az|\
             2015-07-15T00:00:00"
        ]
    );

    // Bids reference recent auctions and people; prices are positive; `extra` pads
    // bids to about 100 bytes on average.
    let options = fast(&[
        ("nexmark.table.type", "bid"),
        ("nexmark.event.num", "50000"),
    ]);
    let bids = drain(&mut reader(&options, &bid_schema(), 0, 1)).await;
    let auctions = bids.column(0).as_primitive::<Int64Type>();
    let prices = bids.column(2).as_primitive::<Int64Type>();
    assert!(
        auctions
            .values()
            .iter()
            .all(|a| (1000..1000 + 3000 + 10).contains(a))
    );
    assert!(prices.values().iter().all(|p| *p > 0));
    let hot = auctions.values().iter().filter(|a| **a % 100 == 0).count();
    assert!(
        hot > bids.num_rows() / 2,
        "hot auctions get most bids: {hot} of {}",
        bids.num_rows()
    );
    let extra = bids.column(6).as_string::<i32>();
    let average = extra.value_data().len() / extra.len();
    assert!(
        (50..=90).contains(&average),
        "average extra length {average}"
    );
}

#[tokio::test]
async fn a_bounded_source_ends_at_its_flush_target() {
    let options = fast(&[
        ("nexmark.table.type", "bid"),
        ("nexmark.event.num", "1000"),
        ("nexmark.max.chunk.size", "100"),
    ]);
    let schema = bid_schema();
    let mut total = 0;
    for split in 0..3 {
        let mut reader = reader(&options, &schema, split, 3);
        let target = reader.flush_target();
        assert_eq!(reader.position(), 0);
        let mut batches = 0;
        let mut rows = 0;
        while let SourceEvent::Batch(batch) = reader.next_event().await.unwrap() {
            assert!(batch.num_rows() <= 100);
            assert_eq!(reader.flush_target(), target, "the target does not move");
            rows += batch.num_rows() as u64;
            batches += 1;
        }
        assert_eq!(reader.position(), target);
        assert_eq!(rows, target);
        assert!(batches >= 3);
        total += target;
    }
    assert_eq!(total, 920, "46 of every 50 of the 1000 events are bids");

    // Unbounded: FLUSH waits for nothing beyond what was read.
    let unbounded = fast(&[("nexmark.table.type", "bid"), ("nexmark.event.num", "-1")]);
    let mut reader = reader(&unbounded, &schema, 0, 2);
    assert_eq!(reader.flush_target(), 0);
    for _ in 0..3 {
        let SourceEvent::Batch(batch) = reader.next_event().await.unwrap() else {
            panic!("an unbounded source does not end");
        };
        assert_eq!(batch.num_rows(), 1024);
    }
    assert_eq!(reader.position(), 3 * 1024);
    assert_eq!(reader.flush_target(), 3 * 1024);

    // Zero events: ends at once.
    let empty = fast(&[("nexmark.event.num", "0")]);
    let mut reader = super::NexmarkReader::new(&empty, unified_schema(), 0, 1).unwrap();
    assert_eq!(reader.flush_target(), 0);
    assert!(matches!(reader.next_event().await, Ok(SourceEvent::End)));
}

#[tokio::test]
async fn event_times_are_monotone_within_a_split_and_start_at_the_base_time() {
    let options = fast(&[("nexmark.event.num", "20000")]);
    let schema = unified_schema();
    for split in 0..3 {
        let events = drain(&mut reader(&options, &schema, split, 3)).await;
        let times = events.column(3).as_primitive::<TimestampMillisecondType>();
        assert!(times.values().windows(2).all(|w| w[0] <= w[1]));
        assert!(times.value(0) >= DEFAULT_BASE_TIME_MS as i64);
    }
    // 20000 events at the default 10 000 events/s of event time: two seconds.
    let events = drain(&mut reader(&options, &schema, 0, 1)).await;
    let times = events.column(3).as_primitive::<TimestampMillisecondType>();
    assert_eq!(times.value(0), DEFAULT_BASE_TIME_MS as i64);
    assert_eq!(
        times.value(events.num_rows() - 1),
        DEFAULT_BASE_TIME_MS as i64 + 2000
    );

    let based = fast(&[
        ("nexmark.table.type", "bid"),
        ("nexmark.event.num", "100"),
        ("nexmark.base.time", "1700000000000"),
    ]);
    let schema = schema_with_time(TimeUnit::Microsecond);
    let bids = drain(&mut reader(&based, &schema, 0, 1)).await;
    let times = bids.column(0).as_primitive::<TimestampMicrosecondType>();
    // The first bid is event number 4 (after a person and three auctions): 0.4 ms later.
    assert_eq!(times.value(0), 1_700_000_000_000_000);
    assert!(times.values().windows(2).all(|w| w[0] <= w[1]));
}

fn schema_with_time(unit: TimeUnit) -> SchemaRef {
    schema(&[(
        "date_time",
        DataType::Timestamp(unit, Some("+00:00".into())),
    )])
}

#[tokio::test]
async fn declared_columns_are_matched_by_name_in_any_order() {
    let options = fast(&[("nexmark.table.type", "bid"), ("nexmark.event.num", "500")]);
    let full = drain(&mut reader(&options, &bid_schema(), 0, 1)).await;
    let subset = schema(&[
        ("price", DataType::Int64),
        ("date_time", DataType::Timestamp(TimeUnit::Nanosecond, None)),
        ("auction", DataType::Int64),
        ("url", DataType::Utf8View),
    ]);
    let batch = drain(&mut reader(&options, &subset, 0, 1)).await;
    assert_eq!(batch.schema(), subset);
    assert_eq!(batch.column(0), full.column(2));
    assert_eq!(batch.column(2), full.column(0));
    let nanos = batch
        .column(1)
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
    let millis = full.column(5).as_primitive::<TimestampMillisecondType>();
    assert!(
        nanos
            .values()
            .iter()
            .zip(millis.values())
            .all(|(n, m)| *n == m * 1_000_000)
    );
    let urls = batch.column(3).as_string_view();
    assert_eq!(urls.value(7), full.column(4).as_string::<i32>().value(7));

    // A struct may declare a subset of its fields, in any order.
    let person = Fields::from(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("id", DataType::Int64, true),
    ]);
    let unified = schema(&[
        ("person", DataType::Struct(person)),
        ("event_type", DataType::Int64),
    ]);
    let events = drain(&mut reader(
        &fast(&[("nexmark.event.num", "100")]),
        &unified,
        0,
        1,
    ))
    .await;
    let person = events.column(0).as_struct();
    assert_eq!(person.null_count(), 98);
    assert_eq!(person.column(1).as_primitive::<Int64Type>().value(0), 1000);
    assert_eq!(person.column(0).as_string::<i32>().value(0), "vicky noris");
    assert_eq!(
        events.column(1).as_primitive::<Int64Type>().value(50),
        0,
        "event 50 is a person"
    );
}

#[test]
fn unknown_columns_and_wrong_types_are_refused_with_what_is_allowed() {
    let bids = fast(&[("nexmark.table.type", "bid")]);
    let err = |options: &BTreeMap<String, String>, schema: SchemaRef| {
        super::validate_options(options, &schema).expect_err("refused")
    };

    let e = err(
        &bids,
        schema(&[("price", DataType::Int64), ("seller", DataType::Int64)]),
    );
    assert_eq!(e.state, SqlState::UNDEFINED_COLUMN);
    assert!(e.message.contains("\"seller\""), "{}", e.message);
    assert!(
        e.message
            .contains("auction, bidder, price, channel, url, date_time, extra"),
        "{}",
        e.message
    );

    let e = err(&bids, schema(&[("price", DataType::Int32)]));
    assert_eq!(e.state, SqlState::DATATYPE_MISMATCH);
    assert!(
        e.message
            .contains("\"price\" is declared as INT, but must be BIGINT"),
        "{}",
        e.message
    );

    let e = err(&bids, schema(&[("date_time", DataType::Int64)]));
    assert_eq!(e.state, SqlState::DATATYPE_MISMATCH);
    assert!(e.message.contains("TIMESTAMP"), "{}", e.message);

    let unified = fast(&[]);
    let e = err(&unified, schema(&[("price", DataType::Int64)]));
    assert_eq!(e.state, SqlState::UNDEFINED_COLUMN);
    assert!(
        e.message
            .contains("event_type, person, auction, bid, date_time"),
        "{}",
        e.message
    );

    let wrong_field = Fields::from(vec![Field::new("seller", DataType::Int64, true)]);
    let e = err(&unified, schema(&[("bid", DataType::Struct(wrong_field))]));
    assert_eq!(e.state, SqlState::UNDEFINED_COLUMN);
    assert!(e.message.contains("\"bid.seller\""), "{}", e.message);

    let e = err(&unified, schema(&[("person", DataType::Utf8)]));
    assert_eq!(e.state, SqlState::DATATYPE_MISMATCH);
    assert!(e.message.contains("STRUCT"), "{}", e.message);

    let e = err(&unified, schema(&[("event_type", DataType::Utf8)]));
    assert_eq!(e.state, SqlState::DATATYPE_MISMATCH);

    assert!(super::validate_options(&unified, &unified_schema()).is_ok());
    assert!(super::validate_options(&bids, &bid_schema()).is_ok());
}

#[test]
fn bad_options_are_refused_naming_the_option_and_what_is_allowed() {
    let cases: [(&str, &str, &str); 10] = [
        ("nexmark.table.type", "bids", "person, auction, bid"),
        ("nexmark.event.num", "-5", "-1 for unbounded"),
        ("nexmark.event.num", "many", "non-negative"),
        ("nexmark.min.event.gap.in.ns", "-1", "whole number"),
        ("nexmark.max.chunk.size", "0", "from 1 to 65536"),
        ("nexmark.bid.proportion", "0", "from 1"),
        ("nexmark.base.time", "2024-01-01", "from 0"),
        ("nexmark.use.real.time", "yes", "true or false"),
        ("nexmark.us.cities", "a,,b", "non-empty words"),
        ("nexmark.hot.auction.ratio", "0", "from 1"),
    ];
    for (key, value, allowed) in cases {
        let options = fast(&[(key, value)]);
        let e = super::validate_options(&options, &unified_schema()).expect_err(key);
        assert_eq!(e.state, SqlState::INVALID_PARAMETER_VALUE, "{key}");
        assert!(
            e.message.contains(key) && e.message.contains(value) && e.message.contains(allowed),
            "{key}: {}",
            e.message
        );
    }

    let e = super::validate_options(&fast(&[("nexmark.event.nums", "10")]), &unified_schema())
        .expect_err("unknown key");
    assert_eq!(e.state, SqlState::INVALID_PARAMETER_VALUE);
    assert!(
        e.message.contains("\"nexmark.event.nums\"") && e.message.contains("nexmark.event.num,"),
        "{}",
        e.message
    );

    let both = fast(&[
        ("nexmark.threads", "2"),
        ("nexmark.num.event.generators", "2"),
    ]);
    assert!(super::validate_options(&both, &unified_schema()).is_err());

    // Every option RisingWave documents is accepted.
    let all = fast(&[
        ("nexmark.split.num", "4"),
        ("nexmark.event.num", "100"),
        ("nexmark.table.type", "Auction"),
        ("nexmark.max.chunk.size", "64"),
        ("nexmark.use.real.time", "false"),
        ("nexmark.active.people", "500"),
        ("nexmark.in.flight.auctions", "50"),
        ("nexmark.out.of.order.group.size", "1"),
        ("nexmark.avg.person.byte.size", "100"),
        ("nexmark.avg.auction.byte.size", "300"),
        ("nexmark.avg.bid.byte.size", "50"),
        ("nexmark.hot.seller.ratio", "2"),
        ("nexmark.hot.auction.ratio", "3"),
        ("nexmark.hot.bidder.ratio", "3"),
        ("nexmark.hot.channel.ratio", "3"),
        ("nexmark.first.event.id", "10"),
        ("nexmark.first.event.number", "10"),
        ("nexmark.num.categories", "7"),
        ("nexmark.auction.id.lead", "5"),
        ("nexmark.hot.seller.ratio.2", "100"),
        ("nexmark.hot.auction.ratio.2", "100"),
        ("nexmark.hot.bidder.ratio.2", "100"),
        ("nexmark.person.proportion", "1"),
        ("nexmark.auction.proportion", "3"),
        ("nexmark.bid.proportion", "46"),
        ("nexmark.first.auction.id", "1"),
        ("nexmark.first.person.id", "1"),
        ("nexmark.first.category.id", "1"),
        ("nexmark.person.id.lead", "5"),
        ("nexmark.sine.approx.steps", "10"),
        ("nexmark.base.time", "1700000000000"),
        ("nexmark.us.states", "ca,or"),
        ("nexmark.us.cities", "portland"),
        ("nexmark.first.names", "ada"),
        ("nexmark.last.names", "lovelace"),
        ("nexmark.rate.shape", "sine"),
        ("nexmark.rate.period", "600"),
        ("nexmark.first.event.rate", "5000"),
        ("nexmark.next.event.rate", "5000"),
        ("nexmark.us.per.unit", "1000000"),
        ("nexmark.threads", "2"),
    ]);
    let schema = schema(&[("seller", DataType::Int64), ("category", DataType::Int64)]);
    assert!(super::validate_options(&all, &schema).is_ok());
}

#[tokio::test]
async fn gap_pacing_spreads_batches_over_the_schedule() {
    // One event per millisecond over the whole source, one split.
    let options = fast(&[("nexmark.min.event.gap.in.ns", "1000000")]);
    let schema = unified_schema();
    let mut paced = reader(&options, &schema, 0, 1);
    let start = Instant::now();
    // On schedule: the first batch covers MAX_BATCH_SPAN of the schedule, and is due
    // when its last event is.
    let first = paced.generate(start).unwrap().unwrap();
    let span = MAX_BATCH_SPAN.as_millis() as usize;
    assert_eq!(first.batch.num_rows(), span + 1);
    assert_eq!(first.due, Some(start + MAX_BATCH_SPAN));
    // Held back for a second: everything due goes at once, up to the chunk size.
    let second = paced
        .generate(start + Duration::from_secs(1))
        .unwrap()
        .unwrap();
    assert_eq!(second.batch.num_rows(), 1000 - span);
    assert_eq!(second.due, Some(start + Duration::from_secs(1)));

    // Two splits share the source's rate: split 1's events are 1, 3, 5, ... (ms).
    let mut half = reader(&options, &schema, 1, 2);
    let batch = half.generate(start).unwrap().unwrap();
    assert_eq!(batch.batch.num_rows(), span / 2 + 1);
    assert_eq!(batch.due, Some(start + MAX_BATCH_SPAN));

    // Real time: as fast as event times advance (10 000 events per second of event
    // time by default), so 10 ms of schedule hold about 100 events.
    let real = fast(&[("nexmark.use.real.time", "true")]);
    let mut real = reader(&real, &schema, 0, 1);
    let batch = real.generate(start).unwrap().unwrap();
    assert!(
        (100..=105).contains(&batch.batch.num_rows()),
        "{}",
        batch.batch.num_rows()
    );
    assert_eq!(batch.due, Some(start + MAX_BATCH_SPAN));
}

#[tokio::test]
async fn a_cancelled_read_loses_and_repeats_nothing() {
    // 20 ms between events: the first batch is due at once, the second 20 ms later.
    let options = fast(&[
        ("nexmark.min.event.gap.in.ns", "20000000"),
        ("nexmark.event.num", "3"),
    ]);
    let schema = unified_schema();
    let mut paced = reader(&options, &schema, 0, 1);
    let mut rows = Vec::new();
    let mut cancelled = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(3), paced.next_event()).await {
            Err(_) => cancelled += 1,
            Ok(Ok(SourceEvent::Batch(batch))) => rows.extend(sorted_rows(&batch)),
            Ok(Ok(SourceEvent::End)) => break,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(cancelled > 0, "some reads waited and were cancelled");
    rows.sort();
    let unpaced = fast(&[("nexmark.event.num", "3")]);
    let expected = sorted_rows(&drain(&mut reader(&unpaced, &schema, 0, 1)).await);
    assert_eq!(rows, expected);
    assert_eq!(paced.position(), 3);
}

/// Prints how fast one thread generates bids (not asserted: tests never assert on
/// timings). Run with
/// `cargo test --release -p sluice-connectors nexmark_generation_throughput -- --nocapture`.
#[tokio::test]
async fn nexmark_generation_throughput() {
    let events: u64 = 200_000;
    // The model alone, without Arrow, for comparison (also builds the crate's lazily
    // initialised channel table, so the timings below do not include it).
    let start = std::time::Instant::now();
    let bytes: usize = ::nexmark::EventGenerator::new(Default::default())
        .take(events as usize)
        .map(|e| match e {
            ::nexmark::event::Event::Bid(b) => b.extra.len(),
            _ => 0,
        })
        .sum();
    let elapsed = start.elapsed();
    assert!(bytes > 0);
    println!(
        "nexmark model alone: {events} events in {elapsed:.2?}: {:.0} events/s",
        events as f64 / elapsed.as_secs_f64()
    );
    for (name, table, schema) in [
        ("bid table", Some("bid"), bid_schema()),
        ("unified table", None, unified_schema()),
    ] {
        let count = events.to_string();
        let mut pairs = vec![("nexmark.event.num", count.as_str())];
        pairs.extend(table.map(|t| ("nexmark.table.type", t)));
        let mut reader = reader(&fast(&pairs), &schema, 0, 1);
        let start = std::time::Instant::now();
        let mut rows = 0;
        while let SourceEvent::Batch(batch) = reader.next_event().await.unwrap() {
            rows += batch.num_rows() as u64;
        }
        let elapsed = start.elapsed();
        assert_eq!(rows, reader.flush_target());
        println!(
            "nexmark {name}: {rows} rows from {events} events in {elapsed:.2?}: {:.0} events/s",
            events as f64 / elapsed.as_secs_f64()
        );
    }
}
