//! `s3://` lakes through object_store, against a local S3 (moto's server,
//! installed by `scripts/test`, started and stopped by this test).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir_testkit::{project, TestDb};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // `python3 -m moto.server` works wherever pip put the package, on PATH or not.
    let exe = std::env::var("WEIR_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let child = Command::new(&exe)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs Python with moto's S3 server (`pip install 'moto[server]'`, done by scripts/test): {exe}: {e}"));
    let moto = Moto { child, port };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto's S3 server did not start (is `moto[server]` installed for {exe}? scripts/test installs it)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// A minimal HTTP/1.1 request (moto does not check signatures); returns status and body.
fn http(port: u16, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response")
        + 4;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf[split..].to_vec();
    (status, body)
}

#[tokio::test]
async fn extract_to_an_s3_lake_with_multipart_uploads() {
    let moto = start_moto();
    let (status, _) = http(moto.port, "PUT", "/weir-lake");
    assert_eq!(status, 200, "create bucket");
    let db = TestDb::new().await;
    // ~70 MB of barely compressible text: several 6 MiB multipart parts per file.
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE wide (id int8 PRIMARY KEY, payload text);
             INSERT INTO wide SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
             FROM generate_series(1, 600000) g;
             CREATE TABLE small (id int4 PRIMARY KEY, name text);
             INSERT INTO small VALUES (1, 'one'), (2, NULL);",
        )
        .await
        .unwrap();
    let dir = project(&format!(
            "name: shop\nsource:\n  postgres: {{ url: \"{}\" }}\nlake:\n  url: s3://weir-lake/raw/zone\n  parquet: {{ compression: none }}\n",
            db.url()
        ));
    let (out, all) = weir_on_s3(dir.path(), moto.port, &["extract", "--json"]);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("testing-secret-key"));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = summary["run_id"].as_str().unwrap();
    assert_eq!(
        summary["manifest_url"],
        format!("s3://weir-lake/raw/zone/shop/_manifests/{run_id}.json")
    );

    // Read back through object_store, signed as any S3 client would.
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("weir-lake")
        .with_endpoint(format!("http://127.0.0.1:{}", moto.port))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing-secret-key")
        .build()
        .unwrap();
    let get = |path: String| {
        let store = &store;
        async move {
            use object_store::ObjectStoreExt;
            store
                .get(&object_store::path::Path::from(path))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        }
    };
    let body = get(format!("raw/zone/shop/_manifests/{run_id}.json")).await;
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut rows_by_table = std::collections::BTreeMap::new();
    for t in manifest["tables"].as_array().unwrap() {
        let mut rows = 0;
        for f in t["files"].as_array().unwrap() {
            let bytes = get(format!("raw/zone/{}", f["path"].as_str().unwrap())).await;
            assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap());
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap();
            for b in reader {
                rows += b.unwrap().num_rows();
            }
        }
        rows_by_table.insert(t["name"].as_str().unwrap().to_owned(), rows);
    }
    assert_eq!(rows_by_table.get("wide"), Some(&600000));
    assert_eq!(rows_by_table.get("small"), Some(&2));
    let wide_bytes = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "wide")
        .unwrap()["bytes"]
        .as_u64()
        .unwrap();
    assert!(
        wide_bytes > 3 * 6 * 1024 * 1024,
        "the file should take several multipart parts: {wide_bytes}"
    );

    // Load the run from S3 into the embedded DuckDB: the files are streamed
    // through object_store (DuckDB has no S3 extension here) and land intact.
    let (out, all) = weir_on_s3(dir.path(), moto.port, &["load", "--json"]);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("testing-secret-key"));
    let (out, all) = weir_on_s3(
        dir.path(),
        moto.port,
        &[
            "query",
            "--format",
            "csv",
            "SELECT count(*), count(DISTINCT payload), sum(id) FROM raw.wide",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "count_star(),count(DISTINCT payload),sum(id)\n600000,600000,180000300000\n",
        "{all}"
    );
}

/// Run the weir binary in `dir` with credentials for the local S3 on `port`.
fn weir_on_s3(dir: &std::path::Path, port: u16, args: &[&str]) -> (std::process::Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .expect("run weir");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, all)
}
