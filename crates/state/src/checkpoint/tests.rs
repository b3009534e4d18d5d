//! The checkpoint protocol's storage side under crashes, damage and retention.

mod crashing;
mod moto;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_common::error::SqlState;

use super::*;
use crashing::CrashingStore;

use crate::test_support::TempDir;

type Files = BTreeMap<String, Bytes>;

fn files(epoch: u64, names: &[&str]) -> Files {
    names
        .iter()
        .map(|n| {
            let data = format!("state of {n} at epoch {epoch}").repeat(epoch as usize + 1);
            (n.to_string(), Bytes::from(data))
        })
        .collect()
}

/// Uploads `files` and commits them as checkpoint `epoch`, the way the coordinator
/// does; stops at the first error.
pub(super) async fn write_checkpoint(
    store: &CheckpointStore,
    epoch: u64,
    kind: CheckpointKind,
    files: &Files,
) -> Result<CheckpointMetadata> {
    let mut refs = BTreeMap::new();
    for (name, data) in files {
        refs.insert(
            name.clone(),
            store.put_state(epoch, name, data.clone()).await?,
        );
    }
    let metadata = CheckpointMetadata {
        epoch,
        kind,
        started_at_ms: epoch * 1000,
        completed_at_ms: epoch * 1000 + 20,
        alignment_ms: 3,
        files: refs,
        properties: BTreeMap::from([("parallelism".to_string(), "2".to_string())]),
    };
    store.commit(&metadata).await?;
    Ok(metadata)
}

pub(super) async fn object_names(store: &dyn ObjectStore) -> Vec<String> {
    let mut names: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}

fn memory_store(mem: &Arc<InMemory>) -> CheckpointStore {
    CheckpointStore::from_object_store(mem.clone(), Path::from("job-1"), "memory:///job-1".into())
}

#[tokio::test]
async fn checkpoints_round_trip_through_a_local_directory() {
    let dir = TempDir::new("round-trip");
    let url = format!("file://{}", dir.0.display());
    let store = CheckpointStore::open(&url).unwrap();
    assert!(store.latest_restorable().await.unwrap().is_none());
    assert_eq!(store.next_epoch().await.unwrap(), 1);
    let want = files(
        1,
        &["mv-3/chain-0/subtask-0/op-2", "mv-3/chain-0/subtask-1/op-2"],
    );
    let metadata = write_checkpoint(&store, 1, CheckpointKind::Checkpoint, &want)
        .await
        .unwrap();

    let listed = store.list().await.unwrap();
    assert_eq!(listed, vec![metadata.clone()]);
    assert_eq!(
        listed[0].size_bytes(),
        want.values().map(|b| b.len() as u64).sum::<u64>()
    );
    assert_eq!(listed[0].duration_ms(), 20);
    assert!(
        dir.0
            .join("chk-00000000000000000001/mv-3/chain-0/subtask-1/op-2")
            .is_file()
    );
    assert!(dir.0.join("chk-00000000000000000001/_metadata").is_file());

    // A second store over the same directory, opened by plain path, sees the same.
    let reopened = CheckpointStore::open(dir.0.to_str().unwrap()).unwrap();
    let restored = reopened.latest_restorable().await.unwrap().unwrap();
    assert_eq!(restored.metadata, metadata);
    assert_eq!(restored.files, want);
    assert!(restored.skipped.is_empty());
    assert_eq!(reopened.load(1).await.unwrap().files, want);
}

#[tokio::test]
async fn a_crash_at_every_step_of_a_checkpoint_never_exposes_a_partial_one() {
    let names = ["mv-1/subtask-0", "mv-1/subtask-1", "mv-2/subtask-0"];
    let (files1, files2, files3) = (files(1, &names), files(2, &names), files(3, &names));

    // How many mutations checkpoint 2 makes with retain(1): its puts, then the deletes
    // that prune checkpoint 1.
    let mem = Arc::new(InMemory::new());
    write_checkpoint(&memory_store(&mem), 1, CheckpointKind::Checkpoint, &files1)
        .await
        .unwrap();
    let counting = CrashingStore::new(mem.clone(), usize::MAX);
    let budget = counting.budget.clone();
    let store =
        CheckpointStore::from_object_store(Arc::new(counting), Path::from("job-1"), "x".into())
            .retain(1);
    write_checkpoint(&store, 2, CheckpointKind::Checkpoint, &files2)
        .await
        .unwrap();
    let puts = names.len() + 1;
    let mutations = budget.done.load(Ordering::SeqCst);
    assert_eq!(
        mutations,
        puts + names.len() + 1,
        "puts, then deletes of epoch 1"
    );

    for k in 0..=mutations {
        let mem = Arc::new(InMemory::new());
        write_checkpoint(&memory_store(&mem), 1, CheckpointKind::Checkpoint, &files1)
            .await
            .unwrap();
        let crashing = CheckpointStore::from_object_store(
            Arc::new(CrashingStore::new(mem.clone(), k)),
            Path::from("job-1"),
            "memory:///job-1".into(),
        )
        .retain(1);
        let result = write_checkpoint(&crashing, 2, CheckpointKind::Checkpoint, &files2).await;

        // After a restart: checkpoint 2 exists exactly when its metadata put happened.
        let fresh = memory_store(&mem).retain(1);
        let latest = fresh.latest_restorable().await.unwrap().unwrap();
        if k < puts {
            let err = result.unwrap_err();
            assert_eq!(err.state, SqlState::IO_ERROR, "k={k}: {err}");
            assert!(err.message.contains("simulated crash"), "k={k}: {err}");
            assert_eq!(latest.metadata.epoch, 1, "k={k}");
            assert_eq!(latest.files, files1, "k={k}");
            assert_eq!(
                fresh.inspect().await.unwrap().incomplete.len(),
                usize::from(k > 0)
            );
        } else {
            // The metadata is durable: commit reports success even if pruning crashed.
            result.unwrap();
            assert_eq!(latest.metadata.epoch, 2, "k={k}");
            assert_eq!(latest.files, files2, "k={k}");
        }
        assert!(latest.skipped.is_empty(), "k={k}");

        // The next checkpoint commits and removes every leftover.
        write_checkpoint(&fresh, 3, CheckpointKind::Checkpoint, &files3)
            .await
            .unwrap();
        let mut expected: Vec<String> = names
            .iter()
            .map(|n| format!("job-1/chk-00000000000000000003/{n}"))
            .collect();
        expected.push("job-1/chk-00000000000000000003/_metadata".to_string());
        expected.sort();
        assert_eq!(object_names(mem.as_ref()).await, expected, "k={k}");
        let latest = fresh.latest_restorable().await.unwrap().unwrap();
        assert_eq!((latest.metadata.epoch, latest.files), (3, files3.clone()));
    }
}

/// Overwrites the object at `location` with `damage` applied to its bytes.
async fn damage_object(mem: &InMemory, location: &str, damage: impl FnOnce(&mut Vec<u8>)) {
    let location = Path::from(location);
    let mut bytes = mem
        .get(&location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    damage(&mut bytes);
    mem.put(&location, PutPayload::from(bytes)).await.unwrap();
}

#[tokio::test]
async fn a_damaged_state_file_falls_back_to_the_previous_checkpoint() {
    let dir = TempDir::new("damaged-state");
    let store = CheckpointStore::open(dir.0.to_str().unwrap()).unwrap();
    let names = ["op-1/subtask-0", "op-1/subtask-1"];
    write_checkpoint(&store, 1, CheckpointKind::Checkpoint, &files(1, &names))
        .await
        .unwrap();
    write_checkpoint(&store, 2, CheckpointKind::Checkpoint, &files(2, &names))
        .await
        .unwrap();
    let path = dir.0.join("chk-00000000000000000002/op-1/subtask-1");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[7] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();

    let restored = store.latest_restorable().await.unwrap().unwrap();
    assert_eq!(restored.metadata.epoch, 1);
    assert_eq!(restored.files, files(1, &names));
    assert_eq!(restored.skipped.len(), 1);
    assert_eq!(restored.skipped[0].epoch, 2);
    let reason = &restored.skipped[0].reason;
    assert!(
        reason.contains("chk-00000000000000000002/op-1/subtask-1")
            && reason.contains("checkpoint 2")
            && reason.contains("checksum"),
        "{reason}"
    );

    let err = store.load(2).await.unwrap_err();
    assert_eq!(err.state, SqlState::DATA_CORRUPTED, "{err}");
    assert!(err.message.contains("op-1/subtask-1"), "{err}");

    // A truncated or missing file is damage too.
    std::fs::write(&path, b"short").unwrap();
    let err = store.load(2).await.unwrap_err();
    assert!(err.message.contains("is 5 bytes long"), "{err}");
    std::fs::remove_file(&path).unwrap();
    let err = store.load(2).await.unwrap_err();
    assert_eq!(err.state, SqlState::DATA_CORRUPTED, "{err}");
    assert!(err.message.contains("missing"), "{err}");
}

#[tokio::test]
async fn selected_files_are_downloaded_to_disk_and_a_damaged_download_is_removed() {
    let dir = TempDir::new("downloads");
    let scratch = TempDir::new("downloads-scratch");
    let store = CheckpointStore::open(dir.0.to_str().unwrap()).unwrap();
    let names = ["db/000001.sst", "db/CURRENT", "op-1/subtask-0"];
    for epoch in [1, 2] {
        write_checkpoint(
            &store,
            epoch,
            CheckpointKind::Checkpoint,
            &files(epoch, &names),
        )
        .await
        .unwrap();
    }
    let downloads = Downloads {
        dir: &scratch.0,
        on_disk: |name| name.starts_with("db/"),
    };
    let restored = store
        .latest_restorable_with(Some(downloads))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restored.metadata.epoch, 2);
    let expected = files(2, &names);
    assert_eq!(
        restored.files.keys().collect::<Vec<_>>(),
        ["op-1/subtask-0"],
        "the rest stays in memory"
    );
    assert_eq!(
        restored.downloaded.keys().collect::<Vec<_>>(),
        ["db/000001.sst", "db/CURRENT"]
    );
    for (name, path) in &restored.downloaded {
        assert!(path.starts_with(&scratch.0), "{path:?}");
        assert_eq!(std::fs::read(path).unwrap(), expected[name]);
    }

    // A damaged file of the newest checkpoint: its download goes, the previous is used.
    let path = dir.0.join("chk-00000000000000000002/db/000001.sst");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let scratch = TempDir::new("downloads-damaged");
    let downloads = Downloads {
        dir: &scratch.0,
        on_disk: |name| name.starts_with("db/"),
    };
    let restored = store
        .latest_restorable_with(Some(downloads))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restored.metadata.epoch, 1);
    assert!(restored.skipped[0].reason.contains("checksum"));
    assert!(
        !downloads.epoch_dir(2).exists(),
        "the damaged checkpoint's download is removed"
    );
    for (name, path) in &restored.downloaded {
        assert_eq!(std::fs::read(path).unwrap(), files(1, &names)[name]);
    }
}

#[tokio::test]
async fn damaged_or_truncated_metadata_falls_back_to_the_previous_checkpoint() {
    let names = ["op-1/subtask-0"];
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("truncated", |b| b.truncate(b.len() - 10)),
        ("flipped", |b| {
            let i = b.len() - 20;
            b[i] ^= 0x01;
        }),
        ("headless", |b| b.retain(|&c| c != b'\n')),
    ];
    for (what, damage) in damages {
        let mem = Arc::new(InMemory::new());
        let store = memory_store(&mem);
        write_checkpoint(&store, 1, CheckpointKind::Checkpoint, &files(1, &names))
            .await
            .unwrap();
        write_checkpoint(&store, 2, CheckpointKind::Checkpoint, &files(2, &names))
            .await
            .unwrap();
        damage_object(&mem, "job-1/chk-00000000000000000002/_metadata", damage).await;

        assert_eq!(store.list().await.unwrap().len(), 1, "{what}");
        let invalid = store.inspect().await.unwrap().invalid;
        assert_eq!(invalid.len(), 1, "{what}");
        let restored = store.latest_restorable().await.unwrap().unwrap();
        assert_eq!(restored.metadata.epoch, 1, "{what}");
        assert_eq!(restored.skipped, invalid, "{what}");
        assert_eq!(store.next_epoch().await.unwrap(), 3, "{what}");
        assert!(
            invalid[0]
                .reason
                .contains("memory:///job-1/chk-00000000000000000002/_metadata"),
            "{what}: {}",
            invalid[0].reason
        );
        let err = store.load(2).await.unwrap_err();
        assert_eq!(err.state, SqlState::DATA_CORRUPTED, "{what}: {err}");

        // Epochs keep increasing past the damaged one, and pruning leaves it alone.
        let err = write_checkpoint(&store, 2, CheckpointKind::Checkpoint, &files(2, &names))
            .await
            .unwrap_err();
        assert_eq!(
            err.state,
            SqlState::INVALID_PARAMETER_VALUE,
            "{what}: {err}"
        );
        let store = store.retain(1);
        write_checkpoint(&store, 3, CheckpointKind::Checkpoint, &files(3, &names))
            .await
            .unwrap();
        assert!(
            object_names(mem.as_ref())
                .await
                .contains(&"job-1/chk-00000000000000000002/_metadata".to_string())
        );
        store.delete(2).await.unwrap();
        assert_eq!(store.inspect().await.unwrap().invalid, vec![], "{what}");
    }
}

#[tokio::test]
async fn when_every_checkpoint_is_damaged_restoring_fails_instead_of_starting_over() {
    let mem = Arc::new(InMemory::new());
    let store = memory_store(&mem);
    write_checkpoint(&store, 1, CheckpointKind::Checkpoint, &files(1, &["a"]))
        .await
        .unwrap();
    damage_object(&mem, "job-1/chk-00000000000000000001/a", |b| b[0] ^= 1).await;
    let err = store.latest_restorable().await.unwrap_err();
    assert_eq!(err.state, SqlState::DATA_CORRUPTED);
    assert!(
        err.message
            .contains("no checkpoint in memory:///job-1 can be restored"),
        "{err}"
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_checkpoints_and_every_savepoint() {
    let dir = TempDir::new("retention");
    let store = CheckpointStore::open(dir.0.to_str().unwrap())
        .unwrap()
        .retain(2);
    for epoch in 1..=5 {
        let kind = if epoch == 2 {
            CheckpointKind::Savepoint
        } else {
            CheckpointKind::Checkpoint
        };
        write_checkpoint(&store, epoch, kind, &files(epoch, &["op/0", "op/1"]))
            .await
            .unwrap();
    }
    let epochs: Vec<u64> = store
        .list()
        .await
        .unwrap()
        .iter()
        .map(|m| m.epoch)
        .collect();
    assert_eq!(epochs, vec![2, 4, 5]);
    let local = LocalFileSystem::new_with_prefix(&dir.0).unwrap();
    let mut expected = Vec::new();
    for epoch in [2, 4, 5] {
        for name in ["_metadata", "op/0", "op/1"] {
            expected.push(format!("chk-{epoch:020}/{name}"));
        }
    }
    assert_eq!(object_names(&local).await, expected);
    // The directories of pruned checkpoints are gone too, not just their files.
    let mut dirs: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    assert_eq!(dirs, vec![epoch_dir(2), epoch_dir(4), epoch_dir(5)]);

    // A savepoint goes only when deleted; deleting what does not exist is an error.
    store.delete(2).await.unwrap();
    assert!(!dir.0.join(epoch_dir(2)).exists());
    let err = store.delete(2).await.unwrap_err();
    assert_eq!(err.state, SqlState::UNDEFINED_OBJECT, "{err}");
    let err = store.load(3).await.unwrap_err();
    assert_eq!(err.state, SqlState::UNDEFINED_OBJECT, "{err}");
}

#[tokio::test]
async fn files_shared_with_an_older_checkpoint_live_as_long_as_a_kept_one_references_them() {
    let mem = Arc::new(InMemory::new());
    let store = memory_store(&mem).retain(1);
    let first = write_checkpoint(
        &store,
        1,
        CheckpointKind::Checkpoint,
        &files(1, &["sst/1", "sst/2"]),
    )
    .await
    .unwrap();
    // Checkpoint 2 is incremental: it reuses sst/1 from epoch 1 and adds sst/3.
    let sst3 = store
        .put_state(2, "sst/3", Bytes::from_static(b"three"))
        .await
        .unwrap();
    let mut second = first.clone();
    second.epoch = 2;
    second.files.remove("sst/2");
    second.files.insert("sst/3".to_string(), sst3);
    store.commit(&second).await.unwrap();
    assert_eq!(
        object_names(mem.as_ref()).await,
        vec![
            "job-1/chk-00000000000000000001/sst/1",
            "job-1/chk-00000000000000000002/_metadata",
            "job-1/chk-00000000000000000002/sst/3",
        ]
    );
    let restored = store.latest_restorable().await.unwrap().unwrap();
    assert_eq!(restored.files["sst/1"], files(1, &["sst/1"])["sst/1"]);
    assert_eq!(restored.files["sst/3"], Bytes::from_static(b"three"));

    write_checkpoint(&store, 3, CheckpointKind::Checkpoint, &files(3, &["sst/4"]))
        .await
        .unwrap();
    assert_eq!(
        object_names(mem.as_ref()).await,
        vec![
            "job-1/chk-00000000000000000003/_metadata",
            "job-1/chk-00000000000000000003/sst/4",
        ]
    );
}

#[tokio::test]
async fn bad_urls_names_references_and_epochs_are_refused_with_what_was_wrong() {
    for url in [
        "",
        "ftp://host/x",
        "file://relative/x",
        "s3://",
        "s3:///prefix",
    ] {
        let err = CheckpointStore::open(url).unwrap_err();
        assert_eq!(err.state, SqlState::INVALID_PARAMETER_VALUE, "{url}: {err}");
        assert!(err.message.contains(&format!("\"{url}\"")), "{url}: {err}");
    }
    let err =
        CheckpointStore::open_with_options("s3://b/p", [("aws_no_such_option", "1")]).unwrap_err();
    assert!(err.message.contains("aws_no_such_option"), "{err}");

    let mem = Arc::new(InMemory::new());
    let store = memory_store(&mem);
    for name in ["", "_metadata", "a//b", "a/../b", "a b", "/abs"] {
        let err = store
            .put_state(1, name, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert_eq!(
            err.state,
            SqlState::INVALID_PARAMETER_VALUE,
            "{name:?}: {err}"
        );
    }

    write_checkpoint(&store, 5, CheckpointKind::Checkpoint, &files(5, &["a"]))
        .await
        .unwrap();
    for epoch in [4, 5] {
        let err = write_checkpoint(
            &store,
            epoch,
            CheckpointKind::Checkpoint,
            &files(epoch, &["a"]),
        )
        .await
        .unwrap_err();
        assert!(
            err.message
                .contains(&format!("cannot complete checkpoint {epoch}"))
                && err.message.contains("checkpoint 5 already exists"),
            "{err}"
        );
    }
    // A savepoint may not borrow files from a checkpoint that pruning will delete.
    let borrowed = store.list().await.unwrap().remove(0);
    let mut savepoint = borrowed.clone();
    savepoint.epoch = 6;
    savepoint.kind = CheckpointKind::Savepoint;
    let err = store.commit(&savepoint).await.unwrap_err();
    assert!(err.message.contains("its own directory"), "{err}");
    // Nor may a checkpoint reference files of a later epoch.
    let mut future = borrowed;
    future.epoch = 6;
    future.files.get_mut("a").unwrap().path = "chk-00000000000000000007/a".to_string();
    assert!(store.commit(&future).await.is_err());
    assert_eq!(store.list().await.unwrap().len(), 1);
}
