//! Micro-benchmarks of the hot operators, so a regression shows up per component:
//! projection and filter, hash partitioning into key groups, a window aggregate (TUMBLE
//! count and sum, EMIT ON WINDOW CLOSE), and state get/put on the memory and RocksDB
//! backends. `cargo bench -p sluice-runtime --features bench`; numbers are per
//! 8192-row batch (or per 8192 state operations).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::scalar::ScalarValue;
use sluice_runtime::keygroup::key_groups_of;
use sluice_runtime::message::{Message, Watermark};
use sluice_runtime::operators::Operator;
use sluice_runtime::operators::aggregate::{AggregateOperator, AggregateSpec};
use sluice_runtime::operators::calc::{FilterOperator, ProjectOperator};
use sluice_state::{
    DEFAULT_KEY_GROUPS, MemoryStateBackend, RocksDbOptions, RocksDbStateBackend, StateBackend,
    StateWrite,
};

const ROWS: usize = 8192;

fn bids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new(
            "window_end",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

/// Bids on 1000 auctions over `windows` ten-second windows, starting at window `first`.
fn bids(first: i64, windows: i64) -> RecordBatch {
    let n = ROWS as i64;
    RecordBatch::try_new(
        bids_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|i| i * 7919 % 1000),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|i| i * 31 % 10_000),
            )),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                (0..n).map(|i| (first + i * windows / n + 1) * 10_000),
            )),
        ],
    )
    .unwrap()
}

fn column(name: &str, index: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(name, index))
}

fn project_filter(c: &mut Criterion) {
    let batch = bids(0, 10);
    // price * 908 / 1000 (q1's conversion), and price > 5000 (a q2-like filter).
    let converted = Arc::new(BinaryExpr::new(
        Arc::new(BinaryExpr::new(
            column("price", 1),
            BinOp::Multiply,
            Arc::new(Literal::new(ScalarValue::Int64(Some(908)))),
        )),
        BinOp::Divide,
        Arc::new(Literal::new(ScalarValue::Int64(Some(1000)))),
    ));
    let output = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
    ]));
    let mut project = ProjectOperator::new(vec![column("auction", 0), converted], output);
    let mut filter = FilterOperator::new(Arc::new(BinaryExpr::new(
        column("price", 1),
        BinOp::Gt,
        Arc::new(Literal::new(ScalarValue::Int64(Some(5000)))),
    )));
    let mut group = c.benchmark_group("calc");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("project", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            project.process_batch(batch.clone(), &mut out).unwrap();
            black_box(out)
        })
    });
    group.bench_function("filter", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            filter.process_batch(batch.clone(), &mut out).unwrap();
            black_box(out)
        })
    });
    group.finish();
}

fn hash_partitioning(c: &mut Criterion) {
    let batch = bids(0, 10);
    let mut group = c.benchmark_group("exchange");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("key_groups_of_one_int64_key", |b| {
        b.iter(|| black_box(key_groups_of(&batch, &[0], DEFAULT_KEY_GROUPS).unwrap()))
    });
    group.finish();
}

/// `SELECT window_end, count(*), sum(price) ... GROUP BY auction, window_end EMIT ON
/// WINDOW CLOSE`: each iteration is one batch of a new window range, then a watermark
/// that closes the previous range.
fn window_aggregate(c: &mut Criterion) {
    let input = bids_schema();
    let price = column("price", 1);
    let spec = |udaf, name: &str| {
        let function = AggregateExprBuilder::new(udaf, vec![price.clone()])
            .schema(input.clone())
            .alias(name)
            .build()
            .unwrap();
        AggregateSpec::new(Arc::new(function), None, &input, false).unwrap()
    };
    let output = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new(
            "window_end",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Int64, true),
    ]));
    let mut aggregate = AggregateOperator::new(
        vec![column("auction", 0), column("window_end", 2)],
        vec![spec(count_udaf(), "n"), spec(sum_udaf(), "s")],
        output,
    )
    .unwrap()
    .with_windows(1, true, 0, Arc::new(AtomicU64::new(0)));
    let mut group = c.benchmark_group("aggregate");
    group.throughput(Throughput::Elements(ROWS as u64));
    let mut window = 0i64;
    group.bench_function("tumble_count_sum_emit_on_close", |b| {
        b.iter(|| {
            let mut out: Vec<Message> = Vec::new();
            aggregate.process_batch(bids(window, 4), &mut out).unwrap();
            aggregate
                .process_watermark(Watermark(window * 10_000), &mut out)
                .unwrap();
            window += 4;
            black_box(out)
        })
    });
    group.finish();
}

fn state_get_put(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("sluice-bench-state-{}", std::process::id()));
    let backends: Vec<(&str, Box<dyn StateBackend>)> = vec![
        ("memory", Box::new(MemoryStateBackend::new())),
        (
            "rocksdb",
            Box::new(RocksDbStateBackend::open(&dir, RocksDbOptions::default()).unwrap()),
        ),
    ];
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, backend) in &backends {
        let table = backend.table("bench");
        let key = |i: usize| (i as u64).to_be_bytes().to_vec();
        let mut round = 0usize;
        group.bench_function(format!("{name}_put"), |b| {
            b.iter(|| {
                round += 1;
                let writes = (0..ROWS)
                    .map(|i| StateWrite::Put {
                        key_group: (i % DEFAULT_KEY_GROUPS as usize) as u16,
                        key: key(i),
                        value: round.to_le_bytes().to_vec(),
                    })
                    .collect();
                table.write(writes);
            })
        });
        group.bench_function(format!("{name}_get"), |b| {
            b.iter(|| {
                for i in 0..ROWS {
                    black_box(table.get((i % DEFAULT_KEY_GROUPS as usize) as u16, &key(i)));
                }
            })
        });
    }
    group.finish();
    drop(backends);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    project_filter,
    hash_partitioning,
    window_aggregate,
    state_get_put
);
criterion_main!(benches);
