//! The columns a nexmark source can have, and the Arrow builders that fill them.
//!
//! A source declares its columns in `CREATE SOURCE`; they are matched by name against
//! the shape the options choose: one of RisingWave's per-type tables (`person`,
//! `auction`, `bid`, with snake_case column names) or the unified event table
//! (`event_type`, the `person` / `auction` / `bid` structs, `date_time`). Any subset in
//! any order is fine; struct columns may likewise declare a subset of their fields.
//! [`plan`] checks names and types once and returns one [`ColumnBuilder`] per declared
//! column; the reader appends each generated event to every builder and finishes them
//! into a batch, so no row of values exists between the generator and the arrays.

use std::sync::Arc;

use ::nexmark::event::{Event, EventType};
use arrow::array::{
    ArrayRef, Int64Builder, NullBufferBuilder, PrimitiveArray, StringBuilder, StructArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Fields, Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use sluice_common::error::{Result, SluiceError, SqlState};

/// One value a column can hold, named by what it is in the Nexmark model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    PersonId,
    PersonName,
    PersonEmailAddress,
    PersonCreditCard,
    PersonCity,
    PersonState,
    PersonDateTime,
    PersonExtra,
    AuctionId,
    AuctionItemName,
    AuctionDescription,
    AuctionInitialBid,
    AuctionReserve,
    AuctionDateTime,
    AuctionExpires,
    AuctionSeller,
    AuctionCategory,
    AuctionExtra,
    BidAuction,
    BidBidder,
    BidPrice,
    BidChannel,
    BidUrl,
    BidDateTime,
    BidExtra,
    /// The unified table's `event_type`: 0 person, 1 auction, 2 bid.
    EventType,
    /// The unified table's `date_time`: the event time of whichever event it is.
    DateTime,
}

/// The kind of Arrow array an [`Attr`] goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Str,
    Time,
}

pub const PERSON_COLUMNS: [(&str, Attr); 8] = [
    ("id", Attr::PersonId),
    ("name", Attr::PersonName),
    ("email_address", Attr::PersonEmailAddress),
    ("credit_card", Attr::PersonCreditCard),
    ("city", Attr::PersonCity),
    ("state", Attr::PersonState),
    ("date_time", Attr::PersonDateTime),
    ("extra", Attr::PersonExtra),
];

pub const AUCTION_COLUMNS: [(&str, Attr); 10] = [
    ("id", Attr::AuctionId),
    ("item_name", Attr::AuctionItemName),
    ("description", Attr::AuctionDescription),
    ("initial_bid", Attr::AuctionInitialBid),
    ("reserve", Attr::AuctionReserve),
    ("date_time", Attr::AuctionDateTime),
    ("expires", Attr::AuctionExpires),
    ("seller", Attr::AuctionSeller),
    ("category", Attr::AuctionCategory),
    ("extra", Attr::AuctionExtra),
];

pub const BID_COLUMNS: [(&str, Attr); 7] = [
    ("auction", Attr::BidAuction),
    ("bidder", Attr::BidBidder),
    ("price", Attr::BidPrice),
    ("channel", Attr::BidChannel),
    ("url", Attr::BidUrl),
    ("date_time", Attr::BidDateTime),
    ("extra", Attr::BidExtra),
];

/// The unified table's top-level columns other than the three structs.
const UNIFIED_NAMES: [&str; 5] = ["event_type", "person", "auction", "bid", "date_time"];

/// The columns of a per-type table (or of that type's struct in the unified table).
pub fn columns_of(event_type: EventType) -> &'static [(&'static str, Attr)] {
    match event_type {
        EventType::Person => &PERSON_COLUMNS,
        EventType::Auction => &AUCTION_COLUMNS,
        EventType::Bid => &BID_COLUMNS,
    }
}

fn type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Person => "person",
        EventType::Auction => "auction",
        EventType::Bid => "bid",
    }
}

/// The `event_type` code of an event, as RisingWave numbers them.
pub fn event_type_code(event_type: EventType) -> i64 {
    match event_type {
        EventType::Person => 0,
        EventType::Auction => 1,
        EventType::Bid => 2,
    }
}

// Ids, prices and categories are below 2^41 (options are capped at 2^40, and ids grow by
// one per event), so they are exact in an i64.
fn int(v: usize) -> i64 {
    v as i64
}

impl Attr {
    fn kind(self) -> Kind {
        use Attr::*;
        match self {
            PersonId | AuctionId | AuctionInitialBid | AuctionReserve | AuctionSeller
            | AuctionCategory | BidAuction | BidBidder | BidPrice | EventType => Kind::Int,
            PersonDateTime | AuctionDateTime | AuctionExpires | BidDateTime | DateTime => {
                Kind::Time
            }
            _ => Kind::Str,
        }
    }

    fn int(self, event: &Event) -> Option<i64> {
        Some(match (self, event) {
            (Attr::PersonId, Event::Person(p)) => int(p.id),
            (Attr::AuctionId, Event::Auction(a)) => int(a.id),
            (Attr::AuctionInitialBid, Event::Auction(a)) => int(a.initial_bid),
            (Attr::AuctionReserve, Event::Auction(a)) => int(a.reserve),
            (Attr::AuctionSeller, Event::Auction(a)) => int(a.seller),
            (Attr::AuctionCategory, Event::Auction(a)) => int(a.category),
            (Attr::BidAuction, Event::Bid(b)) => int(b.auction),
            (Attr::BidBidder, Event::Bid(b)) => int(b.bidder),
            (Attr::BidPrice, Event::Bid(b)) => int(b.price),
            (Attr::EventType, e) => event_type_code(e.event_type()),
            _ => return None,
        })
    }

    fn str(self, event: &Event) -> Option<&str> {
        Some(match (self, event) {
            (Attr::PersonName, Event::Person(p)) => &p.name,
            (Attr::PersonEmailAddress, Event::Person(p)) => &p.email_address,
            (Attr::PersonCreditCard, Event::Person(p)) => &p.credit_card,
            (Attr::PersonCity, Event::Person(p)) => &p.city,
            (Attr::PersonState, Event::Person(p)) => &p.state,
            (Attr::PersonExtra, Event::Person(p)) => &p.extra,
            (Attr::AuctionItemName, Event::Auction(a)) => &a.item_name,
            (Attr::AuctionDescription, Event::Auction(a)) => &a.description,
            (Attr::AuctionExtra, Event::Auction(a)) => &a.extra,
            (Attr::BidChannel, Event::Bid(b)) => &b.channel,
            (Attr::BidUrl, Event::Bid(b)) => &b.url,
            (Attr::BidExtra, Event::Bid(b)) => &b.extra,
            _ => return None,
        })
    }

    /// Milliseconds since the Unix epoch.
    fn time_ms(self, event: &Event) -> Option<u64> {
        Some(match (self, event) {
            (Attr::PersonDateTime, Event::Person(p)) => p.date_time,
            (Attr::AuctionDateTime, Event::Auction(a)) => a.date_time,
            (Attr::AuctionExpires, Event::Auction(a)) => a.expires,
            (Attr::BidDateTime, Event::Bid(b)) => b.date_time,
            (Attr::DateTime, e) => e.timestamp(),
            _ => return None,
        })
    }
}

/// Accumulates one declared column over the events of a batch.
#[derive(Debug)]
pub enum ColumnBuilder {
    Int {
        attr: Attr,
        values: Int64Builder,
        /// The declared type, when it is a narrower integer (only `event_type`).
        target: DataType,
    },
    Str {
        attr: Attr,
        values: StringBuilder,
        /// The declared type, when it is another string type than `Utf8`.
        target: DataType,
    },
    Time {
        attr: Attr,
        values: Vec<i64>,
        nulls: NullBufferBuilder,
        unit: TimeUnit,
        timezone: Option<Arc<str>>,
    },
    Struct {
        of: EventType,
        fields: Fields,
        children: Vec<ColumnBuilder>,
        nulls: NullBufferBuilder,
    },
}

impl ColumnBuilder {
    /// Appends this column's value for `event` (NULL when the event is of another type).
    pub fn append(&mut self, event: &Event) {
        match self {
            ColumnBuilder::Int { attr, values, .. } => values.append_option(attr.int(event)),
            ColumnBuilder::Str { attr, values, .. } => values.append_option(attr.str(event)),
            ColumnBuilder::Time {
                attr,
                values,
                nulls,
                unit,
                ..
            } => match attr.time_ms(event) {
                Some(ms) => {
                    values.push(ms_to_unit(ms, *unit));
                    nulls.append_non_null();
                }
                None => {
                    values.push(0);
                    nulls.append_null();
                }
            },
            ColumnBuilder::Struct {
                of,
                children,
                nulls,
                ..
            } => {
                nulls.append(event.event_type() == *of);
                for child in children {
                    child.append(event);
                }
            }
        }
    }

    /// The array of everything appended since the last call; the builder starts over.
    pub fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            ColumnBuilder::Int { values, target, .. } => {
                let array: ArrayRef = Arc::new(values.finish());
                if *target == DataType::Int64 {
                    array
                } else {
                    cast(&array, target)?
                }
            }
            ColumnBuilder::Str { values, target, .. } => {
                let array: ArrayRef = Arc::new(values.finish());
                if *target == DataType::Utf8 {
                    array
                } else {
                    cast(&array, target)?
                }
            }
            ColumnBuilder::Time {
                values,
                nulls,
                unit,
                timezone,
                ..
            } => {
                let values = std::mem::take(values).into();
                let nulls = nulls.finish();
                let timezone = timezone.clone();
                match unit {
                    TimeUnit::Second => Arc::new(
                        PrimitiveArray::<TimestampSecondType>::new(values, nulls)
                            .with_timezone_opt(timezone),
                    ),
                    TimeUnit::Millisecond => Arc::new(
                        PrimitiveArray::<TimestampMillisecondType>::new(values, nulls)
                            .with_timezone_opt(timezone),
                    ),
                    TimeUnit::Microsecond => Arc::new(
                        PrimitiveArray::<TimestampMicrosecondType>::new(values, nulls)
                            .with_timezone_opt(timezone),
                    ),
                    TimeUnit::Nanosecond => Arc::new(
                        PrimitiveArray::<TimestampNanosecondType>::new(values, nulls)
                            .with_timezone_opt(timezone),
                    ),
                }
            }
            ColumnBuilder::Struct {
                fields,
                children,
                nulls,
                ..
            } => {
                let children = children
                    .iter_mut()
                    .map(ColumnBuilder::finish)
                    .collect::<Result<Vec<_>>>()?;
                Arc::new(StructArray::try_new(
                    fields.clone(),
                    children,
                    nulls.finish(),
                )?)
            }
        })
    }
}

// Event times are below 2100-01-01 plus the run's length (base time is capped), so the
// nanosecond product stays far from i64::MAX; saturating keeps an absurd run defined.
fn ms_to_unit(ms: u64, unit: TimeUnit) -> i64 {
    let ms = ms.min(i64::MAX as u64) as i64;
    match unit {
        TimeUnit::Second => ms / 1000,
        TimeUnit::Millisecond => ms,
        TimeUnit::Microsecond => ms.saturating_mul(1000),
        TimeUnit::Nanosecond => ms.saturating_mul(1_000_000),
    }
}

/// Builders for the declared columns of a source whose shape is `table` (`None`: the
/// unified event table), in schema order. Fails naming the column when a name is not
/// one of the shape's columns or its type cannot hold the values.
pub fn plan(schema: &Schema, table: Option<EventType>) -> Result<Vec<ColumnBuilder>> {
    schema
        .fields()
        .iter()
        .map(|field| match table {
            Some(event_type) => plan_attr(field, event_type, columns_of(event_type), ""),
            None => plan_unified(field),
        })
        .collect()
}

fn plan_unified(field: &Field) -> Result<ColumnBuilder> {
    let name = field.name().to_ascii_lowercase();
    let struct_of = match name.as_str() {
        "event_type" => return leaf(field, Attr::EventType, ""),
        "date_time" => return leaf(field, Attr::DateTime, ""),
        "person" => EventType::Person,
        "auction" => EventType::Auction,
        "bid" => EventType::Bid,
        _ => {
            return Err(SluiceError::new(
                SqlState::UNDEFINED_COLUMN,
                format!(
                    "a nexmark source without nexmark.table.type has no column \"{}\"; its \
                     columns are: {} (or set nexmark.table.type = person, auction or bid \
                     for one flat table per event type)",
                    field.name(),
                    UNIFIED_NAMES.join(", ")
                ),
            ));
        }
    };
    let columns = columns_of(struct_of);
    let mismatch = || {
        mismatch(
            field,
            "",
            &format!(
                "a nullable STRUCT of (some of) the {} fields {}",
                type_name(struct_of),
                names(columns)
            ),
        )
    };
    let DataType::Struct(fields) = field.data_type() else {
        return Err(mismatch());
    };
    if !field.is_nullable() || fields.is_empty() {
        return Err(mismatch());
    }
    let prefix = format!("{}.", field.name());
    let children = fields
        .iter()
        .map(|child| plan_attr(child, struct_of, columns, &prefix))
        .collect::<Result<Vec<_>>>()?;
    Ok(ColumnBuilder::Struct {
        of: struct_of,
        fields: fields.clone(),
        children,
        nulls: NullBufferBuilder::new(0),
    })
}

fn plan_attr(
    field: &Field,
    event_type: EventType,
    columns: &[(&str, Attr)],
    prefix: &str,
) -> Result<ColumnBuilder> {
    let Some(&(_, attr)) = columns
        .iter()
        .find(|(name, _)| field.name().eq_ignore_ascii_case(name))
    else {
        let what = if prefix.is_empty() {
            format!(
                "a nexmark source with nexmark.table.type = '{}' has no column",
                type_name(event_type)
            )
        } else {
            format!("the nexmark {} struct has no field", type_name(event_type))
        };
        return Err(SluiceError::new(
            SqlState::UNDEFINED_COLUMN,
            format!(
                "{what} \"{prefix}{}\"; its {} are: {}",
                field.name(),
                if prefix.is_empty() {
                    "columns"
                } else {
                    "fields"
                },
                names(columns)
            ),
        ));
    };
    leaf(field, attr, prefix)
}

fn leaf(field: &Field, attr: Attr, prefix: &str) -> Result<ColumnBuilder> {
    let data_type = field.data_type().clone();
    match (attr.kind(), &data_type) {
        (Kind::Int, DataType::Int64) => Ok(ColumnBuilder::Int {
            attr,
            values: Int64Builder::new(),
            target: data_type,
        }),
        (Kind::Int, DataType::Int8 | DataType::Int16 | DataType::Int32)
            if attr == Attr::EventType =>
        {
            Ok(ColumnBuilder::Int {
                attr,
                values: Int64Builder::new(),
                target: data_type,
            })
        }
        (Kind::Int, _) if attr == Attr::EventType => Err(mismatch(
            field,
            prefix,
            "an integer type (SMALLINT, INT or BIGINT)",
        )),
        (Kind::Int, _) => Err(mismatch(field, prefix, "BIGINT")),
        (Kind::Str, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            Ok(ColumnBuilder::Str {
                attr,
                values: StringBuilder::new(),
                target: data_type,
            })
        }
        (Kind::Str, _) => Err(mismatch(field, prefix, "VARCHAR")),
        (Kind::Time, DataType::Timestamp(unit, timezone)) => Ok(ColumnBuilder::Time {
            attr,
            values: Vec::new(),
            nulls: NullBufferBuilder::new(0),
            unit: *unit,
            timezone: timezone.clone(),
        }),
        (Kind::Time, _) => Err(mismatch(field, prefix, "TIMESTAMP (of any precision)")),
    }
}

fn names(columns: &[(&str, Attr)]) -> String {
    columns
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn mismatch(field: &Field, prefix: &str, expected: &str) -> SluiceError {
    SluiceError::new(
        SqlState::DATATYPE_MISMATCH,
        format!(
            "nexmark column \"{prefix}{}\" is declared as {}, but must be {expected}",
            field.name(),
            sql_name(field.data_type())
        ),
    )
}

/// The SQL spelling of the common types, for messages; Arrow's otherwise.
fn sql_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Struct(_) => "a STRUCT".into(),
        other => other.to_string(),
    }
}
