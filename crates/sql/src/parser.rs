//! Parsing Sluice's SQL: PostgreSQL's dialect (through sqlparser, as DataFusion uses it)
//! plus the streaming statements users know from RisingWave and Flink.
//!
//! sqlparser does not know `CREATE SOURCE`, `APPEND ONLY`, `FLUSH`, `SHOW JOBS` or
//! RisingWave-style `WITH (fields.id.kind = 'sequence')` options, so the text is first
//! tokenized, split into statements at top-level semicolons, and each statement is
//! recognised by its leading keywords. Sluice-only syntax is taken off the token list and
//! the rest goes to sqlparser, so column definitions, types and queries are parsed by the
//! same code DataFusion uses.

use std::collections::BTreeMap;
use std::fmt;

use datafusion::sql::sqlparser::ast::{self, ObjectName};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use sluice_common::error::{Result, SluiceError};

use crate::dialect::SluiceDialect;

/// The kinds of catalog object a statement can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Table,
    Source,
    MaterializedView,
    Sink,
    Subscription,
}

impl ObjectKind {
    /// The SQL spelling, as in `DROP <kind>`.
    pub fn sql_name(self) -> &'static str {
        match self {
            ObjectKind::Table => "TABLE",
            ObjectKind::Source => "SOURCE",
            ObjectKind::MaterializedView => "MATERIALIZED VIEW",
            ObjectKind::Sink => "SINK",
            ObjectKind::Subscription => "SUBSCRIPTION",
        }
    }
}

/// What `SHOW` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShowTarget {
    Tables,
    Sources,
    MaterializedViews,
    Sinks,
    Subscriptions,
    Jobs,
    /// `SHOW <setting>`.
    Variable(String),
    /// `SHOW CHECKPOINTS`: completed checkpoints and savepoints.
    Checkpoints,
}

/// `WATERMARK FOR column AS expression` of a table or source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkDef {
    /// The event-time column.
    pub column: String,
    /// The watermark expression's text, over the relation's columns.
    pub expr: String,
}

/// How a materialized view runs, beyond its query: `EMIT ON WINDOW CLOSE` and
/// `WITH (allowed_lateness = '5 seconds')`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewOptions {
    pub emit_on_window_close: bool,
    /// How long after a window's end (in event time) its rows are still taken: windows
    /// close, and rows count as late, when the watermark passes `end + allowed lateness`.
    pub allowed_lateness_ms: i64,
    /// `source_idle_timeout`: an input of an operator that sends no rows or watermarks
    /// for this long stops holding the watermark back until it sends again.
    pub source_idle_timeout_ms: Option<i64>,
    /// `state_ttl`: inner joins and GROUP BYs over append-only input forget rows and
    /// groups not touched for this long (processing time).
    pub state_ttl_ms: Option<i64>,
    /// The parallelism connector sources are read at, when it differs from the job's:
    /// a view rescaled from a savepoint keeps its sources' splits (their positions
    /// cannot be re-split). Set by the coordinator, not by `WITH`.
    pub source_parallelism: Option<usize>,
}

impl ViewOptions {
    fn set(&mut self, option: &ast::SqlOption) -> Result<()> {
        let ast::SqlOption::KeyValue { key, value } = option else {
            return Err(SluiceError::syntax(format!(
                "materialized view options look like WITH (key = 'value'), not {option}"
            )));
        };
        match key.value.to_ascii_lowercase().as_str() {
            "allowed_lateness" => {
                let text = option_text(value);
                self.allowed_lateness_ms = parse_duration_ms(&text).ok_or_else(|| {
                    SluiceError::invalid_parameter(format!(
                        "allowed_lateness must be a duration such as '5 seconds' or '1 minute', not '{text}'"
                    ))
                })?;
                Ok(())
            }
            "source_idle_timeout" => {
                let text = option_text(value);
                self.source_idle_timeout_ms =
                    Some(positive_duration("source_idle_timeout", &text)?);
                Ok(())
            }
            "state_ttl" => {
                let text = option_text(value);
                self.state_ttl_ms = Some(parse_state_ttl(&text)?);
                Ok(())
            }
            other => Err(SluiceError::invalid_parameter(format!(
                "unknown materialized view option \"{other}\"; the known ones are allowed_lateness, source_idle_timeout and state_ttl"
            ))),
        }
    }
}

/// A state TTL (`'1 day'`, `'30 minutes'`), in ms.
pub fn parse_state_ttl(text: &str) -> Result<i64> {
    positive_duration("state_ttl", text)
}

/// The value of `SET checkpoint_interval`: a number of seconds (`10`, `0.5`) or a
/// duration (`'30 seconds'`, `'1 minute'`); it must be positive.
pub fn parse_checkpoint_interval(text: &str) -> Result<std::time::Duration> {
    if let Ok(seconds) = text.trim().parse::<f64>()
        && seconds.is_finite()
        && seconds > 0.0
        && seconds < 1e9
    {
        return Ok(std::time::Duration::from_secs_f64(seconds));
    }
    let ms = positive_duration("checkpoint_interval", text)?;
    Ok(std::time::Duration::from_millis(ms as u64))
}

/// The value of duration option `option` (`'1 day'`, `'30 minutes'`), in ms; it must be
/// positive.
fn positive_duration(option: &str, text: &str) -> Result<i64> {
    parse_duration_ms(text).filter(|&ms| ms > 0).ok_or_else(|| {
        SluiceError::invalid_parameter(format!(
            "{option} must be a positive duration such as '1 day' or '30 minutes', not '{text}'"
        ))
    })
}

/// An option's value as text: a string literal's contents, or the expression's SQL.
fn option_text(value: &ast::Expr) -> String {
    match value {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// A non-negative fixed duration (`'5 seconds'`, `'1 minute 30 seconds'`, `'250 ms'`) in
/// milliseconds, parsed as an interval by Arrow; months are not a fixed duration.
fn parse_duration_ms(text: &str) -> Option<i64> {
    let strings = arrow::array::StringArray::from(vec![text]);
    let interval = arrow::compute::cast_with_options(
        &strings,
        &arrow::datatypes::DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
        &arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        },
    )
    .ok()?;
    let interval = interval
        .as_any()
        .downcast_ref::<arrow::array::IntervalMonthDayNanoArray>()?
        .value(0);
    let millis = i64::from(interval.days) * 86_400_000 + interval.nanoseconds / 1_000_000;
    (interval.months == 0 && millis >= 0).then_some(millis)
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE TABLE` (`append_only` from `APPEND ONLY`); `with` holds `WITH (...)` options.
    CreateTable {
        create: Box<ast::Statement>,
        append_only: bool,
        with: BTreeMap<String, String>,
        watermark: Option<WatermarkDef>,
    },
    /// `CREATE SOURCE name (columns) WITH (connector = ..., ...)`. `create` is the same
    /// definition spelled as a `CREATE TABLE`, so column types parse as they do for tables.
    CreateSource {
        create: Box<ast::Statement>,
        with: BTreeMap<String, String>,
        watermark: Option<WatermarkDef>,
    },
    /// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] name AS query`.
    CreateMaterializedView {
        name: ObjectName,
        if_not_exists: bool,
        query: Box<ast::Query>,
        /// The text of the query, kept for `SHOW` and the catalog.
        query_sql: String,
        /// `EMIT ON WINDOW CLOSE` and the `WITH (...)` options.
        options: ViewOptions,
    },
    /// `CREATE SINK [IF NOT EXISTS] name { FROM relation | AS query } WITH (connector =
    /// ..., ...) [EMIT ON WINDOW CLOSE]`: the query's changelog goes to the connector.
    CreateSink {
        name: ObjectName,
        if_not_exists: bool,
        /// `SELECT * FROM relation` for the `FROM` form.
        query: Box<ast::Query>,
        /// The query as written (`FROM relation` for the `FROM` form).
        query_sql: String,
        /// `EMIT ON WINDOW CLOSE`.
        options: ViewOptions,
        /// The connector's `WITH (...)` options, keys lower-cased.
        with: BTreeMap<String, String>,
    },
    /// `CREATE SUBSCRIPTION [IF NOT EXISTS] name FROM view [WITH (retention = '1 day')]`:
    /// the view keeps its changes for the retention, for cursors to read.
    CreateSubscription {
        name: ObjectName,
        if_not_exists: bool,
        view: ObjectName,
        retention_ms: i64,
    },
    /// `DECLARE name SUBSCRIPTION CURSOR FOR subscription [SINCE ...]`.
    DeclareCursor {
        name: String,
        subscription: ObjectName,
        since: CursorStart,
    },
    /// `FETCH [NEXT | FORWARD | n | FORWARD n] [FROM | IN] cursor`.
    Fetch {
        cursor: String,
        count: usize,
    },
    /// `CLOSE cursor`, or `CLOSE ALL` (`None`).
    CloseCursor(Option<String>),
    /// `EXPLAIN CREATE MATERIALIZED VIEW ...`: the stream graph it would run.
    ExplainStream(Box<Statement>),
    Flush,
    /// `CHECKPOINT` (PostgreSQL's command): takes a checkpoint of every job now.
    Checkpoint,
    /// `ALTER MATERIALIZED VIEW v SAVEPOINT`: a checkpoint kept until deleted.
    Savepoint {
        view: ObjectName,
    },
    /// `ALTER MATERIALIZED VIEW v SET PARALLELISM {= | TO} n` (RisingWave's syntax):
    /// restarts the view's job at parallelism `n` from a savepoint, its state
    /// redistributed by key group.
    AlterParallelism {
        view: ObjectName,
        parallelism: usize,
    },
    Show(ShowTarget),
    Describe(ObjectName),
    Drop {
        kind: ObjectKind,
        names: Vec<ObjectName>,
        if_exists: bool,
        cascade: bool,
    },
    /// `SET name = value` / `SET name TO value`.
    Set {
        name: String,
        value: String,
    },
    /// `BEGIN`, `COMMIT`, `ROLLBACK`: accepted so drivers work; Sluice has no multi-statement
    /// transactions, every statement commits on its own.
    Transaction(&'static str),
    /// Anything else (`SELECT`, `INSERT`, `EXPLAIN SELECT`, ...): DataFusion plans it.
    Query(Box<ast::Statement>),
    /// An empty statement (only comments or `;`).
    Empty,
}

/// Where a subscription cursor starts reading a view's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorStart {
    /// With the changes after the ones readable now (no `SINCE`, or `SINCE now()`).
    Now,
    /// With the oldest change the subscription still holds (`SINCE begin()`).
    Begin,
    /// With the changes of the first epoch applied at or after this time (`SINCE
    /// <milliseconds since the Unix epoch>`).
    Time(i64),
}

/// How long a subscription keeps changes when it names no `retention`.
pub const DEFAULT_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// A statement with the text it was parsed from.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub statement: Statement,
    pub sql: String,
}

impl fmt::Display for ParsedStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)
    }
}

/// Parses a string that may hold several `;`-separated statements.
pub fn parse_sql(sql: &str) -> Result<Vec<ParsedStatement>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SluiceError::syntax(e.to_string()))?;
    let mut out = Vec::new();
    for group in split_statements(tokens) {
        let text: String = group
            .iter()
            .map(|t| t.token.to_string())
            .collect::<String>();
        let text = text.trim().to_string();
        let statement = parse_one(group)?;
        if !matches!(statement, Statement::Empty) {
            out.push(ParsedStatement {
                statement,
                sql: text,
            });
        }
    }
    Ok(out)
}

fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut groups = vec![Vec::new()];
    for t in tokens {
        match t.token {
            Token::SemiColon => groups.push(Vec::new()),
            Token::EOF => {}
            _ => groups.last_mut().expect("never empty").push(t),
        }
    }
    groups
}

/// A statement's tokens without whitespace and comments, with helpers to match keywords.
struct Tokens {
    all: Vec<TokenWithSpan>,
}

impl Tokens {
    fn significant(&self) -> Vec<&Token> {
        self.all
            .iter()
            .map(|t| &t.token)
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect()
    }

    /// True when the statement starts with these (unquoted, case-insensitive) words.
    fn starts_with(&self, words: &[&str]) -> bool {
        let sig = self.significant();
        words.len() <= sig.len() && words.iter().zip(sig).all(|(w, t)| is_word(t, w))
    }
}

fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn parse_one(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    let toks = Tokens { all: tokens };
    let sig = toks.significant();
    if sig.is_empty() {
        return Ok(Statement::Empty);
    }
    if toks.starts_with(&["FLUSH"]) && sig.len() == 1 {
        return Ok(Statement::Flush);
    }
    if toks.starts_with(&["CHECKPOINT"]) && sig.len() == 1 {
        return Ok(Statement::Checkpoint);
    }
    if toks.starts_with(&["EXPLAIN", "CREATE"]) {
        let rest = drop_leading_words(toks.all, 1);
        return match parse_one(rest)? {
            s @ (Statement::CreateMaterializedView { .. } | Statement::CreateSink { .. }) => {
                Ok(Statement::ExplainStream(Box::new(s)))
            }
            _ => Err(SluiceError::unsupported(
                "EXPLAIN CREATE is supported for CREATE MATERIALIZED VIEW and CREATE SINK only",
            )),
        };
    }
    for (words, tag) in [
        (&["BEGIN"][..], "BEGIN"),
        (&["START", "TRANSACTION"][..], "BEGIN"),
        (&["COMMIT"][..], "COMMIT"),
        (&["END"][..], "COMMIT"),
        (&["ROLLBACK"][..], "ROLLBACK"),
        (&["ABORT"][..], "ROLLBACK"),
    ] {
        if toks.starts_with(words) {
            return Ok(Statement::Transaction(tag));
        }
    }
    if toks.starts_with(&["SHOW"]) {
        return parse_show(&sig);
    }
    if toks.starts_with(&["DESCRIBE"]) || toks.starts_with(&["DESC"]) {
        let rest = drop_leading_words(toks.all, 1);
        let mut parser = sql_parser(rest);
        let name = parser.parse_object_name(false).map_err(syntax)?;
        return Ok(Statement::Describe(name));
    }
    if toks.starts_with(&["DROP"]) {
        return parse_drop(toks);
    }
    if toks.starts_with(&["SET"]) {
        return parse_set(&sig);
    }
    if toks.starts_with(&["CREATE", "SOURCE"]) || toks.starts_with(&["CREATE", "TABLE"]) {
        let is_source = toks.starts_with(&["CREATE", "SOURCE"]);
        return parse_create_table_like(toks.all, is_source);
    }
    if toks.starts_with(&["CREATE", "MATERIALIZED", "VIEW"]) {
        return parse_create_materialized_view(toks.all);
    }
    if toks.starts_with(&["CREATE", "SINK"]) {
        return parse_create_sink(toks.all);
    }
    if toks.starts_with(&["ALTER", "MATERIALIZED", "VIEW"]) {
        return parse_alter_materialized_view(toks.all);
    }
    if toks.starts_with(&["CREATE", "SUBSCRIPTION"]) {
        return parse_create_subscription(toks.all);
    }
    if toks.starts_with(&["DECLARE"]) {
        return parse_declare_cursor(&sig);
    }
    if toks.starts_with(&["FETCH"]) {
        return parse_fetch(&sig);
    }
    if toks.starts_with(&["CLOSE"]) {
        return match sig.as_slice() {
            [_, all] if is_word(all, "ALL") => Ok(Statement::CloseCursor(None)),
            [_, Token::Word(w)] => Ok(Statement::CloseCursor(Some(identifier(w)))),
            _ => Err(SluiceError::syntax("expected CLOSE cursor or CLOSE ALL")),
        };
    }
    let mut parser = sql_parser(unwrap_table_arguments(toks.all));
    let statement = parser.parse_statement().map_err(syntax)?;
    expect_end(&mut parser)?;
    Ok(Statement::Query(Box::new(statement)))
}

fn syntax(e: datafusion::sql::sqlparser::parser::ParserError) -> SluiceError {
    let msg = e.to_string();
    SluiceError::syntax(
        msg.strip_prefix("sql parser error: ")
            .unwrap_or(&msg)
            .to_string(),
    )
}

/// A parser over `tokens`: PostgreSQL's dialect, or Sluice's (PostgreSQL's plus table
/// versions) when the statement has `FOR SYSTEM_TIME`. Table versions make sqlparser read
/// `AT`, `BEFORE` and `CHANGES` after a table as version clauses, so statements that do
/// not need them keep PostgreSQL's reading (`FROM t at` is `t` aliased `at`).
fn sql_parser(tokens: Vec<TokenWithSpan>) -> Parser<'static> {
    static POSTGRES: PostgreSqlDialect = PostgreSqlDialect {};
    static SLUICE: SluiceDialect = SluiceDialect::new();
    let words: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let versions = words
        .windows(2)
        .any(|w| is_word(w[0], "for") && is_word(w[1], "system_time"));
    if versions {
        Parser::new(&SLUICE).with_tokens_with_locations(tokens)
    } else {
        Parser::new(&POSTGRES).with_tokens_with_locations(tokens)
    }
}

fn expect_end(parser: &mut Parser<'_>) -> Result<()> {
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(SluiceError::syntax(format!(
            "unexpected {} at line {}, column {}",
            next.token, next.span.start.line, next.span.start.column
        )));
    }
    Ok(())
}

/// Drops the `TABLE` of Flink's table arguments (`TUMBLE(TABLE t, ...)`): inside
/// parentheses, a `TABLE` right after `(` or `,` and before a name. sqlparser does not
/// parse table arguments; the window rewrite takes the bare name.
fn unwrap_table_arguments(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let mut drop = Vec::new();
    for w in significant.windows(3) {
        let (before, table, after) = (
            &tokens[w[0]].token,
            &tokens[w[1]].token,
            &tokens[w[2]].token,
        );
        if matches!(before, Token::LParen | Token::Comma)
            && is_word(table, "TABLE")
            && matches!(after, Token::Word(_))
        {
            drop.push(w[1]);
        }
    }
    let tokens: Vec<TokenWithSpan> = tokens
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, t)| t)
        .collect();
    partition_by_arguments(tokens)
}

/// The function Flink's `TABLE t PARTITION BY k` argument (SESSION windows) becomes:
/// `t, __sluice_partition_by(k)`, which sqlparser can parse and the window rewrite reads.
pub const PARTITION_BY_ARGUMENT: &str = "__sluice_partition_by";

/// Rewrites `(t PARTITION BY k` and `, t PARTITION BY (k1, k2)` (after `TABLE` was
/// dropped) into `(t, __sluice_partition_by(k)` and `, t, __sluice_partition_by(k1, k2)`.
fn partition_by_arguments(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    // Positions (in `significant`) of each `PARTITION` that follows `( name` or `, name`.
    let starts: Vec<usize> = (2..significant.len().saturating_sub(1))
        .filter(|&k| {
            matches!(
                tokens[significant[k - 2]].token,
                Token::LParen | Token::Comma
            ) && matches!(tokens[significant[k - 1]].token, Token::Word(_))
                && is_word(&tokens[significant[k]].token, "PARTITION")
                && is_word(&tokens[significant[k + 1]].token, "BY")
        })
        .collect();
    if starts.is_empty() {
        return tokens;
    }
    let wrap = |token: Token, like: &TokenWithSpan| TokenWithSpan {
        token,
        span: like.span,
    };
    let mut out = Vec::with_capacity(tokens.len() + 4 * starts.len());
    let mut next = 0; // next token index to copy
    for &k in &starts {
        let (partition, by) = (significant[k], significant[k + 1]);
        out.extend(tokens[next..partition].iter().cloned());
        out.push(wrap(Token::Comma, &tokens[partition]));
        out.push(wrap(
            Token::make_word(PARTITION_BY_ARGUMENT, None),
            &tokens[partition],
        ));
        next = by + 1;
        // Without parentheses the key is one (possibly qualified) name: wrap it.
        let first_key = significant.get(k + 2).copied();
        if first_key.is_some_and(|i| tokens[i].token != Token::LParen) {
            out.push(wrap(Token::LParen, &tokens[by]));
            let mut j = k + 2;
            while j < significant.len()
                && matches!(tokens[significant[j]].token, Token::Word(_) | Token::Period)
            {
                j += 1;
            }
            let end = significant.get(j).copied().unwrap_or(tokens.len());
            out.extend(tokens[next..end].iter().cloned());
            out.push(wrap(Token::RParen, &tokens[end - 1]));
            next = end;
        }
    }
    out.extend(tokens[next..].iter().cloned());
    out
}

/// Removes the first `n` significant tokens (and the whitespace before them).
fn drop_leading_words(tokens: Vec<TokenWithSpan>, n: usize) -> Vec<TokenWithSpan> {
    let mut seen = 0;
    tokens
        .into_iter()
        .skip_while(|t| {
            if seen >= n {
                return false;
            }
            if !matches!(t.token, Token::Whitespace(_)) {
                seen += 1;
            }
            true
        })
        .collect()
}

fn parse_show(sig: &[&Token]) -> Result<Statement> {
    let words: Vec<String> = sig[1..]
        .iter()
        .map(|t| match t {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let target = match words.as_slice() {
        ["TABLES"] => ShowTarget::Tables,
        ["SOURCES"] => ShowTarget::Sources,
        ["MATERIALIZED", "VIEWS"] => ShowTarget::MaterializedViews,
        ["SINKS"] => ShowTarget::Sinks,
        ["SUBSCRIPTIONS"] => ShowTarget::Subscriptions,
        ["JOBS"] | ["STREAMING", "JOBS"] => ShowTarget::Jobs,
        ["CHECKPOINTS"] => ShowTarget::Checkpoints,
        ["ALL"] => ShowTarget::Variable("all".into()),
        [name] => ShowTarget::Variable(name.to_ascii_lowercase()),
        _ => {
            return Err(SluiceError::syntax(format!(
                "SHOW {} is not a known SHOW statement; try SHOW TABLES, SOURCES, MATERIALIZED VIEWS, SINKS, SUBSCRIPTIONS, JOBS, CHECKPOINTS or SHOW <setting>",
                words.join(" ")
            )));
        }
    };
    Ok(Statement::Show(target))
}

fn parse_drop(toks: Tokens) -> Result<Statement> {
    let (kind, skip) = if toks.starts_with(&["DROP", "MATERIALIZED", "VIEW"]) {
        (ObjectKind::MaterializedView, 3)
    } else if toks.starts_with(&["DROP", "SINK"]) {
        (ObjectKind::Sink, 2)
    } else if toks.starts_with(&["DROP", "SUBSCRIPTION"]) {
        (ObjectKind::Subscription, 2)
    } else if toks.starts_with(&["DROP", "SOURCE"]) {
        (ObjectKind::Source, 2)
    } else if toks.starts_with(&["DROP", "TABLE"]) {
        (ObjectKind::Table, 2)
    } else {
        let mut parser = sql_parser(toks.all);
        let statement = parser.parse_statement().map_err(syntax)?;
        return Ok(Statement::Query(Box::new(statement)));
    };
    let mut parser = sql_parser(drop_leading_words(toks.all, skip));
    let if_exists = parser.parse_keywords(&[
        datafusion::sql::sqlparser::keywords::Keyword::IF,
        datafusion::sql::sqlparser::keywords::Keyword::EXISTS,
    ]);
    let names = parser
        .parse_comma_separated(|p| p.parse_object_name(false))
        .map_err(syntax)?;
    let cascade = parser.parse_keyword(datafusion::sql::sqlparser::keywords::Keyword::CASCADE);
    if !cascade {
        let _restrict =
            parser.parse_keyword(datafusion::sql::sqlparser::keywords::Keyword::RESTRICT);
    }
    expect_end(&mut parser)?;
    Ok(Statement::Drop {
        kind,
        names,
        if_exists,
        cascade,
    })
}

fn parse_set(sig: &[&Token]) -> Result<Statement> {
    // SET [SESSION | LOCAL] name { = | TO } value [, value ...]
    let mut i = 1;
    if sig
        .get(i)
        .is_some_and(|t| is_word(t, "SESSION") || is_word(t, "LOCAL"))
    {
        i += 1;
    }
    let mut name = String::new();
    while let Some(t) = sig.get(i) {
        match t {
            Token::Eq => break,
            t if is_word(t, "TO") => break,
            Token::Word(w) => name.push_str(&w.value.to_ascii_lowercase()),
            Token::Period => name.push('.'),
            other => {
                return Err(SluiceError::syntax(format!("unexpected {other} in SET")));
            }
        }
        i += 1;
    }
    if name.is_empty() || i >= sig.len() {
        return Err(SluiceError::syntax(
            "SET needs a name and a value: SET name = value",
        ));
    }
    let value: Vec<String> = sig[i + 1..].iter().map(|t| token_value(t)).collect();
    if value.is_empty() {
        return Err(SluiceError::syntax(format!("SET {name} needs a value")));
    }
    Ok(Statement::Set {
        name,
        value: value.join(""),
    })
}

/// The value a token stands for in `SET` and `WITH` options: strings unquoted, words and
/// numbers as written.
fn token_value(t: &Token) -> String {
    match t {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
        Token::Word(w) => w.value.clone(),
        Token::Number(n, _) => n.clone(),
        other => other.to_string(),
    }
}

fn parse_create_table_like(tokens: Vec<TokenWithSpan>, is_source: bool) -> Result<Statement> {
    let (mut tokens, with) = take_with_options(tokens)?;
    let append_only = take_append_only(&mut tokens);
    let watermark = take_watermark(&mut tokens)?;
    if is_source {
        // Spell `CREATE SOURCE` as `CREATE TABLE` for sqlparser.
        if let Some(t) = tokens.iter_mut().find(|t| is_word(&t.token, "SOURCE")) {
            t.token = Token::make_keyword("TABLE");
        }
    }
    let mut parser = sql_parser(tokens);
    let create = parser.parse_statement().map_err(syntax)?;
    expect_end(&mut parser)?;
    if !matches!(create, ast::Statement::CreateTable(_)) {
        return Err(SluiceError::syntax("expected a table definition"));
    }
    if is_source {
        // Sources are always append-only; a redundant APPEND ONLY (RisingWave) is accepted.
        Ok(Statement::CreateSource {
            create: Box::new(create),
            with,
            watermark,
        })
    } else {
        Ok(Statement::CreateTable {
            create: Box::new(create),
            append_only,
            with,
            watermark,
        })
    }
}

/// Takes `WATERMARK FOR column AS expression` out of a column list (with the comma that
/// separates it from its neighbours), so sqlparser sees only column definitions.
fn take_watermark(tokens: &mut Vec<TokenWithSpan>) -> Result<Option<WatermarkDef>> {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let mut depth = 0i32;
    let mut found = None;
    for (k, &i) in significant.iter().enumerate() {
        match tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth == 1
            && is_word(&tokens[i].token, "WATERMARK")
            && significant
                .get(k + 1)
                .is_some_and(|&j| is_word(&tokens[j].token, "FOR"))
        {
            found = Some(k);
            break;
        }
    }
    let Some(k) = found else { return Ok(None) };
    // The clause ends at the next comma or closing parenthesis at the column list's depth.
    let mut end = k;
    let mut inner = 0i32;
    while let Some(&i) = significant.get(end + 1) {
        match tokens[i].token {
            Token::LParen => inner += 1,
            Token::RParen if inner == 0 => break,
            Token::RParen => inner -= 1,
            Token::Comma if inner == 0 => break,
            _ => {}
        }
        end += 1;
    }
    let clause: Vec<&Token> = significant[k..=end]
        .iter()
        .map(|&i| &tokens[i].token)
        .collect();
    let malformed = || {
        SluiceError::syntax(
            "expected WATERMARK FOR <column> AS <expression>, e.g. WATERMARK FOR ts AS ts - INTERVAL '5' SECOND",
        )
    };
    let column = match clause.get(2) {
        Some(Token::Word(w)) if clause.get(3).is_some_and(|t| is_word(t, "AS")) => {
            if w.quote_style.is_some() {
                w.value.clone()
            } else {
                w.value.to_lowercase()
            }
        }
        _ => return Err(malformed()),
    };
    if clause.len() < 5 {
        return Err(malformed());
    }
    let expr_start = significant[k + 4];
    let expr: String = tokens[expr_start..=significant[end]]
        .iter()
        .map(|t| t.token.to_string())
        .collect();
    // Remove the clause and one separating comma (before it, or after it when first).
    let before = k.checked_sub(1).map(|b| significant[b]);
    let after = significant.get(end + 1).copied();
    let (from, to) = match (before, after) {
        (Some(b), _) if tokens[b].token == Token::Comma => (b, significant[end]),
        (_, Some(a)) if tokens[a].token == Token::Comma => (significant[k], a),
        _ => (significant[k], significant[end]),
    };
    tokens.drain(from..=to);
    Ok(Some(WatermarkDef {
        column,
        expr: expr.trim().to_string(),
    }))
}

/// Takes a trailing top-level `WITH ( key = value, ... )` off a CREATE statement. Keys may
/// be dotted (`fields.id.kind`, `datagen.rows.per.second`) or quoted (`'rows-per-second'`).
fn take_with_options(
    tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, BTreeMap<String, String>)> {
    let mut depth = 0i32;
    let mut with_at = None;
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            tok if depth == 0 && is_word(tok, "WITH") => with_at = Some(i),
            _ => {}
        }
    }
    let Some(at) = with_at else {
        return Ok((tokens, BTreeMap::new()));
    };
    let rest: Vec<&Token> = tokens[at + 1..]
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    if rest.first() != Some(&&Token::LParen) || rest.last() != Some(&&Token::RParen) {
        return Err(SluiceError::syntax(
            "WITH options must be a parenthesized list at the end: WITH (key = 'value', ...)",
        ));
    }
    let mut options = BTreeMap::new();
    for entry in rest[1..rest.len() - 1].split(|t| **t == Token::Comma) {
        let eq = entry.iter().position(|t| **t == Token::Eq).ok_or_else(|| {
            SluiceError::syntax(format!(
                "WITH option '{}' needs a value: key = 'value'",
                entry.iter().map(|t| t.to_string()).collect::<String>()
            ))
        })?;
        let key: String = entry[..eq].iter().map(|t| token_value(t)).collect();
        let value: String = entry[eq + 1..].iter().map(|t| token_value(t)).collect();
        if key.is_empty() || value.is_empty() {
            return Err(SluiceError::syntax(
                "WITH options must look like key = 'value'",
            ));
        }
        if options.insert(key.to_ascii_lowercase(), value).is_some() {
            return Err(SluiceError::syntax(format!(
                "WITH option '{}' is given twice",
                key.to_ascii_lowercase()
            )));
        }
    }
    let mut kept = tokens;
    kept.truncate(at);
    Ok((kept, options))
}

/// Removes `words` from the end of the statement, if it ends with them.
fn take_trailing_words(tokens: &mut Vec<TokenWithSpan>, words: &[&str]) -> bool {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    if significant.len() < words.len() {
        return false;
    }
    let tail = &significant[significant.len() - words.len()..];
    if !tail
        .iter()
        .zip(words)
        .all(|(&i, w)| is_word(&tokens[i].token, w))
    {
        return false;
    }
    tokens.truncate(tail[0]);
    true
}

/// Removes a top-level `APPEND ONLY` and reports whether it was there.
fn take_append_only(tokens: &mut Vec<TokenWithSpan>) -> bool {
    let mut depth = 0i32;
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    for w in sig.windows(2) {
        match tokens[w[0]].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth == 0
            && is_word(&tokens[w[0]].token, "APPEND")
            && is_word(&tokens[w[1]].token, "ONLY")
        {
            let (a, b) = (w[0], w[1]);
            tokens.drain(a..=b);
            return true;
        }
    }
    false
}

fn parse_create_materialized_view(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    let mut tokens = unwrap_table_arguments(tokens);
    let emit_on_window_close = take_trailing_words(&mut tokens, &["EMIT", "ON", "WINDOW", "CLOSE"]);
    let mut options = ViewOptions {
        emit_on_window_close,
        allowed_lateness_ms: 0,
        source_idle_timeout_ms: None,
        state_ttl_ms: None,
        source_parallelism: None,
    };
    // The query text is everything after the top-level AS.
    let mut depth = 0i32;
    let as_at = tokens.iter().position(|t| {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        depth == 0 && is_word(&t.token, "AS")
    });
    let query_sql = as_at
        .map(|i| {
            tokens[i + 1..]
                .iter()
                .map(|t| t.token.to_string())
                .collect::<String>()
        })
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut parser = sql_parser(tokens);
    let statement = parser.parse_statement().map_err(syntax)?;
    expect_end(&mut parser)?;
    match statement {
        ast::Statement::CreateView(view) if view.materialized => {
            if view.or_replace {
                return Err(SluiceError::unsupported(
                    "CREATE OR REPLACE MATERIALIZED VIEW is not supported; DROP the view and create it again",
                ));
            }
            if !view.columns.is_empty() {
                return Err(SluiceError::unsupported(
                    "column lists on CREATE MATERIALIZED VIEW are not supported; alias the columns in the query",
                ));
            }
            if let ast::CreateTableOptions::With(with) = &view.options {
                for option in with {
                    options.set(option)?;
                }
            }
            Ok(Statement::CreateMaterializedView {
                name: view.name,
                if_not_exists: view.if_not_exists,
                query: view.query,
                query_sql,
                options,
            })
        }
        _ => Err(SluiceError::syntax(
            "expected CREATE MATERIALIZED VIEW name AS query",
        )),
    }
}

fn parse_create_sink(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    let (tokens, with) = take_with_options(tokens)?;
    let mut tokens = unwrap_table_arguments(tokens);
    let emit_on_window_close = take_trailing_words(&mut tokens, &["EMIT", "ON", "WINDOW", "CLOSE"]);
    if with.is_empty() {
        return Err(SluiceError::syntax(
            "CREATE SINK needs its connector: CREATE SINK name FROM view WITH (connector = '...')",
        ));
    }
    let mut parser = sql_parser(drop_leading_words(tokens, 2));
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_object_name(false).map_err(syntax)?;
    let (query, query_sql) = if parser.parse_keyword(Keyword::FROM) {
        let from = parser.parse_object_name(false).map_err(syntax)?;
        expect_end(&mut parser)?;
        let select = format!("SELECT * FROM {from}");
        let query = sql_parser_for(&select)?.parse_query().map_err(syntax)?;
        (query, format!("FROM {from}"))
    } else if parser.parse_keyword(Keyword::AS) {
        let query = parser.parse_query().map_err(syntax)?;
        expect_end(&mut parser)?;
        let text = query.to_string();
        (query, text)
    } else {
        return Err(SluiceError::syntax(format!(
            "expected FROM relation or AS query after CREATE SINK {name}"
        )));
    };
    Ok(Statement::CreateSink {
        name,
        if_not_exists,
        query,
        query_sql,
        options: ViewOptions {
            emit_on_window_close,
            ..ViewOptions::default()
        },
        with,
    })
}

fn parse_create_subscription(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    let (tokens, with) = take_with_options(tokens)?;
    let mut parser = sql_parser(drop_leading_words(tokens, 2));
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_object_name(false).map_err(syntax)?;
    if !parser.parse_keyword(Keyword::FROM) {
        return Err(SluiceError::syntax(format!(
            "expected FROM materialized_view after CREATE SUBSCRIPTION {name}"
        )));
    }
    let view = parser.parse_object_name(false).map_err(syntax)?;
    expect_end(&mut parser)?;
    let mut retention_ms = DEFAULT_RETENTION_MS;
    for (key, value) in &with {
        match key.as_str() {
            "retention" => retention_ms = positive_duration("retention", value)?,
            other => {
                return Err(SluiceError::invalid_parameter(format!(
                    "unknown subscription option \"{other}\"; the known one is retention"
                )));
            }
        }
    }
    Ok(Statement::CreateSubscription {
        name,
        if_not_exists,
        view,
        retention_ms,
    })
}

/// `ALTER MATERIALIZED VIEW v SAVEPOINT` or `ALTER MATERIALIZED VIEW v SET PARALLELISM
/// {= | TO} n`.
fn parse_alter_materialized_view(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    let usage = "expected ALTER MATERIALIZED VIEW name SAVEPOINT or ALTER MATERIALIZED VIEW name SET PARALLELISM = n";
    let mut parser = sql_parser(drop_leading_words(tokens, 3));
    let view = parser.parse_object_name(false).map_err(syntax)?;
    if parser.parse_keyword(Keyword::SAVEPOINT) {
        expect_end(&mut parser)?;
        return Ok(Statement::Savepoint { view });
    }
    let set_parallelism = parser.parse_keyword(Keyword::SET)
        && parser
            .parse_identifier()
            .is_ok_and(|w| w.value.eq_ignore_ascii_case("parallelism"))
        && (parser.consume_token(&Token::Eq) || parser.parse_keyword(Keyword::TO));
    if !set_parallelism {
        return Err(SluiceError::syntax(usage));
    }
    let value = parser.parse_literal_uint().map_err(syntax)?;
    expect_end(&mut parser)?;
    if value == 0 {
        return Err(SluiceError::invalid_parameter(
            "parallelism must be at least 1",
        ));
    }
    Ok(Statement::AlterParallelism {
        view,
        parallelism: usize::try_from(value).unwrap_or(usize::MAX),
    })
}

/// An unquoted identifier folded to lower case, as PostgreSQL does; a quoted one as is.
fn identifier(word: &datafusion::sql::sqlparser::tokenizer::Word) -> String {
    match word.quote_style {
        Some(_) => word.value.clone(),
        None => word.value.to_lowercase(),
    }
}

/// `DECLARE name SUBSCRIPTION CURSOR FOR subscription [SINCE { ms | begin() | now() }]`.
fn parse_declare_cursor(sig: &[&Token]) -> Result<Statement> {
    let usage = "expected DECLARE cursor SUBSCRIPTION CURSOR FOR subscription [SINCE milliseconds | SINCE begin() | SINCE now()]";
    if !sig.get(2).is_some_and(|t| is_word(t, "SUBSCRIPTION"))
        && sig.iter().any(|t| is_word(t, "CURSOR"))
    {
        return Err(SluiceError::unsupported(
            "cursors over queries; Sluice's cursors read subscriptions: DECLARE cursor SUBSCRIPTION CURSOR FOR subscription",
        ));
    }
    let [
        _,
        Token::Word(name),
        kind,
        cursor,
        for_,
        Token::Word(subscription),
        rest @ ..,
    ] = sig
    else {
        return Err(SluiceError::syntax(usage));
    };
    if !is_word(kind, "SUBSCRIPTION") || !is_word(cursor, "CURSOR") || !is_word(for_, "FOR") {
        return Err(SluiceError::syntax(usage));
    }
    let since = match rest {
        [] => CursorStart::Now,
        [since, Token::Number(ms, _)] if is_word(since, "SINCE") => {
            CursorStart::Time(ms.parse().map_err(|_| {
                SluiceError::invalid_parameter(format!(
                    "SINCE takes milliseconds since the Unix epoch, not {ms}"
                ))
            })?)
        }
        [since, function, Token::LParen, Token::RParen] if is_word(since, "SINCE") => {
            if is_word(function, "BEGIN") {
                CursorStart::Begin
            } else if is_word(function, "NOW") {
                CursorStart::Now
            } else {
                return Err(SluiceError::syntax(usage));
            }
        }
        _ => return Err(SluiceError::syntax(usage)),
    };
    Ok(Statement::DeclareCursor {
        name: identifier(name),
        // The name as written: the catalog lookup folds it like every relation name.
        subscription: ObjectName::from(vec![match subscription.quote_style {
            Some(quote) => ast::Ident::with_quote(quote, &subscription.value),
            None => ast::Ident::new(&subscription.value),
        }]),
        since,
    })
}

/// `FETCH [NEXT | ALL | FORWARD [n | ALL] | n] [FROM | IN] cursor`.
fn parse_fetch(sig: &[&Token]) -> Result<Statement> {
    let usage = "expected FETCH [NEXT | ALL | n] FROM cursor";
    let mut rest = &sig[1..];
    let mut count = 1;
    let backward = ["PRIOR", "BACKWARD", "FIRST", "LAST", "ABSOLUTE", "RELATIVE"];
    if rest
        .first()
        .is_some_and(|t| backward.iter().any(|w| is_word(t, w)))
    {
        return Err(SluiceError::unsupported(
            "cursors that move backward or jump; a subscription cursor reads forward (FETCH NEXT, FETCH n, FETCH ALL)",
        ));
    }
    if rest.first().is_some_and(|t| is_word(t, "NEXT")) {
        rest = &rest[1..];
    } else if rest.first().is_some_and(|t| is_word(t, "ALL")) {
        count = usize::MAX;
        rest = &rest[1..];
    } else {
        if rest.first().is_some_and(|t| is_word(t, "FORWARD")) {
            rest = &rest[1..];
        }
        if let Some(Token::Number(n, _)) = rest.first() {
            count = n.parse().map_err(|_| {
                SluiceError::invalid_parameter(format!("FETCH takes a row count, not {n}"))
            })?;
            rest = &rest[1..];
        } else if rest.first().is_some_and(|t| is_word(t, "ALL")) {
            count = usize::MAX;
            rest = &rest[1..];
        }
    }
    if rest
        .first()
        .is_some_and(|t| is_word(t, "FROM") || is_word(t, "IN"))
    {
        rest = &rest[1..];
    }
    match rest {
        [Token::Word(cursor)] => Ok(Statement::Fetch {
            cursor: identifier(cursor),
            count,
        }),
        _ => Err(SluiceError::syntax(usage)),
    }
}

/// A parser over SQL text Sluice wrote itself.
fn sql_parser_for(sql: &str) -> Result<Parser<'static>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| SluiceError::syntax(e.to_string()))?;
    Ok(sql_parser(tokens))
}

#[cfg(test)]
mod tests {

    #[test]
    fn table_versions_do_not_change_how_other_statements_parse() {
        // PostgreSQL reads `at` after a table as its alias.
        let Statement::Query(q) = one("SELECT * FROM t at") else {
            panic!("a query");
        };
        assert_eq!(q.to_string(), "SELECT * FROM t at");
        assert!(
            parse_sql("SELECT * FROM o JOIN r FOR SYSTEM_TIME AS OF PROCTIME() ON o.k = r.k")
                .is_ok()
        );
    }
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut v = parse_sql(sql).unwrap();
        assert_eq!(v.len(), 1, "{sql}");
        v.remove(0).statement
    }

    #[test]
    fn create_source_takes_dotted_and_quoted_with_options() {
        let s = one(
            "CREATE SOURCE s (id BIGINT, v INT) WITH (connector = 'datagen', fields.id.kind = 'sequence', \
             'rows-per-second' = '10', datagen.rows.per.second = 5)",
        );
        let Statement::CreateSource { create, with, .. } = s else {
            panic!("{s:?}")
        };
        assert!(matches!(*create, ast::Statement::CreateTable(_)));
        assert_eq!(with["connector"], "datagen");
        assert_eq!(with["fields.id.kind"], "sequence");
        assert_eq!(with["rows-per-second"], "10");
        assert_eq!(with["datagen.rows.per.second"], "5");
    }

    #[test]
    fn watermark_clause_is_taken_out_of_the_column_list() {
        for sql in [
            "CREATE TABLE t (a INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)",
            "CREATE TABLE t (a INT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND, ts TIMESTAMP)",
            "CREATE SOURCE t (WATERMARK FOR ts AS ts - INTERVAL '5' SECOND, a INT, ts TIMESTAMP) WITH (connector = 'datagen')",
        ] {
            let (create, watermark) = match one(sql) {
                Statement::CreateTable {
                    create, watermark, ..
                } => (create, watermark),
                Statement::CreateSource {
                    create, watermark, ..
                } => (create, watermark),
                other => panic!("{other:?}"),
            };
            let watermark = watermark.expect(sql);
            assert_eq!(watermark.column, "ts");
            assert_eq!(watermark.expr, "ts - INTERVAL '5' SECOND");
            let ast::Statement::CreateTable(ct) = *create else {
                panic!()
            };
            assert_eq!(ct.columns.len(), 2, "{sql}");
        }
        assert!(parse_sql("CREATE TABLE t (ts TIMESTAMP, WATERMARK FOR ts)").is_err());
    }

    #[test]
    fn emit_on_window_close_is_recognised() {
        let Statement::CreateMaterializedView {
            options, query_sql, ..
        } = one("CREATE MATERIALIZED VIEW v AS SELECT 1 FROM t EMIT ON WINDOW CLOSE")
        else {
            panic!()
        };
        assert!(options.emit_on_window_close);
        assert_eq!(query_sql, "SELECT 1 FROM t");
        let Statement::CreateMaterializedView { options, .. } = one(
            "CREATE MATERIALIZED VIEW v WITH (allowed_lateness = '1 minute 5 seconds') AS SELECT 1 FROM t",
        ) else {
            panic!()
        };
        assert_eq!(options.allowed_lateness_ms, 65_000);
        for bad in ["'soon'", "'1 month'", "'-5 seconds'"] {
            let err = parse_sql(&format!(
                "CREATE MATERIALIZED VIEW v WITH (allowed_lateness = {bad}) AS SELECT 1 FROM t"
            ))
            .unwrap_err();
            assert!(
                err.message.contains("allowed_lateness must be a duration"),
                "{bad}: {}",
                err.message
            );
        }
        let err = parse_sql("CREATE MATERIALIZED VIEW v WITH (colour = 'red') AS SELECT 1 FROM t")
            .unwrap_err();
        assert!(
            err.message.contains("unknown materialized view option"),
            "{}",
            err.message
        );
    }

    #[test]
    fn append_only_is_recognised_and_removed() {
        let Statement::CreateTable { append_only, .. } =
            one("CREATE TABLE t (a INT, b VARCHAR, PRIMARY KEY (a)) APPEND ONLY")
        else {
            panic!()
        };
        assert!(append_only);
        let Statement::CreateTable { append_only, .. } = one("create table t (a int)") else {
            panic!()
        };
        assert!(!append_only);
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let v = parse_sql("INSERT INTO t VALUES ('a;b'); FLUSH; ; SELECT 1").unwrap();
        assert_eq!(v.len(), 3);
        assert!(matches!(v[1].statement, Statement::Flush));
        assert_eq!(v[0].sql, "INSERT INTO t VALUES ('a;b')");
    }

    #[test]
    fn materialized_view_keeps_query_text() {
        let Statement::CreateMaterializedView {
            name, query_sql, ..
        } = one("CREATE MATERIALIZED VIEW v AS SELECT a, count(*) AS n FROM t GROUP BY a")
        else {
            panic!()
        };
        assert_eq!(name.to_string(), "v");
        assert_eq!(query_sql, "SELECT a, count(*) AS n FROM t GROUP BY a");
    }

    #[test]
    fn show_drop_set_and_explain() {
        assert!(matches!(
            one("SHOW MATERIALIZED VIEWS"),
            Statement::Show(ShowTarget::MaterializedViews)
        ));
        assert!(matches!(
            one("show jobs"),
            Statement::Show(ShowTarget::Jobs)
        ));
        let Statement::Drop {
            kind,
            if_exists,
            names,
            ..
        } = one("DROP MATERIALIZED VIEW IF EXISTS a, b")
        else {
            panic!()
        };
        assert_eq!(
            (kind, if_exists, names.len()),
            (ObjectKind::MaterializedView, true, 2)
        );
        let Statement::Set { name, value } = one("SET RW_IMPLICIT_FLUSH TO true") else {
            panic!()
        };
        assert_eq!(
            (name.as_str(), value.as_str()),
            ("rw_implicit_flush", "true")
        );
        assert!(matches!(
            one("EXPLAIN CREATE MATERIALIZED VIEW v AS SELECT 1"),
            Statement::ExplainStream(_)
        ));
    }

    #[test]
    fn create_sink_takes_a_relation_or_a_query_and_connector_options() {
        let Statement::CreateSink {
            name,
            if_not_exists,
            query,
            query_sql,
            with,
            options,
        } = one("CREATE SINK IF NOT EXISTS s FROM v WITH (connector = 'blackhole')")
        else {
            panic!()
        };
        assert_eq!(name.to_string(), "s");
        assert!(if_not_exists);
        assert_eq!(query.to_string(), "SELECT * FROM v");
        assert_eq!(query_sql, "FROM v");
        assert_eq!(with.get("connector").map(String::as_str), Some("blackhole"));
        assert!(!options.emit_on_window_close);

        let Statement::CreateSink { query, options, .. } = one(
            "CREATE SINK s AS WITH w AS (SELECT a FROM t) SELECT a, count(*) FROM w GROUP BY a \
             EMIT ON WINDOW CLOSE WITH (connector = 'blackhole')",
        ) else {
            panic!()
        };
        assert!(query.to_string().starts_with("WITH w AS"), "{query}");
        assert!(options.emit_on_window_close);

        for bad in [
            "CREATE SINK s FROM v",
            "CREATE SINK s WITH (connector = 'blackhole')",
            "CREATE SINK s FROM v extra WITH (connector = 'blackhole')",
        ] {
            let e = parse_sql(bad).unwrap_err();
            assert_eq!(e.state, sluice_common::SqlState::SYNTAX_ERROR, "{bad}");
        }
        assert!(matches!(
            one("DROP SINK IF EXISTS s"),
            Statement::Drop {
                kind: ObjectKind::Sink,
                ..
            }
        ));
        assert!(matches!(
            one("SHOW SINKS"),
            Statement::Show(ShowTarget::Sinks)
        ));
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = parse_sql("SELEC 1").unwrap_err();
        assert_eq!(e.state, sluice_common::SqlState::SYNTAX_ERROR);
        assert!(e.message.contains("SELEC"), "{}", e.message);
    }
}
