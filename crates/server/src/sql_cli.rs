//! `sluice sql`: a small psql-like client over pgwire.
//!
//! It runs the SQL of `-c`, of `-f FILE`, or of standard input (a statement is sent
//! once a line ends with `;`), using the simple query protocol, and prints result sets
//! as aligned tables the way psql does. Errors go to stderr with their SQLSTATE; with
//! `-c` or `-f` the first error ends the run with exit status 1.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::cli::SqlArgs;

/// Runs the client; the exit code reports connection failures and SQL errors.
pub async fn run(args: SqlArgs) -> ExitCode {
    let conn_str = format!(
        "host={} port={} user={} dbname=sluice",
        args.host, args.port, args.user
    );
    let (client, connection) = match tokio_postgres::connect(&conn_str, NoTls).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "sluice sql: cannot connect to {}:{}: {e}",
                args.host, args.port
            );
            return ExitCode::from(2);
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("sluice sql: connection error: {e}");
        }
    });

    if let Some(sql) = &args.command {
        return exit_code(run_sql(&client, sql).await);
    }
    if let Some(path) = &args.file {
        return match std::fs::read_to_string(path) {
            Ok(sql) => exit_code(run_sql(&client, &sql).await),
            Err(e) => {
                eprintln!("sluice sql: cannot read {}: {e}", path.display());
                ExitCode::from(2)
            }
        };
    }
    run_stdin(&client).await
}

fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads statements from standard input until EOF; errors are reported and skipped.
async fn run_stdin(client: &Client) -> ExitCode {
    let interactive = std::io::stdin().is_terminal();
    let mut buffer = String::new();
    let mut lines = std::io::stdin().lock().lines();
    let mut all_ok = true;
    loop {
        if interactive {
            print!(
                "{}",
                if buffer.is_empty() {
                    "sluice=> "
                } else {
                    "sluice-> "
                }
            );
            let _ = std::io::stdout().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("sluice sql: cannot read standard input: {e}");
                return ExitCode::from(2);
            }
        };
        let trimmed = line.trim();
        if buffer.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
            break;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if trimmed.ends_with(';') {
            all_ok &= run_sql(client, &buffer).await;
            buffer.clear();
        }
    }
    if !buffer.trim().is_empty() {
        all_ok &= run_sql(client, &buffer).await;
    }
    exit_code(all_ok || interactive)
}

/// Runs `sql` (one or more statements) and prints what it returns; false on error.
async fn run_sql(client: &Client, sql: &str) -> bool {
    match client.simple_query(sql).await {
        Ok(messages) => {
            print!("{}", render(&messages));
            let _ = std::io::stdout().flush();
            true
        }
        Err(e) => {
            match e.as_db_error() {
                Some(db) => eprintln!("ERROR:  {} (SQLSTATE {})", db.message(), db.code().code()),
                None => eprintln!("ERROR:  {e}"),
            }
            false
        }
    }
}

/// psql's aligned format for each result set, `OK n` for each command.
fn render(messages: &[SimpleQueryMessage]) -> String {
    let mut out = String::new();
    let mut header: Option<Vec<String>> = None;
    let mut rows: Vec<Vec<String>> = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                header = Some(columns.iter().map(|c| c.name().to_string()).collect());
                rows.clear();
            }
            SimpleQueryMessage::Row(row) => {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("").to_string())
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(n) => match header.take() {
                Some(h) => out.push_str(&table(&h, &rows)),
                None => out.push_str(&format!("OK {n}\n")),
            },
            _ => {}
        }
    }
    out
}

/// One aligned table with a `(n rows)` footer.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .chain(std::iter::once(&header[i]))
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let mut out = String::new();
    let cells: Vec<String> = header
        .iter()
        .zip(&widths)
        .map(|(h, &w)| {
            let pad = w - h.chars().count();
            format!(
                " {}{}{} ",
                " ".repeat(pad / 2),
                h,
                " ".repeat(pad - pad / 2)
            )
        })
        .collect();
    out.push_str(cells.join("|").trim_end());
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    out.push_str(&rule.join("+"));
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(v, &w)| format!(" {v}{} ", " ".repeat(w - v.chars().count())))
            .collect();
        out.push_str(cells.join("|").trim_end());
        out.push('\n');
    }
    let n = rows.len();
    out.push_str(&format!("({n} row{})\n\n", if n == 1 { "" } else { "s" }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_like_psql() {
        let t = table(
            &["a".to_string(), "name".to_string()],
            &[vec!["1".to_string(), "x".to_string()]],
        );
        assert_eq!(t, " a | name\n---+------\n 1 | x\n(1 row)\n\n");
    }
}
