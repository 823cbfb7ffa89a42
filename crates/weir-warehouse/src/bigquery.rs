//! BigQuery over its REST API (v2).
//!
//! Loads are BigQuery load jobs that read the run's files straight from
//! `gs://` (the lake's URL, or `lake_uri` when BigQuery sees the lake under
//! another name), into a staging table created with Weir's column types;
//! BigQuery itself counts bad NDJSON records against `maxBadRecords`.
//! Publishing is one atomic statement per step (`CREATE OR REPLACE TABLE … AS`,
//! `INSERT`, `MERGE`).
//!
//! Credentials: a service-account key file (`credentials:`), else an access
//! token in `GOOGLE_OAUTH_ACCESS_TOKEN`, else Google's application default
//! credentials. Tokens are never logged. With a custom `endpoint` (an
//! emulator) a missing credential means no `Authorization` header.

use std::time::Duration;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorageBuilder};
use serde_json::{json, Value};
use weir_config::{BigQueryConfig, LakeFormat};

use crate::text_result;
use crate::types::{LINEAGE_LOADED_AT, LINEAGE_RUN_ID};
use crate::{
    Column, Dialect, Publish, QueryResult, Rejected, RelationKind, Result, StageOutcome,
    StageRequest, Warehouse, WarehouseError,
};

const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";
/// Rows per page when reading query results.
const PAGE_ROWS: u32 = 10_000;

enum Auth {
    None,
    Token(weir_config::Secret),
    Provider(GcpCredentialProvider),
}

pub struct BigQuery {
    http: reqwest::Client,
    base: String,
    project: String,
    location: Option<String>,
    /// `gs://bucket/prefix` under which BigQuery reads the lake's root.
    lake_uri: Option<String>,
    auth: Auth,
}

fn bq_err(message: impl Into<String>) -> WarehouseError {
    WarehouseError::BigQuery {
        message: message.into(),
        status: None,
        transient: false,
    }
}

/// BigQuery's error reasons that say "try again later".
fn transient_reason(reason: &str) -> bool {
    matches!(
        reason,
        "rateLimitExceeded" | "backendError" | "internalError"
    )
}

/// A response BigQuery refused, with its status: 408, 429 and 5xx, and the
/// reasons BigQuery documents as retryable, are transient.
fn http_err(status: u16, body: &Value, message: impl Into<String>) -> WarehouseError {
    let reason_says = body["error"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["reason"].as_str().is_some_and(transient_reason));
    WarehouseError::BigQuery {
        message: message.into(),
        status: Some(status),
        transient: status == 408 || status == 429 || (500..600).contains(&status) || reason_says,
    }
}

/// A request that got no answer, or whose answer could not be read.
fn net_err(path: &str, e: reqwest::Error) -> WarehouseError {
    WarehouseError::BigQuery {
        transient: e.is_timeout() || e.is_connect() || e.is_request() || e.is_body(),
        status: e.status().map(|s| s.as_u16()),
        message: format!("{path}: {}", e.without_url()),
    }
}

impl BigQuery {
    pub async fn new(config: &BigQueryConfig, lake_url: &str) -> Result<BigQuery> {
        let custom_endpoint = config.endpoint.is_some();
        let auth = if let Some(path) = &config.credentials {
            let gcs = GoogleCloudStorageBuilder::new()
                // object_store's GCS client knows how to turn a service-account
                // key into tokens (scope cloud-platform, which covers BigQuery);
                // the bucket is never used.
                .with_bucket_name("weir-bigquery-auth")
                .with_service_account_path(path.to_string_lossy())
                .build()
                .map_err(|e| WarehouseError::Open {
                    target: format!("bigquery:{}", config.project),
                    transient: false,
                    message: format!("credentials {}: {e}", path.display()),
                })?;
            Auth::Provider(gcs.credentials().clone())
        } else if let Ok(token) = std::env::var("GOOGLE_OAUTH_ACCESS_TOKEN") {
            Auth::Token(weir_config::Secret::new(token))
        } else if custom_endpoint {
            Auth::None
        } else {
            let gcs = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name("weir-bigquery-auth")
                .build()
                .map_err(|e| WarehouseError::Open {
                    target: format!("bigquery:{}", config.project),
                    transient: false,
                    message: format!(
                        "no credentials: set `credentials:` or GOOGLE_OAUTH_ACCESS_TOKEN ({e})"
                    ),
                })?;
            Auth::Provider(gcs.credentials().clone())
        };
        let lake_uri = config
            .lake_uri
            .clone()
            .or_else(|| lake_url.starts_with("gs://").then(|| lake_url.to_owned()));
        let base = config
            .endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/');
        Ok(BigQuery {
            http: reqwest::Client::new(),
            base: format!("{base}/bigquery/v2/projects/{}", config.project),
            project: config.project.clone(),
            location: config.location.clone(),
            lake_uri,
            auth,
        })
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        match &self.auth {
            Auth::None => {}
            Auth::Token(t) => req = req.bearer_auth(t.expose()),
            Auth::Provider(p) => {
                let c = p
                    .get_credential()
                    .await
                    .map_err(|e| bq_err(format!("getting an access token: {e}")))?;
                req = req.bearer_auth(&c.bearer);
            }
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| net_err(path, e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| net_err(path, e))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// A request that must succeed (2xx).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, v) = self.request(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(http_err(
                status,
                &v,
                format!("{path}: HTTP {status}: {}", error_message(&v)),
            ))
        }
    }

    fn job_reference(&self) -> Value {
        let mut r = json!({ "projectId": self.project });
        if let Some(l) = &self.location {
            r["location"] = json!(l);
        }
        r
    }

    /// Insert a job and wait until it is done; a failed job is an error.
    async fn run_job(&self, configuration: Value) -> Result<Value> {
        let job = self
            .call(
                reqwest::Method::POST,
                "/jobs",
                Some(
                    json!({ "jobReference": self.job_reference(), "configuration": configuration }),
                ),
            )
            .await?;
        self.wait(job).await
    }

    async fn wait(&self, mut job: Value) -> Result<Value> {
        let mut delay = Duration::from_millis(100);
        loop {
            if job["status"]["state"] == "DONE" {
                return Ok(job);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            let id = job["jobReference"]["jobId"]
                .as_str()
                .ok_or_else(|| bq_err(format!("job without an id: {job}")))?
                .to_owned();
            let mut path = format!("/jobs/{id}");
            if let Some(l) = job["jobReference"]["location"].as_str() {
                path.push_str(&format!("?location={l}"));
            }
            job = self.call(reqwest::Method::GET, &path, None).await?;
        }
    }

    fn table_path(&self, dataset: &str, table: &str) -> String {
        format!("/datasets/{dataset}/tables/{table}")
    }

    fn lake_uri_for(&self, rel: &str) -> Result<String> {
        let root = self.lake_uri.as_ref().ok_or_else(|| {
            bq_err("BigQuery loads from gs://: the lake must be gs:// or `warehouse.bigquery.lake_uri` must say where BigQuery sees it")
        })?;
        Ok(format!("{}/{rel}", root.trim_end_matches('/')))
    }
}

/// What a finished load job means: rows loaded and bad records, or an error.
/// Past `maxBadRecords` BigQuery fails the job and lists the bad records as its
/// errors; those come back as rejected (the loader then fails the table with
/// the rejects file), while any other failure is an error.
fn load_outcome(job: &Value, format: LakeFormat, budget: u64, table: &str) -> Result<StageOutcome> {
    let rejected: Vec<Rejected> = job["status"]["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| Rejected {
                    file: e["location"].as_str().unwrap_or("").to_owned(),
                    line: None,
                    reason: e["message"].as_str().unwrap_or("").to_owned(),
                    record: None,
                })
                .collect()
        })
        .unwrap_or_default();
    let counted = |key: &str| {
        job["statistics"]["load"][key]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut rejected_count = counted("badRecords");
    if let Some(fatal) = job["status"].get("errorResult") {
        rejected_count = rejected_count.max(rejected.len() as u64);
        if format == LakeFormat::Ndjson && rejected_count > budget {
            return Ok(StageOutcome {
                rows: 0,
                rejected,
                rejected_count,
            });
        }
        let details: String = rejected
            .iter()
            .take(3)
            .map(|r| format!("; {}", r.reason))
            .collect();
        if fatal["reason"].as_str().is_some_and(transient_reason) {
            return Err(WarehouseError::BigQuery {
                message: format!(
                    "table {table}: load job failed: {}",
                    fatal["message"].as_str().unwrap_or("")
                ),
                status: None,
                transient: true,
            });
        }
        return Err(WarehouseError::Load {
            table: table.to_owned(),
            message: format!(
                "load job failed: {}{details}",
                fatal["message"].as_str().unwrap_or("")
            ),
        });
    }
    // BigQuery reports the rows loaded (the emulator the table's rows: the
    // same here, as the staging table starts empty).
    Ok(StageOutcome {
        rows: counted("outputRows"),
        rejected,
        rejected_count,
    })
}

fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

/// A BigQuery schema field for one of Weir's column types.
fn bq_field(c: &Column) -> Value {
    if let Some(elem) = c
        .data_type
        .strip_prefix("ARRAY<")
        .and_then(|s| s.strip_suffix('>'))
    {
        return json!({ "name": c.name, "type": bq_type(elem), "mode": "REPEATED" });
    }
    json!({ "name": c.name, "type": bq_type(&c.data_type), "mode": "NULLABLE" })
}

/// `NUMERIC(10,2)` → type NUMERIC (precision/scale go in separate fields, kept simple).
fn bq_type(t: &str) -> String {
    t.split('(').next().unwrap_or(t).to_owned()
}

fn arrow_type(bq: &str) -> DataType {
    match bq {
        "INTEGER" | "INT64" => DataType::Int64,
        "FLOAT" | "FLOAT64" => DataType::Float64,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

/// Cells as the API gives them (strings, or int64 microseconds for TIMESTAMP).
fn cell_text(v: &Value, bq: &str) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if bq == "TIMESTAMP" => Some(timestamp_text(s)),
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// TIMESTAMP cells: int64 microseconds (or float seconds) since the epoch → RFC 3339.
fn timestamp_text(s: &str) -> String {
    let micros = s
        .parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().map(|f| (f * 1e6).round() as i64));
    match micros.and_then(chrono::DateTime::from_timestamp_micros) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => s.to_owned(),
    }
}

#[async_trait]
impl Warehouse for BigQuery {
    fn dialect(&self) -> Dialect {
        Dialect::BigQuery
    }

    fn describe_target(&self) -> String {
        format!("bigquery:{}", self.project)
    }

    async fn ensure_schema(&self, schema: &str) -> Result<()> {
        let mut body =
            json!({ "datasetReference": { "projectId": self.project, "datasetId": schema } });
        if let Some(l) = &self.location {
            body["location"] = json!(l);
        }
        let (status, v) = self
            .request(reqwest::Method::POST, "/datasets", Some(body))
            .await?;
        match status {
            200..=299 | 409 => Ok(()),
            _ => Err(http_err(
                status,
                &v,
                format!(
                    "creating dataset {schema}: HTTP {status}: {}",
                    error_message(&v)
                ),
            )),
        }
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        self.query(sql).await.map(|_| ())
    }

    async fn query(&self, sql: &str) -> Result<QueryResult> {
        let mut body = json!({
            "query": sql,
            "useLegacySql": false,
            "maxResults": PAGE_ROWS,
            "timeoutMs": 10_000,
            "formatOptions": { "useInt64Timestamp": true },
        });
        if let Some(l) = &self.location {
            body["location"] = json!(l);
        }
        let first = self
            .call(reqwest::Method::POST, "/queries", Some(body))
            .await
            .map_err(|e| WarehouseError::Sql {
                sql: sql.to_owned(),
                transient: e.is_transient(),
                message: e.to_string(),
                code: None,
            })?;
        let job_id = first["jobReference"]["jobId"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let location = first["jobReference"]["location"]
            .as_str()
            .map(str::to_owned);
        let mut page = first;
        let mut schema_json = Value::Null;
        let mut rows: Vec<Value> = Vec::new();
        loop {
            let mut token = None;
            if page["jobComplete"] != false {
                if let Some(errors) = page["errors"].as_array().filter(|e| !e.is_empty()) {
                    let messages: Vec<&str> = errors
                        .iter()
                        .filter_map(|e| e["message"].as_str())
                        .collect();
                    return Err(WarehouseError::Sql {
                        sql: sql.to_owned(),
                        message: messages.join("; "),
                        code: None,
                        transient: false,
                    });
                }
                if schema_json.is_null() {
                    schema_json = page["schema"].clone();
                }
                rows.extend(page["rows"].as_array().cloned().unwrap_or_default());
                match page["pageToken"].as_str() {
                    Some(t) => token = Some(t.to_owned()),
                    None => break,
                }
            }
            if job_id.is_empty() {
                break;
            }
            // Not done yet, or more pages: the server waits up to timeoutMs.
            let mut path = format!(
                "/queries/{job_id}?maxResults={PAGE_ROWS}&timeoutMs=10000&formatOptions.useInt64Timestamp=true"
            );
            if let Some(t) = token {
                let t: String = url::form_urlencoded::byte_serialize(t.as_bytes()).collect();
                path.push_str(&format!("&pageToken={t}"));
            }
            if let Some(l) = &location {
                path.push_str(&format!("&location={l}"));
            }
            page = self.call(reqwest::Method::GET, &path, None).await?;
        }
        let fields: Vec<(String, String, bool)> = schema_json["fields"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        (
                            f["name"].as_str().unwrap_or("").to_owned(),
                            f["type"].as_str().unwrap_or("STRING").to_owned(),
                            f["mode"] == "REPEATED",
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let columns: Vec<(String, DataType)> = fields
            .iter()
            .map(|(name, ty, repeated)| {
                let dt = if *repeated {
                    DataType::Utf8
                } else {
                    arrow_type(ty)
                };
                (name.clone(), dt)
            })
            .collect();
        let cells: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| {
                fields
                    .iter()
                    .enumerate()
                    .map(|(i, (_, ty, repeated))| {
                        let v = &r["f"][i]["v"];
                        if *repeated {
                            Some(v.to_string())
                        } else {
                            cell_text(v, ty)
                        }
                    })
                    .collect()
            })
            .collect();
        text_result(&columns, &cells, "true")
    }

    async fn relation_kind(&self, schema: &str, name: &str) -> Result<Option<RelationKind>> {
        let (status, v) = self
            .request(reqwest::Method::GET, &self.table_path(schema, name), None)
            .await?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(http_err(
                status,
                &v,
                format!(
                    "looking up {schema}.{name}: HTTP {status}: {}",
                    error_message(&v)
                ),
            ));
        }
        Ok(Some(match v["type"].as_str() {
            Some("VIEW") | Some("MATERIALIZED_VIEW") => RelationKind::View,
            _ => RelationKind::Table,
        }))
    }

    async fn describe(&self, schema: &str, name: &str) -> Result<Option<Vec<Column>>> {
        let (status, v) = self
            .request(reqwest::Method::GET, &self.table_path(schema, name), None)
            .await?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(http_err(
                status,
                &v,
                format!(
                    "describing {schema}.{name}: HTTP {status}: {}",
                    error_message(&v)
                ),
            ));
        }
        let cols = v["schema"]["fields"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        // The REST API speaks legacy type names; Weir uses standard SQL's.
                        let t = match f["type"].as_str().unwrap_or("STRING") {
                            "INTEGER" => "INT64",
                            "FLOAT" => "FLOAT64",
                            "BOOLEAN" => "BOOL",
                            "RECORD" => "STRUCT",
                            other => other,
                        }
                        .to_owned();
                        Column {
                            name: f["name"].as_str().unwrap_or("").to_owned(),
                            data_type: if f["mode"] == "REPEATED" {
                                format!("ARRAY<{t}>")
                            } else {
                                t
                            },
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(cols))
    }

    async fn stage(&self, req: &StageRequest<'_>) -> Result<StageOutcome> {
        let table = req.table.name.as_str();
        // The files hold the data columns; lineage columns are added after the load.
        let data_cols = &req.columns[..req.arrow.fields().len()];
        let body = json!({
            "tableReference": { "projectId": self.project, "datasetId": req.schema, "tableId": req.staging },
            "schema": { "fields": data_cols.iter().map(bq_field).collect::<Vec<_>>() },
        });
        self.call(
            reqwest::Method::POST,
            &format!("/datasets/{}/tables", req.schema),
            Some(body),
        )
        .await?;
        let uris: Vec<String> = req
            .table
            .files
            .iter()
            .map(|f| self.lake_uri_for(&f.path))
            .collect::<Result<_>>()?;
        let mut outcome = StageOutcome::default();
        if !uris.is_empty() {
            let load = json!({
                "load": {
                    "sourceUris": uris,
                    "sourceFormat": match req.format { LakeFormat::Parquet => "PARQUET", LakeFormat::Ndjson => "NEWLINE_DELIMITED_JSON" },
                    "destinationTable": { "projectId": self.project, "datasetId": req.schema, "tableId": req.staging },
                    "createDisposition": "CREATE_NEVER",
                    "writeDisposition": "WRITE_APPEND",
                    "maxBadRecords": req.max_bad_records,
                    "parquetOptions": { "enableListInference": true },
                }
            });
            let job = self.run_job(load).await?;
            outcome = load_outcome(&job, req.format, req.max_bad_records, table)?;
        }
        if let Some(l) = req.lineage {
            let d = Dialect::BigQuery;
            let staging = format!("{}.{}", d.quote(req.schema), d.quote(req.staging));
            // One column per statement: bqemulator (not BigQuery) refuses two.
            for (name, ty) in [(LINEAGE_RUN_ID, "STRING"), (LINEAGE_LOADED_AT, "TIMESTAMP")] {
                self.execute(&format!(
                    "ALTER TABLE {staging} ADD COLUMN {} {ty}",
                    d.quote(name)
                ))
                .await?;
            }
            self.execute(&format!(
                "UPDATE {staging} SET {} = {}, {} = TIMESTAMP {} WHERE TRUE",
                d.quote(LINEAGE_RUN_ID),
                d.literal(&l.run_id),
                d.quote(LINEAGE_LOADED_AT),
                d.literal(&l.loaded_at)
            ))
            .await?;
        }
        Ok(outcome)
    }

    async fn publish(&self, p: &Publish<'_>) -> Result<()> {
        for s in Dialect::BigQuery.publish_statements(p) {
            self.execute(&s).await?;
        }
        Ok(())
    }

    async fn drop_table(&self, schema: &str, name: &str) -> Result<()> {
        let (status, v) = self
            .request(
                reqwest::Method::DELETE,
                &self.table_path(schema, name),
                None,
            )
            .await?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(http_err(
                status,
                &v,
                format!(
                    "dropping {schema}.{name}: HTTP {status}: {}",
                    error_message(&v)
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retried or not by what BigQuery says, not by its words: statuses and
    /// the documented error reasons.
    #[test]
    fn retryable_responses_are_transient() {
        let body =
            |reason: &str| json!({ "error": { "errors": [{ "reason": reason }], "message": "m" } });
        assert!(http_err(503, &body("backendError"), "x").is_transient());
        assert!(http_err(429, &Value::Null, "x").is_transient());
        assert!(http_err(403, &body("rateLimitExceeded"), "x").is_transient());
        assert!(!http_err(403, &body("accessDenied"), "x").is_transient());
        assert!(!http_err(404, &body("notFound"), "x").is_transient());
        assert!(!bq_err("x").is_transient());
    }

    /// A finished load job shaped as BigQuery's `jobs.get` documents it
    /// (`JobStatus.errors`, `JobStatistics3.badRecords`); bqemulator does not
    /// implement `maxBadRecords`, so this path is checked here.
    fn job(error_result: bool, bad: &str, rows: &str) -> Value {
        let mut status = json!({
            "state": "DONE",
            "errors": [
                { "reason": "invalid", "location": "gs://b/lake/t/run=1/part-00000.json",
                  "message": "Error while reading data, error message: JSON parsing error in row starting at position 120: Could not convert value to integer." },
                { "reason": "invalid", "location": "gs://b/lake/t/run=1/part-00000.json",
                  "message": "Error while reading data, error message: JSON parsing error in row starting at position 512: Unexpected end of string." }
            ]
        });
        if error_result {
            status["errorResult"] = json!({ "reason": "invalid", "message": "Error while reading data, error message: JSON table encountered too many errors, giving up. Rows: 3; errors: 2." });
        }
        json!({
            "status": status,
            "statistics": { "load": { "badRecords": bad, "outputRows": rows, "inputFiles": "1" } }
        })
    }

    #[test]
    fn bad_records_within_the_budget_load_and_are_reported() {
        let o = load_outcome(&job(false, "2", "48"), LakeFormat::Ndjson, 2, "t").unwrap();
        assert_eq!((o.rows, o.rejected_count, o.rejected.len()), (48, 2, 2));
        assert!(o.rejected[0].reason.contains("position 120"));
    }

    #[test]
    fn bad_records_past_the_budget_come_back_as_rejected() {
        let o = load_outcome(&job(true, "0", "0"), LakeFormat::Ndjson, 1, "t").unwrap();
        assert_eq!((o.rows, o.rejected_count), (0, 2));
    }

    #[test]
    fn a_failed_parquet_job_is_an_error_with_its_reasons() {
        let e = load_outcome(&job(true, "0", "0"), LakeFormat::Parquet, 5, "t").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("too many errors") && m.contains("position 512"),
            "{m}"
        );
    }
}
