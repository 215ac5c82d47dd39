//! A local disk cache of a shared store's Parquet files, for the readers (queries, detection,
//! reports, the API) of a node.
//!
//! Store files are never changed after upload (every writer names its files uniquely, and
//! compaction writes new ones), so a cached copy is always right: the cache needs no
//! invalidation, only a size bound. A file is fetched whole on its first read and later reads
//! (the footer, then each column chunk a query needs: DataFusion asks for many small ranges)
//! are served from local disk instead of one HTTP request each. Files larger than a quarter of
//! the bound are read from the store as they are. The cache directory may be shared by the
//! processes of one node (the service and its SQL workers): files are written under a
//! temporary name and renamed, and a file evicted by another process is simply fetched again.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// An object store whose Parquet files are read through a local cache.
pub struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    dir: PathBuf,
    /// Bytes the cache directory may hold.
    cap: u64,
    /// What each cached object's metadata was when it was fetched.
    metas: Mutex<HashMap<ObjPath, ObjectMeta>>,
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({}, {})", self.inner, self.dir.display())
    }
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({})", self.inner)
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "cache",
        source: Box::new(e),
    }
}

impl CachedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, dir: PathBuf, cap: u64) -> Self {
        Self {
            inner,
            dir,
            cap,
            metas: Mutex::new(HashMap::new()),
        }
    }

    fn local(&self, location: &ObjPath) -> PathBuf {
        let h = blake3::hash(location.as_ref().as_bytes());
        self.dir.join(format!("{}.parquet", &h.to_hex()[..32]))
    }

    fn meta(&self, location: &ObjPath) -> Option<ObjectMeta> {
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(location)
            .cloned()
    }

    fn remember(&self, meta: ObjectMeta) {
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(meta.location.clone(), meta);
    }

    /// Keeps the directory under the bound: oldest files (by last use) go first.
    fn evict(&self) -> std::io::Result<()> {
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_file() {
                files.push((m.modified()?, m.len(), e.path()));
            }
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        if total <= self.cap {
            return Ok(());
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.cap / 10 * 8 {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        Ok(())
    }

    /// The cached copy of `location`, fetched whole if needed; `None` when it is not worth
    /// caching (too large) or the cache cannot take it.
    async fn cached(
        &self,
        location: &ObjPath,
    ) -> object_store::Result<Option<(PathBuf, ObjectMeta)>> {
        let local = self.local(location);
        if local.exists() {
            let meta = match self.meta(location) {
                Some(m) => m,
                None => {
                    let m = self.inner.head(location).await?;
                    self.remember(m.clone());
                    m
                }
            };
            // Last use, for eviction.
            if let Ok(f) = std::fs::File::options().append(true).open(&local) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Ok(Some((local, meta)));
        }
        let head = self.inner.head(location).await?;
        if head.size > self.cap / 4 {
            return Ok(None);
        }
        let got = self.inner.get(location).await?;
        let meta = got.meta.clone();
        let bytes = got.bytes().await?;
        let tmp = self.dir.join(format!(
            ".{}-{}.tmp",
            std::process::id(),
            blake3::hash(location.as_ref().as_bytes()).to_hex()
        ));
        let stored = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &local));
        if let Err(e) = stored {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(dir = %self.dir.display(), error = %e, "file cache cannot take a file; reading from the store");
            return Ok(None);
        }
        self.remember(meta.clone());
        if let Err(e) = self.evict() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "file cache eviction failed");
        }
        Ok(Some((local, meta)))
    }
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let plain = options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        if !plain || !location.as_ref().ends_with(".parquet") {
            return self.inner.get_opts(location, options).await;
        }
        let Some((local, meta)) = self.cached(location).await? else {
            return self.inner.get_opts(location, options).await;
        };
        let range = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(generic)?,
            None => 0..meta.size,
        };
        let read = {
            let range = range.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
                use std::os::unix::fs::FileExt;
                let f = std::fs::File::open(&local)?;
                let mut buf = vec![0u8; (range.end - range.start) as usize];
                f.read_exact_at(&mut buf, range.start)?;
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(generic)?
        };
        let bytes = match read {
            Ok(b) => b,
            // Evicted by another process between the check and the read.
            Err(_) => return self.inner.get_opts(location, options).await,
        };
        let payload = if options.head {
            GetResultPayload::Stream(Box::pin(futures::stream::empty()))
        } else {
            GetResultPayload::Stream(Box::pin(futures::stream::once(async move { Ok(bytes) })))
        };
        Ok(GetResult {
            payload,
            meta,
            range,
            attributes: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn ranges_come_from_the_cached_copy_and_the_bound_holds() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let store = CachedStore::new(inner.clone(), dir.path().join("c"), 4000);
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for i in 0..6 {
            inner
                .put(
                    &ObjPath::from(format!("events/f{i}.parquet")),
                    body.clone().into(),
                )
                .await
                .unwrap();
        }
        let p = ObjPath::from("events/f0.parquet");
        let r = store.get_range(&p, 10..20).await.unwrap();
        assert_eq!(&r[..], &body[10..20]);
        // Served from disk now: the store's copy can go and reads still answer.
        inner.delete(&p).await.unwrap();
        let r = store.get_range(&p, 990..1000).await.unwrap();
        assert_eq!(&r[..], &body[990..1000]);
        assert_eq!(store.head(&p).await.unwrap().size, 1000);
        for i in 1..6 {
            store
                .get_range(&ObjPath::from(format!("events/f{i}.parquet")), 0..1)
                .await
                .unwrap();
        }
        let held: u64 = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(held <= 4000, "{held}");
        // Other objects pass through.
        inner
            .put(&ObjPath::from("manifest.json"), b"{}".to_vec().into())
            .await
            .unwrap();
        let m = store
            .get(&ObjPath::from("manifest.json"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&m[..], b"{}");
    }
}
