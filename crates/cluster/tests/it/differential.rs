//! Randomized differential test: random DML on two tables, and after every FLUSH each
//! view must hold exactly what the same query returns as a DataFusion batch query over
//! the tables' current contents. Seeded and deterministic; a failure names its seed
//! (`SLUICE_DIFF_SEED=<seed>` reruns just that one).

use crate::support::{Engine, Rng};

/// Views under test: name and query. Each must equal its query run as a batch query.
const VIEWS: &[(&str, &str)] = &[
    (
        "agg",
        "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi, count(DISTINCT v) AS d, avg(v) AS av \
         FROM a GROUP BY k",
    ),
    (
        "total",
        "SELECT count(*) AS n, sum(v) AS s, max(v) AS hi FROM a",
    ),
    ("filtered", "SELECT k, v * 2 AS v2 FROM a WHERE v > 3"),
    (
        "inner_join",
        "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k",
    ),
    (
        "inner_filter",
        "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k AND a.v < b.w",
    ),
    (
        "left_join",
        "SELECT a.k, a.v, b.w FROM a LEFT JOIN b ON a.k = b.k",
    ),
    (
        "right_join",
        "SELECT a.v, b.k, b.w FROM a RIGHT JOIN b ON a.k = b.k",
    ),
    (
        "full_join",
        "SELECT a.k AS ak, a.v, b.k AS bk, b.w FROM a FULL JOIN b ON a.k = b.k",
    ),
    (
        "left_filter",
        "SELECT a.k, a.v, b.w FROM a LEFT JOIN b ON a.k = b.k AND a.v < b.w",
    ),
    (
        "right_filter",
        "SELECT a.v, b.k, b.w FROM a RIGHT JOIN b ON a.k = b.k AND b.w > 2",
    ),
    (
        "full_filter",
        "SELECT a.k AS ak, a.v, b.k AS bk, b.w FROM a FULL JOIN b ON a.k = b.k AND a.v + 1 <> b.w",
    ),
    (
        "join_agg",
        "SELECT b.w, count(*) AS n, sum(a.v) AS s FROM a JOIN b ON a.k = b.k GROUP BY b.w",
    ),
    ("distinct_k", "SELECT DISTINCT k FROM b"),
    (
        "union_all",
        "SELECT k, v FROM a UNION ALL SELECT k, w FROM b",
    ),
    ("union_distinct", "SELECT k FROM a UNION SELECT k FROM b"),
    ("semi", "SELECT k, v FROM a WHERE k IN (SELECT k FROM b)"),
    (
        "anti",
        "SELECT k, v FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)",
    ),
    ("intersect", "SELECT k FROM a INTERSECT SELECT k FROM b"),
    // NOT IN: NULLs on either side, and a subquery that is often empty.
    (
        "not_in",
        "SELECT k, v FROM a WHERE k NOT IN (SELECT k FROM b)",
    ),
    (
        "not_in_some",
        "SELECT k, v FROM a WHERE v NOT IN (SELECT w FROM b WHERE k < 2)",
    ),
    // Top-N and deduplication: ties in the order are identical rows, so the batch
    // query's ROW_NUMBER is deterministic too.
    (
        "top2",
        "SELECT k, v, rn FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM a) t \
         WHERE rn <= 2",
    ),
    (
        "first_per_k",
        "SELECT k, w FROM (SELECT k, w, ROW_NUMBER() OVER (PARTITION BY k ORDER BY w NULLS LAST) AS rn FROM b) t \
         WHERE rn = 1",
    ),
    (
        "top3_overall",
        "SELECT * FROM (SELECT k, v, ROW_NUMBER() OVER (ORDER BY v DESC, k) AS rn FROM a) t WHERE rn < 4",
    ),
    ("except", "SELECT v FROM a EXCEPT SELECT w FROM b"),
];

fn random_statement(rng: &mut Rng) -> String {
    let table = if rng.below(2) == 0 { "a" } else { "b" };
    let column = if table == "a" { "v" } else { "w" };
    match rng.below(10) {
        0..=4 => {
            let rows: Vec<String> = (0..1 + rng.below(4))
                .map(|_| format!("({}, {})", rng.value(5, 8), rng.value(8, 6)))
                .collect();
            format!("INSERT INTO {table} VALUES {}", rows.join(", "))
        }
        5..=6 => format!("DELETE FROM {table} WHERE {column} = {}", rng.below(8)),
        7 => format!("DELETE FROM {table} WHERE k = {}", rng.below(5)),
        _ => format!(
            "UPDATE {table} SET {column} = {column} + {} WHERE k = {}",
            1 + rng.below(3),
            rng.below(5)
        ),
    }
}

/// Runs one random sequence; returns how many view/batch comparisons it made.
async fn run_sequence(seed: u64, steps: usize) -> Result<usize, String> {
    let mut comparisons = 0;
    let mut rng = Rng(seed);
    let mut e = Engine::start().await;
    let parallelism = 1 + rng.below(3);
    e.ok(&format!("SET streaming_parallelism = {parallelism}"))
        .await;
    e.ok("CREATE TABLE a (k INT, v INT)").await;
    e.ok("CREATE TABLE b (k INT, w INT)").await;
    let mut log = vec![format!("SET streaming_parallelism = {parallelism}")];
    for step in 0..steps {
        // View i is created before step i, so most views backfill existing rows.
        if let Some((name, query)) = VIEWS.get(step) {
            let create = format!("CREATE MATERIALIZED VIEW {name} AS {query}");
            if let Err(err) = e.run(&create).await {
                return Err(format!("seed {seed}: `{create}` failed: {}", err.message));
            }
            log.push(create);
        }
        let statement = random_statement(&mut rng);
        if let Err(err) = e.run(&statement).await {
            return Err(format!(
                "seed {seed}: `{statement}` failed: {}",
                err.message
            ));
        }
        log.push(statement);
        if rng.below(3) == 0 || step + 1 == steps {
            e.ok("FLUSH").await;
            for (name, query) in VIEWS {
                if !log
                    .iter()
                    .any(|l| l.starts_with(&format!("CREATE MATERIALIZED VIEW {name} ")))
                {
                    continue;
                }
                let view = e.rows(&format!("SELECT * FROM {name}")).await;
                let batch = e.rows(query).await;
                comparisons += 1;
                if view != batch {
                    return Err(format!(
                        "seed {seed}: view {name} differs from its batch query after:\n  {}\nview:  {view:?}\nbatch: {batch:?}",
                        log.join(";\n  ")
                    ));
                }
            }
        }
    }
    Ok(comparisons)
}

/// Random sequences run in CI; each has its own engine, two run at a time.
const SEQUENCES: u64 = 200;
const STEPS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_their_batch_queries_under_random_changes() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_DIFF_SEED") {
        Ok(seed) => vec![seed.parse().expect("SLUICE_DIFF_SEED is a number")],
        Err(_) => (1..=SEQUENCES).collect(),
    };
    let mut comparisons = 0;
    for pair in seeds.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|&seed| tokio::spawn(run_sequence(seed, STEPS)))
            .collect();
        for run in runs {
            match run.await.expect("a sequence does not panic") {
                Ok(n) => comparisons += n,
                Err(failure) => panic!("{failure}"),
            }
        }
    }
    // Every view is compared several times per sequence.
    assert!(
        comparisons >= seeds.len() * VIEWS.len() * 3,
        "only {comparisons} comparisons were made"
    );
}
