//! Nexmark's `WITH` options, parsed and checked once.
//!
//! The keys are RisingWave's (`nexmark.event.num`, `nexmark.table.type`, ...), so DDL
//! written for RisingWave runs unchanged; every key RisingWave accepts is accepted here,
//! and any other `nexmark.*` key is an error naming the known ones. Values are checked
//! against the ranges in which the generator (the `nexmark` crate) neither panics nor
//! overflows, so a reader never meets a bad value.

use std::collections::BTreeMap;

use ::nexmark::config::NexmarkConfig;
use ::nexmark::event::EventType;
use sluice_common::error::{Result, SluiceError};

/// Event time of the first event when `nexmark.base.time` is not given:
/// 2015-07-15 00:00:00 UTC, RisingWave's base time for per-type tables. A fixed default
/// keeps every split (and every restart) on the same timeline.
pub const DEFAULT_BASE_TIME_MS: u64 = 1_436_918_400_000;
/// Wall-clock nanoseconds between consecutive events of the whole source by default
/// (10 000 events per second), as in RisingWave.
pub const DEFAULT_MIN_EVENT_GAP_NS: u64 = 100_000;
/// Rows per batch by default.
pub const DEFAULT_MAX_CHUNK_SIZE: usize = 1024;
/// Upper bound on `nexmark.max.chunk.size`, so one option cannot make batches unbounded.
const MAX_CHUNK_SIZE: usize = 65_536;
/// Upper bound on `nexmark.base.time`: 2100-01-01, so that event times stay within
/// nanosecond timestamps (which end in 2262) for any realistic run.
const MAX_BASE_TIME_MS: u64 = 4_102_444_800_000;
/// Upper bound on ids, counts and proportions given as options: far from overflow in
/// the generator's `usize` arithmetic and exact in the `i64` columns.
const MAX_COUNT: u64 = 1 << 40;
/// Upper bound on the average padded sizes of events, in bytes.
const MAX_BYTE_SIZE: u64 = 1 << 20;

/// Options that do not change the generated data, accepted for compatibility:
/// RisingWave accepts them too, and its generator ignores them (the event-time rate is
/// constant at `nexmark.first.event.rate`; the split count is the engine's choice).
const NO_EFFECT_KEYS: [&str; 8] = [
    "nexmark.split.num",
    "nexmark.next.event.rate",
    "nexmark.rate.shape",
    "nexmark.rate.period",
    "nexmark.sine.approx.steps",
    "nexmark.hot.seller.ratio.2",
    "nexmark.hot.auction.ratio.2",
    "nexmark.hot.bidder.ratio.2",
];

/// Everything a nexmark reader needs, for every split alike.
#[derive(Debug, Clone)]
pub struct NexmarkOptions {
    /// The generator's model (proportions, hot ratios, sizes, base time, ...).
    pub config: NexmarkConfig,
    /// `Some` for a per-type table (`nexmark.table.type`), `None` for the unified table.
    pub table: Option<EventType>,
    /// Events of the whole stream (all types, all splits) before it ends; `None` when
    /// unbounded.
    pub event_num: Option<u64>,
    /// Wall-clock nanoseconds between consecutive event numbers; 0 = unpaced.
    pub min_event_gap_ns: u64,
    /// Pace by the events' own (synthetic) event times instead of the gap.
    pub use_real_time: bool,
    /// Rows per batch at most.
    pub max_chunk_size: usize,
}

/// Every key a nexmark source accepts, for error messages.
fn known_keys() -> Vec<&'static str> {
    let mut keys = vec![
        "nexmark.table.type",
        "nexmark.event.num",
        "nexmark.min.event.gap.in.ns",
        "nexmark.use.real.time",
        "nexmark.max.chunk.size",
    ];
    keys.extend(NUMERIC_KEYS.iter().map(|(key, _, _)| *key));
    keys.extend(LIST_KEYS.iter().map(|(key, _)| *key));
    keys.extend(NO_EFFECT_KEYS);
    keys
}

type SetNumber = fn(&mut NexmarkConfig, usize);
type SetList = fn(&mut NexmarkConfig, Vec<String>);

/// Numeric model options: key, smallest allowed value, and where the value goes.
/// (The largest is [`MAX_COUNT`], or [`MAX_BYTE_SIZE`] for sizes.)
const NUMERIC_KEYS: [(&str, u64, SetNumber); 27] = [
    ("nexmark.active.people", 1, |c, v| c.active_people = v),
    ("nexmark.in.flight.auctions", 1, |c, v| {
        c.in_flight_auctions = v
    }),
    ("nexmark.out.of.order.group.size", 1, |c, v| {
        c.out_of_order_group_size = v
    }),
    ("nexmark.avg.person.byte.size", 0, |c, v| {
        c.avg_person_byte_size = v
    }),
    ("nexmark.avg.auction.byte.size", 0, |c, v| {
        c.avg_auction_byte_size = v
    }),
    ("nexmark.avg.bid.byte.size", 0, |c, v| {
        c.avg_bid_byte_size = v
    }),
    ("nexmark.hot.seller.ratio", 1, |c, v| c.hot_seller_ratio = v),
    ("nexmark.hot.auction.ratio", 1, |c, v| {
        c.hot_auction_ratio = v
    }),
    ("nexmark.hot.bidder.ratio", 1, |c, v| c.hot_bidder_ratio = v),
    ("nexmark.hot.channel.ratio", 1, |c, v| {
        c.hot_channel_ratio = v
    }),
    ("nexmark.first.event.id", 0, |c, v| c.first_event_id = v),
    ("nexmark.first.event.number", 0, |c, v| {
        c.first_event_number = v
    }),
    ("nexmark.num.categories", 1, |c, v| c.num_categories = v),
    ("nexmark.auction.id.lead", 0, |c, v| c.auction_id_lead = v),
    ("nexmark.person.id.lead", 0, |c, v| c.person_id_lead = v),
    ("nexmark.person.proportion", 1, |c, v| {
        c.person_proportion = v
    }),
    ("nexmark.auction.proportion", 1, |c, v| {
        c.auction_proportion = v
    }),
    ("nexmark.bid.proportion", 1, |c, v| c.bid_proportion = v),
    ("nexmark.first.auction.id", 0, |c, v| c.first_auction_id = v),
    ("nexmark.first.person.id", 0, |c, v| c.first_person_id = v),
    ("nexmark.first.category.id", 0, |c, v| {
        c.first_category_id = v
    }),
    // The event-time rate: events per `us.per.unit` microseconds of event time. As in
    // RisingWave, the rate is constant (next rate = first rate).
    ("nexmark.first.event.rate", 1, |c, v| {
        c.first_rate = v;
        c.next_rate = v;
    }),
    ("nexmark.events.per.sec", 1, |c, v| {
        c.first_rate = v;
        c.next_rate = v;
    }),
    ("nexmark.us.per.unit", 1, |c, v| c.us_per_unit = v),
    ("nexmark.threads", 1, |c, v| c.num_event_generators = v),
    ("nexmark.num.event.generators", 1, |c, v| {
        c.num_event_generators = v
    }),
    ("nexmark.base.time", 0, |c, v| c.base_time = v as u64),
];

/// Comma-separated word lists the generator draws from.
const LIST_KEYS: [(&str, SetList); 4] = [
    ("nexmark.us.states", |c, v| c.us_states = v),
    ("nexmark.us.cities", |c, v| c.us_cities = v),
    ("nexmark.first.names", |c, v| c.first_names = v),
    ("nexmark.last.names", |c, v| c.last_names = v),
];

/// Keys that set the same thing; giving both is an error rather than a silent choice.
const ALIASES: [(&str, &str); 2] = [
    ("nexmark.first.event.rate", "nexmark.events.per.sec"),
    ("nexmark.threads", "nexmark.num.event.generators"),
];

/// Parses and checks `options` (keys lower-cased).
pub fn parse(options: &BTreeMap<String, String>) -> Result<NexmarkOptions> {
    let mut parsed = NexmarkOptions {
        config: NexmarkConfig {
            base_time: DEFAULT_BASE_TIME_MS,
            ..NexmarkConfig::default()
        },
        table: None,
        event_num: None,
        min_event_gap_ns: DEFAULT_MIN_EVENT_GAP_NS,
        use_real_time: false,
        max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
    };
    for (a, b) in ALIASES {
        if options.contains_key(a) && options.contains_key(b) {
            return Err(SluiceError::invalid_parameter(format!(
                "nexmark options \"{a}\" and \"{b}\" set the same thing; give only one"
            )));
        }
    }
    for (key, value) in options {
        let (key, raw) = (key.as_str(), value);
        let value = value.trim();
        if key == "connector" {
            continue;
        }
        if let Some(&(_, min, set)) = NUMERIC_KEYS.iter().find(|(k, _, _)| *k == key) {
            let max = match key {
                "nexmark.base.time" => MAX_BASE_TIME_MS,
                k if k.ends_with(".byte.size") => MAX_BYTE_SIZE,
                _ => MAX_COUNT,
            };
            set(&mut parsed.config, number(key, raw, min, max)? as usize);
            continue;
        }
        if let Some(&(_, set)) = LIST_KEYS.iter().find(|(k, _)| *k == key) {
            let words: Vec<String> = value.split(',').map(|w| w.trim().to_string()).collect();
            if words.iter().any(String::is_empty) {
                return Err(invalid(
                    key,
                    raw,
                    "a comma-separated list of non-empty words",
                ));
            }
            set(&mut parsed.config, words);
            continue;
        }
        match key {
            "nexmark.table.type" => {
                parsed.table = Some(match value.to_ascii_lowercase().as_str() {
                    "person" => EventType::Person,
                    "auction" => EventType::Auction,
                    "bid" => EventType::Bid,
                    _ => return Err(invalid(key, raw, "one of person, auction, bid")),
                });
            }
            "nexmark.event.num" => {
                parsed.event_num = if value == "-1" {
                    None
                } else {
                    Some(value.parse::<u64>().map_err(|_| {
                        invalid(
                            key,
                            raw,
                            "a non-negative whole number of events, or -1 for unbounded",
                        )
                    })?)
                };
            }
            "nexmark.min.event.gap.in.ns" => {
                parsed.min_event_gap_ns = number(key, raw, 0, u64::MAX)?;
            }
            "nexmark.max.chunk.size" => {
                parsed.max_chunk_size = number(key, raw, 1, MAX_CHUNK_SIZE as u64)? as usize;
            }
            "nexmark.use.real.time" => {
                parsed.use_real_time = match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(key, raw, "true or false")),
                };
            }
            k if NO_EFFECT_KEYS.contains(&k) => {}
            _ => {
                return Err(SluiceError::invalid_parameter(format!(
                    "unknown nexmark option \"{key}\"; allowed: connector, {}",
                    known_keys().join(", ")
                )));
            }
        }
    }
    Ok(parsed)
}

fn number(key: &str, raw: &str, min: u64, max: u64) -> Result<u64> {
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| invalid(key, raw, &format!("a whole number from {min} to {max}")))
}

fn invalid(key: &str, value: &str, expected: &str) -> SluiceError {
    SluiceError::invalid_parameter(format!(
        "invalid value \"{value}\" for nexmark option \"{key}\": expected {expected}"
    ))
}
