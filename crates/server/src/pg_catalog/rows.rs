//! The rows of the populated `pg_catalog` tables, computed from the relations that
//! exist at scan time (see [`super::tables`] for the columns).

use std::collections::HashMap;

use datafusion::scalar::ScalarValue;
use sluice_cluster::RelationInfo;

use super::tables::{
    DATABASE_OID, INFORMATION_SCHEMA_OID, PG_CATALOG_OID, PUBLIC_OID, ROLE_OID, SOURCE_SERVER_OID,
    relation_oid,
};
use crate::pgwire::types::{pg_type_of, type_len};

/// A row: values by column name; missing columns take the type's neutral value.
pub type Row = HashMap<&'static str, ScalarValue>;

fn text(s: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(s.to_string()))
}

fn oid(v: i64) -> ScalarValue {
    ScalarValue::Int64(Some(v))
}

fn row(values: Vec<(&'static str, ScalarValue)>) -> Row {
    values.into_iter().collect()
}

/// Built-in types clients look up by oid (the ones Sluice sends, and their names).
const BUILTIN_TYPES: &[(i64, &str, &str)] = &[
    (16, "bool", "B"),
    (17, "bytea", "U"),
    (19, "name", "S"),
    (20, "int8", "N"),
    (21, "int2", "N"),
    (23, "int4", "N"),
    (25, "text", "S"),
    (26, "oid", "N"),
    (700, "float4", "N"),
    (701, "float8", "N"),
    (705, "unknown", "X"),
    (1043, "varchar", "S"),
    (1082, "date", "D"),
    (1083, "time", "D"),
    (1114, "timestamp", "D"),
    (1184, "timestamptz", "D"),
    (1186, "interval", "T"),
    (1700, "numeric", "N"),
];

/// The kind letter (`pg_class.relkind`) of a Sluice relation kind.
pub fn relkind(kind: &str) -> &'static str {
    match kind {
        "materialized view" => "m",
        "source" => "f",
        _ => "r",
    }
}

/// The rows of `table`, computed from the current relations and settings.
pub fn rows(table: &str, relations: &[RelationInfo], settings: &[(&str, &str)]) -> Vec<Row> {
    match table {
        "pg_namespace" => [
            (PG_CATALOG_OID, "pg_catalog"),
            (PUBLIC_OID, "public"),
            (INFORMATION_SCHEMA_OID, "information_schema"),
        ]
        .iter()
        .map(|(o, n)| {
            row(vec![
                ("oid", oid(*o)),
                ("nspname", text(n)),
                ("nspowner", oid(ROLE_OID)),
            ])
        })
        .collect(),
        "pg_class" => relations
            .iter()
            .map(|r| {
                row(vec![
                    ("oid", oid(relation_oid(&r.name))),
                    ("relname", text(&r.name)),
                    ("relnamespace", oid(PUBLIC_OID)),
                    ("relowner", oid(ROLE_OID)),
                    ("relam", oid(if relkind(r.kind) == "r" { 2 } else { 0 })),
                    ("relkind", text(relkind(r.kind))),
                    ("relpersistence", text("p")),
                    ("relreplident", text("d")),
                    ("relispopulated", ScalarValue::Boolean(Some(true))),
                    (
                        "relnatts",
                        ScalarValue::Int16(Some(r.schema.fields().len() as i16)),
                    ),
                ])
            })
            .collect(),
        "pg_attribute" => relations
            .iter()
            .flat_map(|r| {
                let rel = relation_oid(&r.name);
                r.schema.fields().iter().enumerate().map(move |(i, f)| {
                    let pg = pg_type_of(f.data_type());
                    row(vec![
                        ("attrelid", oid(rel)),
                        ("attname", text(f.name())),
                        ("atttypid", oid(i64::from(pg.oid()))),
                        ("attlen", ScalarValue::Int16(Some(type_len(&pg)))),
                        ("attnum", ScalarValue::Int16(Some(i as i16 + 1))),
                        ("atttypmod", ScalarValue::Int32(Some(-1))),
                        ("attnotnull", ScalarValue::Boolean(Some(!f.is_nullable()))),
                        ("attislocal", ScalarValue::Boolean(Some(true))),
                        (
                            "attstorage",
                            text(if type_len(&pg) < 0 { "x" } else { "p" }),
                        ),
                    ])
                })
            })
            .collect(),
        "pg_type" => BUILTIN_TYPES
            .iter()
            .map(|(o, name, category)| {
                row(vec![
                    ("oid", oid(*o)),
                    ("typname", text(name)),
                    ("typnamespace", oid(PG_CATALOG_OID)),
                    ("typowner", oid(ROLE_OID)),
                    ("typtype", text("b")),
                    ("typcategory", text(category)),
                    ("typisdefined", ScalarValue::Boolean(Some(true))),
                    ("typdelim", text(",")),
                    ("typtypmod", ScalarValue::Int32(Some(-1))),
                ])
            })
            .collect(),
        "pg_database" => vec![row(vec![
            ("oid", oid(DATABASE_OID)),
            ("datname", text("sluice")),
            ("datdba", oid(ROLE_OID)),
            ("encoding", ScalarValue::Int32(Some(6))),
            ("datlocprovider", text("c")),
            ("datallowconn", ScalarValue::Boolean(Some(true))),
            ("datconnlimit", ScalarValue::Int32(Some(-1))),
            ("datcollate", text("C.UTF-8")),
            ("datctype", text("C.UTF-8")),
            ("daticulocale", ScalarValue::Utf8(None)),
        ])],
        "pg_am" => vec![
            row(vec![
                ("oid", oid(2)),
                ("amname", text("heap")),
                ("amtype", text("t")),
            ]),
            row(vec![
                ("oid", oid(403)),
                ("amname", text("btree")),
                ("amtype", text("i")),
            ]),
        ],
        "pg_roles" => vec![row(vec![
            ("oid", oid(ROLE_OID)),
            ("rolname", text("sluice")),
            ("rolsuper", ScalarValue::Boolean(Some(true))),
            ("rolinherit", ScalarValue::Boolean(Some(true))),
            ("rolcreaterole", ScalarValue::Boolean(Some(true))),
            ("rolcreatedb", ScalarValue::Boolean(Some(true))),
            ("rolcanlogin", ScalarValue::Boolean(Some(true))),
            ("rolconnlimit", ScalarValue::Int32(Some(-1))),
            ("rolvaliduntil", ScalarValue::Utf8(None)),
        ])],
        "pg_user" => vec![row(vec![
            ("usename", text("sluice")),
            ("usesysid", oid(ROLE_OID)),
            ("usecreatedb", ScalarValue::Boolean(Some(true))),
            ("usesuper", ScalarValue::Boolean(Some(true))),
        ])],
        "pg_settings" => settings
            .iter()
            .map(|(name, value)| {
                row(vec![
                    ("name", text(name)),
                    ("setting", text(value)),
                    ("context", text("user")),
                    ("vartype", text("string")),
                    ("source", text("default")),
                ])
            })
            .collect(),
        "pg_foreign_table" => relations
            .iter()
            .filter(|r| relkind(r.kind) == "f")
            .map(|r| {
                row(vec![
                    ("ftrelid", oid(relation_oid(&r.name))),
                    ("ftserver", oid(SOURCE_SERVER_OID)),
                ])
            })
            .collect(),
        "pg_foreign_server" => vec![row(vec![
            ("oid", oid(SOURCE_SERVER_OID)),
            ("srvname", text("sluice_source")),
            ("srvowner", oid(ROLE_OID)),
        ])],
        "pg_tablespace" => vec![row(vec![
            ("oid", oid(1663)),
            ("spcname", text("pg_default")),
            ("spcowner", oid(ROLE_OID)),
        ])],
        _ => vec![],
    }
}
