//! The PostgreSQL wire protocol front door, on top of the `pgwire` crate.
//!
//! [`PgServer`] hands every accepted socket to pgwire with one [`Frontend`] that
//! implements the simple query protocol (several `;`-separated statements per message),
//! the extended protocol (Parse/Bind/Describe/Execute with `$n` parameters) and a
//! trust (no password) startup. Each connection owns a [`Session`] kept in pgwire's
//! per-connection extensions, so `SET` lasts as long as the connection. Every SQL text
//! first goes through [`crate::pg_catalog::rewrite`], which turns the PostgreSQL-isms of
//! psql and drivers into SQL DataFusion plans. Errors become `ErrorResponse`s carrying
//! the SQLSTATE of the [`SluiceError`]; the connection stays usable after any of them.

mod encode;
mod execute;
mod extended;
mod params;
pub mod types;
mod values;

use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, stream};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::Format;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use sluice_cluster::{Coordinator, Session};
use sluice_common::error::SluiceError;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};

pub use execute::DEFAULT_VARIABLES;
use execute::{Outcome, run_statement};
pub use extended::SluiceQueryParser;

/// The pgwire server: accepts connections until shutdown is signalled.
pub struct PgServer {
    frontend: Arc<Frontend>,
}

impl PgServer {
    /// A server whose connections run statements on `coordinator`.
    pub fn new(coordinator: Arc<Coordinator>) -> PgServer {
        PgServer {
            frontend: Arc::new(Frontend::new(coordinator)),
        }
    }

    /// Accepts connections on `listener` until `shutdown` turns true. Each connection
    /// runs in its own task; a failing connection is logged and does not affect others.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let server = self.clone();
                        tokio::spawn(async move {
                            tracing::debug!(%peer, "pgwire connection");
                            if let Err(e) = pgwire::tokio::process_socket(socket, None, server).await {
                                tracing::debug!(%peer, error = %e, "pgwire connection ended with an error");
                            }
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "pgwire accept failed"),
                },
                _ = shutdown.changed() => break,
            }
        }
    }
}

impl PgWireServerHandlers for PgServer {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.frontend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.frontend.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.frontend.clone()
    }
}

/// The per-server protocol handler; per-connection state lives in the client's
/// session extensions.
pub struct Frontend {
    coordinator: Arc<Coordinator>,
    parser: Arc<SluiceQueryParser>,
}

/// The `Session` of one connection. A tokio mutex because statements hold it across
/// awaits; a connection runs one statement at a time, so it is never contended.
struct ConnectionSession(Mutex<Session>);

impl Frontend {
    fn new(coordinator: Arc<Coordinator>) -> Frontend {
        Frontend {
            parser: Arc::new(SluiceQueryParser::new(coordinator.clone())),
            coordinator,
        }
    }

    /// The connection's session, created on first use.
    fn session<C: ClientInfo>(&self, client: &C) -> Arc<ConnectionSession> {
        session_of(&self.coordinator, client)
    }
}

fn session_of<C: ClientInfo>(coordinator: &Coordinator, client: &C) -> Arc<ConnectionSession> {
    client
        .session_extensions()
        .get_or_insert_with(|| ConnectionSession(Mutex::new(coordinator.new_session())))
}

/// The `ErrorResponse` of a Sluice error: severity ERROR, its SQLSTATE and message.
pub fn error_info(e: &SluiceError) -> ErrorInfo {
    ErrorInfo::new(
        "ERROR".to_owned(),
        e.state.code().to_owned(),
        e.message.clone(),
    )
}

fn pg_error(e: &SluiceError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

/// The protocol response of a statement's outcome, with result columns in `format`.
fn response(outcome: Outcome, format: &Format) -> Result<Response, SluiceError> {
    Ok(match outcome {
        Outcome::Rows { schema, batches } => {
            let fields: Arc<Vec<FieldInfo>> = Arc::new(encode::field_infos(&schema, format));
            let rows = encode::encode_rows(&batches, &fields)?;
            Response::Query(QueryResponse::new(
                fields,
                stream::iter(rows.into_iter().map(Ok)),
            ))
        }
        Outcome::Command(tag) => Response::Execution(tag),
        Outcome::TransactionStart(tag) => Response::TransactionStart(tag),
        Outcome::TransactionEnd(tag) => Response::TransactionEnd(tag),
    })
}

impl NoopStartupHandler for Frontend {}

#[async_trait]
impl SimpleQueryHandler for Frontend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = crate::pg_catalog::rewrite(query);
        tracing::debug!(%query, rewritten = %sql, "simple query");
        let statements = match self.coordinator.parse(&sql) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let session = self.session(client);
        let mut session = session.0.lock().await;
        let mut responses = Vec::with_capacity(statements.len());
        // PostgreSQL stops at the first failing statement of a simple query.
        for stmt in &statements {
            let result = run_statement(&self.coordinator, &mut session, stmt, &[])
                .await
                .and_then(|outcome| response(outcome, &Format::UnifiedText));
            match result {
                Ok(r) => responses.push(r),
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}
