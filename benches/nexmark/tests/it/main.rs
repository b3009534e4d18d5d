//! The correctness gate at small scale: every supported Nexmark query's streaming view
//! equals the same query run by DataFusion in batch over the same events, and its
//! blackhole sink receives exactly the view's rows.

use sluice_nexmark_bench::bench::run_once;
use sluice_nexmark_bench::engine::Engine;
use sluice_nexmark_bench::gate;
use sluice_nexmark_bench::parquet::ensure_parquet;
use sluice_nexmark_bench::queries::{self, QUERIES};
use sluice_nexmark_bench::reference::Reference;
use tokio::sync::OnceCell;

const EVENTS: u64 = 20_000;

static REFERENCE: OnceCell<Reference> = OnceCell::const_new();

async fn reference() -> &'static Reference {
    REFERENCE
        .get_or_init(|| async { Reference::generate(EVENTS).await.expect("events generate") })
        .await
}

async fn assert_gate_passes(name: &str, parallelism: Option<usize>) {
    let query = queries::select(name).unwrap()[0];
    let report = gate::check(query, reference().await, parallelism)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(mismatch) = report.mismatch {
        panic!("{name}: {mismatch}");
    }
    assert!(
        report.view_rows > 0,
        "{name}: an empty result proves nothing"
    );
}

macro_rules! gate_test {
    ($($test:ident => $query:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            assert_gate_passes($query, None).await;
        }
    )*};
}

gate_test! {
    q0_passthrough_view_equals_batch_query => "q0",
    q1_currency_conversion_view_equals_batch_query => "q1",
        q2_selection_view_equals_batch_query => "q2",
    q3_local_item_suggestion_view_equals_batch_query => "q3",
    q4_average_price_per_category_view_equals_batch_query => "q4",
    q5_hot_items_view_equals_batch_query => "q5",
    q7_highest_bid_view_equals_batch_query => "q7",
    q8_new_users_view_equals_batch_query => "q8",
    q9_winning_bids_view_equals_batch_query => "q9",
    q20_expand_bid_view_equals_batch_query => "q20",
    q10_partition_columns_view_equals_batch_query => "q10",
    q11_user_sessions_view_equals_batch_query => "q11",
    q14_calculation_view_equals_batch_query => "q14",
    q15_daily_statistics_view_equals_batch_query => "q15",
    q16_channel_statistics_view_equals_batch_query => "q16",
    q17_auction_statistics_view_equals_batch_query => "q17",
    q18_last_bid_view_equals_batch_query => "q18",
    q19_top_bids_view_equals_batch_query => "q19",
    q21_channel_id_view_equals_batch_query => "q21",
    q22_url_directories_view_equals_batch_query => "q22",
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_equal_batch_query_at_parallelism_one_and_three() {
    for parallelism in [1, 3] {
        assert_gate_passes("q17", Some(parallelism)).await;
        assert_gate_passes("q16", Some(parallelism)).await;
    }
}

#[test]
fn every_supported_query_has_a_gate_test() {
    let supported: Vec<_> = queries::supported().iter().map(|q| q.name).collect();
    assert_eq!(
        supported,
        [
            "q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q9", "q10", "q11", "q14", "q15",
            "q16", "q17", "q18", "q19", "q20", "q21", "q22"
        ]
    );
}

/// The `-- unsupported:` markers stay true: when Sluice learns to run one of these
/// queries, this fails, and the marker (and the docs' list) should go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_marked_unsupported_are_refused_by_the_engine() {
    for query in QUERIES.iter().filter(|q| q.unsupported().is_some()) {
        let mut engine = Engine::start().await.unwrap();
        engine.create_sources(1_000).await.unwrap();
        let result = engine.run(&query.create_view_sql()).await;
        assert!(
            result.is_err(),
            "{} is marked `-- unsupported: {}` but Sluice created its view",
            query.name,
            query.unsupported().unwrap()
        );
    }
}

/// The engine-only mode reads the same events back from Parquet: every query's sink ends
/// with the same rows and checksum as when the sources generate them, at any parallelism.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_input_gives_the_results_of_the_generator() {
    let dir = std::env::temp_dir().join(format!("sluice-nexmark-parquet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let parquet = ensure_parquet(&dir, EVENTS).await.unwrap();
    // A second call reuses the complete directory.
    assert_eq!(ensure_parquet(&dir, EVENTS).await.unwrap(), parquet);
    for (name, parallelism) in [("q0", 2), ("q5", 3), ("q8", 1), ("q18", 2)] {
        let query = queries::select(name).unwrap()[0];
        let generated = run_once(query, EVENTS, Some(parallelism), None, None)
            .await
            .unwrap();
        let read = run_once(query, EVENTS, Some(parallelism), Some(&parquet), None)
            .await
            .unwrap();
        assert!(generated.rows > 0, "{name} has rows");
        assert_eq!(
            (read.rows, read.checksum),
            (generated.rows, generated.checksum),
            "{name} at parallelism {parallelism}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// With `--operator-cache-mb 0` every aggregate group and join bucket goes to RocksDB
/// after each batch: the joins (q3, q20) and the GROUP BY (q15's distinct counts by day)
/// end with the same rows and checksum as in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_operator_state_gives_the_results_of_memory() {
    for (name, parallelism) in [("q3", 2), ("q20", 1), ("q15", 2)] {
        let query = queries::select(name).unwrap()[0];
        let in_memory = run_once(query, EVENTS, Some(parallelism), None, None)
            .await
            .unwrap();
        let spilled = run_once(query, EVENTS, Some(parallelism), None, Some(0))
            .await
            .unwrap();
        assert!(in_memory.rows > 0, "{name} has rows");
        assert_eq!(
            (spilled.rows, spilled.checksum),
            (in_memory.rows, in_memory.checksum),
            "{name} at parallelism {parallelism}"
        );
    }
}
