//! The binary COPY decoder: any bytes, for any column types, fed in any
//! pieces, decode or fail with an error, never a panic, and never produce a
//! batch that does not fit its schema.
#![no_main]

use std::sync::Arc;

use arrow::datatypes::Schema;
use libfuzzer_sys::fuzz_target;
use weir_source::decode::BatchDecoder;
use weir_source::types::{ColumnInfo, PgKind};

/// The column types a byte picks from.
fn kind(b: u8) -> PgKind {
    let scalar = |b: u8| match b % 19 {
        0 => PgKind::Bool,
        1 => PgKind::Int2,
        2 => PgKind::Int4,
        3 => PgKind::Int8,
        4 => PgKind::Float4,
        5 => PgKind::Float8,
        6 => PgKind::Decimal { precision: 10, scale: 2 },
        7 => PgKind::Decimal { precision: 38, scale: 0 },
        8 => PgKind::NumericText,
        9 => PgKind::Text,
        10 => PgKind::Uuid,
        11 => PgKind::Date,
        12 => PgKind::Time,
        13 => PgKind::Timestamp,
        14 => PgKind::Timestamptz,
        15 => PgKind::Interval,
        16 => PgKind::Json,
        17 => PgKind::Jsonb,
        _ => PgKind::Bytea,
    };
    if b >= 200 {
        PgKind::Array(Box::new(scalar(b)))
    } else {
        scalar(b)
    }
}

fuzz_target!(|data: &[u8]| {
    // [n columns][n kinds][piece size][COPY bytes…]
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 6) + 1;
    if rest.len() < n + 1 {
        return;
    }
    let (kinds, rest) = rest.split_at(n);
    let (piece, stream) = rest.split_first().unwrap();
    let columns: Vec<ColumnInfo> = kinds
        .iter()
        .enumerate()
        .map(|(i, b)| ColumnInfo {
            name: format!("c{i}"),
            declared: String::new(),
            kind: kind(*b),
            not_null: false,
            cast_to_text: false,
            distinct_fraction: None,
        })
        .collect();
    let schema = Arc::new(Schema::new(columns.iter().map(|c| c.field()).collect::<Vec<_>>()));
    let kinds: Vec<PgKind> = columns.iter().map(|c| c.kind.clone()).collect();
    let mut d = BatchDecoder::new(schema.clone(), &kinds);
    let step = usize::from(*piece).max(1);
    for chunk in stream.chunks(step) {
        if d.feed(chunk).is_err() {
            return;
        }
        match d.take_batch() {
            Ok(Some(b)) => assert_eq!(b.schema().fields().len(), schema.fields().len()),
            Ok(None) => {}
            Err(_) => return,
        }
    }
    if d.finish().is_ok() {
        if let Ok(Some(b)) = d.take_batch() {
            assert_eq!(b.num_columns(), n);
        }
    }
});
