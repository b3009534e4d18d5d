//! The extended query protocol: Parse (plan once, describe parameters and columns),
//! Bind (decode parameters), Describe and Execute.
//!
//! A prepared statement keeps the parsed statement and what `Coordinator::describe`
//! said about it. A parameter's type is, in order of preference: the type the client
//! declared in `Parse`, the type DataFusion inferred, the type of an explicit cast
//! (`$1::INT`), and `text` (as PostgreSQL does for an unconstrained parameter).

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::sql::sqlparser::ast::{self, Expr, visit_expressions};
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use sluice_cluster::{Coordinator, ParsedStatement, Statement};
use sluice_common::error::{Result, SluiceError};

use super::encode::is_binary;
use super::execute::run_statement;
use super::params::decode_param;
use super::types::{arrow_type_of, pg_type_of};
use super::{Frontend, encode, pg_error, response, session_of};

/// A statement prepared by `Parse`.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    stmt: ParsedStatement,
    /// The PostgreSQL type of each `$n`, as reported in `ParameterDescription`.
    param_types: Vec<Type>,
    /// The Arrow type the planner expects for each `$n`, when it inferred one.
    param_targets: Vec<Option<DataType>>,
    /// The result columns, `None` for statements without rows.
    schema: Option<SchemaRef>,
}

/// Parses and describes statements for the extended protocol.
pub struct SluiceQueryParser {
    coordinator: Arc<Coordinator>,
}

impl SluiceQueryParser {
    /// A parser planning against `coordinator`'s catalog.
    pub fn new(coordinator: Arc<Coordinator>) -> SluiceQueryParser {
        SluiceQueryParser { coordinator }
    }

    async fn prepare(
        &self,
        session: &sluice_cluster::Session,
        sql: &str,
        client_types: &[Option<Type>],
    ) -> Result<Option<PreparedStatement>> {
        let sql = crate::pg_catalog::rewrite(sql);
        let mut statements = self.coordinator.parse(&sql)?;
        if statements.len() > 1 {
            return Err(SluiceError::syntax(
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(stmt) = statements.pop() else {
            return Ok(None);
        };
        let described = self.coordinator.describe(session, &stmt).await?;
        let cast_types = placeholder_casts(&stmt);
        let count = client_types
            .len()
            .max(described.param_types.len())
            .max(cast_types.len());
        let mut param_types = Vec::with_capacity(count);
        let mut param_targets = Vec::with_capacity(count);
        for i in 0..count {
            let inferred = described.param_types.get(i).cloned().flatten();
            let cast = cast_types.get(i).cloned().flatten();
            let client = client_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN);
            let pg = client
                .or_else(|| inferred.as_ref().map(pg_type_of))
                .or_else(|| cast.as_ref().map(pg_type_of))
                .unwrap_or(Type::TEXT);
            param_types.push(pg);
            param_targets.push(inferred);
        }
        Ok(Some(PreparedStatement {
            stmt,
            param_types,
            param_targets,
            schema: described.schema,
        }))
    }
}

/// For each `$n` (index n-1) the type of an explicit `CAST($n AS t)` / `$n::t` around
/// it, which DataFusion does not use for inference.
fn placeholder_casts(stmt: &ParsedStatement) -> Vec<Option<DataType>> {
    let Statement::Query(q) = &stmt.statement else {
        return vec![];
    };
    let mut out: Vec<Option<DataType>> = vec![];
    let _ = visit_expressions(q.as_ref(), |e: &Expr| {
        if let Expr::Cast {
            expr, data_type, ..
        } = e
            && let Expr::Value(v) = expr.as_ref()
            && let ast::Value::Placeholder(p) = &v.value
            && let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
            && (1..=65_535).contains(&n)
        {
            if out.len() < n {
                out.resize(n, None);
            }
            out[n - 1] = sql_type_to_arrow(data_type);
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

fn sql_type_to_arrow(t: &ast::DataType) -> Option<DataType> {
    let name = t.to_string().to_ascii_lowercase();
    let pg = match name.split('(').next().unwrap_or("").trim() {
        "int" | "integer" | "int4" => Type::INT4,
        "smallint" | "int2" => Type::INT2,
        "bigint" | "int8" => Type::INT8,
        "real" | "float4" => Type::FLOAT4,
        "double precision" | "float8" | "double" | "float" => Type::FLOAT8,
        "boolean" | "bool" => Type::BOOL,
        "text" | "varchar" | "character varying" | "string" => Type::TEXT,
        "numeric" | "decimal" => Type::NUMERIC,
        "date" => Type::DATE,
        "timestamp" | "timestamp without time zone" => Type::TIMESTAMP,
        "timestamptz" | "timestamp with time zone" => Type::TIMESTAMPTZ,
        "bytea" => Type::BYTEA,
        "interval" => Type::INTERVAL,
        _ => return None,
    };
    arrow_type_of(&pg)
}

#[async_trait]
impl QueryParser for SluiceQueryParser {
    type Statement = PreparedStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<PreparedStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = session_of(&self.coordinator, client);
        let session = session.0.lock().await.clone();
        self.prepare(&session, sql, types)
            .await
            .map_err(|e| pg_error(&e))
    }

    fn get_parameter_types(&self, stmt: &PreparedStatement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.clone())
    }

    fn get_result_schema(
        &self,
        stmt: &PreparedStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.schema {
            Some(schema) => {
                encode::field_infos(schema, column_format.unwrap_or(&Format::UnifiedText))
            }
            None => vec![],
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Frontend {
    type Statement = PreparedStatement;
    type QueryParser = SluiceQueryParser;

    fn query_parser(&self) -> Arc<SluiceQueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PreparedStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let params = (0..portal.parameter_len())
            .map(|i| {
                let pg_type = prepared.param_types.get(i).unwrap_or(&Type::TEXT);
                let target = prepared.param_targets.get(i).and_then(|t| t.as_ref());
                decode_param(
                    portal.parameters[i].as_deref(),
                    is_binary(&portal.parameter_format, i),
                    pg_type,
                    target,
                )
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| pg_error(&e))?;
        let session = self.session(client);
        let mut session = session.0.lock().await;
        let outcome = run_statement(&self.coordinator, &mut session, &prepared.stmt, &params)
            .await
            .map_err(|e| pg_error(&e))?;
        response(outcome, &portal.result_column_format).map_err(|e| pg_error(&e))
    }
}
