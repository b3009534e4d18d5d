//! The checkpoint store against an S3 API: moto's server, started per test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A `moto_server` child process, killed on drop.
struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts moto on a free port and waits until it accepts connections. Panics with
    /// what to install when `moto_server` is missing: this test must not pass silently.
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start moto_server ({e}): the S3 checkpoint test needs it; install it \
                 with `python3 -m pip install \"moto[server]\" boto3` (.ci/run does)"
            ),
        };
        let mut server = MotoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("moto_server exited with {status} before accepting connections");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not accept connections on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with a raw, unsigned `PUT /bucket` (moto accepts it;
    /// `object_store` cannot create buckets).
    fn create_bucket(&self, bucket: &str) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            conn,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "creating bucket {bucket} on moto failed: {response}"
        );
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn checkpoints_round_trip_through_s3_and_are_pruned_there() {
    let moto = MotoServer::start();
    moto.create_bucket("sluice-checkpoints");
    let url = "s3://sluice-checkpoints/jobs/job-1";
    let options = [
        ("aws_endpoint", moto.endpoint()),
        ("aws_access_key_id", "testing".to_string()),
        ("aws_secret_access_key", "testing".to_string()),
        ("aws_region", "us-east-1".to_string()),
        ("aws_allow_http", "true".to_string()),
    ];
    let store = CheckpointStore::open_with_options(url, options.clone())
        .unwrap()
        .retain(1);
    assert!(store.latest_restorable().await.unwrap().is_none());

    let names = ["mv-3/chain-0/subtask-0/op-2", "mv-3/chain-0/subtask-1/op-2"];
    write_checkpoint(&store, 1, CheckpointKind::Checkpoint, &files(1, &names))
        .await
        .unwrap();
    let second = write_checkpoint(&store, 2, CheckpointKind::Checkpoint, &files(2, &names))
        .await
        .unwrap();
    // An abandoned upload of epoch 3 must stay invisible.
    store
        .put_state(
            3,
            "mv-3/chain-0/subtask-0/op-2",
            Bytes::from_static(b"partial"),
        )
        .await
        .unwrap();

    let reopened = CheckpointStore::open_with_options(url, options).unwrap();
    let restored = reopened.latest_restorable().await.unwrap().unwrap();
    assert_eq!(restored.metadata, second);
    assert_eq!(restored.files, files(2, &names));
    assert_eq!(reopened.inspect().await.unwrap().incomplete, vec![3]);
    assert_eq!(reopened.next_epoch().await.unwrap(), 4);
    // Epoch 1 was pruned from the bucket (retain 1).
    assert_eq!(
        reopened
            .list()
            .await
            .unwrap()
            .iter()
            .map(|m| m.epoch)
            .collect::<Vec<_>>(),
        vec![2]
    );
    let err = reopened.load(1).await.unwrap_err();
    assert_eq!(err.state, SqlState::UNDEFINED_OBJECT, "{err}");
    assert!(
        err.message
            .contains("s3://sluice-checkpoints/jobs/job-1/chk-"),
        "{err}"
    );
}
