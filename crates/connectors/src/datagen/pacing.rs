//! Rate limiting for datagen readers: when the next batch may go, and how big it is.
//!
//! The schedule is a line, not a token bucket: `rows_before + 1 + ⌊(t − origin) · rate⌋`
//! rows are due at time `t`. A reader asks [`Pacer::poll`] and either emits the rows it
//! is told or sleeps until the deadline it is given; how often it asks (for example
//! because the sleep was cancelled by a barrier) changes nothing, so cancellation never
//! skips or repeats a slot. Kept apart from the reader so it can be tested with
//! synthetic instants, without sleeping.

use std::time::Duration;

use tokio::time::Instant;

/// The most rows in one batch.
pub const MAX_BATCH_ROWS: u64 = 1024;
/// Batches per second a split aims for: below this many rows per second per split it
/// emits a row per batch; above, batches grow (up to [`MAX_BATCH_ROWS`]) instead of
/// sleeps getting shorter.
const BATCHES_PER_SECOND: u128 = 100;
/// How far behind schedule a reader may fall (when backpressure held it back) and still
/// catch up at full speed; rows owed beyond that are not made up in a burst.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);
/// Rates above 10^12 rows per second mean "as fast as possible"; the cap keeps the
/// schedule's arithmetic far from overflow.
const MAX_MILLI_ROWS_PER_SECOND: u128 = 1_000_000_000_000_000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// What a reader should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Emit this many rows (at least one) now.
    Emit(u64),
    /// Sleep until then, and ask again.
    WaitUntil(Instant),
}

/// One split's share of a source's rate.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// The source's rate over all splits, in rows per 1000 seconds.
    milli_rows_per_second: u128,
    splits: u128,
    /// The rows a batch waits for when the reader is on schedule.
    target_batch: u64,
    /// Rows the reader may be owed after falling behind before they are given up.
    max_backlog: u64,
    schedule: Option<Schedule>,
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    origin: Instant,
    rows_before: u64,
}

impl Pacer {
    /// A pacer for one of `splits` splits sharing `milli_rows_per_second` (rows per 1000
    /// seconds over all splits).
    pub fn new(milli_rows_per_second: u128, splits: u64) -> Self {
        let milli_rows_per_second = milli_rows_per_second.clamp(1, MAX_MILLI_ROWS_PER_SECOND);
        let splits = splits.max(1) as u128;
        let per_second =
            |d: Duration| d.as_nanos() * milli_rows_per_second / (1000 * NANOS_PER_SECOND * splits);
        let target_batch = (per_second(Duration::from_secs(1)) / BATCHES_PER_SECOND)
            .clamp(1, MAX_BATCH_ROWS as u128) as u64;
        let max_backlog =
            per_second(MAX_CATCH_UP).clamp(MAX_BATCH_ROWS as u128, u64::MAX as u128) as u64;
        Pacer {
            milli_rows_per_second,
            splits,
            target_batch,
            max_backlog,
            schedule: None,
        }
    }

    /// Decides, at `now`, for a reader that has emitted `emitted` rows and has
    /// `remaining` (> 0) left. The schedule starts at the first call.
    pub fn poll(&mut self, now: Instant, emitted: u64, remaining: u64) -> Pace {
        debug_assert!(remaining > 0);
        let mut schedule = *self.schedule.get_or_insert(Schedule {
            origin: now,
            rows_before: emitted,
        });
        let mut due = self.rows_due(schedule, now);
        if due.saturating_sub(emitted) > self.max_backlog {
            schedule = Schedule {
                origin: now,
                rows_before: emitted + self.max_backlog - 1,
            };
            self.schedule = Some(schedule);
            due = self.rows_due(schedule, now);
        }
        let available = due.saturating_sub(emitted).min(remaining);
        let wanted = self.target_batch.min(remaining);
        if available >= wanted {
            Pace::Emit(available.min(MAX_BATCH_ROWS))
        } else {
            Pace::WaitUntil(self.due_at(schedule, emitted + wanted))
        }
    }

    /// Rows due by `now`, counting from the reader's first row.
    fn rows_due(&self, schedule: Schedule, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(schedule.origin).as_nanos();
        let paced = elapsed.saturating_mul(self.milli_rows_per_second)
            / (1000 * NANOS_PER_SECOND * self.splits);
        (schedule.rows_before as u128 + 1 + paced).min(u64::MAX as u128) as u64
    }

    /// When `rows` rows will be due.
    fn due_at(&self, schedule: Schedule, rows: u64) -> Instant {
        let ahead = rows.saturating_sub(schedule.rows_before + 1) as u128;
        let nanos =
            (ahead * 1000 * NANOS_PER_SECOND * self.splits).div_ceil(self.milli_rows_per_second);
        schedule.origin + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a pacer the way a reader does, with a synthetic clock: emit what it allows,
    /// otherwise jump to its deadline. Returns `(time since start, batch size)` per batch.
    fn simulate(pacer: &mut Pacer, total: u64) -> Vec<(Duration, u64)> {
        let start = Instant::now();
        let mut now = start;
        let mut emitted = 0;
        let mut batches = Vec::new();
        while emitted < total {
            match pacer.poll(now, emitted, total - emitted) {
                Pace::Emit(count) => {
                    batches.push((now - start, count));
                    emitted += count;
                }
                Pace::WaitUntil(deadline) => {
                    assert!(deadline > now, "a pacer must not ask to wait for the past");
                    now = deadline;
                }
            }
        }
        batches
    }

    #[test]
    fn slow_rates_emit_one_row_per_slot_on_schedule() {
        // 10 rows/s over 2 splits: each split gets a row every 200 ms.
        let batches = simulate(&mut Pacer::new(10_000, 2), 5);
        let expected: Vec<(Duration, u64)> = (0..5)
            .map(|k| (Duration::from_millis(200 * k), 1))
            .collect();
        assert_eq!(batches, expected);
    }

    #[test]
    fn fractional_rates_are_exact() {
        // 0.5 rows/s: a row every 2 s.
        let batches = simulate(&mut Pacer::new(500, 1), 3);
        assert_eq!(
            batches,
            vec![
                (Duration::ZERO, 1),
                (Duration::from_secs(2), 1),
                (Duration::from_secs(4), 1)
            ]
        );
    }

    #[test]
    fn high_rates_emit_bigger_batches_instead_of_more_sleeps() {
        // 100k rows/s on one split: 1000-row batches every 10 ms, not 100k sleeps.
        let batches = simulate(&mut Pacer::new(100_000_000, 1), 10_000);
        let expected: Vec<(Duration, u64)> = (1..=10)
            .map(|k| (Duration::from_micros(10_000 * k - 10), 1000))
            .collect();
        assert_eq!(batches, expected);
    }

    #[test]
    fn very_high_rates_are_capped_at_max_batch_rows() {
        let batches = simulate(&mut Pacer::new(u128::MAX, 1), 10 * MAX_BATCH_ROWS);
        assert!(batches.iter().all(|&(_, n)| n <= MAX_BATCH_ROWS));
        assert!(batches.last().unwrap().0 < Duration::from_millis(1));
    }

    #[test]
    fn polling_again_before_the_deadline_changes_nothing() {
        let mut pacer = Pacer::new(10_000, 1);
        let start = Instant::now();
        assert_eq!(pacer.poll(start, 0, 100), Pace::Emit(1));
        let deadline = start + Duration::from_millis(100);
        // A reader whose sleep was cancelled asks again, several times, early.
        for early in [0, 10, 50, 99] {
            let now = start + Duration::from_millis(early);
            assert_eq!(pacer.poll(now, 1, 99), Pace::WaitUntil(deadline));
        }
        assert_eq!(pacer.poll(deadline, 1, 99), Pace::Emit(1));
    }

    #[test]
    fn a_reader_held_back_catches_up_at_most_one_second_of_rows() {
        // 5000 rows/s: after a 10 s stall, 5000 rows are owed, not 50 000.
        let mut pacer = Pacer::new(5_000_000, 1);
        let start = Instant::now();
        assert!(matches!(pacer.poll(start, 0, u64::MAX), Pace::WaitUntil(_)));
        let later = start + Duration::from_secs(10);
        let mut emitted = 0;
        while let Pace::Emit(count) = pacer.poll(later, emitted, u64::MAX) {
            assert!(count <= MAX_BATCH_ROWS);
            emitted += count;
        }
        assert_eq!(emitted, 5000);
        // Then the schedule goes on at the rate from there: 50 more rows 10 ms later.
        let next = later + Duration::from_millis(10);
        assert_eq!(pacer.poll(next, emitted, u64::MAX), Pace::Emit(50));
    }
}
