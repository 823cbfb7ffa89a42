//! `weir demo`: private PostgreSQL → Olist sample data → `weir run` of the
//! project's pipeline (extract, load, transform, tests) → the answers, with
//! each stage's time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::anyhow;
use clap::Args;
use weir_config::SecretUrl;
use weir_source::cluster::PrivateCluster;
use weir_source::olist::{claim_demo_schema, generate_into_postgres, GenerateOptions, DEMO_SCHEMA};

use crate::extract::load_project;
use crate::load::{open_warehouse, write_result};
use crate::{usage, Failure};

#[derive(Args)]
pub struct DemoArgs {
    /// Project folder (default: examples/olist when it exists, else the current folder).
    #[arg(short = 'p', long = "project-dir")]
    project: Option<PathBuf>,
    /// Use this PostgreSQL database instead of starting a private server.
    #[arg(long, env = "WEIR_SOURCE_URL", hide_env_values = true)]
    source_url: Option<String>,
    /// Size of the sample data (1.0 = the reference 99,441 orders).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Lake file format.
    #[arg(long, value_parser = ["parquet", "ndjson"])]
    format: Option<String>,
    /// Let the demo replace the tables of schema `weir_demo` in --source-url's
    /// database even though it did not make them.
    #[arg(long)]
    overwrite: bool,
}

fn step(name: &str, started: Instant) {
    say!("✓ {name:<44} {:>7.2}s", started.elapsed().as_secs_f64());
}

pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    if !(args.scale > 0.0 && args.scale <= 1000.0) {
        return Err(usage(anyhow!("--scale must be above 0 and at most 1000")));
    }
    let dir = args.project.clone().unwrap_or_else(|| {
        let example = Path::new("examples/olist");
        if example.join(weir_config::PROJECT_FILE).exists() {
            example.to_path_buf()
        } else {
            PathBuf::from(".")
        }
    });
    let project = load_project(&dir)?.ok_or_else(|| {
        usage(anyhow!(
            "no {} in {}: `weir demo` runs a project's pipeline (by default examples/olist; -p names another)",
            weir_config::PROJECT_FILE,
            dir.display()
        ))
    })?;
    let total = Instant::now();

    // 1. A PostgreSQL to play the application's database.
    let t = Instant::now();
    let (cluster, url) = match &args.source_url {
        Some(u) => (None, SecretUrl::new(u.clone())),
        None => {
            let data = dir.join(".weir").join("pg");
            let cluster = tokio::task::spawn_blocking(move || PrivateCluster::start(&data))
                .await
                .map_err(|e| anyhow!("{e}"))?
                .map_err(usage)?;
            let admin = SecretUrl::new(cluster.url("postgres"));
            let client = weir_source::connect(&admin).await?;
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = 'olist'", &[])
                .await
                .map_err(|e| anyhow!("{e}"))?
                .is_some();
            if !exists {
                client
                    .batch_execute("CREATE DATABASE olist")
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
            }
            let url = SecretUrl::new(cluster.url("olist"));
            (Some(cluster), url)
        }
    };
    step(
        &match &cluster {
            Some(c) => format!("private PostgreSQL on 127.0.0.1:{}", c.port),
            None => format!("source database {url}"),
        },
        t,
    );

    // 2. Olist sample data, in a schema of the demo's own: the demo never
    //    touches tables it did not make.
    let t = Instant::now();
    let mut client = weir_source::connect(&url).await?;
    claim_demo_schema(&client, DEMO_SCHEMA, args.overwrite)
        .await
        .map_err(usage)?;
    let counts = generate_into_postgres(
        &mut client,
        DEMO_SCHEMA,
        GenerateOptions {
            scale: args.scale,
            seed: 42,
        },
        true,
    )
    .await?;
    let rows: u64 = counts.iter().map(|c| c.1).sum();
    step(
        &format!(
            "generated Olist data in schema {DEMO_SCHEMA}, scale {} ({rows} rows)",
            args.scale
        ),
        t,
    );

    // 3. The pipeline as `weir run` runs it: extract → load per table, in
    //    parallel, then the dbt-compatible Olist models and their tests.
    let t = Instant::now();
    let mut project = project;
    if let Some(src) = project.source.as_mut() {
        src.url = url.clone();
        src.schema = DEMO_SCHEMA.to_owned();
    } else {
        return Err(usage(anyhow!(
            "{} has no `source:` section to point at the demo's database",
            dir.join(weir_config::PROJECT_FILE).display()
        )));
    }
    if let Some(f) = &args.format {
        project.lake.format = weir_config::LakeFormat::parse(f).unwrap_or(project.lake.format);
    }
    let printer = std::sync::Arc::new(crate::orchestrate::Printer {
        quiet_success: true,
        show_run: false,
    });
    let ws = weir_pipeline::Workspace::of(&dir, project.clone());
    let report = crate::orchestrate::run_pipeline(&ws, true, &Default::default(), printer).await?;
    if report.state != Some(weir_orchestrate::store::RunState::Success) {
        crate::orchestrate::print_report(&report);
        return Err(anyhow!(
            "the pipeline run {} did not succeed; `weir logs -p {} {}` shows why",
            report.run_id,
            dir.display(),
            report.run_id
        )
        .into());
    }
    step(
        &format!(
            "weir run {}: extract, load, transform, tests",
            report.run_id
        ),
        t,
    );
    for s in &report.stages {
        if s.name != "end" {
            say!(
                "    {:<10} {:>6.2}s → {:>5.2}s  {:>7.2}s",
                s.name,
                s.from,
                s.to,
                s.to - s.from
            );
        }
    }

    // 6. The headline answers, from the final tables.
    let wh = open_warehouse(&dir, Some(&project), None).await?;
    let d = wh.dialect();
    let fin = |t: &str| d.relation("final", t);
    let questions = [
        (
            "Orders per customer state (top 5)",
            format!("SELECT state, orders FROM {} ORDER BY orders DESC, state LIMIT 5", fin("fct_orders_by_state")),
        ),
        (
            "Top categories by sales (sum of item price)",
            format!(
                "SELECT category, round(sales, 2) AS sales FROM {} ORDER BY sales DESC LIMIT 5",
                fin("fct_sales_by_category")
            ),
        ),
        (
            "Delivery time per order (fastest 3, and the median)",
            format!(
                "(SELECT order_id, delivery_minutes, delivery_hours, delivery_days FROM {t} ORDER BY delivery_minutes LIMIT 3) \
                 UNION ALL (SELECT 'median of ' || CAST(count(*) AS VARCHAR) || ' orders', \
                 round(CAST(median(delivery_minutes) AS DOUBLE), 2), round(CAST(median(delivery_hours) AS DOUBLE), 2), \
                 round(CAST(median(delivery_days) AS DOUBLE), 2) FROM {t})",
                t = fin("fct_delivery_times")
            ),
        ),
    ];
    let mut out = std::io::stdout().lock();
    for (title, sql) in questions {
        let result = wh.query(&sql).await?;
        use std::io::Write;
        writeln!(out, "\n{title}:")?;
        write_result(&mut out, &result, "table")?;
    }
    drop(out);

    drop(client);
    if let Some(mut c) = cluster {
        let t = Instant::now();
        tokio::task::spawn_blocking(move || c.stop())
            .await
            .map_err(|e| anyhow!("{e}"))?;
        step("stopped the private PostgreSQL", t);
    }
    say!("demo finished in {:.2}s", total.elapsed().as_secs_f64());
    Ok(())
}
