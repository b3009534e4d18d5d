//! The deployment files (`docker-compose.yml`, `deploy/k8s/*.yaml`) cannot be run on the
//! development machines; this keeps them in step with the binary: every flag they pass
//! to `sluice coordinator` or `sluice worker` is one that subcommand takes.

use std::path::Path;
use std::process::Command;

/// The `--flags` of `sluice <subcommand> --help`.
fn flags_of(subcommand: &str) -> Vec<String> {
    let help = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([subcommand, "--help"])
        .output()
        .expect("run sluice --help");
    String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').to_string())
        .collect()
}

/// Each `sluice` invocation in a deployment file: the subcommand (a list item
/// `- coordinator` or `- worker`) and the `- --flag=value` items right after it.
fn invocations(text: &str) -> Vec<(String, Vec<String>)> {
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        let item = line.trim().strip_prefix("- ").map(str::trim);
        match item {
            Some(sub @ ("coordinator" | "worker" | "serve")) => {
                found.extend(current.take());
                current = Some((sub.to_string(), Vec::new()));
            }
            Some(flag) if flag.starts_with("--") => {
                if let Some((_, flags)) = &mut current {
                    let name = flag.split('=').next().unwrap_or(flag);
                    flags.push(name.to_string());
                }
            }
            _ => found.extend(current.take()),
        }
    }
    found.extend(current);
    found
}

#[test]
fn deployment_files_pass_only_flags_the_binary_takes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("docker-compose.yml")];
    for entry in std::fs::read_dir(root.join("deploy/k8s")).expect("deploy/k8s") {
        files.push(entry.expect("entry").path());
    }
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read deployment file");
        for (subcommand, flags) in invocations(&text) {
            let known = flags_of(&subcommand);
            for flag in flags {
                assert!(
                    known.contains(&flag),
                    "{}: sluice {subcommand} has no {flag} (it takes {known:?})",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} flags found: is the parsing still right?"
    );
}
