//! `weir source generate` and `weir source load-csv`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use weir_config::SecretUrl;
use weir_source::olist::{generate_csv, generate_into_postgres, GenerateOptions};

use crate::extract::load_project;
use crate::{project_dir, usage, Failure};

/// Which database: `--url`/`--schema`, else the project's `source.postgres`.
#[derive(Args)]
pub struct Target {
    /// Project folder whose weir.yml names the source (default: the current folder).
    #[arg(short = 'p', long = "project-dir")]
    project: Option<PathBuf>,
    /// PostgreSQL URL; default: `source.postgres.url` of the project.
    #[arg(long, env = "WEIR_SOURCE_URL", hide_env_values = true)]
    url: Option<String>,
    /// Schema; default: `source.postgres.schema` of the project, else `public`.
    #[arg(long)]
    schema: Option<String>,
}

impl Target {
    /// The URL and schema, or `None` when neither the flags nor a weir.yml name a database.
    fn resolve(&self) -> Result<Option<(SecretUrl, String)>, Failure> {
        let project = load_project(&project_dir(&self.project))?;
        let source = project.as_ref().and_then(|p| p.source.as_ref());
        let url = match (&self.url, source) {
            (Some(u), _) => SecretUrl::new(u.clone()),
            (None, Some(s)) => s.url.clone(),
            (None, None) => return Ok(None),
        };
        let schema = self
            .schema
            .clone()
            .or_else(|| source.map(|s| s.schema.clone()))
            .unwrap_or_else(|| "public".to_owned());
        Ok(Some((url, schema)))
    }
}

#[derive(Subcommand)]
pub enum SourceCommand {
    /// Create the nine Olist tables and fill them with deterministic sample data.
    Generate {
        #[command(flatten)]
        target: Target,
        /// 1.0 gives the reference row counts (99,441 orders); others scale them.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Drop and recreate tables that already exist.
        #[arg(long)]
        replace: bool,
        /// Also (or instead) write the nine CSV files, named as the public dataset ships them.
        #[arg(long)]
        csv_out: Option<PathBuf>,
    },
    /// Load a folder of CSV files into PostgreSQL, one table per file.
    LoadCsv {
        dir: PathBuf,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        replace: bool,
    },
}

pub async fn run(cmd: SourceCommand) -> Result<(), Failure> {
    match cmd {
        SourceCommand::Generate {
            target,
            scale,
            seed,
            replace,
            csv_out,
        } => {
            if !(scale > 0.0 && scale <= 1000.0) {
                return Err(usage(anyhow!("--scale must be above 0 and at most 1000")));
            }
            let resolved = target.resolve()?;
            if resolved.is_none() && csv_out.is_none() {
                return Err(usage(anyhow!(
                    "no database: give --url (or WEIR_SOURCE_URL), a project whose weir.yml has a `source:`, or --csv-out DIR"
                )));
            }
            let opts = GenerateOptions { scale, seed };
            if let Some(dir) = csv_out {
                let t = Instant::now();
                let counts =
                    tokio::task::spawn_blocking(move || generate_csv(&dir, opts).map(|c| (c, dir)))
                        .await
                        .map_err(|e| anyhow!("generator stopped: {e}"))??;
                say!(
                    "wrote {} CSV files to {} in {:.2}s",
                    counts.0.len(),
                    counts.1.display(),
                    t.elapsed().as_secs_f64()
                );
                print_counts(&counts.0);
            }
            if let Some((url, schema)) = resolved {
                let t = Instant::now();
                let mut client = weir_source::connect(&url).await?;
                let counts = generate_into_postgres(&mut client, &schema, opts, replace)
                    .await
                    .map_err(|e| match e {
                        weir_source::SourceError::TablesExist { .. } => usage(e),
                        e => Failure::from(e),
                    })?;
                say!(
                    "generated Olist data (scale {scale}) into {url} schema {schema} in {:.2}s",
                    t.elapsed().as_secs_f64()
                );
                print_counts(&counts);
            }
            Ok(())
        }
        SourceCommand::LoadCsv {
            dir,
            target,
            replace,
        } => {
            let Some((url, schema)) = target.resolve()? else {
                return Err(usage(anyhow!(
                    "no database: give --url (or WEIR_SOURCE_URL), or run in a project whose weir.yml has a `source:`"
                )));
            };
            let t = Instant::now();
            let mut client = weir_source::connect(&url).await?;
            let loaded = weir_source::csv_load::load_csv_dir(&mut client, &dir, &schema, replace)
                .await
                .map_err(|e| match e {
                    weir_source::SourceError::TablesExist { .. }
                    | weir_source::SourceError::Config(_) => usage(e),
                    e => Failure::from(e),
                })?;
            say!(
                "loaded {} file(s) into {url} schema {schema} in {:.2}s",
                loaded.len(),
                t.elapsed().as_secs_f64()
            );
            for f in loaded {
                say!(
                    "  {:<36} {:>10} rows  <- {}",
                    f.table,
                    f.rows,
                    f.file.display()
                );
            }
            Ok(())
        }
    }
}

pub fn print_counts(counts: &[(&str, u64)]) {
    for (t, n) in counts {
        say!("  {t:<36} {n:>10} rows");
    }
}
