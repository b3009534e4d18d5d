//! The coordinator's SQL front door. (Interface first; streaming execution lands behind it.)

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use sluice_common::config::ServeConfig;
use sluice_common::error::{Result, SluiceError};
use sluice_sql::{ParsedStatement, Statement, parse_sql};

/// One client connection's settings (`SET`), owned by the protocol handler.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// `SET IMPLICIT_FLUSH = true`: DML returns only once every view reflects it.
    pub implicit_flush: bool,
    /// `SET streaming_parallelism = N` (0: the server's default).
    pub streaming_parallelism: usize,
    /// Other settings, as set, for `SHOW name`.
    pub settings: std::collections::BTreeMap<String, String>,
}

/// The command tag of a statement that returns no rows (`CREATE TABLE`, `INSERT 0 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTag {
    /// The tag word(s): `CREATE TABLE`, `INSERT`, `FLUSH`, ...
    pub tag: String,
    /// Rows affected, for `INSERT`, `UPDATE`, `DELETE` (pgwire adds the OID 0 for INSERT).
    pub rows: Option<usize>,
}

/// What executing one statement returned.
#[derive(Debug, Clone)]
pub enum StatementResult {
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    Command(CommandTag),
}

/// The shape of a statement, for the extended protocol's Describe.
#[derive(Debug, Clone)]
pub struct Described {
    /// Types of `$1`, `$2`, ...; `None` where the statement leaves one undetermined.
    pub param_types: Vec<Option<DataType>>,
    /// The rows' schema, or `None` for statements that return a command tag only.
    pub schema: Option<SchemaRef>,
}

/// A relation of the catalog, for `pg_catalog` emulation.
#[derive(Debug, Clone)]
pub struct RelationInfo {
    pub name: String,
    /// `table`, `source` or `materialized view`.
    pub kind: &'static str,
    pub schema: SchemaRef,
}

/// A streaming job (one per materialized view), for `SHOW JOBS` and REST.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobInfo {
    pub id: u64,
    pub name: String,
    /// `RUNNING`, `FINISHED` or `FAILED`.
    pub status: String,
    pub parallelism: usize,
    pub error: Option<String>,
}

/// The coordinator: catalog, planning, jobs and FLUSH.
pub struct Coordinator {
    ctx: SessionContext,
    #[allow(dead_code)]
    config: ServeConfig,
}

impl Coordinator {
    /// Starts a coordinator with an embedded worker.
    pub async fn start(config: ServeConfig) -> Result<Arc<Coordinator>> {
        let session_config = SessionConfig::new()
            .with_default_catalog_and_schema("sluice", "public")
            .with_information_schema(true)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
        Ok(Arc::new(Coordinator {
            ctx: SessionContext::new_with_config(session_config),
            config,
        }))
    }

    /// The DataFusion context batch queries run in. Protocol layers may register extra
    /// schemas (such as `pg_catalog`) and functions on it.
    pub fn session_context(&self) -> &SessionContext {
        &self.ctx
    }

    /// A new session with the server's defaults.
    pub fn new_session(&self) -> Session {
        Session::default()
    }

    /// Parses SQL text into statements (several when separated by `;`).
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        parse_sql(sql)
    }

    /// Describes a statement without running it.
    pub async fn describe(&self, _session: &Session, stmt: &ParsedStatement) -> Result<Described> {
        match &stmt.statement {
            Statement::Query(q) => {
                let plan = self
                    .ctx
                    .state()
                    .statement_to_plan(datafusion::sql::parser::Statement::Statement(q.clone()))
                    .await?;
                let params = plan.get_parameter_types()?;
                let mut ids: Vec<_> = params.into_iter().collect();
                ids.sort_by_key(|(k, _)| k.trim_start_matches('$').parse::<usize>().unwrap_or(0));
                let returns_rows =
                    matches!(**q, datafusion::sql::sqlparser::ast::Statement::Query(_));
                Ok(Described {
                    param_types: ids.into_iter().map(|(_, t)| t).collect(),
                    schema: returns_rows.then(|| Arc::new(plan.schema().as_arrow().clone())),
                })
            }
            _ => Ok(Described {
                param_types: vec![],
                schema: None,
            }),
        }
    }

    /// Executes one statement with `$n` parameter values.
    pub async fn execute(
        &self,
        _session: &mut Session,
        stmt: &ParsedStatement,
        params: &[ScalarValue],
    ) -> Result<StatementResult> {
        match &stmt.statement {
            Statement::Query(q) => {
                let plan = self
                    .ctx
                    .state()
                    .statement_to_plan(datafusion::sql::parser::Statement::Statement(q.clone()))
                    .await?;
                let plan = if params.is_empty() {
                    plan
                } else {
                    plan.with_param_values(params.to_vec())?
                };
                let df = self.ctx.execute_logical_plan(plan).await?;
                let schema = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await?;
                Ok(StatementResult::Rows { schema, batches })
            }
            other => Err(SluiceError::unsupported(format!("not yet: {other:?}"))),
        }
    }

    /// Every table, source and materialized view.
    pub fn relations(&self) -> Vec<RelationInfo> {
        vec![]
    }

    /// Every streaming job.
    pub fn jobs(&self) -> Vec<JobInfo> {
        vec![]
    }
}
