//! Randomized differential test of event-time windows: random out-of-order rows (some
//! far behind the watermark) stream into tables, and after every FLUSH each windowed view
//! must equal the same aggregation run by DataFusion as a batch query over the same rows,
//! minus the rows that were late when they arrived.
//!
//! The test knows the watermark the engine must have: every INSERT is one batch of its
//! table, the watermark after it is the largest time so far minus the bound, and every
//! step ends with a FLUSH. So it
//! writes each row, with the watermark it arrived under, to `arrivals` as well, and the
//! batch query of a window view keeps the rows whose window had not closed then
//! (`window_end > wm - allowed lateness`); an EMIT ON WINDOW CLOSE view's, only the
//! windows that have closed now. Session views read `calm`, which gets only the rows
//! ahead of the watermark: out of order, never late.
//!
//! Seeded; `SLUICE_WINDOW_SEED=<seed>` reruns one seed.

use crate::support::{Engine, Rng};

/// The watermark's bound on out-of-orderness, in seconds.
const BOUND: i64 = 5;

struct WindowView {
    name: &'static str,
    /// Allowed lateness in seconds (`WITH (allowed_lateness = ...)`), 0 for none.
    lateness: i64,
    /// The view's query over `events` or `calm`.
    query: &'static str,
    /// The batch query it must equal. `{late}` stands for "the row's window had not
    /// closed when it arrived" and `{closed}` for "the window has closed now".
    batch: &'static str,
}

const VIEWS: &[WindowView] = &[
    WindowView {
        name: "tumble_updating",
        lateness: 0,
        query: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end",
        batch: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM TUMBLE(arrivals, ts, INTERVAL '10' SECOND) WHERE {late} \
                GROUP BY k, window_start, window_end",
    },
    WindowView {
        name: "tumble_closed",
        lateness: 0,
        query: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(v) AS hi \
                FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end \
                EMIT ON WINDOW CLOSE",
        batch: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(v) AS hi \
                FROM TUMBLE(arrivals, ts, INTERVAL '10' SECOND) WHERE {late} AND {closed} \
                GROUP BY k, window_start, window_end",
    },
    WindowView {
        name: "tumble_closed_lateness",
        lateness: 4,
        query: "SELECT window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM TUMBLE(events, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end \
                EMIT ON WINDOW CLOSE",
        batch: "SELECT window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM TUMBLE(arrivals, ts, INTERVAL '5' SECOND) WHERE {late} AND {closed} \
                GROUP BY window_start, window_end",
    },
    WindowView {
        name: "hop_updating",
        lateness: 3,
        query: "SELECT window_start, window_end, count(*) AS n, sum(v) AS s, min(v) AS lo \
                FROM HOP(events, ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) GROUP BY window_start, window_end",
        batch: "SELECT window_start, window_end, count(*) AS n, sum(v) AS s, min(v) AS lo \
                FROM HOP(arrivals, ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) WHERE {late} \
                GROUP BY window_start, window_end",
    },
    WindowView {
        name: "hop_closed",
        lateness: 0,
        query: "SELECT k, window_start, window_end, count(*) AS n, count(DISTINCT v) AS d \
                FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND)) \
                GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE",
        batch: "SELECT k, window_start, window_end, count(*) AS n, count(DISTINCT v) AS d \
                FROM HOP(arrivals, ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) \
                WHERE {late} AND {closed} GROUP BY k, window_start, window_end",
    },
    WindowView {
        name: "cumulate_updating",
        lateness: 0,
        query: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM CUMULATE(events, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) GROUP BY k, window_start, window_end",
        batch: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM CUMULATE(arrivals, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) WHERE {late} \
                GROUP BY k, window_start, window_end",
    },
    WindowView {
        name: "cumulate_closed",
        lateness: 0,
        query: "SELECT window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM CUMULATE(events, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) \
                GROUP BY window_start, window_end EMIT ON WINDOW CLOSE",
        batch: "SELECT window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM CUMULATE(arrivals, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) \
                WHERE {late} AND {closed} GROUP BY window_start, window_end",
    },
    WindowView {
        name: "window_top2",
        lateness: 0,
        query: "SELECT window_start, k, n FROM ( \
                  SELECT window_start, k, n, \
                         ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY n DESC, k) AS rn \
                  FROM (SELECT window_start, window_end, k, count(*) AS n \
                        FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, k) a \
                ) t WHERE rn <= 2",
        batch: "SELECT window_start, k, n FROM ( \
                  SELECT window_start, k, n, \
                         ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY n DESC, k) AS rn \
                  FROM (SELECT window_start, window_end, k, count(*) AS n \
                        FROM TUMBLE(arrivals, ts, INTERVAL '10' SECOND) WHERE {late} \
                        GROUP BY window_start, window_end, k) a \
                ) t WHERE rn <= 2",
    },
    WindowView {
        name: "window_join",
        lateness: 0,
        query: "SELECT e.k, e.window_start, e.v AS ev, c.v AS cv \
                FROM TUMBLE(events, ts, INTERVAL '10' SECOND) e JOIN TUMBLE(calm, ts, INTERVAL '10' SECOND) c \
                ON e.k = c.k AND e.window_start = c.window_start AND e.window_end = c.window_end",
        // calm's rows are never late; an event is late when its window had closed.
        batch: "SELECT e.k, e.window_start, e.v AS ev, c.v AS cv \
                FROM TUMBLE(arrivals, ts, INTERVAL '10' SECOND) e JOIN TUMBLE(calm, ts, INTERVAL '10' SECOND) c \
                ON e.k = c.k AND e.window_start = c.window_start AND e.window_end = c.window_end \
                WHERE {late_e}",
    },
    WindowView {
        name: "interval_join",
        lateness: 0,
        // Both bounds with the time column alone on one side, so both sides' rows expire.
        query: "SELECT e.k, e.ts AS ets, c.ts AS cts FROM events e JOIN calm c ON e.k = c.k \
                AND e.ts <= c.ts + INTERVAL '3' SECOND AND c.ts <= e.ts + INTERVAL '3' SECOND",
        batch: "SELECT e.k, e.ts AS ets, c.ts AS cts FROM arrivals e JOIN calm c ON e.k = c.k \
                AND e.ts <= c.ts + INTERVAL '3' SECOND AND c.ts <= e.ts + INTERVAL '3' SECOND \
                WHERE (e.wm IS NULL OR e.ts > e.wm)",
    },
    // OVER aggregates emit a row once the watermark passes it ({now}); rows before the
    // watermark they arrived under are late and dropped.
    // RANGE frames only: their peers make ties deterministic, as ROWS frames are not.
    WindowView {
        name: "over_range",
        lateness: 0,
        query: "SELECT k, ts, v, \
                sum(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '4' SECOND PRECEDING AND CURRENT ROW) AS s, \
                max(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '4' SECOND PRECEDING AND CURRENT ROW) AS hi, \
                count(*) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '4' SECOND PRECEDING AND CURRENT ROW) AS n \
                FROM events",
        batch: "SELECT * FROM (SELECT k, ts, v, \
                sum(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '4' SECOND PRECEDING AND CURRENT ROW) AS s, \
                max(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '4' SECOND PRECEDING AND CURRENT ROW) AS hi, \
                count(*) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '4' SECOND PRECEDING AND CURRENT ROW) AS n \
                FROM arrivals WHERE (wm IS NULL OR ts >= wm)) x WHERE {emitted}",
    },
    WindowView {
        name: "over_running",
        lateness: 0,
        query: "SELECT k, ts, v, count(v) OVER (PARTITION BY k ORDER BY ts) AS n, \
                min(v) OVER (PARTITION BY k ORDER BY ts) AS lo FROM events",
        batch: "SELECT * FROM (SELECT k, ts, v, count(v) OVER (PARTITION BY k ORDER BY ts) AS n, \
                min(v) OVER (PARTITION BY k ORDER BY ts) AS lo \
                FROM arrivals WHERE (wm IS NULL OR ts >= wm)) x WHERE {emitted}",
    },
    WindowView {
        name: "over_global",
        lateness: 0,
        query: "SELECT ts, v, avg(v) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW) AS av \
                FROM events",
        batch: "SELECT * FROM (SELECT ts, v, \
                avg(v) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW) AS av \
                FROM arrivals WHERE (wm IS NULL OR ts >= wm)) x WHERE {emitted}",
    },
    WindowView {
        name: "session_updating",
        lateness: 0,
        query: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(v) AS hi \
                FROM TABLE(SESSION(TABLE calm PARTITION BY k, DESCRIPTOR(ts), INTERVAL '3' SECOND)) \
                GROUP BY k, window_start, window_end",
        batch: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(v) AS hi \
                FROM TABLE(SESSION(TABLE calm PARTITION BY k, DESCRIPTOR(ts), INTERVAL '3' SECOND)) \
                GROUP BY k, window_start, window_end",
    },
    WindowView {
        name: "session_closed",
        lateness: 2,
        query: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM TABLE(SESSION(TABLE calm PARTITION BY k, DESCRIPTOR(ts), INTERVAL '3' SECOND)) \
                GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE",
        batch: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
                FROM TABLE(SESSION(TABLE calm PARTITION BY k, DESCRIPTOR(ts), INTERVAL '3' SECOND)) \
                WHERE {closed} GROUP BY k, window_start, window_end",
    },
];

impl WindowView {
    fn create(&self) -> String {
        let with = if self.lateness > 0 {
            format!(" WITH (allowed_lateness = '{} seconds')", self.lateness)
        } else {
            String::new()
        };
        format!(
            "CREATE MATERIALIZED VIEW {}{with} AS {}",
            self.name, self.query
        )
    }

    /// The batch query at watermark `now` (a timestamp literal's text).
    fn batch(&self, now: &str) -> String {
        let lateness = format!("INTERVAL '{}' SECOND", self.lateness);
        self.batch
            .replace(
                "{late}",
                &format!("(wm IS NULL OR window_end > wm - {lateness})"),
            )
            .replace(
                "{late_e}",
                &format!("(e.wm IS NULL OR e.window_end > e.wm - {lateness})"),
            )
            .replace(
                "{closed}",
                &format!("window_end <= TIMESTAMP '{now}' - {lateness}"),
            )
            .replace("{emitted}", &format!("ts < TIMESTAMP '{now}'"))
    }
}

/// Seconds after 2024-01-01 00:00:00 as a timestamp literal's text.
fn timestamp(seconds: i64) -> String {
    format!(
        "2024-01-01 {:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Runs one random stream; returns how many view/batch comparisons it made.
async fn run_stream(seed: u64, steps: usize) -> Result<usize, String> {
    let mut rng = Rng(seed);
    let mut e = Engine::start().await;
    let parallelism = 1 + rng.below(4);
    let mut log = vec![format!("SET streaming_parallelism = {parallelism}")];
    for table in ["events", "calm"] {
        log.push(format!(
            "CREATE TABLE {table} (k INT, v INT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '{BOUND}' SECOND) APPEND ONLY"
        ));
    }
    log.push("CREATE TABLE arrivals (k INT, v INT, ts TIMESTAMP, wm TIMESTAMP)".into());
    for view in VIEWS {
        log.push(view.create());
    }
    for statement in &log {
        e.run(statement)
            .await
            .map_err(|err| format!("seed {seed}: `{statement}` failed: {}", err.message))?;
    }
    let mut comparisons = 0;
    let mut max_ts: Option<i64> = None;
    let mut cursor = 100;
    for step in 0..steps {
        let watermark = max_ts.map(|m| m - BOUND);
        let last = step + 1 == steps;
        // A few rows around the cursor, out of order within the bound, and now and then
        // one far behind the watermark. The last step closes every window.
        let rows: Vec<(i64, String, i64)> = if last {
            vec![(0, "0".into(), cursor + 1000)]
        } else {
            cursor += rng.below(4);
            (0..1 + rng.below(4))
                .map(|_| {
                    let ts = if rng.below(6) == 0 {
                        (cursor - BOUND - rng.below(30)).max(0)
                    } else {
                        cursor + rng.below(3) - rng.below(BOUND as u64 + 1)
                    };
                    (rng.below(3), rng.value(10, 8), ts.max(0))
                })
                .collect()
        };
        let values = |rows: &[&(i64, String, i64)], wm: Option<&str>| -> String {
            rows.iter()
                .map(|(k, v, ts)| match wm {
                    Some(wm) => format!("({k}, {v}, '{}', {wm})", timestamp(*ts)),
                    None => format!("({k}, {v}, '{}')", timestamp(*ts)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all: Vec<&(i64, String, i64)> = rows.iter().collect();
        let calm: Vec<&(i64, String, i64)> = rows
            .iter()
            .filter(|(_, _, ts)| watermark.is_none_or(|w| *ts > w))
            .collect();
        let wm_sql = match watermark {
            Some(w) => format!("TIMESTAMP '{}'", timestamp(w)),
            None => "NULL".into(),
        };
        let mut statements = vec![
            format!("INSERT INTO events VALUES {}", values(&all, None)),
            format!(
                "INSERT INTO arrivals VALUES {}",
                values(&all, Some(&wm_sql))
            ),
        ];
        if !calm.is_empty() {
            statements.push(format!("INSERT INTO calm VALUES {}", values(&calm, None)));
        }
        for statement in statements {
            e.run(&statement)
                .await
                .map_err(|err| format!("seed {seed}: `{statement}` failed: {}", err.message))?;
            log.push(statement);
        }
        max_ts = rows.iter().map(|r| r.2).chain(max_ts).max();
        // Every step ends with a FLUSH, so that a join sees both tables' watermarks of
        // this step before the next step's rows: otherwise whether an event is late at
        // a join depends on how its two inputs interleave, which the model cannot know.
        e.ok("FLUSH").await;
        if rng.below(3) == 0 || last {
            let now = timestamp(max_ts.expect("rows were inserted") - BOUND);
            for view in VIEWS {
                let actual = e.rows(&format!("SELECT * FROM {}", view.name)).await;
                let expected = e.rows(&view.batch(&now)).await;
                comparisons += 1;
                if actual != expected {
                    let troubled: Vec<_> = e
                        .coordinator
                        .jobs()
                        .into_iter()
                        .filter(|j| j.restarts > 0 || j.error.is_some())
                        .map(|j| format!("{} ({} restarts): {:?}", j.name, j.restarts, j.error))
                        .collect();
                    return Err(format!(
                        "seed {seed}: view {} differs from its batch query (watermark {now}) after:\n  {}\nview:  {actual:?}\nbatch: {expected:?}\nrestarted or failed jobs: {troubled:?}",
                        view.name,
                        log.join(";\n  ")
                    ));
                }
            }
        }
    }
    Ok(comparisons)
}

#[tokio::test]
async fn window_views_equal_their_batch_queries_minus_late_rows() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_WINDOW_SEED") {
        Ok(seed) => vec![seed.parse().expect("SLUICE_WINDOW_SEED is a number")],
        Err(_) => (1..=20).collect(),
    };
    let mut comparisons = 0;
    for seed in &seeds {
        match run_stream(*seed, 30).await {
            Ok(n) => comparisons += n,
            Err(failure) => panic!("{failure}"),
        }
    }
    assert!(
        comparisons >= seeds.len() * VIEWS.len() * 3,
        "only {comparisons} comparisons were made"
    );
}
