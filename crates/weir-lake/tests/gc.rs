//! `weir lake gc`: which runs go, which stay, and that a dry run removes
//! nothing. On a real local folder, with manifests committed in order.

use std::collections::BTreeSet;

use object_store::{ObjectStoreExt, PutPayload};
use weir_lake::gc::{self, GcOptions};
use weir_lake::{FileEntry, Lake, Manifest, SnapshotEntry, TableEntry, MANIFEST_VERSION};

/// Commit a run holding one small file per table.
async fn commit(lake: &Lake, run: &str, tables: &[&str]) {
    let mut entries = Vec::new();
    for t in tables {
        let path = lake.part_path(t, run, 0, "json");
        lake.store
            .put(
                &lake.object_path(&path),
                PutPayload::from(b"{\"a\":1}\n".to_vec()),
            )
            .await
            .unwrap();
        entries.push(TableEntry {
            name: (*t).to_owned(),
            source_table: format!("public.{t}"),
            rows: 1,
            bytes: 8,
            seconds: 0.0,
            arrow_schema: serde_json::json!({"fields": []}),
            primary_key: vec![],
            files: vec![FileEntry {
                path,
                rows: 1,
                bytes: 8,
            }],
            incremental: None,
        });
    }
    let m = Manifest {
        version: MANIFEST_VERSION,
        run_id: run.to_owned(),
        project: lake.project().to_owned(),
        started_at: String::new(),
        completed_at: String::new(),
        format: "ndjson".to_owned(),
        compression: "none".to_owned(),
        source: String::new(),
        snapshot: SnapshotEntry {
            id: String::new(),
            txid_snapshot: String::new(),
            taken_at: String::new(),
        },
        tables: entries,
    };
    lake.write_manifest(&m).await.unwrap();
    // Distinct commit times, whatever the file system's clock resolution.
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
}

fn ids(plan: &gc::GcPlan, kind: &str) -> BTreeSet<String> {
    plan.remove
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.run_id.clone())
        .collect()
}

#[tokio::test]
async fn gc_keeps_the_last_runs_of_each_table_and_what_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open("file://./lake", dir.path(), "p").unwrap();
    commit(&lake, "r1", &["orders", "items"]).await;
    commit(&lake, "r2", &["orders"]).await;
    commit(&lake, "r3", &["orders"]).await;
    commit(&lake, "r4", &["orders"]).await;
    commit(&lake, "r5", &["preço", ".."]).await;
    // A killed extract's files: a folder no manifest names.
    let orphan = lake.part_path("orders", "r9", 0, "json");
    lake.store
        .put(&lake.object_path(&orphan), PutPayload::from(b"x".to_vec()))
        .await
        .unwrap();
    let opts = |keep, in_use: &[&str], orphan_age| GcOptions {
        keep,
        orphan_age,
        in_use: in_use.iter().map(|s| s.to_string()).collect(),
    };
    let now = chrono::Utc::now();
    // keep 2: r1 is the last run of `items`, so it stays; r2 goes; r9 is
    // too young to be an orphan yet.
    let plan = gc::plan(&lake, &opts(2, &[], chrono::Duration::hours(1)), now)
        .await
        .unwrap();
    assert_eq!(ids(&plan, "committed"), BTreeSet::from(["r2".to_owned()]));
    assert!(ids(&plan, "orphan").is_empty());
    // A run an unfinished pipeline run needs stays; an old orphan goes.
    let plan = gc::plan(
        &lake,
        &opts(1, &["r3"], chrono::Duration::zero()),
        now + chrono::Duration::seconds(1),
    )
    .await
    .unwrap();
    assert_eq!(ids(&plan, "committed"), BTreeSet::from(["r2".to_owned()]));
    assert_eq!(ids(&plan, "orphan"), BTreeSet::from(["r9".to_owned()]));
    let r2 = plan.remove.iter().find(|r| r.run_id == "r2").unwrap();
    assert_eq!(
        r2.objects[0], "p/_manifests/r2.json",
        "the manifest goes first"
    );
    // The plan alone removes nothing.
    assert_eq!(lake.list_runs().await.unwrap().len(), 5);
    gc::apply(&lake, &plan).await.unwrap();
    assert_eq!(lake.list_runs().await.unwrap(), ["r1", "r3", "r4", "r5"]);
    assert!(!lake.local_file(&orphan).unwrap().exists());
    assert!(!lake
        .local_file("p/orders/run=r2/part-00000.json")
        .unwrap()
        .exists());
    // Names that need encoding on disk are found and kept (or removed) too.
    assert!(lake
        .local_file("p/preço/run=r5/part-00000.json")
        .unwrap()
        .exists());
    assert!(lake
        .local_file("p/../run=r5/part-00000.json")
        .unwrap()
        .exists());
    let again = gc::plan(&lake, &opts(1, &["r3"], chrono::Duration::zero()), now)
        .await
        .unwrap();
    assert!(again.remove.is_empty(), "{again:?}");
}

/// A manifest is data: one that names files outside its run's folder does
/// not make gc remove them.
#[tokio::test]
async fn gc_never_removes_what_a_manifest_names_outside_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open("file://./lake", dir.path(), "p").unwrap();
    commit(&lake, "r1", &["orders"]).await;
    commit(&lake, "r2", &["orders"]).await;
    // r1's manifest now also names r2's file.
    let mut m = lake.read_manifest("r1").await.unwrap();
    let stolen = lake.part_path("orders", "r2", 0, "json");
    m.tables[0].files.push(FileEntry {
        path: stolen.clone(),
        rows: 1,
        bytes: 8,
    });
    lake.write_manifest(&m).await.unwrap();
    let opts = GcOptions {
        keep: 1,
        orphan_age: chrono::Duration::hours(1),
        in_use: BTreeSet::new(),
    };
    let plan = gc::plan(&lake, &opts, chrono::Utc::now()).await.unwrap();
    assert_eq!(ids(&plan, "committed"), BTreeSet::from(["r1".to_owned()]));
    assert_eq!(plan.refused.len(), 1, "{plan:?}");
    gc::apply(&lake, &plan).await.unwrap();
    assert!(
        lake.local_file(&stolen).unwrap().exists(),
        "r2's file stays"
    );
    assert_eq!(lake.list_runs().await.unwrap(), ["r2"]);
}
