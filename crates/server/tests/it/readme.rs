//! The psql session in README.md is the one `sql-tests/readme.slt` runs: every statement
//! of the README's session must appear in the slt file, in the same order, so the README
//! never shows something the test suite does not run.

use std::path::Path;

/// Statements of a SQL text, with whitespace normalised and the trailing `;` removed.
fn statements(sql: &str) -> Vec<String> {
    sql.split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The statements of an slt file: each `statement ok` / `query` record's SQL.
fn slt_statements(slt: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = slt.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("statement ") || line.starts_with("query ") {
            let mut sql = String::new();
            while let Some(next) = lines.peek() {
                if next.trim().is_empty() || *next == "----" {
                    break;
                }
                sql.push_str(next);
                sql.push('\n');
                lines.next();
            }
            out.extend(statements(&sql));
        }
    }
    out
}

#[test]
fn readme_session_is_run_by_readme_slt() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme
        .find("<!-- readme-session:start -->")
        .expect("session start marker");
    let end = readme
        .find("<!-- readme-session:end -->")
        .expect("session end marker");
    let block = &readme[start..end];
    let sql = block
        .split("```sql")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sql block between the markers");
    let wanted = statements(sql);
    assert!(
        wanted.len() >= 5,
        "the README session is unexpectedly short"
    );

    let slt = std::fs::read_to_string(root.join("sql-tests/readme.slt")).expect("readme.slt");
    let have = slt_statements(&slt);
    let mut rest = have.iter();
    for statement in &wanted {
        assert!(
            rest.any(|h| h == statement),
            "README statement not found (in order) in sql-tests/readme.slt: {statement}"
        );
    }
}
