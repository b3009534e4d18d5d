//! Errors that reach users.
//!
//! Every error a client can see carries a PostgreSQL SQLSTATE code, so psql and every
//! driver can tell a syntax error from a missing table from a feature Sluice does not
//! have yet. Code deep in the engine returns [`SluiceError`] with the most specific
//! [`SqlState`] it knows; the pgwire front door turns it into an `ErrorResponse`.

use std::fmt;

/// A PostgreSQL SQLSTATE code (five characters), the class of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlState(pub &'static str);

impl SqlState {
    pub const SYNTAX_ERROR: SqlState = SqlState("42601");
    pub const UNDEFINED_TABLE: SqlState = SqlState("42P01");
    pub const UNDEFINED_COLUMN: SqlState = SqlState("42703");
    pub const UNDEFINED_OBJECT: SqlState = SqlState("42704");
    pub const UNDEFINED_FUNCTION: SqlState = SqlState("42883");
    pub const DUPLICATE_TABLE: SqlState = SqlState("42P07");
    pub const DUPLICATE_OBJECT: SqlState = SqlState("42710");
    pub const DATATYPE_MISMATCH: SqlState = SqlState("42804");
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    pub const INVALID_TEXT_REPRESENTATION: SqlState = SqlState("22P02");
    pub const INVALID_DATETIME_FORMAT: SqlState = SqlState("22007");
    pub const DATA_EXCEPTION: SqlState = SqlState("22000");
    pub const DIVISION_BY_ZERO: SqlState = SqlState("22012");
    pub const NUMERIC_VALUE_OUT_OF_RANGE: SqlState = SqlState("22003");
    pub const NOT_NULL_VIOLATION: SqlState = SqlState("23502");
    pub const UNIQUE_VIOLATION: SqlState = SqlState("23505");
    pub const DEPENDENT_OBJECTS_STILL_EXIST: SqlState = SqlState("2BP01");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    pub const WRONG_OBJECT_TYPE: SqlState = SqlState("42809");
    pub const INVALID_COLUMN_DEFINITION: SqlState = SqlState("42611");
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: SqlState = SqlState("55000");
    pub const INVALID_CURSOR_NAME: SqlState = SqlState("34000");
    pub const DUPLICATE_CURSOR: SqlState = SqlState("42P03");
    pub const INSUFFICIENT_RESOURCES: SqlState = SqlState("53000");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    pub const QUERY_CANCELED: SqlState = SqlState("57014");
    /// The server is shutting down (here: a coordinator that lost its leadership).
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
    /// A checksum mismatch or a truncated file in durable storage.
    pub const DATA_CORRUPTED: SqlState = SqlState("XX001");
    /// Reading or writing the data directory or the checkpoint store failed.
    pub const IO_ERROR: SqlState = SqlState("58030");
    pub const CONFIG_FILE_ERROR: SqlState = SqlState("F0000");

    /// The five-character code.
    pub fn code(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An error with the SQLSTATE a client sees and a message that says what went wrong,
/// with what input, and (where it helps) what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SluiceError {
    pub state: SqlState,
    pub message: String,
}

/// The result type of every fallible Sluice API.
pub type Result<T, E = SluiceError> = std::result::Result<T, E>;

impl SluiceError {
    pub fn new(state: SqlState, message: impl Into<String>) -> Self {
        SluiceError {
            state,
            message: message.into(),
        }
    }

    /// A construct Sluice does not run (yet); the message names the construct and why.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(SqlState::FEATURE_NOT_SUPPORTED, message)
    }

    /// A bug or broken invariant inside Sluice, not the user's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(SqlState::INTERNAL_ERROR, message)
    }

    /// Durable data (a log record, a checkpoint file) failed its checksum or is truncated.
    pub fn corrupted(message: impl Into<String>) -> Self {
        Self::new(SqlState::DATA_CORRUPTED, message)
    }

    /// An I/O failure, with what was being done and to which path or URL.
    pub fn io(context: impl fmt::Display, error: impl fmt::Display) -> Self {
        Self::new(SqlState::IO_ERROR, format!("{context}: {error}"))
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(SqlState::INVALID_PARAMETER_VALUE, message)
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new(SqlState::SYNTAX_ERROR, message)
    }

    pub fn undefined_table(name: &str) -> Self {
        Self::new(
            SqlState::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        )
    }
}

impl fmt::Display for SluiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SluiceError {}

impl From<arrow::error::ArrowError> for SluiceError {
    fn from(e: arrow::error::ArrowError) -> Self {
        classify_arrow_error(&e)
    }
}

impl From<datafusion::error::DataFusionError> for SluiceError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        classify_datafusion_error(e)
    }
}

impl From<std::io::Error> for SluiceError {
    fn from(e: std::io::Error) -> Self {
        SluiceError::new(SqlState::IO_ERROR, format!("I/O error: {e}"))
    }
}

fn classify_arrow_error(e: &arrow::error::ArrowError) -> SluiceError {
    use arrow::error::ArrowError as A;
    let state = match e {
        A::DivideByZero => SqlState::DIVISION_BY_ZERO,
        A::CastError(_) | A::ParseError(_) => SqlState::INVALID_TEXT_REPRESENTATION,
        A::ArithmeticOverflow(_) => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        A::InvalidArgumentError(_) => SqlState::DATA_EXCEPTION,
        _ => SqlState::INTERNAL_ERROR,
    };
    SluiceError::new(state, strip_error_prefixes(&e.to_string()))
}

/// Maps DataFusion's error kinds to SQLSTATE codes. DataFusion's planning errors do not
/// carry codes, so the message is also inspected for the common cases (missing table,
/// missing column, missing function).
fn classify_datafusion_error(e: datafusion::error::DataFusionError) -> SluiceError {
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::ArrowError(a, _) => classify_arrow_error(a),
        D::SQL(parser_error, _) => {
            SluiceError::syntax(strip_error_prefixes(&parser_error.to_string()))
        }
        D::NotImplemented(msg) => SluiceError::unsupported(strip_error_prefixes(msg)),
        D::External(ext) => {
            if let Some(s) = ext.downcast_ref::<SluiceError>() {
                s.clone()
            } else {
                SluiceError::internal(ext.to_string())
            }
        }
        root => {
            let msg = strip_error_prefixes(&root.to_string());
            let lower = msg.to_ascii_lowercase();
            if let Some(name) = missing_table_name(&msg) {
                return SluiceError::undefined_table(&name);
            }
            let state = if lower.contains("table") && lower.contains("not found") {
                SqlState::UNDEFINED_TABLE
            } else if lower.contains("no field named")
                || lower.contains("column") && lower.contains("not found")
            {
                SqlState::UNDEFINED_COLUMN
            } else if lower.contains("invalid function")
                || lower.contains("function") && lower.contains("not found")
            {
                SqlState::UNDEFINED_FUNCTION
            } else if lower.contains("cannot be cast")
                || lower.contains("cast error")
                || lower.contains("cannot cast")
            {
                SqlState::INVALID_TEXT_REPRESENTATION
            } else if lower.contains("divide by zero") {
                SqlState::DIVISION_BY_ZERO
            } else if matches!(root, D::Plan(_) | D::SchemaError(..)) {
                if lower.contains("coerc") || lower.contains("type") {
                    SqlState::DATATYPE_MISMATCH
                } else {
                    SqlState::SYNTAX_ERROR
                }
            } else if matches!(root, D::Execution(_)) {
                SqlState::DATA_EXCEPTION
            } else {
                SqlState::INTERNAL_ERROR
            };
            SluiceError::new(state, msg)
        }
    }
}

/// The unqualified name in DataFusion's "table 'sluice.public.x' not found".
fn missing_table_name(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("table '")?;
    let quoted = rest.strip_suffix("' not found")?;
    Some(quoted.rsplit('.').next().unwrap_or(quoted).to_string())
}

/// DataFusion and Arrow prefix messages with their error kind ("Error during planning: ",
/// "Arrow error: "); users of a PostgreSQL-like server expect just the sentence.
fn strip_error_prefixes(msg: &str) -> String {
    const PREFIXES: [&str; 9] = [
        "Error during planning: ",
        "Arrow error: ",
        "Execution error: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "SQL error: ",
        "Parser error: ",
        "Cast error: ",
        "Invalid argument error: ",
    ];
    let mut s = msg.trim();
    loop {
        let before = s;
        for p in PREFIXES {
            if let Some(rest) = s.strip_prefix(p) {
                s = rest;
            }
        }
        if s == before {
            break;
        }
    }
    s.to_string()
}

/// Shorthand for `Err(SluiceError::new(state, format!(...)))`.
#[macro_export]
macro_rules! bail {
    ($state:expr, $($arg:tt)*) => {
        return Err($crate::error::SluiceError::new($state, format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datafusion_missing_table_maps_to_undefined_table() {
        let e =
            datafusion::error::DataFusionError::Plan("table 'sluice.public.nope' not found".into());
        let s: SluiceError = e.into();
        assert_eq!(s.state, SqlState::UNDEFINED_TABLE);
        assert_eq!(s.message, "relation \"nope\" does not exist");
    }

    #[test]
    fn arrow_divide_by_zero_keeps_its_code() {
        let s: SluiceError = arrow::error::ArrowError::DivideByZero.into();
        assert_eq!(s.state, SqlState::DIVISION_BY_ZERO);
    }

    #[test]
    fn nested_prefixes_are_stripped() {
        assert_eq!(
            strip_error_prefixes(
                "Arrow error: Cast error: Cannot cast string 'x' to value of Int32 type"
            ),
            "Cannot cast string 'x' to value of Int32 type"
        );
    }
}
