//! The load benchmark behind `bench/load`: for every table of a lake run, time
//! `weir_warehouse::load` into a fresh DuckDB file, and DuckDB's own
//! `CREATE TABLE … AS SELECT * FROM read_parquet(…)` (or `read_json(…)` for
//! NDJSON) on the same files into another fresh file, in the same process.
//!
//!   cargo run -p weir-warehouse --example load_bench -- LAKE_DIR PROJECT [RUNS]

use std::path::Path;
use std::time::Instant;

use weir_config::LoadMode;
use weir_lake::Lake;
use weir_warehouse::{load, DuckDb, LoadOptions, Warehouse};

fn best(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[0]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (lake_dir, project) = (Path::new(&args[1]), args[2].as_str());
    let runs: usize = args.get(3).map_or(Ok(3), |r| r.parse())?;
    let lake = Lake::open(&lake_dir.display().to_string(), lake_dir, project)?;
    let run = lake.list_runs().await?.pop().ok_or("no run in the lake")?;
    let manifest = lake.read_manifest(&run).await?;
    let root = lake_dir.canonicalize()?;
    let work = tempfile::tempdir()?;
    println!(
        "{:<34} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12} {:>7}",
        "table", "format", "rows", "duckdb s", "weir s", "duckdb r/s", "weir r/s", "ratio"
    );
    let (mut ref_total, mut weir_total, mut rows_total) = (0.0, 0.0, 0u64);
    for t in &manifest.tables {
        let files: Vec<String> = t
            .files
            .iter()
            .map(|f| format!("'{}'", root.join(&f.path).display()))
            .collect();
        let reader = match manifest.format.as_str() {
            "parquet" => format!("read_parquet([{}])", files.join(", ")),
            _ => format!(
                "read_json([{}], format = 'newline_delimited')",
                files.join(", ")
            ),
        };
        let (mut ref_s, mut weir_s) = (Vec::new(), Vec::new());
        for i in 0..runs {
            // DuckDB on its own.
            let path = work.path().join(format!("ref-{}-{i}.duckdb", t.name));
            let duck = DuckDb::open(&path)?;
            duck.execute("CREATE SCHEMA raw").await?;
            let t0 = Instant::now();
            duck.execute(&format!("CREATE TABLE raw.t AS SELECT * FROM {reader}"))
                .await?;
            ref_s.push(t0.elapsed().as_secs_f64());
            drop(duck);
            let _ = std::fs::remove_file(&path);
            // weir's load of the same files (manifest, staging, atomic publish).
            let path = work.path().join(format!("weir-{}-{i}.duckdb", t.name));
            let duck = DuckDb::open(&path)?;
            let opts = LoadOptions {
                run: Some(run.clone()),
                tables: Some(vec![t.name.clone()]),
                mode: Some(LoadMode::Truncate),
                ..LoadOptions::default()
            };
            let t0 = Instant::now();
            let s = load(&duck, &lake, &opts).await?;
            weir_s.push(t0.elapsed().as_secs_f64());
            if let Some(e) = &s.tables[0].error {
                return Err(e.clone().into());
            }
            assert_eq!(s.tables[0].rows, t.rows, "{} rows", t.name);
            drop(duck);
            let _ = std::fs::remove_file(&path);
        }
        let (r, w) = (best(&mut ref_s), best(&mut weir_s));
        ref_total += r;
        weir_total += w;
        rows_total += t.rows;
        println!(
            "{:<34} {:>7} {:>10} {:>10.3} {:>10.3} {:>12.0} {:>12.0} {:>6.2}x",
            t.name,
            manifest.format,
            t.rows,
            r,
            w,
            t.rows as f64 / r,
            t.rows as f64 / w,
            r / w
        );
    }
    println!(
        "{:<34} {:>7} {:>10} {:>10.3} {:>10.3} {:>12.0} {:>12.0} {:>6.2}x",
        "all tables (sum of best times)",
        manifest.format,
        rows_total,
        ref_total,
        weir_total,
        rows_total as f64 / ref_total,
        rows_total as f64 / weir_total,
        ref_total / weir_total
    );
    Ok(())
}
