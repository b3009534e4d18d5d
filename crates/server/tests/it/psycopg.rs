//! Python's psycopg 3 (extended protocol with parameters, binary results) against the
//! server. Needs `python3` with psycopg installed (`pip install "psycopg[binary]"`;
//! `.ci/run` installs it).

use std::process::Command;

use crate::server::TestServer;

#[test]
fn psycopg_session_with_parameters_binary_results_and_errors() {
    let server = TestServer::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/clients/psycopg_session.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(server.conn_str())
        .output()
        .expect("python3 is installed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the psycopg session failed (is psycopg installed? pip install \"psycopg[binary]\"):\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "param [(1, 15, 2)]",
            "typed [('a', '2024-01-01T00:00:00'), ('b', '2024-01-02T00:00:00')]",
            "error 42P01",
            "after 42",
            "binary [(1, 15), (2, 20)]",
        ]
    );
}
