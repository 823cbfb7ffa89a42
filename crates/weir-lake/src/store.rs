//! Opening a lake URL and laying out paths inside it.

use std::path::Path as FsPath;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::manifest::{Manifest, MANIFEST_VERSION};
use crate::LakeError;

/// An opened lake: a store and the prefix of the project's files in it.
#[derive(Clone)]
pub struct Lake {
    pub store: Arc<dyn ObjectStore>,
    /// Prefix inside the store (the URL's path for buckets, empty for a folder).
    root: Path,
    project: String,
    url: String,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({})", self.url)
    }
}

/// A run id: its start time to the microsecond, then random hex so that
/// two processes starting in the same microsecond still differ:
/// `20261125T120000.123456Z-1a2b3c`. Ids sort by start time, which decides
/// the latest run (see [`Lake::list_runs`]).
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(
        &(
            now.timestamp_nanos_opt(),
            std::process::id(),
            std::thread::current().id(),
        ),
        &mut h,
    );
    let salt = std::hash::Hasher::finish(&h)
        ^ u64::from(RUN_SALT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%S%.6fZ"),
        salt & 0xff_ffff
    )
}

static RUN_SALT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Lake {
    /// Open `url` for `project`. A `file://` URL or plain path that is
    /// relative is taken from `project_dir`; the folder is created if missing.
    /// Bucket credentials come from the standard environment variables
    /// (`GOOGLE_APPLICATION_CREDENTIALS`/`GOOGLE_SERVICE_ACCOUNT`,
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_REGION`/`AWS_ENDPOINT`).
    pub fn open(url: &str, project_dir: &FsPath, project: &str) -> Result<Lake, LakeError> {
        let err = |message: String| LakeError::Open {
            url: url.to_owned(),
            message,
        };
        let mut shown = url.to_owned();
        let (store, root): (Arc<dyn ObjectStore>, Path) =
            if let Some(rest) = url.strip_prefix("gs://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let gcs = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| err(e.to_string()))?;
                (Arc::new(gcs), Path::from(prefix))
            } else if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| err(e.to_string()))?;
                (Arc::new(s3), Path::from(prefix))
            } else if url.starts_with("memory://") {
                (Arc::new(InMemory::new()), Path::default())
            } else {
                let path = url.strip_prefix("file://").unwrap_or(url);
                let dir = if FsPath::new(path).is_absolute() {
                    FsPath::new(path).to_path_buf()
                } else {
                    project_dir.join(path)
                };
                std::fs::create_dir_all(&dir)
                    .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
                let dir = dir.canonicalize().map_err(|e| err(e.to_string()))?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| err(e.to_string()))?;
                // Shown (and put in summaries) as an absolute URL, whatever folder it came from.
                shown = format!("file://{}", dir.display());
                (Arc::new(fs), Path::default())
            };
        Ok(Lake {
            store,
            root,
            project: project.to_owned(),
            url: shown,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The project whose files this lake addresses.
    pub fn project(&self) -> &str {
        &self.project
    }

    fn under_root(&self, rel: &str) -> Path {
        if self.root.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.root.as_ref()))
        }
    }

    /// Path of a data file, relative to the lake root (as the manifest stores it).
    pub fn part_path(&self, table: &str, run_id: &str, part: usize, extension: &str) -> String {
        format!(
            "{}/{table}/run={run_id}/part-{part:05}.{extension}",
            self.project
        )
    }

    /// A path relative to the lake root, as the store addresses it.
    pub fn object_path(&self, rel: &str) -> Path {
        self.under_root(rel)
    }

    fn manifest_rel(&self, run_id: &str) -> String {
        format!("{}/_manifests/{run_id}.json", self.project)
    }

    /// The URL of a run's manifest, for people and logs.
    pub fn manifest_url(&self, run_id: &str) -> String {
        format!(
            "{}/{}",
            self.url.trim_end_matches('/'),
            self.manifest_rel(run_id)
        )
    }

    /// Commit a run: write its manifest in one atomic put.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), LakeError> {
        let rel = self.manifest_rel(&manifest.run_id);
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| LakeError::Manifest {
            path: rel.clone(),
            message: e.to_string(),
        })?;
        self.store
            .put(&self.under_root(&rel), PutPayload::from(body))
            .await
            .map_err(|e| LakeError::store(rel, &e))?;
        Ok(())
    }

    pub async fn read_manifest(&self, run_id: &str) -> Result<Manifest, LakeError> {
        let rel = self.manifest_rel(run_id);
        let bytes = self
            .store
            .get(&self.under_root(&rel))
            .await
            .map_err(|e| LakeError::store(rel.clone(), &e))?
            .bytes()
            .await
            .map_err(|e| LakeError::store(rel.clone(), &e))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| LakeError::Manifest {
            path: rel.clone(),
            message: e.to_string(),
        })?;
        if m.version > MANIFEST_VERSION {
            return Err(LakeError::Manifest {
                path: rel,
                message: format!(
                    "version {} is newer than this Weir reads ({MANIFEST_VERSION})",
                    m.version
                ),
            });
        }
        Ok(m)
    }

    /// Remove an object (a path relative to the lake root); a missing one is fine.
    pub async fn delete(&self, rel: &str) -> Result<(), LakeError> {
        match self.store.delete(&self.under_root(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(LakeError::store(rel, &e)),
        }
    }

    /// Committed run ids, oldest first, so `last()` is the latest: the
    /// committed run that started last, to the microsecond (its id), which
    /// holds the newest snapshot of the source. Not the manifest's
    /// modification time: copying a lake (`gsutil cp`, `aws s3 sync`,
    /// `cp -r`) resets those, and a slow run that commits after a later one
    /// holds older data.
    pub async fn list_runs(&self) -> Result<Vec<String>, LakeError> {
        let prefix = self.under_root(&format!("{}/_manifests", self.project));
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| LakeError::store(prefix.to_string(), &e))?;
        let mut runs: Vec<String> = metas
            .iter()
            // Only manifests themselves, not what loads keep beside them
            // (`{run}.rejects/{table}.ndjson`).
            .filter(|m| {
                m.location
                    .prefix_match(&prefix)
                    .is_some_and(|rest| rest.count() == 1)
            })
            .filter_map(|m| {
                m.location
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect();
        runs.sort();
        Ok(runs)
    }

    /// Where a lake file is on this machine's disk, for a lake that is a
    /// local folder: the folder and the path's parts as `object_store` writes
    /// them (percent-encoded where a name needs it: `ç`, `"`, `..`, a newline).
    pub fn local_file(&self, rel: &str) -> Option<std::path::PathBuf> {
        let root = self.url.strip_prefix("file://")?;
        let mut p = std::path::PathBuf::from(root);
        for part in self.object_path(rel).parts() {
            p.push(part.as_ref());
        }
        Some(p)
    }

    /// Check that a manifest's file path lies inside the run's own prefix
    /// (`{project}/{table}/run={run_id}/`), one file deep: a manifest is
    /// data, and a path it names must never reach outside the lake or into
    /// another table's or run's files.
    pub fn check_run_file(&self, table: &str, run_id: &str, rel: &str) -> Result<(), LakeError> {
        let prefix = format!("{}/{table}/run={run_id}/", self.project);
        let name = rel.strip_prefix(&prefix);
        let ok = name.is_some_and(|n| !n.is_empty() && !n.contains('/') && n != "." && n != "..");
        if ok {
            Ok(())
        } else {
            Err(LakeError::Manifest {
                path: self.manifest_url(run_id),
                message: format!(
                    "table {table}: file `{}` is not inside the run's folder `{prefix}`; the manifest is not trusted",
                    rel.escape_debug()
                ),
            })
        }
    }
}
