//! Building a [`ServeConfig`] from flags, environment and an optional TOML file.
//!
//! clap already resolves "flag, else environment variable" for each option, so what is
//! left here is the bottom of the precedence order: a value that neither gave falls back
//! to the `--config` file and then to [`ServeConfig::default`].

use std::path::Path;

use sluice_common::config::ServeConfig;
use sluice_common::error::{Result, SluiceError, SqlState};

use crate::cli::{CoordinatorArgs, ServeArgs};

/// Reads the TOML file named by `args.config` (if any) and overlays every option the
/// flags or environment set. Fails with `F0000` when the file cannot be read or holds
/// unknown keys or values of the wrong type.
pub fn resolve(args: &ServeArgs) -> Result<ServeConfig> {
    let mut config = match &args.config {
        Some(path) => load_toml(path)?,
        None => ServeConfig::default(),
    };
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = &args.pg_listen {
        config.pg_listen = v.clone();
    }
    if let Some(v) = &args.rest_listen {
        config.rest_listen = v.clone();
    }
    if let Some(v) = &args.flight_listen {
        config.flight_listen = v.clone();
    }
    if let Some(v) = &args.checkpoint_url {
        config.checkpoint_url = Some(v.clone());
    }
    if let Some(v) = args.default_parallelism {
        config.default_parallelism = v;
    }
    if args.ephemeral {
        config.ephemeral = true;
    }
    if let Some(v) = args.checkpoint_interval {
        config.checkpoint_interval = seconds("--checkpoint-interval", v)?;
    }
    if let Some(v) = args.retained_checkpoints {
        config.retained_checkpoints = v;
    }
    if config.retained_checkpoints == 0 {
        return Err(SluiceError::invalid_parameter(
            "--retained-checkpoints must be at least 1: a restart resumes from the newest",
        ));
    }
    if let Some(v) = args.restart_attempts {
        config.restart_attempts = v;
    }
    if let Some(v) = args.restart_backoff {
        config.restart_backoff = seconds("--restart-backoff", v)?;
    }
    if let Some(v) = &args.state_backend {
        config.state_backend = v
            .parse()
            .map_err(|e: String| SluiceError::invalid_parameter(format!("--state-backend: {e}")))?;
    }
    if let Some(v) = args.state_cache_mb {
        config.state_cache_mb = v;
    }
    if let Some(v) = args.operator_cache_mb {
        config.operator_cache_mb = v;
    }
    check_heartbeats(&config)?;
    check_metadata(&config)?;
    Ok(config)
}

/// [`resolve`], and the control plane's flags of `sluice coordinator`. The heartbeat
/// timeout must exceed the interval.
pub fn resolve_coordinator(args: &CoordinatorArgs) -> Result<ServeConfig> {
    let mut config = resolve(&args.serve)?;
    if let Some(v) = &args.rpc_listen {
        config.rpc_listen = v.clone();
    }
    if let Some(v) = args.heartbeat_interval {
        config.heartbeat_interval = seconds("--heartbeat-interval", v)?;
    }
    if let Some(v) = args.heartbeat_timeout {
        config.heartbeat_timeout = seconds("--heartbeat-timeout", v)?;
    }
    check_heartbeats(&config)?;
    if let Some(url) = &args.metadata {
        config.metadata_url = Some(url.clone());
    }
    check_metadata(&config)?;
    Ok(config)
}

/// A coordinator of a highly available group keeps nothing its successor needs on its
/// own disk: its metadata is in PostgreSQL, and its checkpoints must be in a store the
/// others reach too, which the default (under the data directory) is not.
fn check_metadata(config: &ServeConfig) -> Result<()> {
    let Some(url) = &config.metadata_url else {
        return Ok(());
    };
    sluice_cluster::metadata::postgres::parse_url(url)?;
    if config.ephemeral {
        return Err(SluiceError::invalid_parameter(
            "--metadata and --ephemeral cannot be combined: an ephemeral server keeps no metadata",
        ));
    }
    if config.checkpoint_url.is_none() {
        return Err(SluiceError::invalid_parameter(
            "--metadata needs --checkpoint-url: the coordinator that takes over must read the checkpoints, so they cannot stay in this one's data directory",
        ));
    }
    Ok(())
}

/// The heartbeat timeout must exceed the interval, which must be above 0 (both may come
/// from the TOML file, which `seconds` does not see).
fn check_heartbeats(config: &ServeConfig) -> Result<()> {
    let (interval, timeout) = (config.heartbeat_interval, config.heartbeat_timeout);
    if interval > 0.0 && timeout > interval && timeout < 1e9 {
        return Ok(());
    }
    Err(SluiceError::invalid_parameter(format!(
        "the heartbeat timeout ({timeout} s) must be longer than the heartbeat interval ({interval} s), which must be above 0"
    )))
}

/// `value` of flag `flag`, which must be a number of seconds, 0 or more.
fn seconds(flag: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(SluiceError::invalid_parameter(format!(
            "{flag} must be a number of seconds, 0 or more, got {value}"
        )))
    }
}

/// Parses a `ServeConfig` from a TOML file; missing keys keep their defaults.
pub fn load_toml(path: &Path) -> Result<ServeConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SluiceError::new(
            SqlState::CONFIG_FILE_ERROR,
            format!("cannot read config file {}: {e}", path.display()),
        )
    })?;
    toml::from_str(&text).map_err(|e| {
        SluiceError::new(
            SqlState::CONFIG_FILE_ERROR,
            format!("invalid config file {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::config::StateBackendKind;

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("sluice.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    #[test]
    fn flags_override_toml_which_overrides_defaults() {
        let path = temp_file(
            "precedence",
            "pg_listen = \"0.0.0.0:7000\"\nrest_listen = \"0.0.0.0:7001\"\n",
        );
        let args = ServeArgs {
            pg_listen: Some("127.0.0.1:9000".into()),
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let config = resolve(&args).expect("valid config");
        assert_eq!(config.pg_listen, "127.0.0.1:9000");
        assert_eq!(config.rest_listen, "0.0.0.0:7001");
        assert_eq!(config.flight_listen, ServeConfig::default().flight_listen);
        let _ = std::fs::remove_dir_all(path.parent().expect("parent"));
    }

    #[test]
    fn the_state_backend_comes_from_the_flag_or_the_file() {
        let path = temp_file(
            "backend",
            "state_backend = \"memory\"\nstate_cache_mb = 8\n",
        );
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let config = resolve(&from_file).expect("valid config");
        assert_eq!(config.state_backend, StateBackendKind::Memory);
        assert_eq!(config.state_cache_mb, 8);
        assert_eq!(
            ServeConfig::default().state_backend,
            StateBackendKind::Rocksdb
        );
        let flag = ServeArgs {
            state_backend: Some("RocksDB".into()),
            ..from_file
        };
        assert_eq!(
            resolve(&flag).expect("valid flag").state_backend,
            StateBackendKind::Rocksdb
        );
        let bad = ServeArgs {
            state_backend: Some("tape".into()),
            ..ServeArgs::default()
        };
        let err = resolve(&bad).expect_err("unknown backend");
        assert_eq!(err.state, SqlState::INVALID_PARAMETER_VALUE);
        assert!(err.message.contains("tape"), "{}", err.message);
        let _ = std::fs::remove_dir_all(path.parent().expect("parent"));
    }

    #[test]
    fn heartbeat_settings_from_the_file_are_checked() {
        for (name, text) in [
            ("negative", "heartbeat_interval = -1.0\n"),
            ("nan", "heartbeat_interval = nan\n"),
            (
                "inverted",
                "heartbeat_interval = 10.0\nheartbeat_timeout = 5.0\n",
            ),
        ] {
            let path = temp_file(name, text);
            let args = ServeArgs {
                config: Some(path.clone()),
                ..ServeArgs::default()
            };
            let err = resolve(&args).expect_err(name);
            assert_eq!(err.state, SqlState::INVALID_PARAMETER_VALUE, "{name}");
            assert!(err.message.contains("heartbeat"), "{name}: {}", err.message);
            let _ = std::fs::remove_dir_all(path.parent().expect("parent"));
        }
    }

    #[test]
    fn metadata_in_postgres_needs_a_shared_checkpoint_store() {
        let coordinator = |metadata: &str, checkpoint_url: Option<&str>, ephemeral: bool| {
            resolve_coordinator(&CoordinatorArgs {
                serve: ServeArgs {
                    checkpoint_url: checkpoint_url.map(String::from),
                    ephemeral,
                    ..ServeArgs::default()
                },
                metadata: Some(metadata.into()),
                ..CoordinatorArgs::default()
            })
        };
        let url = "postgres://postgres@127.0.0.1:5432/sluice";
        let config = coordinator(url, Some("s3://bucket/checkpoints"), false).expect("valid");
        assert_eq!(config.metadata_url.as_deref(), Some(url));
        for (what, result, mentions) in [
            (
                "no store",
                coordinator(url, None, false),
                "--checkpoint-url",
            ),
            (
                "ephemeral",
                coordinator(url, Some("file:///tmp/c"), true),
                "--ephemeral",
            ),
            (
                "not PostgreSQL",
                coordinator("mysql://db/sluice", Some("file:///tmp/c"), false),
                "PostgreSQL URL",
            ),
        ] {
            let err = result.expect_err(what);
            assert_eq!(err.state, SqlState::INVALID_PARAMETER_VALUE, "{what}");
            assert!(err.message.contains(mentions), "{what}: {}", err.message);
        }
    }

    #[test]
    fn at_least_one_checkpoint_is_retained() {
        let args = |n| ServeArgs {
            retained_checkpoints: Some(n),
            ..ServeArgs::default()
        };
        assert_eq!(resolve(&args(5)).expect("valid").retained_checkpoints, 5);
        let err = resolve(&args(0)).expect_err("none retained");
        assert_eq!(err.state, SqlState::INVALID_PARAMETER_VALUE);
        assert!(
            err.message.contains("--retained-checkpoints"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_toml_key_is_a_config_error() {
        let path = temp_file("unknown", "pg_lsten = \"x\"\n");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let err = resolve(&args).expect_err("unknown key must fail");
        assert_eq!(err.state, SqlState::CONFIG_FILE_ERROR);
        assert!(err.message.contains("pg_lsten"), "{}", err.message);
        let _ = std::fs::remove_dir_all(path.parent().expect("parent"));
    }
}
