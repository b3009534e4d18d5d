//! Arrow Flight SQL on `--flight-listen`: the coordinator's third front door, for Arrow
//! consumers (ADBC, JDBC/ODBC Flight SQL drivers, `arrow-flight`'s client) that want
//! results as Arrow record batches rather than PostgreSQL rows.
//!
//! A statement arrives as `CommandStatementQuery` (`GetFlightInfo`, then `DoGet` of the
//! ticket it returns) or `CommandStatementUpdate` (`DoPut`), or as a prepared statement.
//! A query runs at `DoGet`; a command (DDL, DML, `FLUSH`) runs at `GetFlightInfo`, whose
//! answer then has no endpoint to fetch (clients such as ADBC fetch lazily, so a command
//! left for `DoGet` might never run).
//! It runs through the same [`Coordinator::execute`] as pgwire: the same planner, the
//! same errors (with their SQLSTATE in the message), DDL and DML included. Sessions are
//! per call: `SET` lasts for its own statement only (Flight SQL has no connection
//! state; use pgwire for session settings). The ticket and the prepared statement
//! handle are the SQL text itself, so any coordinator process of the cluster can serve
//! a ticket. Prepared statements take no parameters yet. Catalog metadata (`GetCatalogs`,
//! `GetDbSchemas`, `GetTables`, `GetTableTypes`, `GetSqlInfo`) lists the catalog's
//! tables, sources and materialized views.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, TryStreamExt};
use prost::Message;
use sluice_cluster::{Coordinator, Session, StatementResult};
use sluice_common::error::{Result, SluiceError, SqlState};
use sluice_sql::ParsedStatement;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// The catalog and schema every relation lives in.
const CATALOG: &str = "sluice";
const SCHEMA: &str = "public";

/// What `GetSqlInfo` answers.
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "Sluice");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow format version (Schema.fbs).
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, false);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    builder.build().expect("static SQL info")
});

/// The Flight SQL service of one coordinator.
pub struct FlightSqlServer {
    coordinator: Arc<Coordinator>,
}

type DataStream = Pin<Box<dyn Stream<Item = std::result::Result<FlightData, Status>> + Send>>;

impl FlightSqlServer {
    pub fn new(coordinator: Arc<Coordinator>) -> FlightSqlServer {
        FlightSqlServer { coordinator }
    }

    /// Serves on `listener` until `shutdown` turns true.
    pub async fn serve(
        self,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(self))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = shutdown.wait_for(|&stop| stop).await;
                },
            )
            .await
            .map_err(|e| SluiceError::internal(format!("the Flight SQL server failed: {e}")))
    }

    /// The one statement of `sql`.
    fn statement(&self, sql: &str) -> std::result::Result<ParsedStatement, Status> {
        let mut statements = self.coordinator.parse(sql).map_err(status)?;
        match statements.len() {
            1 => Ok(statements.remove(0)),
            n => Err(status(SluiceError::new(
                SqlState::SYNTAX_ERROR,
                format!("a Flight SQL command holds exactly one statement, this one holds {n}"),
            ))),
        }
    }

    /// The schema of the rows `sql` returns; `None` for a command (DDL, DML, `FLUSH`).
    async fn schema_of(&self, sql: &str) -> std::result::Result<Option<SchemaRef>, Status> {
        let statement = self.statement(sql)?;
        let described = self
            .coordinator
            .describe(&Session::default(), &statement)
            .await
            .map_err(status)?;
        match described.param_types.len() {
            0 => Ok(described.schema),
            n => Err(status(SluiceError::unsupported(format!(
                "the statement has {n} parameters; Flight SQL statements take none yet (use pgwire for parameters)"
            )))),
        }
    }

    /// `GetFlightInfo` of `sql`: a query's schema and the ticket that runs it (`DoGet`).
    /// A command runs right here, since clients need not fetch a result that has no
    /// rows: its info has no endpoint, and the rows it changed as its record count.
    async fn flight_info(
        &self,
        sql: &str,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let info = match self.schema_of(sql).await? {
            Some(schema) => FlightInfo::new()
                .try_with_schema(&schema)
                .map_err(schema_error)?
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket))),
            None => {
                let changed = self.update(sql).await?;
                FlightInfo::new()
                    .try_with_schema(&Schema::empty())
                    .map_err(schema_error)?
                    .with_total_records(changed)
            }
        };
        Ok(Response::new(info.with_descriptor(descriptor)))
    }

    /// Runs `sql` in a session of its own.
    async fn run(&self, sql: &str) -> std::result::Result<StatementResult, Status> {
        let statement = self.statement(sql)?;
        self.coordinator
            .execute(&mut Session::default(), &statement, &[])
            .await
            .map_err(status)
    }

    /// Runs `sql` and streams its rows (none for a command).
    async fn rows(&self, sql: &str) -> std::result::Result<Response<DataStream>, Status> {
        let (schema, batches) = match self.run(sql).await? {
            StatementResult::Rows { schema, batches } => (schema, batches),
            StatementResult::Command(_) => (Arc::new(Schema::empty()), Vec::new()),
        };
        Ok(stream(schema, batches))
    }

    /// Runs `sql` for `DoPut`: the rows it changed (-1 when a command does not say).
    async fn update(&self, sql: &str) -> std::result::Result<i64, Status> {
        Ok(match self.run(sql).await? {
            StatementResult::Rows { batches, .. } => {
                batches.iter().map(|b| b.num_rows() as i64).sum()
            }
            StatementResult::Command(tag) => tag
                .rows
                .and_then(|rows| i64::try_from(rows).ok())
                .unwrap_or(-1),
        })
    }

    /// The relations of the catalog as (name, type, schema).
    fn relations(&self) -> Vec<(String, String, SchemaRef)> {
        self.coordinator
            .relations()
            .into_iter()
            .map(|r| (r.name, r.kind.to_ascii_uppercase(), r.schema))
            .collect()
    }
}

/// `batches` as a Flight data stream, led by `schema` even when there are none.
fn stream(schema: SchemaRef, batches: Vec<arrow::array::RecordBatch>) -> Response<DataStream> {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(data))
}

/// One batch from a metadata builder as a Flight data stream.
fn one_batch(
    schema: SchemaRef,
    batch: std::result::Result<arrow::array::RecordBatch, FlightError>,
) -> Response<DataStream> {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Response::new(Box::pin(data))
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`, for rows of `schema`.
fn metadata_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> std::result::Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(schema_error)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn schema_error(e: arrow::error::ArrowError) -> Status {
    Status::internal(format!("cannot encode the schema: {e}"))
}

/// SQL text from a ticket or handle.
fn sql_of(bytes: &[u8]) -> std::result::Result<&str, Status> {
    std::str::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL text"))
}

/// A Sluice error as a gRPC status: the message keeps the SQLSTATE, the code says
/// whose fault it is.
fn status(e: SluiceError) -> Status {
    let message = format!("{} (SQLSTATE {})", e.message, e.state);
    match &e.state.code()[..2] {
        "0A" => Status::unimplemented(message),
        "42" | "22" | "23" | "2B" | "34" => Status::invalid_argument(message),
        "55" => Status::failed_precondition(message),
        "57" => Status::unavailable(message),
        "53" | "54" => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    /// No authentication: the coordinator trusts its network, as pgwire does.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<
        Response<
            Pin<Box<dyn Stream<Item = std::result::Result<HandshakeResponse, Status>> + Send>>,
        >,
        Status,
    > {
        let response = HandshakeResponse::default();
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(
            response,
        )]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into_bytes().into(),
        };
        self.flight_info(
            &query.query,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.rows(sql_of(&ticket.statement_handle)?).await
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.update(&command.query).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> std::result::Result<ActionCreatePreparedStatementResult, Status> {
        let schema = self
            .schema_of(&query.query)
            .await?
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(schema_error)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    /// Nothing is kept for a prepared statement: its handle is its SQL.
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> std::result::Result<(), Status> {
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let sql = sql_of(&command.prepared_statement_handle)?;
        self.flight_info(sql, command.as_any().encode_to_vec(), request.into_inner())
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.rows(sql_of(&command.prepared_statement_handle)?).await
    }

    async fn do_put_prepared_statement_update(
        &self,
        command: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.update(sql_of(&command.prepared_statement_handle)?)
            .await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        metadata_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(&SQL_INFO);
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for (name, kind, schema) in self.relations() {
            builder
                .append(CATALOG, SCHEMA, name, kind, &schema)
                .map_err(Status::from)?;
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for kind in ["MATERIALIZED VIEW", "SOURCE", "TABLE"] {
            builder.append(kind);
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
