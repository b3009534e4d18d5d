//! The PostgreSQL functions psql and drivers call on catalog rows, as DataFusion UDFs.
//!
//! Most answer a constant that is true of a single-user, single-database Sluice
//! (`pg_table_is_visible` is always true, `pg_get_userbyid` is always `sluice`); the
//! rest map oids to names (`format_type`) or names to oids (`regclass_oid`, which the
//! rewriter puts where clients write `'name'::regclass`).

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;

use super::tables::relation_oid;

/// What a function computes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Behavior {
    Bool(bool),
    Text(&'static str),
    NullText,
    Int64(i64),
    Int32(i32),
    /// `format_type(type_oid, typmod)`: the type's SQL name.
    FormatType,
    /// `regclass_oid(name)`: the oid `pg_class` gives that relation.
    RegclassOid,
}

/// A catalog function: a name, any arguments (up to three), a fixed behaviour.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgFunction {
    name: &'static str,
    signature: Signature,
    behavior: Behavior,
}

impl PgFunction {
    fn new(name: &'static str, behavior: Behavior) -> PgFunction {
        PgFunction {
            name,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Nullary,
                    TypeSignature::Any(1),
                    TypeSignature::Any(2),
                    TypeSignature::Any(3),
                ],
                Volatility::Stable,
            ),
            behavior,
        }
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.behavior {
            Behavior::Bool(_) => DataType::Boolean,
            Behavior::Text(_) | Behavior::NullText | Behavior::FormatType => DataType::Utf8,
            Behavior::Int64(_) | Behavior::RegclassOid => DataType::Int64,
            Behavior::Int32(_) => DataType::Int32,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(match &self.behavior {
            Behavior::Bool(b) => ColumnarValue::Scalar(ScalarValue::Boolean(Some(*b))),
            Behavior::Text(s) => ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.to_string()))),
            Behavior::NullText => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
            Behavior::Int64(v) => ColumnarValue::Scalar(ScalarValue::Int64(Some(*v))),
            Behavior::Int32(v) => ColumnarValue::Scalar(ScalarValue::Int32(Some(*v))),
            Behavior::FormatType => {
                let oids = first_arg(&args, &DataType::Int64)?;
                let oids = oids.as_primitive::<Int64Type>();
                let names: StringArray = oids.iter().map(|o| o.map(type_name_of_oid)).collect();
                ColumnarValue::Array(Arc::new(names))
            }
            Behavior::RegclassOid => {
                let names = first_arg(&args, &DataType::Utf8)?;
                let names = names.as_string::<i32>();
                let oids: arrow::array::Int64Array = names
                    .iter()
                    .map(|n| n.map(|n| relation_oid(unquote(n))))
                    .collect();
                ColumnarValue::Array(Arc::new(oids))
            }
        })
    }
}

/// The first argument as an array of `data_type` (NULLs for a call without arguments).
fn first_arg(args: &ScalarFunctionArgs, data_type: &DataType) -> Result<ArrayRef> {
    match args.args.first() {
        Some(arg) => {
            let array = arg.to_array(args.number_rows)?;
            Ok(arrow::compute::cast(&array, data_type)?)
        }
        None => Ok(arrow::array::new_null_array(
            data_type,
            args.number_rows.max(1),
        )),
    }
}

/// `public.foo` and `"Foo"` name relation `foo` and `Foo`.
fn unquote(name: &str) -> &str {
    let name = name.strip_prefix("public.").unwrap_or(name);
    name.strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(name)
}

/// PostgreSQL's `format_type` spelling of a built-in type oid.
fn type_name_of_oid(oid: i64) -> String {
    let Ok(oid) = u32::try_from(oid) else {
        return "???".into();
    };
    match Type::from_oid(oid) {
        Some(Type::INT2) => "smallint".into(),
        Some(Type::INT4) => "integer".into(),
        Some(Type::INT8) => "bigint".into(),
        Some(Type::FLOAT4) => "real".into(),
        Some(Type::FLOAT8) => "double precision".into(),
        Some(Type::BOOL) => "boolean".into(),
        Some(Type::VARCHAR) => "character varying".into(),
        Some(Type::TIMESTAMP) => "timestamp without time zone".into(),
        Some(Type::TIMESTAMPTZ) => "timestamp with time zone".into(),
        Some(Type::TIME) => "time without time zone".into(),
        Some(t) => t.name().to_string(),
        None => "???".into(),
    }
}

/// Registers every catalog function on `ctx` (replacing DataFusion's `version()`).
pub fn register(ctx: &SessionContext) {
    let version: &'static str = Box::leak(
        format!(
            "PostgreSQL 16.6 (Sluice {}) on {}-{}, compiled by rustc",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            std::env::consts::OS
        )
        .into_boxed_str(),
    );
    use Behavior::*;
    let functions = [
        ("pg_table_is_visible", Bool(true)),
        ("pg_type_is_visible", Bool(true)),
        ("pg_function_is_visible", Bool(true)),
        ("pg_is_other_temp_schema", Bool(false)),
        ("pg_relation_is_publishable", Bool(false)),
        ("has_table_privilege", Bool(true)),
        ("has_schema_privilege", Bool(true)),
        ("has_database_privilege", Bool(true)),
        ("pg_get_userbyid", Text("sluice")),
        ("current_schema", Text("public")),
        ("current_database", Text("sluice")),
        ("current_user_name", Text("sluice")),
        ("version", Text(version)),
        ("pg_encoding_to_char", Text("UTF8")),
        ("pg_size_pretty", Text("0 bytes")),
        ("obj_description", NullText),
        ("col_description", NullText),
        ("shobj_description", NullText),
        ("pg_get_expr", NullText),
        ("pg_get_indexdef", NullText),
        ("pg_get_constraintdef", NullText),
        ("pg_get_viewdef", NullText),
        ("pg_get_triggerdef", NullText),
        ("pg_get_ruledef", NullText),
        ("pg_get_partkeydef", NullText),
        ("pg_get_function_result", NullText),
        ("pg_get_function_arguments", NullText),
        ("pg_get_statisticsobjdef_columns", NullText),
        ("pg_relation_size", Int64(0)),
        ("pg_table_size", Int64(0)),
        ("pg_total_relation_size", Int64(0)),
        ("pg_backend_pid", Int32(std::process::id() as i32)),
        ("format_type", FormatType),
        ("regclass_oid", RegclassOid),
    ];
    for (name, behavior) in functions {
        ctx.register_udf(ScalarUDF::from(PgFunction::new(name, behavior)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn catalog_functions_answer_in_sql() {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx
            .sql("SELECT pg_table_is_visible(1), format_type(20, -1), current_database(), regclass_oid('t') = regclass_oid('public.t')")
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let row = &batches[0];
        assert!(row.column(0).as_boolean().value(0));
        assert_eq!(row.column(1).as_string::<i32>().value(0), "bigint");
        assert_eq!(row.column(2).as_string::<i32>().value(0), "sluice");
        assert!(row.column(3).as_boolean().value(0));
    }
}
