//! dbt's `profiles.yml`: which warehouse a dbt project builds on when it is
//! run on its own (`weir transform --project-dir`), read as dbt reads it
//! (`{{ env_var(...) }}` rendered first; duckdb, postgres and bigquery outputs).

use std::path::{Path, PathBuf};

use weir_config::{SecretUrl, WarehouseConfig, WarehouseTarget};

use crate::Target;

/// The warehouse and target settings a profile's output describes.
#[derive(Debug, Clone)]
pub struct ProfileTarget {
    pub warehouse: WarehouseConfig,
    pub target: Target,
}

fn yaml_value(text: &str, file: &Path) -> Result<serde_json::Value, String> {
    crate::parse_yaml(file, text).map_err(|e| e.to_string())
}

/// Where `profiles.yml` is: `explicit` (`--profiles-dir`), else
/// `DBT_PROFILES_DIR`, the current folder if it holds one, else `~/.dbt`.
pub fn profiles_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(d) = explicit {
        return d.to_path_buf();
    }
    if let Ok(d) = std::env::var("DBT_PROFILES_DIR") {
        return PathBuf::from(d);
    }
    if Path::new("profiles.yml").exists() {
        return PathBuf::from(".");
    }
    std::env::var("HOME").map_or_else(|_| PathBuf::from("."), |h| Path::new(&h).join(".dbt"))
}

/// The target the dbt project in `dbt_dir` builds on, from the profile its
/// `dbt_project.yml` names in `profiles_dir/profiles.yml`; `target` and
/// `threads` override the profile's.
pub fn resolve(
    dbt_dir: &Path,
    profiles_dir: &Path,
    target: Option<&str>,
    threads: Option<usize>,
) -> Result<ProfileTarget, String> {
    let project_file = dbt_dir.join("dbt_project.yml");
    let project_text = std::fs::read_to_string(&project_file)
        .map_err(|e| format!("{}: {e}", project_file.display()))?;
    let project = yaml_value(&project_text, &project_file)?;
    let profile = project
        .get("profile")
        .and_then(|v| v.as_str())
        .or(project.get("name").and_then(|v| v.as_str()))
        .unwrap_or("default")
        .to_owned();
    let file = profiles_dir.join("profiles.yml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    // profiles.yml values may use `{{ env_var('X') }}`.
    let text = crate::render_profile(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let profiles = yaml_value(&text, &file)?;
    let p = profiles.get(&profile).ok_or_else(|| {
        format!(
            "{}: no profile `{profile}` (named by dbt_project.yml)",
            file.display()
        )
    })?;
    let target_name = target
        .map(str::to_owned)
        .or(p.get("target").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "dev".to_owned());
    let out = p
        .get("outputs")
        .and_then(|o| o.get(&target_name))
        .ok_or_else(|| {
            format!(
                "{}: profile `{profile}` has no output `{target_name}`",
                file.display()
            )
        })?;
    let s = |k: &str| {
        out.get(k)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    let kind = s("type").unwrap_or_default();
    let threads = threads
        .or(out
            .get("threads")
            .and_then(|v| v.as_u64())
            .map(|t| t as usize))
        .unwrap_or(4);
    let (target, schema, database) = match kind.as_str() {
        "duckdb" => (
            WarehouseTarget::DuckDb {
                path: PathBuf::from(s("path").unwrap_or_else(|| "dbt.duckdb".to_owned())),
            },
            s("schema").unwrap_or_else(|| "main".to_owned()),
            String::new(),
        ),
        "postgres" => {
            // profiles.yml holds the password as it is: escaped into the URL,
            // so `@ / : #` in it stay part of it.
            let url = format!(
                "postgres://{}:{}@{}:{}/{}",
                escape_userinfo(&s("user").unwrap_or_default()),
                escape_userinfo(&s("password").or(s("pass")).unwrap_or_default()),
                s("host").unwrap_or_else(|| "localhost".to_owned()),
                s("port").unwrap_or_else(|| "5432".to_owned()),
                s("dbname").or(s("database")).unwrap_or_default()
            );
            (
                WarehouseTarget::Postgres {
                    url: SecretUrl::new(url),
                },
                s("schema").unwrap_or_else(|| "public".to_owned()),
                s("dbname").unwrap_or_default(),
            )
        }
        "bigquery" => (
            WarehouseTarget::BigQuery(weir_config::BigQueryConfig {
                project: s("project").or(s("database")).unwrap_or_default(),
                location: s("location"),
                credentials: s("keyfile").map(PathBuf::from),
                endpoint: s("api_endpoint"),
                lake_uri: None,
            }),
            s("dataset").or(s("schema")).unwrap_or_default(),
            s("project").unwrap_or_default(),
        ),
        other => {
            return Err(format!(
                "{}: adapter type `{other}` is not supported (duckdb, postgres, bigquery)",
                file.display()
            ))
        }
    };
    Ok(ProfileTarget {
        warehouse: WarehouseConfig {
            target,
            ..WarehouseConfig::default()
        },
        target: Target {
            name: target_name,
            kind,
            schema,
            database,
            threads,
        },
    })
}

/// Percent-encode what a URL's user info cannot hold as it is.
fn escape_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
