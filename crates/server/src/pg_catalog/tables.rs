//! The `pg_catalog` tables: their columns, and their rows computed from the
//! coordinator's relations at scan time.
//!
//! Only the columns clients actually read are present. Object ids are derived from
//! names ([`relation_oid`]), so an object keeps its oid for as long as it keeps its name
//! and `::regclass` can be computed without a catalog lookup. Columns a row does not
//! set get PostgreSQL's neutral value for the type (`false`, `0`, `''`, NULL arrays).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::scalar::ScalarValue;
use sluice_cluster::RelationInfo;
use sluice_common::error::Result;

/// oid of the `pg_catalog` namespace.
pub const PG_CATALOG_OID: i64 = 11;
/// oid of the `public` namespace, where every Sluice relation lives.
pub const PUBLIC_OID: i64 = 2200;
/// oid of the `information_schema` namespace.
pub const INFORMATION_SCHEMA_OID: i64 = 13_000;
/// oid of the one role, `sluice`.
pub const ROLE_OID: i64 = 10;
/// oid of the one database, `sluice`.
pub const DATABASE_OID: i64 = 16_384;

/// oid of the foreign server every source is listed under (`\d source` shows it).
pub const SOURCE_SERVER_OID: i64 = 16_385;

const OID: DataType = DataType::Int64;

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// The oid of a relation, stable for its name: FNV-1a of the name, above the range
/// PostgreSQL reserves for built-in objects.
pub fn relation_oid(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    100_000 + (h % 1_000_000_000) as i64
}

/// Every table of the emulated `pg_catalog`: name and columns.
pub fn table_columns() -> Vec<(&'static str, Vec<(&'static str, DataType)>)> {
    use DataType::{Boolean as B, Int16 as I16, Int32 as I32, Utf8 as T};
    vec![
        (
            "pg_namespace",
            vec![
                ("oid", OID),
                ("nspname", T),
                ("nspowner", OID),
                ("nspacl", text_list()),
            ],
        ),
        (
            "pg_class",
            vec![
                ("oid", OID),
                ("relname", T),
                ("relnamespace", OID),
                ("reltype", OID),
                ("reloftype", OID),
                ("relowner", OID),
                ("relam", OID),
                ("relfilenode", OID),
                ("reltablespace", OID),
                ("relpages", I32),
                ("reltuples", DataType::Float32),
                ("relallvisible", I32),
                ("reltoastrelid", OID),
                ("relhasindex", B),
                ("relisshared", B),
                ("relpersistence", T),
                ("relkind", T),
                ("relnatts", I16),
                ("relchecks", I16),
                ("relhasrules", B),
                ("relhastriggers", B),
                ("relhassubclass", B),
                ("relrowsecurity", B),
                ("relforcerowsecurity", B),
                ("relispopulated", B),
                ("relreplident", T),
                ("relispartition", B),
                ("relrewrite", OID),
                ("relfrozenxid", OID),
                ("relminmxid", OID),
                ("relacl", text_list()),
                ("reloptions", text_list()),
                ("relpartbound", T),
            ],
        ),
        (
            "pg_attribute",
            vec![
                ("attrelid", OID),
                ("attname", T),
                ("atttypid", OID),
                ("attstattarget", I32),
                ("attlen", I16),
                ("attnum", I16),
                ("attndims", I32),
                ("attcacheoff", I32),
                ("atttypmod", I32),
                ("attbyval", B),
                ("attalign", T),
                ("attstorage", T),
                ("attcompression", T),
                ("attnotnull", B),
                ("atthasdef", B),
                ("atthasmissing", B),
                ("attidentity", T),
                ("attgenerated", T),
                ("attisdropped", B),
                ("attislocal", B),
                ("attinhcount", I32),
                ("attcollation", OID),
                ("attacl", text_list()),
                ("attoptions", text_list()),
                ("attfdwoptions", text_list()),
            ],
        ),
        (
            "pg_type",
            vec![
                ("oid", OID),
                ("typname", T),
                ("typnamespace", OID),
                ("typowner", OID),
                ("typlen", I16),
                ("typbyval", B),
                ("typtype", T),
                ("typcategory", T),
                ("typispreferred", B),
                ("typisdefined", B),
                ("typdelim", T),
                ("typrelid", OID),
                ("typelem", OID),
                ("typarray", OID),
                ("typinput", T),
                ("typoutput", T),
                ("typreceive", T),
                ("typsend", T),
                ("typalign", T),
                ("typstorage", T),
                ("typnotnull", B),
                ("typbasetype", OID),
                ("typtypmod", I32),
                ("typndims", I32),
                ("typcollation", OID),
                ("typdefault", T),
                ("typacl", text_list()),
            ],
        ),
        (
            "pg_database",
            vec![
                ("oid", OID),
                ("datname", T),
                ("datdba", OID),
                ("encoding", I32),
                ("datlocprovider", T),
                ("datistemplate", B),
                ("datallowconn", B),
                ("datconnlimit", I32),
                ("datcollate", T),
                ("datctype", T),
                ("daticulocale", T),
                ("daticurules", T),
                ("datcollversion", T),
                ("dattablespace", OID),
                ("datacl", text_list()),
            ],
        ),
        (
            "pg_am",
            vec![("oid", OID), ("amname", T), ("amhandler", T), ("amtype", T)],
        ),
        (
            "pg_roles",
            vec![
                ("oid", OID),
                ("rolname", T),
                ("rolsuper", B),
                ("rolinherit", B),
                ("rolcreaterole", B),
                ("rolcreatedb", B),
                ("rolcanlogin", B),
                ("rolreplication", B),
                ("rolbypassrls", B),
                ("rolconnlimit", I32),
                ("rolpassword", T),
                ("rolvaliduntil", T),
                ("rolconfig", text_list()),
            ],
        ),
        (
            "pg_user",
            vec![
                ("usename", T),
                ("usesysid", OID),
                ("usecreatedb", B),
                ("usesuper", B),
                ("userepl", B),
                ("usebypassrls", B),
                ("passwd", T),
                ("valuntil", T),
                ("useconfig", text_list()),
            ],
        ),
        (
            "pg_auth_members",
            vec![
                ("roleid", OID),
                ("member", OID),
                ("grantor", OID),
                ("admin_option", B),
            ],
        ),
        (
            "pg_description",
            vec![
                ("objoid", OID),
                ("classoid", OID),
                ("objsubid", I32),
                ("description", T),
            ],
        ),
        (
            "pg_shdescription",
            vec![("objoid", OID), ("classoid", OID), ("description", T)],
        ),
        (
            "pg_settings",
            vec![
                ("name", T),
                ("setting", T),
                ("unit", T),
                ("category", T),
                ("short_desc", T),
                ("extra_desc", T),
                ("context", T),
                ("vartype", T),
                ("source", T),
                ("min_val", T),
                ("max_val", T),
                ("boot_val", T),
                ("reset_val", T),
            ],
        ),
        (
            "pg_index",
            vec![
                ("indexrelid", OID),
                ("indrelid", OID),
                ("indnatts", I16),
                ("indnkeyatts", I16),
                ("indisunique", B),
                ("indisprimary", B),
                ("indisexclusion", B),
                ("indimmediate", B),
                ("indisclustered", B),
                ("indisvalid", B),
                ("indisreplident", B),
                ("indnullsnotdistinct", B),
                ("indkey", T),
                ("indexprs", T),
                ("indpred", T),
            ],
        ),
        (
            "pg_constraint",
            vec![
                ("oid", OID),
                ("conname", T),
                ("connamespace", OID),
                ("contype", T),
                ("condeferrable", B),
                ("condeferred", B),
                ("convalidated", B),
                ("conrelid", OID),
                ("contypid", OID),
                ("conindid", OID),
                ("conparentid", OID),
                ("confrelid", OID),
                ("conislocal", B),
                ("coninhcount", I32),
                ("connoinherit", B),
                ("conkey", text_list()),
                ("confkey", text_list()),
                ("conbin", T),
            ],
        ),
        (
            "pg_inherits",
            vec![
                ("inhrelid", OID),
                ("inhparent", OID),
                ("inhseqno", I32),
                ("inhdetachpending", B),
            ],
        ),
        (
            "pg_attrdef",
            vec![("oid", OID), ("adrelid", OID), ("adnum", I16), ("adbin", T)],
        ),
        (
            "pg_collation",
            vec![("oid", OID), ("collname", T), ("collnamespace", OID)],
        ),
        (
            "pg_trigger",
            vec![
                ("oid", OID),
                ("tgrelid", OID),
                ("tgname", T),
                ("tgisinternal", B),
                ("tgenabled", T),
                ("tgparentid", OID),
            ],
        ),
        (
            "pg_rewrite",
            vec![
                ("oid", OID),
                ("rulename", T),
                ("ev_class", OID),
                ("ev_type", T),
                ("ev_enabled", T),
                ("is_instead", B),
                ("ev_action", T),
            ],
        ),
        (
            "pg_policy",
            vec![
                ("oid", OID),
                ("polname", T),
                ("polrelid", OID),
                ("polcmd", T),
                ("polpermissive", B),
                ("polroles", T),
                ("polqual", T),
                ("polwithcheck", T),
            ],
        ),
        (
            "pg_statistic_ext",
            vec![
                ("oid", OID),
                ("stxrelid", OID),
                ("stxname", T),
                ("stxnamespace", OID),
                ("stxkind", text_list()),
                ("stxstattarget", I32),
                ("stxkeys", T),
            ],
        ),
        (
            "pg_publication",
            vec![
                ("oid", OID),
                ("pubname", T),
                ("puballtables", B),
                ("pubinsert", B),
                ("pubupdate", B),
                ("pubdelete", B),
                ("pubtruncate", B),
                ("pubviaroot", B),
            ],
        ),
        (
            "pg_publication_rel",
            vec![
                ("oid", OID),
                ("prpubid", OID),
                ("prrelid", OID),
                ("prqual", T),
                ("prattrs", T),
            ],
        ),
        (
            "pg_publication_namespace",
            vec![("oid", OID), ("pnpubid", OID), ("pnnspid", OID)],
        ),
        (
            "pg_tablespace",
            vec![
                ("oid", OID),
                ("spcname", T),
                ("spcowner", OID),
                ("spcacl", text_list()),
                ("spcoptions", text_list()),
            ],
        ),
        (
            "pg_foreign_table",
            vec![
                ("ftrelid", OID),
                ("ftserver", OID),
                ("ftoptions", text_list()),
            ],
        ),
        (
            "pg_foreign_server",
            vec![
                ("oid", OID),
                ("srvname", T),
                ("srvowner", OID),
                ("srvfdw", OID),
                ("srvtype", T),
                ("srvversion", T),
                ("srvacl", text_list()),
                ("srvoptions", text_list()),
            ],
        ),
        (
            "pg_foreign_data_wrapper",
            vec![
                ("oid", OID),
                ("fdwname", T),
                ("fdwowner", OID),
                ("fdwhandler", OID),
                ("fdwvalidator", OID),
                ("fdwacl", text_list()),
                ("fdwoptions", text_list()),
            ],
        ),
        (
            "pg_extension",
            vec![
                ("oid", OID),
                ("extname", T),
                ("extowner", OID),
                ("extnamespace", OID),
                ("extrelocatable", B),
                ("extversion", T),
            ],
        ),
        (
            "pg_proc",
            vec![
                ("oid", OID),
                ("proname", T),
                ("pronamespace", OID),
                ("proowner", OID),
                ("prokind", T),
                ("prorettype", OID),
                ("proargtypes", T),
            ],
        ),
        (
            "pg_sequence",
            vec![
                ("seqrelid", OID),
                ("seqtypid", OID),
                ("seqstart", DataType::Int64),
                ("seqincrement", DataType::Int64),
            ],
        ),
        (
            "pg_event_trigger",
            vec![
                ("oid", OID),
                ("evtname", T),
                ("evtevent", T),
                ("evtowner", OID),
                ("evtenabled", T),
            ],
        ),
        (
            "pg_partitioned_table",
            vec![("partrelid", OID), ("partstrat", T), ("partnatts", I16)],
        ),
        (
            "pg_opclass",
            vec![
                ("oid", OID),
                ("opcname", T),
                ("opcnamespace", OID),
                ("opcdefault", B),
            ],
        ),
        (
            "pg_stat_activity",
            vec![
                ("datid", OID),
                ("datname", T),
                ("pid", I32),
                ("usename", T),
                ("application_name", T),
                ("state", T),
                ("query", T),
            ],
        ),
    ]
}

/// The tables [`rows`] fills; every other `pg_catalog` table is always empty.
const POPULATED_TABLES: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_database",
    "pg_am",
    "pg_roles",
    "pg_user",
    "pg_settings",
    "pg_tablespace",
    "pg_foreign_table",
    "pg_foreign_server",
];

/// True for a `pg_catalog` table that never has rows (`pg_attrdef`, `pg_index`, ...).
pub fn is_always_empty(table: &str) -> bool {
    !POPULATED_TABLES.contains(&table) && table_columns().iter().any(|(n, _)| *n == table)
}

fn neutral(data_type: &DataType) -> Result<ScalarValue> {
    Ok(match data_type {
        DataType::Boolean => ScalarValue::Boolean(Some(false)),
        DataType::Utf8 => ScalarValue::Utf8(Some(String::new())),
        DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Float32 => {
            ScalarValue::new_zero(data_type)?
        }
        other => ScalarValue::try_from(other)?,
    })
}

/// The schema of a `pg_catalog` table.
pub fn schema_of(columns: &[(&'static str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// The current contents of `table` as one batch.
pub fn batch(
    table: &str,
    schema: &SchemaRef,
    relations: &[RelationInfo],
    settings: &[(&str, &str)],
) -> Result<RecordBatch> {
    let rows = super::rows::rows(table, relations, settings);
    let columns = schema
        .fields()
        .iter()
        .map(|field| -> Result<ArrayRef> {
            if rows.is_empty() {
                return Ok(new_empty_array(field.data_type()));
            }
            let values = rows
                .iter()
                .map(|r| match r.get(field.name().as_str()) {
                    Some(v) => Ok(v.clone()),
                    None => neutral(field.data_type()),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(ScalarValue::iter_to_array(values)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
