//! The Nexmark queries q0–q22, embedded from `queries/qN.sql`.
//!
//! Each file is one `CREATE MATERIALIZED VIEW nexmark_qN AS <select>`. A file whose first
//! line is `-- unsupported: <reason>` keeps the canonical SQL for the day Sluice can run
//! it, and is skipped by the gate and the harness.

use crate::{Error, Result};

/// One Nexmark query.
#[derive(Debug)]
pub struct Query {
    /// `q0` ... `q22`.
    pub name: &'static str,
    /// The file's text, comments included.
    pub file: &'static str,
}

macro_rules! query {
    ($name:literal) => {
        Query {
            name: $name,
            file: include_str!(concat!("../queries/", $name, ".sql")),
        }
    };
}

/// Every query, in order.
pub static QUERIES: [Query; 23] = [
    query!("q0"),
    query!("q1"),
    query!("q2"),
    query!("q3"),
    query!("q4"),
    query!("q5"),
    query!("q6"),
    query!("q7"),
    query!("q8"),
    query!("q9"),
    query!("q10"),
    query!("q11"),
    query!("q12"),
    query!("q13"),
    query!("q14"),
    query!("q15"),
    query!("q16"),
    query!("q17"),
    query!("q18"),
    query!("q19"),
    query!("q20"),
    query!("q21"),
    query!("q22"),
];

const UNSUPPORTED: &str = "-- unsupported:";

impl Query {
    /// Why Sluice cannot run this query yet, or `None` if it can.
    pub fn unsupported(&self) -> Option<&'static str> {
        let first = self.file.lines().next().unwrap_or("");
        first.strip_prefix(UNSUPPORTED).map(str::trim)
    }

    /// The view the query creates: `nexmark_qN`.
    pub fn view_name(&self) -> String {
        format!("nexmark_{}", self.name)
    }

    /// The `CREATE MATERIALIZED VIEW` statement without comment lines.
    pub fn create_view_sql(&self) -> String {
        self.file
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .trim_end_matches(';')
            .to_string()
    }

    /// The sink the measured runs write into: `nexmark_qN_sink`.
    pub fn sink_name(&self) -> String {
        format!("{}_sink", self.view_name())
    }

    /// The same query into a blackhole sink:
    /// `CREATE SINK nexmark_qN_sink AS <query> WITH (connector = 'blackhole')`.
    pub fn create_sink_sql(&self) -> Result<String> {
        Ok(format!(
            "CREATE SINK {} AS {} WITH (connector = 'blackhole')",
            self.sink_name(),
            self.view_body()?
        ))
    }

    /// The view's query: the statement after `CREATE MATERIALIZED VIEW <name> AS`,
    /// without `EMIT ON WINDOW CLOSE` (a batch query has no windows to close).
    pub fn select_sql(&self) -> Result<String> {
        let body = self.view_body()?;
        let query = body.as_str();
        let query = match query.len().checked_sub(EMIT_ON_WINDOW_CLOSE.len()) {
            Some(at) if query[at..].eq_ignore_ascii_case(EMIT_ON_WINDOW_CLOSE) => &query[..at],
            _ => query,
        };
        Ok(query.trim_end().to_string())
    }

    /// Everything after `CREATE MATERIALIZED VIEW <name> AS`. Fails if the file is not
    /// such a statement, or names another view.
    fn view_body(&self) -> Result<String> {
        let sql = self.create_view_sql();
        let mut rest = sql.as_str();
        let mut words = Vec::new();
        for _ in 0..5 {
            let trimmed = rest.trim_start();
            let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
            words.push(&trimmed[..end]);
            rest = &trimmed[end..];
        }
        let expected = ["CREATE", "MATERIALIZED", "VIEW", &self.view_name(), "AS"];
        if words
            .iter()
            .zip(expected)
            .any(|(w, e)| !w.eq_ignore_ascii_case(e))
        {
            return Err(Error::new(format!(
                "queries/{}.sql must be `CREATE MATERIALIZED VIEW {} AS <query>`, found `{}`",
                self.name,
                self.view_name(),
                words.join(" ")
            )));
        }
        Ok(rest.trim().trim_end_matches(';').trim_end().to_string())
    }
}

const EMIT_ON_WINDOW_CLOSE: &str = "EMIT ON WINDOW CLOSE";

/// The queries named in a comma-separated list (`q0,q1`), or every query for `all`.
/// Fails on an unknown name, listing the valid ones.
pub fn select(list: &str) -> Result<Vec<&'static Query>> {
    if list.trim().eq_ignore_ascii_case("all") {
        return Ok(QUERIES.iter().collect());
    }
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| {
            QUERIES
                .iter()
                .find(|q| q.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    Error::new(format!(
                        "unknown query `{name}`: expected `all` or names among q0 ... q22"
                    ))
                })
        })
        .collect()
}

/// The queries Sluice can run today.
pub fn supported() -> Vec<&'static Query> {
    QUERIES
        .iter()
        .filter(|q| q.unsupported().is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_file_is_a_view_named_after_the_query() {
        for q in &QUERIES {
            let select = q.select_sql().unwrap();
            assert!(
                select.to_ascii_uppercase().starts_with("SELECT"),
                "{}: {select}",
                q.name
            );
            assert!(
                !select.to_ascii_uppercase().contains("EMIT ON WINDOW CLOSE"),
                "{}: {select}",
                q.name
            );
        }
    }

    #[test]
    fn unsupported_queries_give_a_reason() {
        assert_eq!(
            QUERIES[12].unsupported(),
            Some("needs processing-time TUMBLE windows")
        );
        assert_eq!(QUERIES[0].unsupported(), None);
    }

    #[test]
    fn query_lists_accept_all_and_reject_unknown_names() {
        assert_eq!(select("all").unwrap().len(), 23);
        let names: Vec<_> = select("q0, q22").unwrap().iter().map(|q| q.name).collect();
        assert_eq!(names, ["q0", "q22"]);
        assert!(select("q23").unwrap_err().0.contains("unknown query `q23`"));
    }
}
