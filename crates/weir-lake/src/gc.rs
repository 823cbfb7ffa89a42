//! Garbage collection: the lake only grows unless runs are removed. What may
//! go is planned first (and shown: a dry run is the default), then removed.
//!
//! - A committed run goes when, for every table it holds, it is not among
//!   that table's last `keep` committed runs, and nobody still needs it (the
//!   caller passes the runs an unfinished pipeline run will load). Its
//!   manifest is removed first, so a run is never visible half-removed; if
//!   the removal stops there, its files are orphans for the next pass.
//! - Orphans are run folders without a manifest: what a killed or failed
//!   extract left. They go once their newest file is older than
//!   `orphan_age`, so an extract still writing is never touched.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use crate::{Lake, LakeError};

/// What [`plan`] keeps and leaves alone.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Committed runs kept per table (at least 1).
    pub keep: usize,
    /// Run folders without a manifest younger than this are left alone.
    pub orphan_age: chrono::Duration,
    /// Runs that must stay whatever their age (an unfinished pipeline run
    /// still loads them).
    pub in_use: BTreeSet<String>,
}

/// One thing [`plan`] would remove.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removal {
    /// The run id (for an orphan, the id its folder names).
    pub run_id: String,
    /// `committed` or `orphan`.
    pub kind: &'static str,
    /// Tables it holds files of.
    pub tables: Vec<String>,
    /// Every object, relative to the lake root; the manifest first.
    pub objects: Vec<String>,
    pub bytes: u64,
}

/// What a garbage collection would do, or did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcPlan {
    pub remove: Vec<Removal>,
    /// Committed runs kept.
    pub kept: usize,
    /// Paths manifests name outside their run's folder: never removed
    /// (a manifest is data; it does not decide what else is deleted).
    pub refused: Vec<String>,
}

impl GcPlan {
    pub fn bytes(&self) -> u64 {
        self.remove.iter().map(|r| r.bytes).sum()
    }

    pub fn objects(&self) -> usize {
        self.remove.iter().map(|r| r.objects.len()).sum()
    }
}

/// An object found under a run folder.
struct Found {
    /// Lake-relative, as the store encodes it.
    rel: String,
    size: u64,
    modified: DateTime<Utc>,
    table: String,
}

/// The folder part `run=ID` of a data file's path (`{project}/{table}/run=ID/part`).
fn run_of(rel: &str, project: &str) -> Option<(String, String)> {
    let rest = rel.strip_prefix(project)?.strip_prefix('/')?;
    let (dir, _file) = rest.rsplit_once('/')?;
    let (table, run) = dir.rsplit_once('/')?;
    let id = run.strip_prefix("run=")?;
    Some((table.to_owned(), id.to_owned()))
}

/// Decide what to remove, reading only the manifests and one listing.
pub async fn plan(lake: &Lake, opts: &GcOptions, now: DateTime<Utc>) -> Result<GcPlan, LakeError> {
    let keep = opts.keep.max(1);
    let runs = lake.list_runs().await?;
    // Per table, its committed runs newest first; a run stays if it is
    // within `keep` for any of its tables.
    let mut manifests = BTreeMap::new();
    let mut per_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in runs.iter().rev() {
        let m = lake.read_manifest(id).await?;
        for t in &m.tables {
            per_table
                .entry(t.name.clone())
                .or_default()
                .push(id.clone());
        }
        manifests.insert(id.clone(), m);
    }
    let mut kept: BTreeSet<&str> = opts.in_use.iter().map(String::as_str).collect();
    for ids in per_table.values() {
        kept.extend(ids.iter().take(keep).map(String::as_str));
    }
    // Every object of the project, by run folder.
    let prefix = lake.object_path(lake.project());
    let objects: Vec<object_store::ObjectMeta> = lake
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| LakeError::store(prefix.to_string(), &e))?;
    let root = lake.object_path("");
    let rel_of = |m: &object_store::ObjectMeta| -> String {
        match m.location.prefix_match(&root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/"),
            None => m.location.to_string(),
        }
    };
    let mut folders: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    for o in &objects {
        let rel = rel_of(o);
        let decoded = percent_decode(&rel);
        if let Some((table, run)) = run_of(&decoded, lake.project()) {
            folders.entry(run).or_default().push(Found {
                rel,
                size: o.size,
                modified: o.last_modified,
                table,
            });
        }
    }
    let mut plan = GcPlan {
        kept: runs.iter().filter(|id| kept.contains(id.as_str())).count(),
        ..GcPlan::default()
    };
    for id in &runs {
        if kept.contains(id.as_str()) {
            continue;
        }
        let m = &manifests[id];
        let mut objs = vec![format!("{}/_manifests/{}.json", lake.project(), id)];
        let mut bytes = 0;
        // The files the manifest names, and anything else in its folders.
        let mut named: BTreeSet<String> = BTreeSet::new();
        for t in &m.tables {
            for f in &t.files {
                match lake.check_run_file(&t.name, id, &f.path) {
                    Ok(()) => {
                        named.insert(f.path.clone());
                        bytes += f.bytes;
                    }
                    Err(e) => plan.refused.push(e.to_string()),
                }
            }
        }
        objs.extend(named);
        for f in folders.get(id).into_iter().flatten() {
            let decoded = percent_decode(&f.rel);
            if !objs.contains(&decoded) {
                objs.push(decoded);
                bytes += f.size;
            }
        }
        for rejects in objects.iter().map(rel_of).filter(|rel| {
            rel.starts_with(&format!("{}/_manifests/{}.rejects/", lake.project(), id))
        }) {
            objs.push(percent_decode(&rejects));
        }
        plan.remove.push(Removal {
            run_id: id.clone(),
            kind: "committed",
            tables: m.tables.iter().map(|t| t.name.clone()).collect(),
            objects: objs,
            bytes,
        });
    }
    let committed: BTreeSet<&str> = runs.iter().map(String::as_str).collect();
    for (run, files) in &folders {
        if committed.contains(run.as_str()) || opts.in_use.contains(run) {
            continue;
        }
        let newest = files.iter().map(|f| f.modified).max().unwrap_or(now);
        if now - newest < opts.orphan_age {
            continue;
        }
        let tables: BTreeSet<String> = files.iter().map(|f| f.table.clone()).collect();
        plan.remove.push(Removal {
            run_id: run.clone(),
            kind: "orphan",
            tables: tables.into_iter().collect(),
            objects: files.iter().map(|f| percent_decode(&f.rel)).collect(),
            bytes: files.iter().map(|f| f.size).sum(),
        });
    }
    Ok(plan)
}

/// Remove what `plan` lists, each committed run's manifest first.
pub async fn apply(lake: &Lake, plan: &GcPlan) -> Result<(), LakeError> {
    for r in &plan.remove {
        for o in &r.objects {
            lake.delete(o).await?;
        }
    }
    Ok(())
}

/// The lake-relative form of an object's path: object_store percent-encodes
/// some characters of each part (`%`, `"`, non-ASCII…), and `Lake` paths are
/// the unencoded names.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_folders_are_read_from_paths() {
        assert_eq!(
            run_of("p/orders/run=2026-x/part-00000.parquet", "p"),
            Some(("orders".to_owned(), "2026-x".to_owned()))
        );
        assert_eq!(run_of("p/_manifests/r.json", "p"), None);
        assert_eq!(percent_decode("p/pre%C3%A7o/run=1/x"), "p/preço/run=1/x");
    }
}
