//! The Olist generator reproduces the reference marginals exactly at scale 1,
//! and its CSV files load back into the same tables.

use weir_source::csv_load::load_csv_dir;
use weir_source::olist::{
    generate_csv, generate_into_postgres, GenerateOptions, ORDERS_PER_STATE, TABLES,
};
use weir_source::SourceError;
use weir_testkit::{temp_dir, TestDb};

/// Run `sql` (two columns: key, count) and compare with `expected`.
async fn check(client: &tokio_postgres::Client, sql: &str, expected: &[(&str, i64)]) {
    let rows = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut got: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let mut want: Vec<(String, i64)> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{sql}");
}

#[tokio::test]
async fn scale_one_matches_every_reference_marginal() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let counts = generate_into_postgres(&mut client, "public", GenerateOptions::default(), false)
        .await
        .unwrap();
    let c = &client;
    check(
        c,
        "SELECT table_name::text, (xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM ' || table_name, false, true, '')))[1]::text::int8
         FROM information_schema.tables WHERE table_schema = 'public'",
        &[
            ("olist_customers", 99_441),
            ("olist_geolocation", 1_000_163),
            ("olist_order_items", 112_650),
            ("olist_order_payments", 103_886),
            ("olist_order_reviews", 99_224),
            ("olist_orders", 99_441),
            ("olist_products", 32_951),
            ("olist_sellers", 3_095),
            ("product_category_name_translation", 71),
        ],
    )
    .await;
    assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 1_550_922);
    let states: Vec<(&str, i64)> = ORDERS_PER_STATE
        .iter()
        .map(|(s, n)| (*s, *n as i64))
        .collect();
    check(
        c,
        "SELECT c.customer_state::text, count(*) FROM olist_orders o JOIN olist_customers c USING (customer_id) GROUP BY 1",
        &states,
    )
    .await;
    check(
        c,
        "SELECT order_status, count(*) FROM olist_orders GROUP BY 1",
        &[
            ("delivered", 96_478),
            ("shipped", 1_107),
            ("canceled", 625),
            ("unavailable", 609),
            ("invoiced", 314),
            ("processing", 301),
            ("created", 5),
            ("approved", 2),
        ],
    )
    .await;
    check(
        c,
        "SELECT 'approved', count(*) FILTER (WHERE order_approved_at IS NULL) FROM olist_orders
         UNION ALL SELECT 'carrier', count(*) FILTER (WHERE order_delivered_carrier_date IS NULL) FROM olist_orders
         UNION ALL SELECT 'customer', count(*) FILTER (WHERE order_delivered_customer_date IS NULL) FROM olist_orders",
        &[("approved", 160), ("carrier", 1_783), ("customer", 2_965)],
    )
    .await;
    check(
        c,
        "SELECT payment_type, count(*) FROM olist_order_payments GROUP BY 1",
        &[
            ("credit_card", 76_795),
            ("boleto", 19_784),
            ("voucher", 5_775),
            ("debit_card", 1_529),
            ("not_defined", 3),
        ],
    )
    .await;
    check(
        c,
        "SELECT review_score::text, count(*) FROM olist_order_reviews GROUP BY 1",
        &[
            ("5", 57_328),
            ("4", 19_142),
            ("3", 8_179),
            ("2", 3_151),
            ("1", 11_424),
        ],
    )
    .await;
    check(
        c,
        "SELECT 'unique customers', count(DISTINCT customer_unique_id) FROM olist_customers
         UNION ALL SELECT 'null category', count(*) FILTER (WHERE product_category_name IS NULL) FROM olist_products
         UNION ALL SELECT 'categories', count(DISTINCT product_category_name) FROM olist_products
         UNION ALL SELECT 'translated', count(DISTINCT p.product_category_name) FROM olist_products p
                   JOIN product_category_name_translation t USING (product_category_name)
         UNION ALL SELECT 'orders with items', count(DISTINCT order_id) FROM olist_order_items
         UNION ALL SELECT 'max items', max(order_item_id) FROM olist_order_items
         UNION ALL SELECT 'states', count(DISTINCT customer_state) FROM olist_customers",
        &[
            ("unique customers", 96_096),
            ("null category", 610),
            ("categories", 73),
            ("translated", 71),
            ("orders with items", 98_666),
            ("max items", 21),
            ("states", 27),
        ],
    )
    .await;
    // Shapes: the known trap multiplies SP's orders; the sales leader; delivery times; sellers in SP.
    let row = c
        .query_one(
            "SELECT
               (SELECT count(*) FROM olist_orders o JOIN olist_customers c USING (customer_id)
                  JOIN olist_geolocation g ON g.geolocation_zip_code_prefix = c.customer_zip_code_prefix
                 WHERE c.customer_state = 'SP'),
               (SELECT p.product_category_name FROM olist_order_items i JOIN olist_products p USING (product_id)
                 GROUP BY 1 ORDER BY sum(i.price) DESC NULLS LAST LIMIT 1),
               (SELECT avg(extract(epoch FROM order_delivered_customer_date - order_purchase_timestamp) / 86400)::float8
                  FROM olist_orders WHERE order_status = 'delivered'),
               (SELECT (count(*) FILTER (WHERE seller_state = 'SP'))::float8 / count(*) FROM olist_sellers),
               (SELECT count(DISTINCT geolocation_zip_code_prefix) FROM olist_geolocation),
               (SELECT count(*) FILTER (WHERE review_comment_message LIKE '%' || chr(10) || '%') FROM olist_order_reviews)",
            &[],
        )
        .await
        .unwrap();
    let fan_out: i64 = row.get(0);
    assert!(
        fan_out > 41_746 * 2,
        "joining geolocation should multiply rows (the trap): {fan_out}"
    );
    assert_eq!(row.get::<_, String>(1), "beleza_saude");
    let days: f64 = row.get(2);
    assert!((10.0..14.0).contains(&days), "mean delivery {days} days");
    let sp: f64 = row.get(3);
    assert!((0.55..0.65).contains(&sp), "{sp}");
    let prefixes: i64 = row.get(4);
    assert!((18_000..20_000).contains(&prefixes), "{prefixes}");
    assert!(
        row.get::<_, i64>(5) > 0,
        "some review messages have line breaks"
    );

    // Without --replace, existing tables are refused and left alone.
    let err = generate_into_postgres(&mut client, "public", GenerateOptions::default(), false)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::TablesExist { .. }), "{err}");
}

async fn table_fingerprints(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for t in &TABLES {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {schema}.{} x",
                    t.name
                ),
                &[],
            )
            .await
            .unwrap();
        out.push((t.name.to_owned(), row.get(0), row.get(1)));
    }
    out
}

#[tokio::test]
async fn generated_csv_files_load_back_into_the_same_tables() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let opts = GenerateOptions {
        scale: 0.03,
        seed: 7,
    };
    generate_into_postgres(&mut client, "direct", opts, false)
        .await
        .unwrap();
    let dir = temp_dir();
    let counts = generate_csv(dir.path(), opts).unwrap();
    assert_eq!(counts.len(), 9);
    for t in &TABLES {
        assert!(dir.path().join(t.csv_file).exists(), "{}", t.csv_file);
    }
    // The files are quoted as the public dataset quotes them.
    let orders = std::fs::read_to_string(dir.path().join("olist_orders_dataset.csv")).unwrap();
    assert!(orders.starts_with("\"order_id\",\"customer_id\",\"order_status\""));
    let reviews =
        std::fs::read_to_string(dir.path().join("olist_order_reviews_dataset.csv")).unwrap();
    assert!(reviews.contains("\"\""), "embedded quotes are doubled");

    let loaded = load_csv_dir(&mut client, dir.path(), "from_csv", false)
        .await
        .unwrap();
    assert_eq!(loaded.len(), 9);
    let a = table_fingerprints(&client, "direct").await;
    let b = table_fingerprints(&client, "from_csv").await;
    assert_eq!(a, b);
    // Primary keys came along.
    let pk: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE n.nspname = 'from_csv' AND c.contype = 'p'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, 8, "every table but geolocation has a primary key");
    // Loading again without replace is refused; with replace it works.
    assert!(load_csv_dir(&mut client, dir.path(), "from_csv", false)
        .await
        .is_err());
    load_csv_dir(&mut client, dir.path(), "from_csv", true)
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_csv_rows_are_reported_with_lines_and_nothing_is_loaded() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("sales 2024.csv"),
        "id,amount,day,note,zip\n1,10.5,2024-01-01,\"multi\nline, with comma\",01310\n2,x,2024-01-02,ok,02000\n3,7,2024-01-03\n",
    )
    .unwrap();
    // First pass infers `amount` as text because of "x"; make a typed failure with an Olist file.
    std::fs::write(
        dir.path().join("olist_sellers_dataset.csv"),
        "\"seller_id\",\"seller_zip_code_prefix\",\"seller_city\",\"seller_state\"\n\"a\",01000,sao paulo,SP\n\"b\",123456,rio,RJ,extra\n",
    )
    .unwrap();
    let err = load_csv_dir(&mut client, dir.path(), "public", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("olist_sellers_dataset.csv") && err.contains("line 3"),
        "{err}"
    );
    let err_all = err.clone();
    // sales 2024.csv has a short row at line 5 (the quoted field spans lines 2-3)
    std::fs::remove_file(dir.path().join("olist_sellers_dataset.csv")).unwrap();
    let err = load_csv_dir(&mut client, dir.path(), "public", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sales 2024.csv") && err.contains("line 5") && err.contains("3 fields"),
        "{err}"
    );
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing half-loaded: {err_all}");

    // Fixed, it loads with inferred types and keeps leading zeros and line breaks.
    std::fs::write(
        dir.path().join("sales 2024.csv"),
        "id,amount,day,note,zip\n1,10.5,2024-01-01,\"multi\nline, with comma\",01310\n2,3,2024-01-02,,02000\n",
    )
    .unwrap();
    let loaded = load_csv_dir(&mut client, dir.path(), "public", false)
        .await
        .unwrap();
    assert_eq!(loaded[0].table, "sales_2024");
    assert_eq!(loaded[0].rows, 2);
    let types: Vec<String> = client
        .query(
            "SELECT data_type::text FROM information_schema.columns WHERE table_name = 'sales_2024' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        types,
        vec!["bigint", "double precision", "date", "text", "text"]
    );
    let row = client
        .query_one("SELECT note, zip FROM sales_2024 WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "multi\nline, with comma");
    assert_eq!(row.get::<_, String>(1), "01310");
    let null_note: Option<String> = client
        .query_one("SELECT note FROM sales_2024 WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(null_note, None);
}

/// Regression: in files whose lines end with CRLF (the real Olist
/// translation and reviews files) every reported line was one too low.
#[tokio::test]
async fn malformed_rows_are_reported_at_their_line_in_crlf_files_too() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    for eol in ["\n", "\r\n"] {
        let dir = temp_dir();
        let text = [
            "id,amount,note",
            "1,10.5,\"multi",
            "line\"",
            "2,3",
            "3,4,ok",
            "4",
        ]
        .join(eol)
            + eol;
        std::fs::write(dir.path().join("t.csv"), text).unwrap();
        let err = load_csv_dir(&mut client, dir.path(), "public", false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 4: 2 fields") && err.contains("line 6: 1 fields"),
            "{eol:?}: {err}"
        );
    }
}
