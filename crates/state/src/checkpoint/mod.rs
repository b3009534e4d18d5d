//! The checkpoint store: the storage side of the checkpoint protocol.
//!
//! When barrier `n` is aligned, each subtask snapshots its state and uploads it with
//! [`CheckpointStore::put_state`]; when every subtask has acknowledged, the coordinator
//! writes the checkpoint's metadata with [`CheckpointStore::commit`]. The metadata is one
//! object written last in one put (atomic on a local filesystem and on S3) and carries a
//! checksum of itself. **A checkpoint without valid metadata does not exist**: a crash at
//! any step before the metadata put leaves files nobody reads, which a later commit
//! deletes. On restart, [`CheckpointStore::latest_restorable`] returns the newest
//! checkpoint whose metadata and every state file verify, falling back past damaged ones.
//!
//! Layout under the store's prefix (a directory or an S3 key prefix):
//!
//! ```text
//! chk-00000000000000000007/mv-3/chain-0/subtask-1/op-2   state files of epoch 7
//! chk-00000000000000000007/_metadata                      written last
//! ```
//!
//! Epochs must increase: a commit for an epoch not newer than the newest completed one
//! is refused (it was subsumed). After each commit the store keeps the newest
//! [`CheckpointStore::retain`] checkpoints and every savepoint, and deletes every other
//! object in older epoch directories that no kept metadata references. Metadata may
//! reference files in an older checkpoint's directory (incremental checkpoints share
//! unchanged files); those survive as long as a kept checkpoint references them.
//! Savepoints must be self-contained (files only in their own directory), so deleting
//! older checkpoints never breaks them.
//!
//! One process commits to a store at a time (the coordinator); the store serializes its
//! own commits and deletes, not those of other processes.

mod metadata;
mod retention;
#[cfg(test)]
mod tests;

pub use metadata::{CheckpointKind, CheckpointMetadata, StateFileRef};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_common::error::{Result, SluiceError, SqlState};

/// Completed checkpoints kept by default, besides savepoints.
pub const DEFAULT_RETAINED_CHECKPOINTS: usize = 3;

/// Name of the metadata object in an epoch directory.
const METADATA: &str = "_metadata";

/// How many objects are read or written concurrently by one call.
const CONCURRENCY: usize = 8;

/// Where checkpoints live: an `object_store` (local directory or S3 bucket) and a prefix
/// in it. Cheap to clone; clones share the store and its commit lock.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    shared: Arc<Shared>,
    retain: usize,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The URL the store was opened with, for error messages.
    url: String,
    /// The directory when the store is a local filesystem: pruning also removes the
    /// directories and the half-written temporary files a crash leaves there, which
    /// `object_store` does not list.
    local_root: Option<PathBuf>,
    /// Serializes commits and deletes, which both prune.
    commit_lock: tokio::sync::Mutex<()>,
}

/// A checkpoint read back and verified, ready to restore from.
#[derive(Debug, Clone)]
pub struct RestoredCheckpoint {
    pub metadata: CheckpointMetadata,
    /// Logical name -> contents, every file verified against its size and checksum.
    pub files: BTreeMap<String, Bytes>,
    /// Logical name -> the local file it was downloaded to and verified in (the files
    /// [`Downloads::on_disk`] selects).
    pub downloaded: BTreeMap<String, PathBuf>,
    /// Newer checkpoints that were passed over, newest first, with the reason.
    pub skipped: Vec<SkippedCheckpoint>,
}

/// Where a restore keeps the state files it reads: in memory, except those `on_disk`
/// selects by name, which are streamed into `dir/chk-<epoch>/<name>` (state larger
/// than memory, opened where it lies). A checkpoint that turns out damaged has its
/// directory there removed.
#[derive(Debug, Clone, Copy)]
pub struct Downloads<'a> {
    pub dir: &'a std::path::Path,
    pub on_disk: fn(&str) -> bool,
}

impl Downloads<'_> {
    fn epoch_dir(&self, epoch: u64) -> PathBuf {
        self.dir.join(epoch_dir(epoch))
    }
}

/// A checkpoint that exists in the store but cannot be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedCheckpoint {
    pub epoch: u64,
    pub reason: String,
}

/// What the store holds, by epoch.
#[derive(Debug, Clone, Default)]
pub struct CheckpointListing {
    /// Completed checkpoints and savepoints whose metadata verifies, oldest first. Their
    /// state files are not checked here.
    pub completed: Vec<CheckpointMetadata>,
    /// Epochs whose metadata exists but fails verification, oldest first. Automatic
    /// pruning leaves them for a person to look at; [`CheckpointStore::delete`] removes
    /// them.
    pub invalid: Vec<SkippedCheckpoint>,
    /// Epochs with files but no metadata: in progress, or abandoned by a crash.
    pub incomplete: Vec<u64>,
}

impl CheckpointStore {
    /// Opens the store at `url`: `file:///abs/dir`, a filesystem path (created if
    /// missing), or `s3://bucket/prefix`. For S3 the endpoint, credentials and region
    /// come from the standard `AWS_*` environment variables (`AWS_ENDPOINT`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`, ...).
    ///
    /// Fails with INVALID_PARAMETER_VALUE (22023) for a URL it cannot use, and with an
    /// I/O error (58030) when the local directory cannot be created.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with_options(url, std::iter::empty::<(String, String)>())
    }

    /// Like [`open`](Self::open), with S3 settings given explicitly (they override the
    /// environment). Keys are `object_store`'s `AmazonS3ConfigKey` names, e.g.
    /// `aws_endpoint`, `aws_access_key_id`, `aws_secret_access_key`, `aws_region`,
    /// `aws_allow_http`. An unknown key is INVALID_PARAMETER_VALUE; options given for a
    /// local URL are refused the same way.
    pub fn open_with_options<K: AsRef<str>, V: Into<String>>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let options: Vec<(String, String)> = options
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.into()))
            .collect();
        let location =
            crate::object_url::open_object_location(url, "checkpoint store", &options, true)?;
        Ok(Self::new(
            location.store,
            location.prefix,
            url.to_string(),
            location.local_dir,
        ))
    }

    /// Wraps an existing store (tests inject faulty ones). `url_for_messages` names it in
    /// errors. Never fails.
    pub fn from_object_store(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        url_for_messages: String,
    ) -> Self {
        Self::new(store, prefix, url_for_messages, None)
    }

    fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        url: String,
        local_root: Option<PathBuf>,
    ) -> Self {
        CheckpointStore {
            shared: Arc::new(Shared {
                store,
                prefix,
                url: url.trim_end_matches('/').to_string(),
                local_root,
                commit_lock: tokio::sync::Mutex::new(()),
            }),
            retain: DEFAULT_RETAINED_CHECKPOINTS,
        }
    }

    /// Keeps the newest `n` completed checkpoints (at least 1) when pruning; savepoints
    /// are never pruned. The default is [`DEFAULT_RETAINED_CHECKPOINTS`].
    /// How many checkpoints (besides savepoints) commits keep.
    pub fn retained(&self) -> usize {
        self.retain
    }

    pub fn retain(mut self, n: usize) -> Self {
        self.retain = n.max(1);
        self
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Uploads one state file of checkpoint `epoch` as `name`, a `/`-separated logical
    /// name such as `mv-3/chain-0/subtask-1/op-2` (segments of ASCII letters, digits and
    /// `-_.=`, not starting with `_`). Returns the reference to put in the metadata.
    ///
    /// Fails with INVALID_PARAMETER_VALUE for a bad name and with an I/O error (58030)
    /// naming the location when the upload fails. Uploading the same name twice
    /// replaces the file.
    pub async fn put_state(&self, epoch: u64, name: &str, data: Bytes) -> Result<StateFileRef> {
        validate_name(name)?;
        let path = format!("{}/{name}", epoch_dir(epoch));
        let file = StateFileRef {
            path,
            size: data.len() as u64,
            crc32: crc32fast::hash(&data),
        };
        let location = self.location(&file.path)?;
        self.shared
            .store
            .put(&location, PutPayload::from(data))
            .await
            .map_err(|e| {
                SluiceError::io(
                    format!(
                        "uploading state file {} of checkpoint {epoch}",
                        self.describe(&file.path)
                    ),
                    e,
                )
            })?;
        Ok(file)
    }

    /// Reads a state file back and checks its size and checksum.
    ///
    /// A missing, short, long or damaged file is DATA_CORRUPTED (XX001) naming the file
    /// and its epoch; a failed read is an I/O error (58030).
    pub async fn get_state(&self, file: &StateFileRef) -> Result<Bytes> {
        let what = self.label(file)?;
        let data = match self.shared.store.get(&self.location(&file.path)?).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        let data = data.map_err(|e| read_failure(&what, e))?;
        verify(&what, data.len() as u64, crc32fast::hash(&data), file)?;
        Ok(data)
    }

    /// Completes a checkpoint by writing its metadata, in one put, after every state file
    /// it references has been uploaded. Then prunes: older checkpoints beyond
    /// [`retain`](Self::retain), and files of older epochs that no kept checkpoint
    /// references (leftovers of checkpoints that never completed).
    ///
    /// Fails with INVALID_PARAMETER_VALUE (22023), writing nothing, when the epoch is
    /// not newer than the newest completed or damaged one (the message names both), or
    /// when a file reference lies outside the layout. Fails with an I/O error (58030)
    /// when listing or the put fails; the checkpoint then does not exist. Once the put
    /// has succeeded the result is `Ok`: a failed prune is logged and retried by the
    /// next commit.
    pub async fn commit(&self, metadata: &CheckpointMetadata) -> Result<()> {
        let _guard = self.shared.commit_lock.lock().await;
        let epoch = metadata.epoch;
        self.validate_references(metadata)?;
        let mut listing = self.inspect().await?;
        let newest = listing
            .completed
            .iter()
            .map(|m| m.epoch)
            .chain(listing.invalid.iter().map(|s| s.epoch))
            .max();
        if let Some(newest) = newest.filter(|&n| n >= epoch) {
            return Err(SluiceError::invalid_parameter(format!(
                "cannot complete checkpoint {epoch} in {}: checkpoint {newest} already exists \
                 there, and epochs must increase",
                self.shared.url
            )));
        }
        let path = format!("{}/{METADATA}", epoch_dir(epoch));
        self.shared
            .store
            .put(
                &self.location(&path)?,
                PutPayload::from(metadata::encode(metadata)),
            )
            .await
            .map_err(|e| {
                SluiceError::io(
                    format!(
                        "writing metadata {} of checkpoint {epoch}",
                        self.describe(&path)
                    ),
                    e,
                )
            })?;
        tracing::info!(
            epoch,
            kind = ?metadata.kind,
            files = metadata.files.len(),
            bytes = metadata.size_bytes(),
            duration_ms = metadata.duration_ms(),
            alignment_ms = metadata.alignment_ms,
            store = %self.shared.url,
            "checkpoint completed"
        );
        listing.completed.push(metadata.clone());
        if let Err(e) = self.prune(&listing, epoch).await {
            tracing::warn!(epoch, store = %self.shared.url, error = %e,
                "pruning old checkpoints failed; the next commit retries");
        }
        Ok(())
    }

    /// Completed checkpoints and savepoints, oldest first. Metadata that fails
    /// verification is left out with a warning (see [`inspect`](Self::inspect) for it).
    /// Fails with an I/O error when the store cannot be listed or read.
    pub async fn list(&self) -> Result<Vec<CheckpointMetadata>> {
        Ok(self.inspect().await?.completed)
    }

    /// Everything the store holds, by epoch: completed, damaged and incomplete
    /// checkpoints. Reads every metadata object but no state file. Fails with an I/O
    /// error when the store cannot be listed or read.
    pub async fn inspect(&self) -> Result<CheckpointListing> {
        let listed = self
            .shared
            .store
            .list_with_delimiter(Some(&self.shared.prefix))
            .await
            .map_err(|e| SluiceError::io(format!("listing {}", self.shared.url), e))?;
        let epochs: BTreeSet<u64> = listed
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.filename().and_then(parse_epoch_dir))
            .collect();
        let reads: Vec<(u64, Result<Option<CheckpointMetadata>>)> = stream::iter(epochs)
            .map(|epoch| async move { (epoch, self.read_metadata(epoch).await) })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut listing = CheckpointListing::default();
        for (epoch, read) in reads {
            match read {
                Ok(Some(m)) => listing.completed.push(m),
                Ok(None) => listing.incomplete.push(epoch),
                Err(e) if is_damage(&e) => {
                    tracing::warn!(epoch, store = %self.shared.url, error = %e,
                        "ignoring a checkpoint whose metadata does not verify");
                    listing.invalid.push(SkippedCheckpoint {
                        epoch,
                        reason: e.message,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(listing)
    }

    /// The first epoch a (restarted) job may use: one past every epoch the store holds in
    /// any state (completed, damaged or abandoned), so a new checkpoint never mixes with
    /// old files and [`commit`](Self::commit) never refuses it as subsumed. Fails with an
    /// I/O error when the store cannot be listed or read.
    pub async fn next_epoch(&self) -> Result<u64> {
        let listing = self.inspect().await?;
        let newest = listing
            .completed
            .iter()
            .map(|m| m.epoch)
            .chain(listing.invalid.iter().map(|s| s.epoch))
            .chain(listing.incomplete.iter().copied())
            .max();
        Ok(newest.map_or(1, |e| e + 1))
    }

    /// The newest completed checkpoint or savepoint whose metadata and every state file
    /// verify, with the files' contents; `None` when there is none. Damaged ones are
    /// skipped with a warning and listed in [`RestoredCheckpoint::skipped`].
    ///
    /// An I/O failure is an error, never a reason to fall back: restoring an older
    /// checkpoint than necessary would replay effects that sinks may already have
    /// committed. For the same reason, when checkpoints exist but every one is damaged
    /// the result is DATA_CORRUPTED (XX001) listing why, not `None` (which would start
    /// the job from scratch).
    pub async fn latest_restorable(&self) -> Result<Option<RestoredCheckpoint>> {
        self.latest_restorable_with(None).await
    }

    /// [`Self::latest_restorable`], with the files `downloads` selects written to local
    /// files instead of held in memory.
    pub async fn latest_restorable_with(
        &self,
        downloads: Option<Downloads<'_>>,
    ) -> Result<Option<RestoredCheckpoint>> {
        let listing = self.inspect().await?;
        let mut skipped: Vec<SkippedCheckpoint> = listing.invalid.clone();
        for metadata in listing.completed.into_iter().rev() {
            let fetched = self.fetch_files(&metadata, downloads).await;
            if fetched.is_err()
                && let Some(downloads) = downloads
            {
                remove_download(&downloads.epoch_dir(metadata.epoch));
            }
            match fetched {
                Ok((files, downloaded)) => {
                    skipped.retain(|s| s.epoch > metadata.epoch);
                    skipped.sort_by_key(|s| std::cmp::Reverse(s.epoch));
                    return Ok(Some(RestoredCheckpoint {
                        metadata,
                        files,
                        downloaded,
                        skipped,
                    }));
                }
                Err(e) if is_damage(&e) => {
                    tracing::warn!(epoch = metadata.epoch, store = %self.shared.url, error = %e,
                        "skipping a damaged checkpoint, trying the previous one");
                    skipped.push(SkippedCheckpoint {
                        epoch: metadata.epoch,
                        reason: e.message,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if skipped.is_empty() {
            return Ok(None);
        }
        skipped.sort_by_key(|s| std::cmp::Reverse(s.epoch));
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("checkpoint {}: {}", s.epoch, s.reason))
            .collect();
        Err(SluiceError::corrupted(format!(
            "no checkpoint in {} can be restored; delete the damaged ones to start over \
             ({})",
            self.shared.url,
            reasons.join("; ")
        )))
    }

    /// Loads and verifies the checkpoint or savepoint of `epoch`.
    ///
    /// Fails with UNDEFINED_OBJECT (42704) when it does not exist or never completed,
    /// DATA_CORRUPTED (XX001) when its metadata or a state file does not verify, and an
    /// I/O error (58030) when reading fails.
    pub async fn load(&self, epoch: u64) -> Result<RestoredCheckpoint> {
        let Some(metadata) = self.read_metadata(epoch).await? else {
            return Err(SluiceError::new(
                SqlState::UNDEFINED_OBJECT,
                format!(
                    "checkpoint {epoch} does not exist in {} (no completed metadata at {})",
                    self.shared.url,
                    self.describe(&format!("{}/{METADATA}", epoch_dir(epoch)))
                ),
            ));
        };
        let (files, downloaded) = self.fetch_files(&metadata, None).await?;
        Ok(RestoredCheckpoint {
            metadata,
            files,
            downloaded,
            skipped: Vec::new(),
        })
    }

    /// Reads and verifies the metadata of `epoch`; `None` when there is none.
    async fn read_metadata(&self, epoch: u64) -> Result<Option<CheckpointMetadata>> {
        let path = format!("{}/{METADATA}", epoch_dir(epoch));
        let what = format!("metadata {} of checkpoint {epoch}", self.describe(&path));
        let bytes = match self.shared.store.get(&self.location(&path)?).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(SluiceError::io(format!("reading {what}"), e)),
        };
        let metadata = metadata::decode(&bytes, &what)?;
        if metadata.epoch != epoch {
            return Err(SluiceError::corrupted(format!(
                "{what} describes checkpoint {} instead",
                metadata.epoch
            )));
        }
        Ok(Some(metadata))
    }

    /// Reads and verifies every state file of `metadata`.
    /// Reads and verifies every state file of `metadata`: into memory, or the ones
    /// `downloads` selects into local files.
    async fn fetch_files(
        &self,
        metadata: &CheckpointMetadata,
        downloads: Option<Downloads<'_>>,
    ) -> Result<(BTreeMap<String, Bytes>, BTreeMap<String, PathBuf>)> {
        // Owned pairs: a closure over borrowed ones makes the future unusable in spawned
        // tasks (the compiler cannot prove it Send for every lifetime).
        let (local, in_memory): (Vec<(String, StateFileRef)>, Vec<_>) = metadata
            .files
            .iter()
            .map(|(name, file)| (name.clone(), file.clone()))
            .partition(|(name, _)| downloads.is_some_and(|d| (d.on_disk)(name)));
        let files: BTreeMap<String, Bytes> = stream::iter(in_memory)
            .map(|(name, file)| async move {
                Ok::<_, SluiceError>((name, self.get_state(&file).await?))
            })
            .buffered(CONCURRENCY)
            .try_collect::<BTreeMap<_, _>>()
            .await?;
        let mut downloaded = BTreeMap::new();
        if let Some(downloads) = downloads {
            let dir = downloads.epoch_dir(metadata.epoch);
            // A name becomes a local path: one that could leave `dir` is damage.
            for (name, _) in &local {
                validate_name(name).map_err(|e| {
                    SluiceError::corrupted(format!(
                        "checkpoint {} in {}: {}",
                        metadata.epoch, self.shared.url, e.message
                    ))
                })?;
            }
            downloaded = stream::iter(local)
                .map(|(name, file)| {
                    let path = dir.join(&name);
                    async move {
                        self.download_state(&file, &path).await?;
                        Ok::<_, SluiceError>((name, path))
                    }
                })
                .buffered(CONCURRENCY)
                .try_collect::<BTreeMap<_, _>>()
                .await?;
        }
        Ok((files, downloaded))
    }

    /// Streams state file `file` into the local file `path` (creating its directory),
    /// verifying its size and checksum as [`Self::get_state`] does.
    async fn download_state(&self, file: &StateFileRef, path: &std::path::Path) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let what = self.label(file)?;
        let local = |e: std::io::Error| SluiceError::io(format!("writing {}", path.display()), e);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(local)?;
        }
        let mut out = tokio::fs::File::create(path).await.map_err(local)?;
        let mut chunks = match self.shared.store.get(&self.location(&file.path)?).await {
            Ok(got) => got.into_stream(),
            Err(e) => return Err(read_failure(&what, e)),
        };
        let (mut size, mut crc) = (0u64, crc32fast::Hasher::new());
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| read_failure(&what, e))?;
            size += chunk.len() as u64;
            crc.update(&chunk);
            out.write_all(&chunk).await.map_err(local)?;
        }
        out.flush().await.map_err(local)?;
        verify(&what, size, crc.finalize(), file)
    }

    /// How errors name state file `file`: "state file <where> of checkpoint <epoch>".
    /// Fails with DATA_CORRUPTED (XX001) when its path is not `chk-<epoch>/<name>`.
    fn label(&self, file: &StateFileRef) -> Result<String> {
        let epoch = epoch_of_path(&file.path).ok_or_else(|| {
            SluiceError::corrupted(format!(
                "state file reference {:?} in {} is not of the form chk-<epoch>/<name>",
                file.path, self.shared.url
            ))
        })?;
        Ok(format!(
            "state file {} of checkpoint {epoch}",
            self.describe(&file.path)
        ))
    }

    /// Checks that every file of `metadata` lies where the layout and the retention
    /// rules allow (see the module documentation).
    fn validate_references(&self, metadata: &CheckpointMetadata) -> Result<()> {
        for (name, file) in &metadata.files {
            let file_epoch = epoch_of_path(&file.path);
            let allowed = match metadata.kind {
                CheckpointKind::Savepoint => file_epoch == Some(metadata.epoch),
                CheckpointKind::Checkpoint => file_epoch.is_some_and(|e| e <= metadata.epoch),
            };
            if !allowed || Path::parse(&file.path).is_err() {
                return Err(SluiceError::invalid_parameter(format!(
                    "{:?} checkpoint {} in {} cannot reference {name:?} at {:?}: {}",
                    metadata.kind,
                    metadata.epoch,
                    self.shared.url,
                    file.path,
                    match metadata.kind {
                        CheckpointKind::Savepoint =>
                            "a savepoint's files must lie in its own directory",
                        CheckpointKind::Checkpoint =>
                            "files must lie in the directory of this or an older epoch",
                    }
                )));
            }
        }
        Ok(())
    }

    /// The object location of a path relative to the prefix.
    fn location(&self, relative: &str) -> Result<Path> {
        let relative = Path::parse(relative).map_err(|e| {
            SluiceError::invalid_parameter(format!(
                "bad checkpoint file path {relative:?} in {}: {e}",
                self.shared.url
            ))
        })?;
        Ok(self.shared.prefix.parts().chain(relative.parts()).collect())
    }

    /// The path of `location` relative to the prefix.
    fn relative(&self, location: &Path) -> Option<String> {
        let parts: Vec<String> = location
            .prefix_match(&self.shared.prefix)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }

    /// A relative path as a full URL, for messages.
    fn describe(&self, relative: &str) -> String {
        format!("{}/{relative}", self.shared.url)
    }
}

/// The directory name of an epoch.
fn epoch_dir(epoch: u64) -> String {
    format!("chk-{epoch:020}")
}

fn parse_epoch_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("chk-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks a state file read as `what` (`size` bytes with checksum `crc`) against its
/// reference: DATA_CORRUPTED (XX001) saying which differs.
fn verify(what: &str, size: u64, crc: u32, file: &StateFileRef) -> Result<()> {
    if size != file.size {
        return Err(SluiceError::corrupted(format!(
            "{what} is {size} bytes long, the metadata says {}",
            file.size
        )));
    }
    if crc != file.crc32 {
        return Err(SluiceError::corrupted(format!(
            "{what} fails its checksum (crc32 {crc:08x}, expected {:08x})",
            file.crc32
        )));
    }
    Ok(())
}

/// A failed read of the state file `what`: a missing file is damage (DATA_CORRUPTED),
/// anything else an I/O error (58030).
fn read_failure(what: &str, e: object_store::Error) -> SluiceError {
    match e {
        object_store::Error::NotFound { .. } => {
            SluiceError::corrupted(format!("{what} is missing"))
        }
        e => SluiceError::io(format!("reading {what}"), e),
    }
}

/// Removes what a failed download of a checkpoint left in `dir`.
fn remove_download(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e,
            "could not remove the files of a checkpoint that failed to restore");
    }
}

/// The epoch of a path relative to the prefix (`chk-<epoch>/...`).
pub fn epoch_of_path(relative: &str) -> Option<u64> {
    let (dir, rest) = relative.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    parse_epoch_dir(dir)
}

/// Whether an error means the stored data is damaged (as opposed to unreachable).
fn is_damage(e: &SluiceError) -> bool {
    e.state == SqlState::DATA_CORRUPTED || e.state == SqlState::FEATURE_NOT_SUPPORTED
}

fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(SluiceError::invalid_parameter(format!(
            "bad state file name {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.starts_with('_') {
        return bad("names starting with '_' are reserved for the checkpoint store");
    }
    for segment in name.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("segments must be non-empty and not '.' or '..'");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
        {
            return bad("segments may hold only ASCII letters, digits and -_.=");
        }
    }
    Ok(())
}
