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
//! handle are the SQL text itself (with the bound parameters, for a prepared statement),
//! so the service keeps nothing between calls. Catalog metadata (`GetCatalogs`,
//! `GetDbSchemas`, `GetTables`, `GetTableTypes`, `GetSqlInfo`) lists the catalog's
//! tables, sources and materialized views.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::scalar::ScalarValue;
use futures::{Stream, TryStreamExt};
use prost::Message;
use sluice_cluster::{Coordinator, Described, Session, StatementResult};
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

    /// The shape of `sql`: its rows' schema (`None` for a command: DDL, DML, `FLUSH`)
    /// and its parameters' types.
    async fn describe(&self, sql: &str) -> std::result::Result<Described, Status> {
        self.describe_statement(&self.statement(sql)?).await
    }

    async fn describe_statement(
        &self,
        statement: &ParsedStatement,
    ) -> std::result::Result<Described, Status> {
        self.coordinator
            .describe(&Session::default(), statement)
            .await
            .map_err(status)
    }

    /// `GetFlightInfo` of `bound`: a query's schema and the ticket that runs it
    /// (`DoGet`). A command runs right here, since clients need not fetch a result that
    /// has no rows: its info has no endpoint, and the rows it changed as its record
    /// count.
    async fn flight_info(
        &self,
        bound: &Bound,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let info = match self.describe(&bound.sql).await?.schema {
            Some(schema) => FlightInfo::new()
                .try_with_schema(&schema)
                .map_err(schema_error)?
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket))),
            None => {
                let changed = self.update(bound).await?;
                FlightInfo::new()
                    .try_with_schema(&Schema::empty())
                    .map_err(schema_error)?
                    .with_total_records(changed)
            }
        };
        Ok(Response::new(info.with_descriptor(descriptor)))
    }

    /// Runs `bound` once per row of its parameters (once without), each in a session of
    /// its own.
    async fn run(&self, bound: &Bound) -> std::result::Result<Vec<StatementResult>, Status> {
        let statement = self.statement(&bound.sql)?;
        let types = match &bound.params {
            Some(_) => self.describe_statement(&statement).await?.param_types,
            None => Vec::new(),
        };
        let mut results = Vec::new();
        for params in parameter_rows(bound.params.as_ref(), &types)? {
            let result = self
                .coordinator
                .execute(&mut Session::default(), &statement, &params)
                .await
                .map_err(status)?;
            results.push(result);
        }
        Ok(results)
    }

    /// Runs `bound` and streams its rows (none for a command).
    async fn rows(&self, bound: &Bound) -> std::result::Result<Response<DataStream>, Status> {
        if bound.params.as_ref().is_some_and(|p| p.num_rows() != 1) {
            return Err(Status::invalid_argument(
                "a query takes exactly one row of parameters",
            ));
        }
        let (schema, batches) = match self.run(bound).await?.pop() {
            Some(StatementResult::Rows { schema, batches }) => (schema, batches),
            _ => (Arc::new(Schema::empty()), Vec::new()),
        };
        Ok(stream(schema, batches))
    }

    /// Runs `bound` for `DoPut`: the rows it changed, over every row of parameters (-1
    /// when a command does not say).
    async fn update(&self, bound: &Bound) -> std::result::Result<i64, Status> {
        let mut changed = None;
        for result in self.run(bound).await? {
            let rows = match result {
                StatementResult::Rows { batches, .. } => {
                    Some(batches.iter().map(|b| b.num_rows() as i64).sum())
                }
                StatementResult::Command(tag) => tag.rows.and_then(|r| i64::try_from(r).ok()),
            };
            if let Some(rows) = rows {
                changed = Some(changed.unwrap_or(0) + rows);
            }
        }
        Ok(changed.unwrap_or(-1))
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

/// A statement and the parameters bound to it (a batch, one column per `$n`, one
/// execution per row).
struct Bound {
    sql: String,
    params: Option<RecordBatch>,
}

impl Bound {
    fn sql(sql: &str) -> Bound {
        Bound {
            sql: sql.to_string(),
            params: None,
        }
    }

    /// A prepared statement's handle: the SQL alone, or, once parameters are bound, a 0
    /// byte (no SQL starts with one), the SQL's length (u32 LE), the SQL, and the
    /// parameters as an Arrow IPC stream. The service keeps nothing between calls.
    fn encode(&self) -> std::result::Result<Vec<u8>, Status> {
        let Some(params) = &self.params else {
            return Ok(self.sql.clone().into_bytes());
        };
        let sql_len = u32::try_from(self.sql.len())
            .map_err(|_| Status::invalid_argument("the statement is too long"))?;
        let mut handle = vec![0];
        handle.extend_from_slice(&sql_len.to_le_bytes());
        handle.extend_from_slice(self.sql.as_bytes());
        let failed = |e: arrow::error::ArrowError| {
            Status::internal(format!("cannot encode the parameters: {e}"))
        };
        let mut writer = StreamWriter::try_new(&mut handle, &params.schema()).map_err(failed)?;
        writer.write(params).map_err(failed)?;
        writer.finish().map_err(failed)?;
        drop(writer);
        Ok(handle)
    }

    fn decode(handle: &[u8]) -> std::result::Result<Bound, Status> {
        let malformed = || Status::invalid_argument("malformed statement handle");
        let Some(rest) = handle.strip_prefix(&[0]) else {
            let sql = std::str::from_utf8(handle).map_err(|_| {
                Status::invalid_argument("the statement handle is not UTF-8 SQL text")
            })?;
            return Ok(Bound::sql(sql));
        };
        let len = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(malformed)? as usize;
        let sql = rest.get(4..4 + len).ok_or_else(malformed)?;
        let sql = std::str::from_utf8(sql).map_err(|_| malformed())?;
        let mut reader = StreamReader::try_new(&rest[4 + len..], None).map_err(|_| malformed())?;
        let params = reader.next().transpose().map_err(|_| malformed())?;
        Ok(Bound {
            sql: sql.to_string(),
            params,
        })
    }
}

/// The values of each row of `params`, cast to the statement's parameter types where
/// it determines them; one empty row without parameters.
fn parameter_rows(
    params: Option<&RecordBatch>,
    types: &[Option<DataType>],
) -> std::result::Result<Vec<Vec<ScalarValue>>, Status> {
    let Some(params) = params else {
        return Ok(vec![Vec::new()]);
    };
    let wrong = |e: &dyn std::fmt::Display| Status::invalid_argument(format!("bad parameter: {e}"));
    let columns = params
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| match types.get(i) {
            Some(Some(ty)) if column.data_type() != ty => {
                arrow::compute::cast(column, ty).map_err(|e| wrong(&e))
            }
            _ => Ok(column.clone()),
        })
        .collect::<std::result::Result<Vec<_>, Status>>()?;
    (0..params.num_rows())
        .map(|row| {
            columns
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row).map_err(|e| wrong(&e)))
                .collect()
        })
        .collect()
}

/// The parameter rows a client sent with `DoPut` (`None` when it sent no rows).
async fn read_parameters(
    request: Request<PeekableFlightDataStream>,
) -> std::result::Result<Option<RecordBatch>, Status> {
    // A message may carry only the command's descriptor (an update without rows).
    let data = request
        .into_inner()
        .try_filter(|data| std::future::ready(!data.data_header.is_empty()))
        .map_err(FlightError::from);
    let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data)
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
    match batches.as_slice() {
        [] => Ok(None),
        [batch] => Ok(Some(batch.clone())),
        [first, ..] => concat_batches(&first.schema(), &batches)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("inconsistent parameters: {e}"))),
    }
}

/// `batches` as a Flight data stream, led by `schema` even when there are none.
fn stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<DataStream> {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(data))
}

/// One batch from a metadata builder as a Flight data stream.
fn one_batch(
    schema: SchemaRef,
    batch: std::result::Result<RecordBatch, FlightError>,
) -> Response<DataStream> {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Response::new(Box::pin(data))
}

/// The `FlightInfo` of metadata command `command`, whose rows have `schema`: one
/// endpoint, whose ticket is the command itself.
fn metadata_info(
    schema: &Schema,
    command: &impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> std::result::Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(schema_error)?
        .with_endpoint(
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec())),
        )
        .with_descriptor(request.into_inner());
    Ok(Response::new(info))
}

/// `schema` as the IPC message Flight SQL puts schemas in.
fn ipc_schema(schema: &Schema) -> std::result::Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(schema_error)?;
    Ok(bytes)
}

fn schema_error(e: arrow::error::ArrowError) -> Status {
    Status::internal(format!("cannot encode the schema: {e}"))
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
        let bound = Bound::sql(&query.query);
        self.flight_info(
            &bound,
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
        self.rows(&Bound::decode(&ticket.statement_handle)?).await
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.update(&Bound::sql(&command.query)).await
    }

    /// The handle is the SQL; the dataset schema and the parameters' (`$1`, `$2`, ...,
    /// text where the statement leaves a type open) come with it.
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> std::result::Result<ActionCreatePreparedStatementResult, Status> {
        let described = self.describe(&query.query).await?;
        let dataset = described
            .schema
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let parameters = Schema::new(
            described
                .param_types
                .iter()
                .enumerate()
                .map(|(i, ty)| {
                    Field::new(
                        format!("${}", i + 1),
                        ty.clone().unwrap_or(DataType::Utf8),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema: ipc_schema(&dataset)?,
            parameter_schema: ipc_schema(&parameters)?,
        })
    }

    /// Binds parameters: the new handle carries them (see [`Bound::encode`]).
    async fn do_put_prepared_statement_query(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<DoPutPreparedStatementResult, Status> {
        let mut bound = Bound::decode(&command.prepared_statement_handle)?;
        bound.params = read_parameters(request).await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound.encode()?.into()),
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
        let bound = Bound::decode(&command.prepared_statement_handle)?;
        self.flight_info(
            &bound,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )
        .await
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.rows(&Bound::decode(&command.prepared_statement_handle)?)
            .await
    }

    /// Runs once per row of the parameters sent with it (or bound before).
    async fn do_put_prepared_statement_update(
        &self,
        command: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        let mut bound = Bound::decode(&command.prepared_statement_handle)?;
        if let Some(params) = read_parameters(request).await? {
            bound.params = Some(params);
        }
        self.update(&bound).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        metadata_info(
            &query.clone().into_builder(&SQL_INFO).schema(),
            &query,
            request,
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
        metadata_info(&query.into_builder().schema(), &query, request)
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
        metadata_info(&query.clone().into_builder().schema(), &query, request)
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
        metadata_info(&query.clone().into_builder().schema(), &query, request)
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
        metadata_info(&query.into_builder().schema(), &query, request)
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
