//! Retention: what a commit or an explicit delete removes, and in which order.
//!
//! Metadata goes first, so a crash part-way leaves directories that no longer count as
//! checkpoints (which the next prune removes), never a checkpoint with missing files.
//! A file is removed only when no kept metadata references it, which is what lets
//! incremental checkpoints share files with older ones.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use sluice_common::error::{Result, SluiceError, SqlState};

use super::{
    CheckpointKind, CheckpointListing, CheckpointMetadata, CheckpointStore, METADATA, epoch_dir,
    epoch_of_path,
};

impl CheckpointStore {
    /// Deletes checkpoint or savepoint `epoch`: its metadata first (so a crash leaves
    /// files nobody reads), then its files that no other completed checkpoint references.
    ///
    /// Fails with UNDEFINED_OBJECT (42704) when nothing of that epoch exists, and with an
    /// I/O error (58030) when listing or deleting fails.
    pub async fn delete(&self, epoch: u64) -> Result<()> {
        let _guard = self.shared.commit_lock.lock().await;
        let listing = self.inspect().await?;
        let exists = listing.completed.iter().any(|m| m.epoch == epoch)
            || listing.invalid.iter().any(|s| s.epoch == epoch)
            || listing.incomplete.contains(&epoch);
        if !exists {
            return Err(SluiceError::new(
                SqlState::UNDEFINED_OBJECT,
                format!("checkpoint {epoch} does not exist in {}", self.shared.url),
            ));
        }
        let metadata_path = format!("{}/{METADATA}", epoch_dir(epoch));
        self.delete_objects(vec![self.location(&metadata_path)?])
            .await?;
        let live = live_files(listing.completed.iter().filter(|m| m.epoch != epoch));
        let objects = self.list_objects().await?;
        let doomed: Vec<Path> = objects
            .into_iter()
            .filter(|(e, rel, _)| *e == epoch && !live.contains(rel))
            .map(|(_, _, location)| location)
            .collect();
        self.delete_objects(doomed).await?;
        if !live.iter().any(|f| epoch_of_path(f) == Some(epoch)) {
            self.remove_local_dir(epoch);
        }
        tracing::info!(epoch, store = %self.shared.url, "checkpoint deleted");
        Ok(())
    }

    /// Deletes what the commit of `newest` made obsolete. `listing` includes `newest`.
    pub(super) async fn prune(&self, listing: &CheckpointListing, newest: u64) -> Result<()> {
        let kept_checkpoints: BTreeSet<u64> = listing
            .completed
            .iter()
            .filter(|m| m.kind == CheckpointKind::Checkpoint)
            .map(|m| m.epoch)
            .rev()
            .take(self.retain)
            .collect();
        let (kept, pruned): (Vec<&CheckpointMetadata>, Vec<&CheckpointMetadata>) =
            listing.completed.iter().partition(|m| {
                m.kind == CheckpointKind::Savepoint || kept_checkpoints.contains(&m.epoch)
            });
        // Metadata first: a crash part-way leaves directories that no longer count as
        // checkpoints, which the next prune deletes.
        let metadata_paths = pruned
            .iter()
            .map(|m| self.location(&format!("{}/{METADATA}", epoch_dir(m.epoch))))
            .collect::<Result<Vec<_>>>()?;
        self.delete_objects(metadata_paths).await?;

        let live = live_files(kept.iter().copied());
        let kept_epochs: BTreeSet<u64> = kept.iter().map(|m| m.epoch).collect();
        let damaged: BTreeSet<u64> = listing.invalid.iter().map(|s| s.epoch).collect();
        let prunable = |epoch: u64| epoch < newest && !damaged.contains(&epoch);
        let objects = self.list_objects().await?;
        let mut doomed = Vec::new();
        let mut dirs_in_use = BTreeSet::new();
        for (epoch, rel, location) in objects {
            if !prunable(epoch) {
                continue;
            }
            let is_kept_metadata =
                kept_epochs.contains(&epoch) && rel == format!("{}/{METADATA}", epoch_dir(epoch));
            if is_kept_metadata || live.contains(&rel) {
                dirs_in_use.insert(epoch);
            } else {
                doomed.push(location);
            }
        }
        let doomed_epochs: BTreeSet<u64> = doomed
            .iter()
            .filter_map(|l| self.relative(l).as_deref().and_then(epoch_of_path))
            .collect();
        if !doomed.is_empty() {
            tracing::debug!(objects = doomed.len(), epochs = ?doomed_epochs, store = %self.shared.url,
                "pruning checkpoint files");
        }
        self.delete_objects(doomed).await?;
        for epoch in pruned.iter().map(|m| m.epoch).chain(doomed_epochs) {
            if prunable(epoch) && !dirs_in_use.contains(&epoch) && !kept_epochs.contains(&epoch) {
                self.remove_local_dir(epoch);
            }
        }
        Ok(())
    }

    /// Every object under the prefix in an epoch directory: (epoch, relative path,
    /// location).
    async fn list_objects(&self) -> Result<Vec<(u64, String, Path)>> {
        let metas: Vec<_> = self
            .shared
            .store
            .list(Some(&self.shared.prefix))
            .try_collect()
            .await
            .map_err(|e| SluiceError::io(format!("listing {}", self.shared.url), e))?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                let rel = self.relative(&meta.location)?;
                Some((epoch_of_path(&rel)?, rel, meta.location))
            })
            .collect())
    }

    async fn delete_objects(&self, locations: Vec<Path>) -> Result<()> {
        if locations.is_empty() {
            return Ok(());
        }
        let results: Vec<_> = self
            .shared
            .store
            .delete_stream(stream::iter(locations.into_iter().map(Ok)).boxed())
            .collect()
            .await;
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(SluiceError::io(
                        format!("deleting checkpoint files in {}", self.shared.url),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// On a local store, removes what is left of an epoch directory: empty directories
    /// and the temporary files of uploads a crash interrupted, which `object_store`
    /// neither lists nor deletes.
    fn remove_local_dir(&self, epoch: u64) {
        let Some(root) = &self.shared.local_root else {
            return;
        };
        let dir = root.join(epoch_dir(epoch));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
                "could not remove a pruned checkpoint directory"),
        }
    }
}

/// Every state file referenced by `metadata`.
fn live_files<'a>(metadata: impl IntoIterator<Item = &'a CheckpointMetadata>) -> BTreeSet<String> {
    metadata
        .into_iter()
        .flat_map(|m| m.files.values().map(|f| f.path.clone()))
        .collect()
}
