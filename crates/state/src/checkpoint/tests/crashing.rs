//! A store that dies: every call fails once a set number of mutations has succeeded.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Delegates to another store and "crashes" once `allowed` mutations (puts, deletes,
/// copies) have succeeded: from then on every call fails, as if the process had died
/// right after the last one.
#[derive(Debug)]
pub(super) struct CrashingStore {
    inner: Arc<dyn ObjectStore>,
    pub(super) budget: Arc<Budget>,
}

#[derive(Debug)]
pub(super) struct Budget {
    allowed: usize,
    pub(super) done: AtomicUsize,
}

impl Budget {
    fn check(&self) -> object_store::Result<()> {
        if self.done.load(Ordering::SeqCst) >= self.allowed {
            return Err(object_store::Error::Generic {
                store: "CrashingStore",
                source: "simulated crash".into(),
            });
        }
        Ok(())
    }

    fn mutate(&self) -> object_store::Result<()> {
        self.check()?;
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl CrashingStore {
    pub(super) fn new(inner: Arc<dyn ObjectStore>, allowed: usize) -> Self {
        CrashingStore {
            inner,
            budget: Arc::new(Budget {
                allowed,
                done: AtomicUsize::new(0),
            }),
        }
    }
}

impl fmt::Display for CrashingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrashingStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CrashingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.budget.mutate()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(object_store::Error::NotImplemented {
            operation: "put_multipart_opts".into(),
            implementer: "CrashingStore".into(),
        })
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.budget.check()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.clone();
        let budget = self.budget.clone();
        locations
            .then(move |location| {
                let inner = inner.clone();
                let budget = budget.clone();
                async move {
                    let location = location?;
                    budget.mutate()?;
                    inner.delete(&location).await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.budget.check() {
            Ok(()) => self.inner.list(prefix),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.budget.check()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.budget.mutate()?;
        self.inner.copy_opts(from, to, options).await
    }
}
