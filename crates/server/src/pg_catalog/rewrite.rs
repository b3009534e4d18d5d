//! Rewriting the PostgreSQL-only syntax psql and drivers send into SQL DataFusion plans.
//!
//! The rewrite works on sqlparser tokens, so string literals and quoted identifiers are
//! never touched by accident. Rules:
//!
//! - `OPERATOR(pg_catalog.~)` becomes `~` (any operator);
//! - `COLLATE pg_catalog.default` (and `COLLATE "C"`, ...) is dropped: Sluice compares
//!   strings bytewise;
//! - a subquery whose first relation is a catalog table that is always empty in Sluice
//!   (`pg_attrdef`, `pg_inherits`, ...) becomes NULL (`EXISTS (...)` becomes `false`),
//!   and `ARRAY(SELECT ...)` becomes NULL: DataFusion plans neither the correlated
//!   subqueries psql writes nor array subqueries;
//! - `pg_catalog.f(` becomes `f(`: catalog functions are registered unqualified;
//! - `'name'::regclass` becomes `regclass_oid('name')`; other casts to the oid alias
//!   types (`::regclass`, `::regtype`, `::oid`, ...) are dropped, since oids are plain
//!   integers here, and `::pg_catalog.text` becomes `::text`.
//!
//! Text that needs none of these comes back byte for byte unchanged.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Casts to these types are dropped (oids are integers in Sluice's catalog).
const OID_ALIAS_TYPES: &[&str] = &[
    "regclass",
    "regtype",
    "regproc",
    "regprocedure",
    "regnamespace",
    "regrole",
    "regoper",
    "oid",
];

/// Rewrites `sql`; see the module documentation for the rules.
pub fn rewrite(sql: &str) -> String {
    if !needs_rewrite(sql) {
        return sql.to_string();
    }
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        // Let the real parser report the error on the original text.
        return sql.to_string();
    };
    let never_evaluated = subqueries_of_empty_selects(&tokens);
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let sig = significant_from(&tokens, i, 6);
        if let Some(&close) = never_evaluated.get(&i) {
            out.push(Token::make_word("NULL", None));
            i = close + 1;
            continue;
        }
        // ( SELECT ... FROM pg_catalog.<always empty table> ... )
        if tokens[i] == Token::LParen
            && sig.len() >= 2
            && is_word(&tokens[sig[1]], "select")
            && let Some(close) = matching_paren(&tokens, i)
            && reads_empty_catalog_table(&tokens[i + 1..close])
        {
            if last_significant(&out).is_some_and(|t| is_word(t, "exists")) {
                drop_last_significant(&mut out);
                out.push(Token::make_word("false", None));
            } else {
                out.push(Token::make_word("NULL", None));
            }
            i = close + 1;
            continue;
        }
        // ARRAY ( SELECT ... ): DataFusion has no array subqueries; catalog queries only
        // use them for decoration (ACL lists, publication names), so they become NULL.
        if is_word(&tokens[i], "array")
            && sig.len() >= 3
            && tokens[sig[1]] == Token::LParen
            && is_word(&tokens[sig[2]], "select")
            && let Some(close) = matching_paren(&tokens, sig[1])
        {
            out.extend(null_text_array());
            i = close + 1;
            continue;
        }
        // OPERATOR ( pg_catalog . op )
        if is_word(&tokens[i], "operator")
            && sig.len() >= 5
            && tokens[sig[1]] == Token::LParen
            && is_word(&tokens[sig[2]], "pg_catalog")
            && tokens[sig[3]] == Token::Period
            && let Some(close) = (sig[4]..tokens.len()).find(|&j| tokens[j] == Token::RParen)
        {
            out.extend(tokens[sig[4]..close].iter().cloned());
            i = close + 1;
            continue;
        }
        // COLLATE pg_catalog.default | COLLATE "x"
        if is_word(&tokens[i], "collate") && sig.len() >= 2 {
            if is_word(&tokens[sig[1]], "pg_catalog")
                && sig.len() >= 4
                && tokens[sig[2]] == Token::Period
            {
                i = sig[3] + 1;
                continue;
            }
            if matches!(&tokens[sig[1]], Token::Word(_)) {
                i = sig[1] + 1;
                continue;
            }
        }
        // pg_catalog . f (   -- a function call
        if is_word(&tokens[i], "pg_catalog")
            && sig.len() >= 4
            && tokens[sig[1]] == Token::Period
            && matches!(tokens[sig[2]], Token::Word(_))
            && tokens[sig[3]] == Token::LParen
        {
            i = sig[2];
            continue;
        }
        // :: [pg_catalog .] type
        if tokens[i] == Token::DoubleColon && sig.len() >= 2 {
            let (type_index, schema_qualified) = if is_word(&tokens[sig[1]], "pg_catalog")
                && sig.len() >= 4
                && tokens[sig[2]] == Token::Period
            {
                (sig[3], true)
            } else {
                (sig[1], false)
            };
            if let Token::Word(w) = &tokens[type_index] {
                let type_name = w.value.to_ascii_lowercase();
                if type_name == "regclass"
                    && let Some(Token::SingleQuotedString(name)) = last_significant(&out)
                {
                    let name = name.clone();
                    drop_last_significant(&mut out);
                    out.extend(call("regclass_oid", name));
                    i = type_index + 1;
                    continue;
                }
                if OID_ALIAS_TYPES.contains(&type_name.as_str()) {
                    i = type_index + 1;
                    continue;
                }
                if type_name == "char" && w.quote_style.is_some() {
                    out.push(Token::DoubleColon);
                    out.push(Token::make_word("text", None));
                    i = type_index + 1;
                    continue;
                }
                if schema_qualified {
                    out.push(Token::DoubleColon);
                    out.push(tokens[type_index].clone());
                    i = type_index + 1;
                    continue;
                }
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    alias_null_items(&mut out);
    out.iter().map(token_sql).collect()
}

/// Gives every bare `NULL` select item its own name: DataFusion requires unique column
/// names, and psql's catalog queries select `NULL, NULL`. Only items of a select list
/// (between SELECT and FROM at one parenthesis depth): a NULL in `VALUES (1, NULL, 2)`
/// stays as it is.
fn alias_null_items(out: &mut Vec<Token>) {
    let sig: Vec<usize> = (0..out.len())
        .filter(|&j| !matches!(out[j], Token::Whitespace(_)))
        .collect();
    // Per open parenthesis (and the statement itself): whether its tokens are in a
    // select list.
    let mut in_select_list = vec![false];
    let mut inserts = Vec::new();
    for k in 0..sig.len() {
        let cur = &out[sig[k]];
        match cur {
            Token::LParen => in_select_list.push(false),
            Token::RParen if in_select_list.len() > 1 => {
                in_select_list.pop();
            }
            _ if is_word(cur, "select") => *in_select_list.last_mut().expect("never empty") = true,
            _ if is_word(cur, "from") => *in_select_list.last_mut().expect("never empty") = false,
            _ => {}
        }
        if k == 0 || k + 1 == sig.len() || !in_select_list.last().expect("never empty") {
            continue;
        }
        let (prev, next) = (&out[sig[k - 1]], &out[sig[k + 1]]);
        if is_word(cur, "null")
            && (*prev == Token::Comma || is_word(prev, "select"))
            && (*next == Token::Comma || is_word(next, "from"))
        {
            inserts.push(sig[k] + 1);
        }
    }
    for (n, at) in inserts.into_iter().enumerate().rev() {
        let alias = [
            Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
            Token::make_keyword("AS"),
            Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
            Token::make_word(&format!("null_{}", n + 1), Some('"')),
        ];
        out.splice(at..at, alias);
    }
}

/// `CAST(NULL AS TEXT[])`: a typed NULL, so functions over arrays still plan.
fn null_text_array() -> Vec<Token> {
    let dialect = PostgreSqlDialect {};
    Tokenizer::new(&dialect, "CAST(NULL AS TEXT[])")
        .tokenize()
        .unwrap_or_else(|_| vec![Token::make_word("NULL", None)])
}

/// The index of the `)` closing the `(` at `open`.
fn matching_paren(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// True when the first relation after the top-level `FROM` of a subquery is a
/// `pg_catalog` table that never has rows in Sluice (`pg_attrdef`, `pg_collation`,
/// ...): the subquery is then empty, so it can be replaced by its empty value. This
/// matters because such subqueries in psql's queries are correlated in ways DataFusion
/// does not plan.
fn reads_empty_catalog_table(inner: &[Token]) -> bool {
    let mut depth = 0usize;
    let sig: Vec<&Token> = inner
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    for (k, t) in sig.iter().enumerate() {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ if depth == 0 && is_word(t, "from") => {
                return match (sig.get(k + 1), sig.get(k + 2), sig.get(k + 3)) {
                    (Some(schema), Some(Token::Period), Some(Token::Word(table)))
                        if is_word(schema, "pg_catalog") =>
                    {
                        super::tables::is_always_empty(&table.value)
                    }
                    _ => false,
                };
            }
            _ => {}
        }
    }
    false
}

/// Scalar subqueries in the select list of a `SELECT` that inner-joins an always-empty
/// catalog table: that `SELECT` has no rows, so they are never evaluated and can be
/// NULL. Returns `(` index → `)` index.
fn subqueries_of_empty_selects(tokens: &[Token]) -> std::collections::HashMap<usize, usize> {
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&j| !matches!(tokens[j], Token::Whitespace(_)))
        .collect();
    let mut depth = Vec::with_capacity(sig.len());
    let mut d = 0usize;
    for &j in &sig {
        if tokens[j] == Token::RParen {
            d = d.saturating_sub(1);
        }
        depth.push(d);
        if tokens[j] == Token::LParen {
            d += 1;
        }
    }
    let ends_clause = |t: &Token| {
        [
            "where",
            "group",
            "order",
            "limit",
            "union",
            "except",
            "intersect",
            "having",
        ]
        .iter()
        .any(|w| is_word(t, w))
    };
    let mut spans = std::collections::HashMap::new();
    for (k, &s) in sig.iter().enumerate() {
        if !is_word(&tokens[s], "select") {
            continue;
        }
        let level = depth[k];
        // The FROM of this SELECT, at the same depth.
        let mut from = None;
        for m in k + 1..sig.len() {
            let t = &tokens[sig[m]];
            if depth[m] < level || (depth[m] == level && ends_clause(t)) {
                break;
            }
            if depth[m] == level && is_word(t, "from") {
                from = Some(m);
                break;
            }
        }
        let Some(from) = from else { continue };
        // Is an always-empty catalog table inner-joined in its FROM clause?
        let mut empty = false;
        let mut inner = true;
        let mut m = from;
        while m < sig.len() {
            let t = &tokens[sig[m]];
            if depth[m] < level || (depth[m] == level && m > from && ends_clause(t)) {
                break;
            }
            if depth[m] == level {
                if is_word(t, "left") || is_word(t, "right") || is_word(t, "full") {
                    inner = false;
                } else if *t == Token::Comma || is_word(t, "from") {
                    inner = true;
                } else if is_word(t, "pg_catalog")
                    && inner
                    && matches!(
                        tokens.get(sig.get(m + 1).copied().unwrap_or(usize::MAX)),
                        Some(Token::Period)
                    )
                    && let Some(Token::Word(table)) = sig.get(m + 2).map(|&x| &tokens[x])
                    && super::tables::is_always_empty(&table.value)
                {
                    empty = true;
                    break;
                } else if is_word(t, "on") {
                    inner = true;
                }
            }
            m += 1;
        }
        if !empty {
            continue;
        }
        for n in k + 1..from {
            if tokens[sig[n]] == Token::LParen
                && depth[n] >= level
                && sig
                    .get(n + 1)
                    .is_some_and(|&x| is_word(&tokens[x], "select"))
                && let Some(close) = matching_paren(tokens, sig[n])
            {
                spans.insert(sig[n], close);
            }
        }
    }
    spans
}

/// A cheap filter: most statements contain none of the rewritten constructs.
fn needs_rewrite(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.contains("pg_catalog")
        || lower.contains("collate")
        || lower.contains("::reg")
        || lower.contains("::oid")
        || lower.contains("operator(")
        || lower.contains("array(")
        || lower.contains("null,")
}

/// Indexes of the next `n` non-whitespace tokens starting at `from` (inclusive).
fn significant_from(tokens: &[Token], from: usize, n: usize) -> Vec<usize> {
    (from..tokens.len())
        .filter(|&j| !matches!(tokens[j], Token::Whitespace(_)))
        .take(n)
        .collect()
}

fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn last_significant(out: &[Token]) -> Option<&Token> {
    out.iter()
        .rev()
        .find(|t| !matches!(t, Token::Whitespace(_)))
}

fn drop_last_significant(out: &mut Vec<Token>) {
    while let Some(t) = out.pop() {
        if !matches!(t, Token::Whitespace(_)) {
            break;
        }
    }
}

fn call(function: &str, string_arg: String) -> Vec<Token> {
    vec![
        Token::make_word(function, None),
        Token::LParen,
        Token::SingleQuotedString(string_arg),
        Token::RParen,
    ]
}

/// The SQL text of a token; single-quoted strings are re-escaped (sqlparser's `Display`
/// prints their unescaped value).
fn token_sql(t: &Token) -> String {
    match t {
        Token::SingleQuotedString(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_pattern_match_becomes_plain_regex_operator() {
        assert_eq!(
            rewrite(
                "WHERE c.relname OPERATOR(pg_catalog.~) '^(foo)$' COLLATE pg_catalog.default AND x"
            ),
            "WHERE c.relname ~ '^(foo)$'  AND x"
        );
    }

    #[test]
    fn qualified_function_calls_lose_the_schema_but_tables_keep_it() {
        assert_eq!(
            rewrite("SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c"),
            "SELECT pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c"
        );
    }

    #[test]
    fn regclass_literals_become_oid_lookups_and_other_casts_drop() {
        assert_eq!(
            rewrite("SELECT 'it''s'::regclass, x::pg_catalog.regtype::pg_catalog.text"),
            "SELECT regclass_oid('it''s'), x::text"
        );
    }

    #[test]
    fn subqueries_over_empty_catalog_tables_become_their_empty_value() {
        assert_eq!(
            rewrite(
                "SELECT (SELECT d.x FROM pg_catalog.pg_attrdef d WHERE d.y = (a.z)), EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i) FROM t"
            ),
            "SELECT NULL AS \"null_1\", false FROM t"
        );
        let populated = "SELECT (SELECT 1 FROM pg_catalog.pg_class c) FROM t";
        assert_eq!(rewrite(populated), populated);
    }

    #[test]
    fn only_nulls_of_select_lists_are_named() {
        assert_eq!(
            rewrite("SELECT NULL, (SELECT NULL, 1) FROM t"),
            "SELECT NULL AS \"null_1\", (SELECT NULL AS \"null_2\", 1) FROM t"
        );
        let values = "INSERT INTO t VALUES (4, NULL, 10), (NULL, 'x', NULL)";
        assert_eq!(rewrite(values), values);
    }

    #[test]
    fn statements_without_catalog_syntax_are_untouched() {
        let sql = "SELECT 'a''b' ,  1";
        assert_eq!(rewrite(sql), sql);
    }
}
