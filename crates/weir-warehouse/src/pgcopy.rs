//! Arrow batches → PostgreSQL binary `COPY FROM STDIN`.
//!
//! Each staging column has a type chosen by [`crate::types`]; the encoder for
//! a column follows from that type and the Arrow array. Values are written
//! straight from the arrays into one buffer per batch: no rows, no per-value
//! allocation beyond the buffer.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use bytes::{BufMut, BytesMut};

/// The file header: signature, flags, header extension length.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub(crate) const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds (and days) between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

/// How one column's values are written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Enc {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    /// Decimal128 with this scale → numeric.
    Decimal(i8),
    /// Exact decimal text (`NaN`, `Infinity` too) → numeric.
    NumericText,
    Text,
    /// json: its binary form is its text.
    Json,
    Jsonb,
    Uuid,
    Interval,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Bytea,
    /// A one-dimensional array of the element encoding, with its type OID.
    Array(Box<Enc>, u32),
}

impl Enc {
    /// The encoding for an Arrow type loaded into a column of PostgreSQL type `pg`.
    pub(crate) fn for_column(dt: &DataType, pg: &str) -> Result<Enc, String> {
        if let Some(elem_pg) = pg.strip_suffix("[]") {
            let (DataType::List(f) | DataType::LargeList(f)) = dt else {
                return Err(format!("{dt} cannot load into {pg}"));
            };
            let elem = Enc::for_column(f.data_type(), elem_pg)?;
            let oid = elem.oid();
            return Ok(Enc::Array(Box::new(elem), oid));
        }
        Ok(match (dt, pg) {
            (DataType::Boolean, _) => Enc::Bool,
            (DataType::Int16, _) => Enc::I16,
            (DataType::Int32, _) => Enc::I32,
            (DataType::Int64, _) => Enc::I64,
            (DataType::Float32, _) => Enc::F32,
            (DataType::Float64, _) => Enc::F64,
            (DataType::Decimal128(_, s), _) => Enc::Decimal(*s),
            (DataType::Utf8, "numeric") => Enc::NumericText,
            (DataType::Utf8, "jsonb") => Enc::Jsonb,
            (DataType::Utf8, "json") => Enc::Json,
            (DataType::Utf8, "uuid") => Enc::Uuid,
            (DataType::Utf8, "interval") => Enc::Interval,
            (DataType::Utf8, _) => Enc::Text,
            (DataType::Date32, _) => Enc::Date,
            (DataType::Time64(TimeUnit::Microsecond), _) => Enc::Time,
            (DataType::Timestamp(TimeUnit::Microsecond, None), _) => Enc::Timestamp,
            (DataType::Timestamp(TimeUnit::Microsecond, Some(_)), _) => Enc::TimestampTz,
            (DataType::Binary, _) => Enc::Bytea,
            (other, _) => return Err(format!("{other} cannot load into {pg}")),
        })
    }

    fn oid(&self) -> u32 {
        match self {
            Enc::Bool => 16,
            Enc::I16 => 21,
            Enc::I32 => 23,
            Enc::I64 => 20,
            Enc::F32 => 700,
            Enc::F64 => 701,
            Enc::Decimal(_) | Enc::NumericText => 1700,
            Enc::Text => 25,
            Enc::Json => 114,
            Enc::Jsonb => 3802,
            Enc::Uuid => 2950,
            Enc::Interval => 1186,
            Enc::Date => 1082,
            Enc::Time => 1083,
            Enc::Timestamp => 1114,
            Enc::TimestampTz => 1184,
            Enc::Bytea => 17,
            Enc::Array(_, _) => 0,
        }
    }
}

/// Append the rows of `batch` (columns in table order, then `extra` constant
/// values per row) to `out`.
pub(crate) fn encode_batch(
    batch: &RecordBatch,
    encs: &[Enc],
    extra: &[Vec<u8>],
    out: &mut BytesMut,
) -> Result<(), String> {
    let fields = (batch.num_columns() + extra.len()) as i16;
    for row in 0..batch.num_rows() {
        out.put_i16(fields);
        for (c, (col, enc)) in batch.columns().iter().zip(encs).enumerate() {
            if col.is_null(row) {
                out.put_i32(-1);
            } else {
                let at = out.len();
                out.put_i32(0);
                value(col, row, enc, out)
                    .map_err(|e| format!("column {}: {e}", batch.schema().field(c).name()))?;
                let len = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        for v in extra {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
    }
    Ok(())
}

/// Write one non-null value (without its length).
fn value(col: &ArrayRef, i: usize, enc: &Enc, out: &mut BytesMut) -> Result<(), String> {
    match enc {
        Enc::Bool => out.put_u8(col.as_boolean().value(i) as u8),
        Enc::I16 => out.put_i16(col.as_primitive::<Int16Type>().value(i)),
        Enc::I32 => out.put_i32(col.as_primitive::<Int32Type>().value(i)),
        Enc::I64 => out.put_i64(col.as_primitive::<Int64Type>().value(i)),
        Enc::F32 => out.put_f32(col.as_primitive::<Float32Type>().value(i)),
        Enc::F64 => out.put_f64(col.as_primitive::<Float64Type>().value(i)),
        Enc::Decimal(scale) => {
            let v = col.as_primitive::<Decimal128Type>().value(i);
            numeric(&decimal_text(v, *scale), out)?;
        }
        Enc::NumericText => numeric(col.as_string::<i32>().value(i), out)?,
        Enc::Text | Enc::Json => out.put_slice(col.as_string::<i32>().value(i).as_bytes()),
        Enc::Jsonb => {
            out.put_u8(1);
            out.put_slice(col.as_string::<i32>().value(i).as_bytes());
        }
        Enc::Uuid => uuid(col.as_string::<i32>().value(i), out)?,
        Enc::Interval => {
            let (months, days, micros) = parse_iso_interval(col.as_string::<i32>().value(i))?;
            out.put_i64(micros);
            out.put_i32(days);
            out.put_i32(months);
        }
        Enc::Date => out.put_i32(col.as_primitive::<Date32Type>().value(i) - PG_EPOCH_DAYS),
        Enc::Time => out.put_i64(col.as_primitive::<Time64MicrosecondType>().value(i)),
        Enc::Timestamp | Enc::TimestampTz => {
            out.put_i64(col.as_primitive::<TimestampMicrosecondType>().value(i) - PG_EPOCH_US)
        }
        Enc::Bytea => out.put_slice(col.as_binary::<i32>().value(i)),
        Enc::Array(elem, oid) => {
            let list = col.as_list::<i32>();
            let values = list.value(i);
            let n = values.len();
            if n == 0 {
                out.put_i32(0); // no dimensions
                out.put_i32(0);
                out.put_u32(*oid);
                return Ok(());
            }
            out.put_i32(1);
            out.put_i32((values.null_count() > 0) as i32);
            out.put_u32(*oid);
            out.put_i32(n as i32);
            out.put_i32(1); // lower bound
            for j in 0..n {
                if values.is_null(j) {
                    out.put_i32(-1);
                } else {
                    let at = out.len();
                    out.put_i32(0);
                    value(&values, j, elem, out)?;
                    let len = (out.len() - at - 4) as i32;
                    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
    }
    Ok(())
}

/// A Decimal128's exact text: `-123.4500` for (-1234500, scale 4).
pub(crate) fn decimal_text(v: i128, scale: i8) -> String {
    let digits = v.unsigned_abs().to_string();
    let sign = if v < 0 { "-" } else { "" };
    if scale <= 0 {
        return format!("{sign}{digits}{}", "0".repeat((-scale) as usize));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// numeric's binary form from decimal text.
fn numeric(text: &str, out: &mut BytesMut) -> Result<(), String> {
    let special = match text {
        "NaN" => Some(0xC000u16),
        "Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    if let Some(sign) = special {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(sign);
        out.put_u16(0);
        return Ok(());
    }
    let bad = || format!("`{text}` is not a decimal number");
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let int = int.trim_start_matches('0');
    // Base-10000 groups: the integer part aligned from the right, the fraction from the left.
    let int_pad = (4 - int.len() % 4) % 4;
    let mut digits: Vec<i16> = Vec::with_capacity((int.len() + frac.len()) / 4 + 2);
    let int_full = format!("{}{int}", "0".repeat(int_pad));
    for g in int_full.as_bytes().chunks(4) {
        digits.push(
            std::str::from_utf8(g)
                .unwrap_or("0")
                .parse()
                .map_err(|_| bad())?,
        );
    }
    let mut weight = digits.len() as i32 - 1;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let frac_full = format!("{frac}{}", "0".repeat(frac_pad));
    for g in frac_full.as_bytes().chunks(4) {
        digits.push(
            std::str::from_utf8(g)
                .unwrap_or("0")
                .parse()
                .map_err(|_| bad())?,
        );
    }
    // Strip leading zero groups (moving the weight) and trailing ones.
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..lead);
    weight -= lead as i32;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    out.put_i16(digits.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if neg && !digits.is_empty() { 0x4000 } else { 0 });
    out.put_u16(frac.len() as u16);
    for d in digits {
        out.put_i16(d);
    }
    Ok(())
}

fn uuid(text: &str, out: &mut BytesMut) -> Result<(), String> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return Err(format!("`{text}` is not a UUID"));
    }
    for pair in hex.chunks(2) {
        let s = std::str::from_utf8(pair).map_err(|_| format!("`{text}` is not a UUID"))?;
        out.put_u8(u8::from_str_radix(s, 16).map_err(|_| format!("`{text}` is not a UUID"))?);
    }
    Ok(())
}

/// Parse the ISO 8601 durations the extractor writes (`P1Y-2M3DT4H5M6.789S`,
/// each part signed) into PostgreSQL's (months, days, microseconds).
pub(crate) fn parse_iso_interval(text: &str) -> Result<(i32, i32, i64), String> {
    let bad = || format!("`{text}` is not an ISO 8601 duration");
    let rest = text.strip_prefix('P').ok_or_else(bad)?;
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    let mut time = false;
    let mut num = String::new();
    for c in rest.chars() {
        match c {
            'T' if num.is_empty() => time = true,
            '0'..='9' | '-' | '+' | '.' => num.push(c),
            unit => {
                let mut n = std::mem::take(&mut num);
                match (time, unit) {
                    (false, 'Y') => months += 12 * n.parse::<i64>().map_err(|_| bad())?,
                    (false, 'M') => months += n.parse::<i64>().map_err(|_| bad())?,
                    (false, 'W') => days += 7 * n.parse::<i64>().map_err(|_| bad())?,
                    (false, 'D') => days += n.parse::<i64>().map_err(|_| bad())?,
                    (true, 'H') => micros += 3_600_000_000 * n.parse::<i64>().map_err(|_| bad())?,
                    (true, 'M') => micros += 60_000_000 * n.parse::<i64>().map_err(|_| bad())?,
                    (true, 'S') => {
                        let neg = n.starts_with('-');
                        if neg {
                            n.remove(0);
                        }
                        let (s, f) = n.split_once('.').unwrap_or((&n, ""));
                        if f.len() > 6 {
                            return Err(bad());
                        }
                        let us = s.parse::<i64>().map_err(|_| bad())? * 1_000_000
                            + if f.is_empty() {
                                0
                            } else {
                                format!("{f:0<6}").parse::<i64>().map_err(|_| bad())?
                            };
                        micros += if neg { -us } else { us };
                    }
                    _ => return Err(bad()),
                }
            }
        }
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok((
        i32::try_from(months).map_err(|_| bad())?,
        i32::try_from(days).map_err(|_| bad())?,
        micros,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_keeps_scale_and_sign() {
        assert_eq!(decimal_text(-1_234_500, 4), "-123.4500");
        assert_eq!(decimal_text(5, 3), "0.005");
        assert_eq!(decimal_text(0, 2), "0.00");
        assert_eq!(decimal_text(12, 0), "12");
    }

    #[test]
    fn numeric_binary_matches_postgres_layout() {
        let enc = |t: &str| {
            let mut b = BytesMut::new();
            numeric(t, &mut b).unwrap();
            b.to_vec()
        };
        // 12345.678: digits [1, 2345, 6780], weight 1, dscale 3.
        assert_eq!(
            enc("12345.678"),
            vec![0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]
        );
        // -0.0001: digits [1], weight -1, negative, dscale 4.
        assert_eq!(enc("-0.0001"), vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0, 1]);
        assert_eq!(enc("0.00"), vec![0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(enc("NaN"), vec![0, 0, 0, 0, 0xC0, 0, 0, 0]);
        let mut b = BytesMut::new();
        assert!(numeric("1e5", &mut b).is_err());
    }

    #[test]
    fn iso_intervals_parse_back_to_postgres_fields() {
        assert_eq!(
            parse_iso_interval("P1Y2M3DT4H5M6.789S").unwrap(),
            (14, 3, 14_706_789_000)
        );
        assert_eq!(
            parse_iso_interval("P-1Y-2M-3DT-4H-5M-6.5S").unwrap(),
            (-14, -3, -14_706_500_000)
        );
        assert_eq!(parse_iso_interval("PT0S").unwrap(), (0, 0, 0));
        assert!(parse_iso_interval("1 day").is_err());
    }
}
