//! Shipping a [`StreamGraph`] to another process: the graph's structure is serde (JSON),
//! and every DataFusion value in it (expressions, schemas, constants) is DataFusion's own
//! protobuf encoding (datafusion-proto), carried as bytes.
//!
//! Functions are encoded by name and resolved on decoding against DataFusion's built-in
//! functions plus Sluice's ([`crate::register_functions`]): coordinator and workers run
//! the same binary, so a name always means the same function.
//!
//! The serde helpers below are used with `#[serde(with = "...")]` on the graph's fields.

use std::sync::{Arc, LazyLock};

use datafusion::common::{DFSchema, DFSchemaRef, JoinType, NullHandling, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, SortExpr};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::Serializeable;
use prost::Message as _;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sluice_common::error::{Result, SluiceError};

use crate::graph::StreamGraph;

/// Format version of an encoded graph: a worker refuses a graph of another version.
const GRAPH_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    graph: StreamGraph,
}

/// `graph` as bytes for [`decode_graph`].
pub fn encode_graph(graph: &StreamGraph) -> Result<Vec<u8>> {
    let envelope = Envelope {
        format: GRAPH_FORMAT,
        graph: graph.clone(),
    };
    serde_json::to_vec(&envelope)
        .map_err(|e| SluiceError::internal(format!("cannot encode the stream graph: {e}")))
}

/// The graph [`encode_graph`] encoded.
pub fn decode_graph(bytes: &[u8]) -> Result<StreamGraph> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| SluiceError::internal(format!("cannot decode the stream graph: {e}")))?;
    if envelope.format != GRAPH_FORMAT {
        return Err(SluiceError::internal(format!(
            "stream graph format {} is not this build's ({GRAPH_FORMAT})",
            envelope.format
        )));
    }
    Ok(envelope.graph)
}

/// What decoded expressions resolve function names against.
static FUNCTIONS: LazyLock<Arc<TaskContext>> = LazyLock::new(|| {
    let ctx = SessionContext::new();
    crate::register_functions(&ctx);
    ctx.task_ctx()
});

fn expr_to_bytes<E: serde::ser::Error>(expr: &Expr) -> std::result::Result<Vec<u8>, E> {
    expr.to_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| E::custom(format!("expression {expr}: {e}")))
}

fn expr_from_bytes<E: serde::de::Error>(bytes: &[u8]) -> std::result::Result<Expr, E> {
    Expr::from_bytes_with_ctx(bytes, &FUNCTIONS).map_err(E::custom)
}

pub(crate) mod expr {
    use super::*;

    pub fn serialize<S: Serializer>(e: &Expr, s: S) -> std::result::Result<S::Ok, S::Error> {
        expr_to_bytes::<S::Error>(e)?.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Expr, D::Error> {
        expr_from_bytes(&Vec::<u8>::deserialize(d)?)
    }
}

pub(crate) mod exprs {
    use super::*;

    pub fn serialize<S: Serializer>(es: &[Expr], s: S) -> std::result::Result<S::Ok, S::Error> {
        es.iter()
            .map(expr_to_bytes::<S::Error>)
            .collect::<std::result::Result<Vec<_>, _>>()?
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<Expr>, D::Error> {
        Vec::<Vec<u8>>::deserialize(d)?
            .iter()
            .map(|b| expr_from_bytes(b))
            .collect()
    }
}

pub(crate) mod opt_expr {
    use super::*;

    pub fn serialize<S: Serializer>(
        e: &Option<Expr>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        e.as_ref()
            .map(expr_to_bytes::<S::Error>)
            .transpose()?
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Expr>, D::Error> {
        Option::<Vec<u8>>::deserialize(d)?
            .map(|b| expr_from_bytes(&b))
            .transpose()
    }
}

pub(crate) mod opt_expr_pair {
    use super::*;

    pub fn serialize<S: Serializer>(
        pair: &[Option<Expr>; 2],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let encode = |e: &Option<Expr>| e.as_ref().map(expr_to_bytes::<S::Error>).transpose();
        [encode(&pair[0])?, encode(&pair[1])?].serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<[Option<Expr>; 2], D::Error> {
        let [a, b] = <[Option<Vec<u8>>; 2]>::deserialize(d)?;
        let decode = |e: Option<Vec<u8>>| e.map(|b| expr_from_bytes(&b)).transpose();
        Ok([decode(a)?, decode(b)?])
    }
}

pub(crate) mod sort_exprs {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Sort {
        expr: Vec<u8>,
        asc: bool,
        nulls_first: bool,
    }

    pub fn serialize<S: Serializer>(es: &[SortExpr], s: S) -> std::result::Result<S::Ok, S::Error> {
        es.iter()
            .map(|e| {
                Ok(Sort {
                    expr: expr_to_bytes::<S::Error>(&e.expr)?,
                    asc: e.asc,
                    nulls_first: e.nulls_first,
                })
            })
            .collect::<std::result::Result<Vec<_>, S::Error>>()?
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<SortExpr>, D::Error> {
        Vec::<Sort>::deserialize(d)?
            .into_iter()
            .map(|s| {
                Ok(SortExpr::new(
                    expr_from_bytes(&s.expr)?,
                    s.asc,
                    s.nulls_first,
                ))
            })
            .collect()
    }
}

/// A constant, encoded as a literal expression.
pub(crate) mod scalar {
    use super::*;

    pub fn serialize<S: Serializer>(v: &ScalarValue, s: S) -> std::result::Result<S::Ok, S::Error> {
        expr_to_bytes::<S::Error>(&Expr::Literal(v.clone(), None))?.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<ScalarValue, D::Error> {
        match expr_from_bytes(&Vec::<u8>::deserialize(d)?)? {
            Expr::Literal(v, _) => Ok(v),
            other => Err(D::Error::custom(format!("{other} is not a constant"))),
        }
    }
}

pub(crate) mod schema {
    use super::*;
    use datafusion_proto::protobuf::DfSchema;

    pub fn serialize<S: Serializer>(
        schema: &DFSchemaRef,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let proto = DfSchema::try_from(schema.as_ref()).map_err(S::Error::custom)?;
        proto.encode_to_vec().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<DFSchemaRef, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        let proto = DfSchema::decode(bytes.as_slice()).map_err(D::Error::custom)?;
        let schema = DFSchema::try_from(&proto).map_err(D::Error::custom)?;
        Ok(Arc::new(schema))
    }
}

pub(crate) mod join_type {
    use super::*;

    pub fn serialize<S: Serializer>(j: &JoinType, s: S) -> std::result::Result<S::Ok, S::Error> {
        j.to_string().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<JoinType, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

pub(crate) mod null_handling {
    use super::*;

    pub fn serialize<S: Serializer>(
        n: &NullHandling,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let name = match n {
            NullHandling::Drop => "drop",
            NullHandling::Preserve => "preserve",
            NullHandling::PreserveAndExpandEmpty => "preserve_and_expand_empty",
        };
        name.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<NullHandling, D::Error> {
        match String::deserialize(d)?.as_str() {
            "drop" => Ok(NullHandling::Drop),
            "preserve" => Ok(NullHandling::Preserve),
            "preserve_and_expand_empty" => Ok(NullHandling::PreserveAndExpandEmpty),
            other => Err(D::Error::custom(format!("unknown null handling {other}"))),
        }
    }
}
