//! The three Nexmark sources every query reads: `person`, `auction` and `bid`, bounded
//! by `nexmark.event.num` and generated as fast as possible (gap 0).

use std::collections::BTreeMap;

/// One flat Nexmark table, as a Sluice source.
#[derive(Debug)]
pub struct SourceDef {
    /// The source's name, which is also its `nexmark.table.type`.
    pub name: &'static str,
    /// `(column, SQL type)` as in RisingWave's Nexmark DDL.
    pub columns: &'static [(&'static str, &'static str)],
}

/// `person`, `auction` and `bid`.
pub static SOURCES: [SourceDef; 3] = [
    SourceDef {
        name: "person",
        columns: &[
            ("id", "BIGINT"),
            ("name", "VARCHAR"),
            ("email_address", "VARCHAR"),
            ("credit_card", "VARCHAR"),
            ("city", "VARCHAR"),
            ("state", "VARCHAR"),
            ("date_time", "TIMESTAMP(3)"),
            ("extra", "VARCHAR"),
        ],
    },
    SourceDef {
        name: "auction",
        columns: &[
            ("id", "BIGINT"),
            ("item_name", "VARCHAR"),
            ("description", "VARCHAR"),
            ("initial_bid", "BIGINT"),
            ("reserve", "BIGINT"),
            ("date_time", "TIMESTAMP(3)"),
            ("expires", "TIMESTAMP(3)"),
            ("seller", "BIGINT"),
            ("category", "BIGINT"),
            ("extra", "VARCHAR"),
        ],
    },
    SourceDef {
        name: "bid",
        columns: &[
            ("auction", "BIGINT"),
            ("bidder", "BIGINT"),
            ("price", "BIGINT"),
            ("channel", "VARCHAR"),
            ("url", "VARCHAR"),
            ("date_time", "TIMESTAMP(3)"),
            ("extra", "VARCHAR"),
        ],
    },
];

impl SourceDef {
    /// The `WITH` options (keys lower-cased, as the connector expects them) of this
    /// source bounded to `events` events of the whole Nexmark stream.
    pub fn options(&self, events: u64) -> BTreeMap<String, String> {
        [
            ("connector", "nexmark".to_string()),
            ("nexmark.table.type", self.name.to_string()),
            ("nexmark.event.num", events.to_string()),
            ("nexmark.min.event.gap.in.ns", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `CREATE SOURCE` for this source with [`Self::options`].
    pub fn ddl(&self, events: u64) -> String {
        self.ddl_with(&self.options(events))
    }

    /// `CREATE SOURCE` for this source reading the Parquet files of
    /// [`crate::parquet::ensure_parquet`] under `dir`.
    pub fn parquet_ddl(&self, dir: &std::path::Path) -> String {
        let options = [
            ("connector", "filesystem".to_string()),
            ("path", dir.join(self.name).display().to_string()),
            ("format", "parquet".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        self.ddl_with(&options)
    }

    fn ddl_with(&self, options: &BTreeMap<String, String>) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        let options: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{k} = '{v}'"))
            .collect();
        format!(
            "CREATE SOURCE {} ({}) WITH ({})",
            self.name,
            columns.join(", "),
            options.join(", ")
        )
    }
}
