//! Where the event store lives: a local directory, or a prefix in object storage (Azure Blob
//! and ADLS Gen2, S3, Google Cloud Storage) reached through the `object_store` crate, the same
//! one DataFusion reads Parquet from.
//!
//! Every object-store call runs its HTTP on one process-wide I/O runtime
//! (`SpawnedReqwestConnector`), so a store can be used from any async runtime (the CLI's, the
//! SQL workers', DataFusion's) and, through [`Remote::block`], from the store writer's plain
//! threads, without a connection ever outliving the runtime that opened it.

use bytes::Bytes;
use datafusion::prelude::SessionContext;
use object_store::path::Path as ObjPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
    client::SpawnedReqwestConnector,
};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

/// Why a location could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("{url}: {msg}")]
    Url { url: String, msg: String },
    #[error("storage option {key:?}: {msg}")]
    Option { key: String, msg: String },
    #[error("{url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// Settings of an object store (`account_name`, `access_key`, `sas_token`, `client_id`,
/// `client_secret`, `tenant_id`, `use_azure_cli`, `endpoint`, `allow_http`, … as the
/// `object_store` crate names them for Azure, S3 and GCS). Values may be `${env:…}` or
/// `${file:…}` references; they never reach a log line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(BTreeMap<String, String>);

impl fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl StorageOptions {
    /// Adds `key = value` (a later value of the same key wins).
    pub fn set(&mut self, key: &str, value: &str) {
        self.0
            .insert(key.trim().to_ascii_lowercase(), value.to_owned());
    }

    /// Parses `key=value` pairs separated by commas or newlines (the form of
    /// `KVWATCH_STORAGE_OPTIONS` and of repeated `--storage-option`).
    pub fn parse_pairs(&mut self, text: &str) -> Result<(), LocationError> {
        for pair in text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').ok_or_else(|| LocationError::Option {
                key: pair.split(':').next().unwrap_or_default().to_owned(),
                msg: "expected key=value".into(),
            })?;
            self.set(k, v.trim());
        }
        Ok(())
    }

    /// The pairs as `key=value` lines with references left unresolved (what a child process
    /// is handed, so a secret read from a file is read again there, not copied).
    pub fn to_pairs(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The variables a cloud SDK reads (`AZURE_…`, `AWS_…`, `GOOGLE_…`), lowercased, then
    /// these options over them; references resolved.
    fn resolved(&self, env_prefix: &str) -> Result<Vec<(String, String)>, LocationError> {
        let mut all: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(env_prefix))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for (k, v) in &self.0 {
            let v = crate::secret::resolve(v).map_err(|e| LocationError::Option {
                key: k.clone(),
                msg: e.to_string(),
            })?;
            all.insert(k.clone(), v);
        }
        Ok(all.into_iter().collect())
    }
}

/// A data location: a directory, or a prefix in an object store.
#[derive(Clone)]
pub enum Location {
    Local(PathBuf),
    Remote(Arc<Remote>),
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "Local({})", p.display()),
            Location::Remote(r) => write!(f, "Remote({})", r.url),
        }
    }
}

impl PartialEq for Location {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Location::Local(a), Location::Local(b)) => a == b,
            (Location::Remote(a), Location::Remote(b)) => a.url == b.url,
            _ => false,
        }
    }
}
impl Eq for Location {}

/// Whether `spec` names an object store (`scheme://…`) rather than a directory.
pub fn is_url(spec: &str) -> bool {
    spec.split_once("://")
        .is_some_and(|(s, _)| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
}

impl Location {
    /// `spec` is a path, or an `az://container/prefix`, `abfss://container@account.dfs.core.windows.net/prefix`,
    /// `s3://bucket/prefix` or `gs://bucket/prefix` URL (`file://` is a path).
    pub fn parse(spec: &str, opts: &StorageOptions) -> Result<Location, LocationError> {
        if !is_url(spec) {
            return Ok(Location::Local(PathBuf::from(spec)));
        }
        let bad = |msg: String| LocationError::Url {
            url: spec.to_owned(),
            msg,
        };
        let url = url::Url::parse(spec).map_err(|e| bad(e.to_string()))?;
        if url.scheme() == "file" {
            let p = url
                .to_file_path()
                .map_err(|()| bad("not a local path".into()))?;
            return Ok(Location::Local(p));
        }
        Remote::open(spec, url, opts).map(|r| Location::Remote(Arc::new(r)))
    }
}

impl Location {
    /// `rel` (a `/`-separated path below the location) as DataFusion names it: a path, or a
    /// URL of the object store.
    pub fn file(&self, rel: &str) -> String {
        match self {
            Location::Local(root) => root.join(rel).to_string_lossy().into_owned(),
            Location::Remote(r) => r.file_url(rel),
        }
    }

    /// Makes the location readable by `ctx` (nothing to do for a directory).
    pub fn register(&self, ctx: &SessionContext) {
        if let Location::Remote(r) = self {
            r.register(ctx);
        }
    }

    /// The location as the user wrote it.
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Remote(r) => r.url.clone(),
        }
    }
}

/// A prefix in an object store.
pub struct Remote {
    /// The URL as the user gave it, without a trailing slash (for messages and child processes).
    pub url: String,
    /// `scheme://authority`: the key DataFusion's object-store registry finds the store by.
    base: url::Url,
    /// The object path of the location (no leading or trailing slash; may be empty).
    prefix: String,
    pub store: Arc<dyn ObjectStore>,
    /// What readers (DataFusion) go through: the store, or the store behind this node's file
    /// cache ([`Remote::enable_cache`]).
    reader: OnceLock<Arc<dyn ObjectStore>>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

/// The runtime every object-store request runs on (see the module documentation).
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kvwatch-io")
            .enable_all()
            .build()
            .expect("the object-store I/O runtime starts")
    })
}

macro_rules! build_store {
    ($builder:ty, $key:ty, $url:expr, $pairs:expr) => {{
        let mut b = <$builder>::new().with_url($url);
        for (k, v) in $pairs {
            // Variables of other services under the same prefix are not ours to refuse.
            if let Ok(key) = <$key>::from_str(&k) {
                b = b.with_config(key, v);
            }
        }
        b.with_http_connector(SpawnedReqwestConnector::new(io_runtime().handle().clone()))
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
    }};
}

impl Remote {
    fn open(spec: &str, url: url::Url, opts: &StorageOptions) -> Result<Remote, LocationError> {
        let spec = spec.trim_end_matches('/');
        let store_err = |source| LocationError::Store {
            url: spec.to_owned(),
            source,
        };
        let store = match url.scheme() {
            "az" | "azure" | "abfs" | "abfss" | "adl" => {
                let pairs = opts.resolved("AZURE_")?;
                build_store!(
                    object_store::azure::MicrosoftAzureBuilder,
                    object_store::azure::AzureConfigKey,
                    url.as_str(),
                    pairs
                )
                .map_err(store_err)?
            }
            "s3" | "s3a" => {
                let pairs = opts.resolved("AWS_")?;
                build_store!(
                    object_store::aws::AmazonS3Builder,
                    object_store::aws::AmazonS3ConfigKey,
                    url.as_str(),
                    pairs
                )
                .map_err(store_err)?
            }
            "gs" => {
                let pairs = opts.resolved("GOOGLE_")?;
                build_store!(
                    object_store::gcp::GoogleCloudStorageBuilder,
                    object_store::gcp::GoogleConfigKey,
                    url.as_str(),
                    pairs
                )
                .map_err(store_err)?
            }
            other => {
                return Err(LocationError::Url {
                    url: spec.to_owned(),
                    msg: format!(
                        "unknown scheme {other:?}: a path, or az://, abfss://, s3:// or gs://"
                    ),
                });
            }
        };
        let mut base = url.clone();
        base.set_path("/");
        base.set_query(None);
        base.set_fragment(None);
        let prefix = url.path().trim_matches('/').to_owned();
        Ok(Remote {
            url: spec.to_owned(),
            base,
            prefix,
            store,
            reader: OnceLock::new(),
        })
    }

    /// Reads by DataFusion go through a cache of Parquet files in `dir`, at most `cap` bytes
    /// (see [`crate::filecache`]). Once per location; `cap` 0 leaves reads uncached.
    pub fn enable_cache(&self, dir: PathBuf, cap: u64) {
        if cap > 0 {
            let cached = crate::filecache::CachedStore::new(self.store.clone(), dir, cap);
            let _ = self.reader.set(Arc::new(cached));
        }
    }

    /// The object path of `rel` (a `/`-separated path below the location).
    pub fn key(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// `rel` below the location, as a URL DataFusion can scan.
    pub fn file_url(&self, rel: &str) -> String {
        format!(
            "{}{}",
            self.base.as_str(),
            self.key(rel).as_ref().trim_start_matches('/')
        )
    }

    /// `rel` of an object path below the location (`None` outside it).
    pub fn rel_of<'a>(&self, key: &'a ObjPath) -> Option<&'a str> {
        let k = key.as_ref();
        if self.prefix.is_empty() {
            return Some(k);
        }
        k.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }

    /// Makes the store readable by `ctx`'s DataFusion (`az://…` file URLs).
    pub fn register(&self, ctx: &SessionContext) {
        let store = self.reader.get().unwrap_or(&self.store).clone();
        ctx.register_object_store(&self.base, store);
    }

    /// Runs `fut` on the I/O runtime and waits for it: for the store writer and the other
    /// plain threads that hold a remote location.
    pub fn block<F>(fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        io_runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .expect("the I/O runtime runs every task it is given")
    }

    /// The object `rel` and its version; `None` when there is none.
    pub fn get(&self, rel: &str) -> object_store::Result<Option<(Bytes, UpdateVersion)>> {
        let (store, key) = (self.store.clone(), self.key(rel));
        Self::block(async move {
            match store.get(&key).await {
                Ok(r) => {
                    let v = UpdateVersion {
                        e_tag: r.meta.e_tag.clone(),
                        version: r.meta.version.clone(),
                    };
                    Ok(Some((r.bytes().await?, v)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// The version tag of `rel` (its ETag), `None` when there is none: a cheap way to see
    /// whether it changed.
    pub fn tag(&self, rel: &str) -> object_store::Result<Option<String>> {
        let (store, key) = (self.store.clone(), self.key(rel));
        Self::block(async move {
            match store.head(&key).await {
                Ok(m) => Ok(Some(m.e_tag.or(m.version).unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        m.size,
                        m.last_modified.timestamp_nanos_opt().unwrap_or(0)
                    )
                }))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Writes `bytes` to `rel` if it is still at `expected` (`None`: if it does not exist).
    /// `Ok(None)` when another writer got there first.
    pub fn put_if(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        expected: Option<UpdateVersion>,
    ) -> object_store::Result<Option<UpdateVersion>> {
        let (store, key) = (self.store.clone(), self.key(rel));
        Self::block(async move {
            let mode = match expected {
                Some(v) => PutMode::Update(v),
                None => PutMode::Create,
            };
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            match store.put_opts(&key, PutPayload::from(bytes), opts).await {
                Ok(r) => Ok(Some(UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                })),
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Uploads the local file `src` to `rel` (in parts when large).
    pub fn upload(&self, src: &Path, rel: &str) -> object_store::Result<()> {
        use tokio::io::AsyncWriteExt;
        let (store, key, src) = (self.store.clone(), self.key(rel), src.to_owned());
        Self::block(async move {
            let mut file = tokio::fs::File::open(&src)
                .await
                .map_err(|e| io_error(&src, e))?;
            let mut w = object_store::buffered::BufWriter::with_capacity(store, key, 32 << 20);
            let copied = tokio::io::copy(&mut file, &mut w).await;
            match copied {
                Ok(_) => w.shutdown().await.map_err(|e| io_error(&src, e)),
                Err(e) => {
                    let _ = w.abort().await;
                    Err(io_error(&src, e))
                }
            }
        })
    }

    /// Writes bytes `from..to` of `rel` to the local file `dst`, streamed.
    pub fn download(&self, rel: &str, from: u64, to: u64, dst: &Path) -> object_store::Result<()> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let (store, key, dst) = (self.store.clone(), self.key(rel), dst.to_owned());
        Self::block(async move {
            let opts = object_store::GetOptions {
                range: Some((from..to).into()),
                ..Default::default()
            };
            let mut stream = store.get_opts(&key, opts).await?.into_stream();
            let mut file = tokio::fs::File::create(&dst)
                .await
                .map_err(|e| io_error(&dst, e))?;
            while let Some(chunk) = stream.next().await {
                file.write_all(&chunk?)
                    .await
                    .map_err(|e| io_error(&dst, e))?;
            }
            file.flush().await.map_err(|e| io_error(&dst, e))
        })
    }

    /// Deletes `rel`; one that is already gone is not an error.
    pub fn delete(&self, rel: &str) -> object_store::Result<()> {
        let (store, key) = (self.store.clone(), self.key(rel));
        Self::block(async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// Every object below `rel` (recursively): its path below the location, size and last
    /// modification.
    pub fn list(&self, rel: &str) -> object_store::Result<Vec<(String, u64, i64)>> {
        use futures::TryStreamExt;
        let (store, key) = (self.store.clone(), self.key(rel));
        let metas: Vec<object_store::ObjectMeta> =
            Self::block(async move { store.list(Some(&key)).try_collect().await })?;
        Ok(metas
            .iter()
            .filter_map(|m| {
                let rel = self.rel_of(&m.location)?.to_owned();
                Some((
                    rel,
                    m.size,
                    m.last_modified.timestamp_nanos_opt().unwrap_or(0),
                ))
            })
            .collect())
    }
}

fn io_error(path: &Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "local",
        source: format!("{}: {e}", path.display()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert!(is_url("az://logs/kvwatch"));
        assert!(is_url("abfss://logs@acct.dfs.core.windows.net/kv"));
        assert!(!is_url("kvwatch-data"));
        assert!(!is_url("/var/lib/kvwatch"));
        assert!(!is_url("./a://b"));
        assert!(matches!(
            Location::parse("file:///tmp/x", &StorageOptions::default()),
            Ok(Location::Local(p)) if p == Path::new("/tmp/x")
        ));
        assert!(Location::parse("ftp://x/y", &StorageOptions::default()).is_err());
    }

    #[test]
    fn keys_and_file_urls_keep_the_prefix() {
        let mut o = StorageOptions::default();
        o.parse_pairs("account_name=acct, access_key=a2V5").unwrap();
        let Location::Remote(r) = Location::parse("az://logs/kv/store/", &o).unwrap() else {
            panic!("remote");
        };
        assert_eq!(r.url, "az://logs/kv/store");
        assert_eq!(r.key("manifest.json").as_ref(), "kv/store/manifest.json");
        assert_eq!(
            r.file_url("events/date=2026-01-01/a.parquet"),
            "az://logs/kv/store/events/date=2026-01-01/a.parquet"
        );
        let k = r.key("events/x.parquet");
        assert_eq!(r.rel_of(&k), Some("events/x.parquet"));
        assert!(format!("{o:?}").contains("access_key") && !format!("{o:?}").contains("a2V5"));
        assert!(o.parse_pairs("nokey").is_err());
    }
}
