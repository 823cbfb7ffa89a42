//! Time zones in the embedded warehouse, offline: DuckDB's ICU extension is
//! linked in (never downloaded), and Arrow results carry named zones.
//!
//! Regression: `select now()` failed with `Invalid timezone "UTC"` (Arrow
//! without chrono-tz), and `date_trunc`, `AT TIME ZONE`, `extract(hour …)`
//! and `::date` on a `TIMESTAMP WITH TIME ZONE` asked to install `icu`.

mod common;

use common::{rows, scalar};
use weir_testkit::temp_dir;
use weir_warehouse::{DuckDb, Warehouse};

#[tokio::test]
async fn timestamptz_functions_and_named_zones_work_offline() {
    let dir = temp_dir();
    let wh = DuckDb::open(&dir.path().join("w.duckdb")).unwrap();
    // A result in a named zone formats (Arrow with chrono-tz). Every call
    // has its own connection, so the zone is set for the database.
    let now = wh.query("SELECT now() AS t").await.unwrap();
    assert_eq!(now.num_rows(), 1);
    wh.execute("SET GLOBAL TimeZone = 'America/Sao_Paulo'")
        .await
        .unwrap();
    let t = "TIMESTAMPTZ '2026-03-01 02:30:00+00'";
    for (sql, want) in [
        (
            format!("SELECT date_trunc('day', {t})::VARCHAR"),
            "2026-02-28 00:00:00-03",
        ),
        (
            format!("SELECT ({t} AT TIME ZONE 'America/Sao_Paulo')::VARCHAR"),
            "2026-02-28 23:30:00",
        ),
        (
            format!("SELECT ({t} AT TIME ZONE 'Asia/Tokyo')::VARCHAR"),
            "2026-03-01 11:30:00",
        ),
        (format!("SELECT extract(hour FROM {t})"), "23"),
        (format!("SELECT ({t})::DATE::VARCHAR"), "2026-02-28"),
        (
            format!("SELECT strftime({t}, '%H:%M %Z')"),
            "23:30 America/Sao_Paulo",
        ),
        (
            "SELECT count(*) FROM pg_timezone_names() WHERE name = 'America/Sao_Paulo'".to_owned(),
            "1",
        ),
    ] {
        assert_eq!(scalar(&wh, &sql).await, want, "{sql}");
    }
    // TIMESTAMPTZ values come back as Arrow timestamps tagged with the zone.
    let r = wh.query(&format!("SELECT {t} AS t")).await.unwrap();
    assert_eq!(
        r.schema.field(0).data_type().to_string(),
        "Timestamp(µs, \"America/Sao_Paulo\")"
    );
    assert_eq!(
        rows(&wh, &format!("SELECT {t} AS t")).await,
        vec![vec!["2026-02-28T23:30:00-03:00".to_owned()]]
    );
    // Nothing was installed: ICU is built in.
    assert_eq!(
        scalar(&wh, "SELECT installed::VARCHAR || '/' || install_mode FROM duckdb_extensions() WHERE extension_name = 'icu'").await,
        "true/STATICALLY_LINKED"
    );
}
