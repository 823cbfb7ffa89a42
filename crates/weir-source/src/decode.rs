//! Decoding PostgreSQL's binary COPY format straight into Arrow builders.
//!
//! The stream is a header (`PGCOPY\n\xff\r\n\0`, flags, extension), then one
//! tuple per row: an `i16` field count and, per field, an `i32` length (-1 for
//! NULL) and that many bytes in the type's binary send format; an `i16` -1 ends it.
//! No row is materialised: each value goes directly into its column's builder.

use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{Field, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::types::{PgKind, UTC};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// A value the decoder could not turn into Arrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Index of the column, or `None` for a framing problem.
    pub column: Option<usize>,
    pub message: String,
}

type Result<T> = std::result::Result<T, DecodeError>;

/// An error not yet tied to a column (the tuple loop fills that in).
fn bad(message: impl Into<String>) -> DecodeError {
    DecodeError {
        column: None,
        message: message.into(),
    }
}

/// One column's builder.
enum Col {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    NumericText(StringBuilder),
    Text(StringBuilder),
    Json(StringBuilder),
    Jsonb(StringBuilder),
    Uuid(StringBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Interval(StringBuilder),
    Bytea(BinaryBuilder),
    List(Box<ListCol>),
}

struct ListCol {
    field: Arc<Field>,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    inner: Col,
}

impl Col {
    fn new(kind: &PgKind) -> Col {
        match kind {
            PgKind::Bool => Col::Bool(BooleanBuilder::new()),
            PgKind::Int2 => Col::Int2(Int16Builder::new()),
            PgKind::Int4 => Col::Int4(Int32Builder::new()),
            PgKind::Int8 => Col::Int8(Int64Builder::new()),
            PgKind::Float4 => Col::Float4(Float32Builder::new()),
            PgKind::Float8 => Col::Float8(Float64Builder::new()),
            PgKind::Decimal { precision, scale } => Col::Decimal(
                Decimal128Builder::new().with_data_type(kind.data_type()),
                *precision,
                *scale,
            ),
            PgKind::NumericText => Col::NumericText(StringBuilder::new()),
            PgKind::Text => Col::Text(StringBuilder::new()),
            PgKind::Json => Col::Json(StringBuilder::new()),
            PgKind::Jsonb => Col::Jsonb(StringBuilder::new()),
            PgKind::Uuid => Col::Uuid(StringBuilder::new()),
            PgKind::Date => Col::Date(Date32Builder::new()),
            PgKind::Time => Col::Time(Time64MicrosecondBuilder::new()),
            PgKind::Timestamp => Col::Timestamp(TimestampMicrosecondBuilder::new()),
            PgKind::Timestamptz => {
                Col::Timestamp(TimestampMicrosecondBuilder::new().with_timezone(UTC))
            }
            PgKind::Interval => Col::Interval(StringBuilder::new()),
            PgKind::Bytea => Col::Bytea(BinaryBuilder::new()),
            PgKind::Array(inner) => {
                let arrow::datatypes::DataType::List(field) = kind.data_type() else {
                    unreachable!("an array kind maps to a list type")
                };
                Col::List(Box::new(ListCol {
                    field,
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(0),
                    inner: Col::new(inner),
                }))
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::Int2(b) => b.append_null(),
            Col::Int4(b) => b.append_null(),
            Col::Int8(b) => b.append_null(),
            Col::Float4(b) => b.append_null(),
            Col::Float8(b) => b.append_null(),
            Col::Decimal(b, ..) => b.append_null(),
            Col::NumericText(b) | Col::Text(b) | Col::Json(b) | Col::Jsonb(b) | Col::Uuid(b) => {
                b.append_null()
            }
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Timestamp(b) => b.append_null(),
            Col::Interval(b) => b.append_null(),
            Col::Bytea(b) => b.append_null(),
            Col::List(l) => {
                let last = *l.offsets.last().unwrap_or(&0);
                l.offsets.push(last);
                l.nulls.append_null();
            }
        }
    }

    fn append(&mut self, v: &[u8]) -> Result<()> {
        match self {
            Col::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Col::Int2(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Col::Int4(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Col::Int8(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Col::Float4(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Col::Float8(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Col::Decimal(b, precision, scale) => {
                b.append_value(numeric_to_i128(v, *precision, *scale)?)
            }
            Col::NumericText(b) => b.append_value(numeric_to_string(v)?),
            Col::Text(b) | Col::Json(b) => b.append_value(utf8(v)?),
            Col::Jsonb(b) => match v.split_first() {
                Some((1, rest)) => b.append_value(utf8(rest)?),
                _ => return Err(bad("unknown jsonb binary version")),
            },
            Col::Uuid(b) => b.append_value(uuid_text(&fixed::<16>(v)?)),
            Col::Date(b) => {
                let d = i32::from_be_bytes(fixed(v)?);
                if d == i32::MAX || d == i32::MIN {
                    return Err(bad("date is ±infinity, which Arrow cannot hold (list the column in cast_to_text)"));
                }
                b.append_value(
                    d.checked_add(PG_EPOCH_DAYS)
                        .ok_or_else(|| bad("date out of range"))?,
                )
            }
            Col::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Col::Timestamp(b) => {
                let us = i64::from_be_bytes(fixed(v)?);
                if us == i64::MAX || us == i64::MIN {
                    return Err(bad(
                        "timestamp is ±infinity, which Arrow cannot hold (list the column in cast_to_text)",
                    ));
                }
                b.append_value(
                    us.checked_add(PG_EPOCH_US)
                        .ok_or_else(|| bad("timestamp out of range"))?,
                )
            }
            Col::Interval(b) => {
                let v = fixed::<16>(v)?;
                let us = i64::from_be_bytes(v[0..8].try_into().unwrap_or_default());
                let days = i32::from_be_bytes(v[8..12].try_into().unwrap_or_default());
                let months = i32::from_be_bytes(v[12..16].try_into().unwrap_or_default());
                b.append_value(iso8601_interval(months, days, us))
            }
            Col::Bytea(b) => b.append_value(v),
            Col::List(l) => return l.append(v),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Int2(b) => Arc::new(b.finish()),
            Col::Int4(b) => Arc::new(b.finish()),
            Col::Int8(b) => Arc::new(b.finish()),
            Col::Float4(b) => Arc::new(b.finish()),
            Col::Float8(b) => Arc::new(b.finish()),
            Col::Decimal(b, ..) => Arc::new(b.finish()),
            Col::NumericText(b) | Col::Text(b) | Col::Json(b) | Col::Jsonb(b) | Col::Uuid(b) => {
                Arc::new(b.finish())
            }
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Timestamp(b) => Arc::new(b.finish()),
            Col::Interval(b) => Arc::new(b.finish()),
            Col::Bytea(b) => Arc::new(b.finish()),
            Col::List(l) => {
                let values = l.inner.finish();
                let offsets = std::mem::replace(&mut l.offsets, vec![0]);
                let nulls = l.nulls.finish();
                Arc::new(ListArray::new(
                    l.field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    values,
                    nulls,
                ))
            }
        }
    }
}

impl ListCol {
    /// A one-dimensional array: `ndim, has_null, elem_oid, [dim, lbound], elements…`.
    fn append(&mut self, v: &[u8]) -> Result<()> {
        let mut r = Cursor { buf: v, pos: 0 };
        let ndim = r.i32()?;
        let _flags = r.i32()?;
        let _elem = r.i32()?;
        let count = match ndim {
            0 => 0,
            1 => {
                let n = r.i32()?;
                let _lbound = r.i32()?;
                usize::try_from(n).map_err(|_| bad("negative array length"))?
            }
            _ => {
                return Err(bad(format!(
                    "{ndim}-dimensional array; only one-dimensional arrays map to Arrow lists (list the column in cast_to_text)"
                )))
            }
        };
        for _ in 0..count {
            let len = r.i32()?;
            if len < 0 {
                self.inner.append_null();
            } else {
                let bytes = r.take(len as usize)?;
                self.inner.append(bytes)?;
            }
        }
        let last = *self.offsets.last().unwrap_or(&0);
        let next = i32::try_from(count)
            .ok()
            .and_then(|c| last.checked_add(c))
            .ok_or_else(|| bad("list too large"))?;
        self.offsets.push(next);
        self.nulls.append_non_null();
        Ok(())
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| bad("value is truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(fixed(self.take(4)?)?))
    }
}

#[inline]
fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N]> {
    v.try_into()
        .map_err(|_| bad(format!("expected {N} bytes, got {}", v.len())))
}

#[inline]
fn utf8(v: &[u8]) -> Result<&str> {
    std::str::from_utf8(v).map_err(|e| bad(format!("invalid UTF-8: {e}")))
}

/// An interval as an ISO 8601 duration with signed parts, which PostgreSQL,
/// DuckDB and BigQuery all parse back to the same value: `P1Y2M3DT4H5M6.789S`.
pub(crate) fn iso8601_interval(months: i32, days: i32, micros: i64) -> String {
    use std::fmt::Write;
    let mut s = String::from("P");
    let (y, m) = (months / 12, months % 12);
    if y != 0 {
        let _ = write!(s, "{y}Y");
    }
    if m != 0 {
        let _ = write!(s, "{m}M");
    }
    if days != 0 {
        let _ = write!(s, "{days}D");
    }
    if micros != 0 {
        s.push('T');
        let sign = if micros < 0 { "-" } else { "" };
        let abs = micros.unsigned_abs();
        let (h, rest) = (abs / 3_600_000_000, abs % 3_600_000_000);
        let (mi, us) = (rest / 60_000_000, rest % 60_000_000);
        if h != 0 {
            let _ = write!(s, "{sign}{h}H");
        }
        if mi != 0 {
            let _ = write!(s, "{sign}{mi}M");
        }
        if us != 0 {
            let frac = format!("{:06}", us % 1_000_000);
            let frac = frac.trim_end_matches('0');
            let _ = write!(
                s,
                "{sign}{}{}{frac}S",
                us / 1_000_000,
                if frac.is_empty() { "" } else { "." }
            );
        }
    }
    if s == "P" {
        s.push_str("T0S");
    }
    s
}

fn uuid_text(b: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[(byte >> 4) as usize] as char);
        s.push(HEX[(byte & 0xf) as usize] as char);
    }
    s
}

/// numeric's binary form: `ndigits, weight, sign, dscale` (i16/u16 each), then
/// `ndigits` base-10000 digits; the value is Σ digit·10000^(weight-i).
struct Numeric<'a> {
    weight: i16,
    sign: u16,
    dscale: u16,
    digits: &'a [u8],
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

fn parse_numeric(v: &[u8]) -> Result<Numeric<'_>> {
    if v.len() < 8 {
        return Err(bad("numeric value is truncated"));
    }
    let ndigits = u16::from_be_bytes([v[0], v[1]]) as usize;
    let n = Numeric {
        weight: i16::from_be_bytes([v[2], v[3]]),
        sign: u16::from_be_bytes([v[4], v[5]]),
        dscale: u16::from_be_bytes([v[6], v[7]]),
        digits: &v[8..],
    };
    if n.digits.len() != ndigits * 2 {
        return Err(bad("numeric digit count does not match its length"));
    }
    if !matches!(
        n.sign,
        0 | NUMERIC_NEG | NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF
    ) {
        return Err(bad(format!(
            "numeric sign {:#06x} is not one PostgreSQL writes",
            n.sign
        )));
    }
    // PostgreSQL's display scale has 14 bits (NUMERIC_MAX_DISPLAY_SCALE is
    // 1000); anything larger is not a value the server sent.
    if n.dscale > 0x3FFF {
        return Err(bad(format!(
            "numeric display scale {} is out of range",
            n.dscale
        )));
    }
    if n.digits
        .chunks(2)
        .any(|d| !(0..10_000).contains(&i16::from_be_bytes([d[0], d[1]])))
    {
        return Err(bad("numeric digit group is not between 0 and 9999"));
    }
    Ok(n)
}

impl Numeric<'_> {
    fn digit(&self, i: usize) -> i128 {
        i16::from_be_bytes([self.digits[2 * i], self.digits[2 * i + 1]]) as i128
    }
    fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }
}

fn numeric_to_i128(v: &[u8], precision: u8, scale: i8) -> Result<i128> {
    let n = parse_numeric(v)?;
    match n.sign {
        NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF => {
            return Err(bad(
                "numeric NaN or ±Infinity cannot be a Decimal (list the column in cast_to_text)",
            ))
        }
        _ => {}
    }
    let overflow = || {
        bad(format!(
            "numeric value does not fit Decimal128({precision},{scale})"
        ))
    };
    let mut acc: i128 = 0;
    for i in 0..n.ndigits() {
        // This digit's power of ten once scaled: 4·(weight−i) + scale.
        let exp = 4 * (n.weight as i32 - i as i32) + scale as i32;
        let d = n.digit(i);
        let term = if exp >= 0 {
            10i128
                .checked_pow(exp as u32)
                .and_then(|p| p.checked_mul(d))
                .ok_or_else(overflow)?
        } else {
            let p = 10i128.checked_pow((-exp) as u32).ok_or_else(overflow)?;
            if d % p != 0 {
                return Err(bad(
                    "numeric value has more fractional digits than the column's scale",
                ));
            }
            d / p
        };
        acc = acc.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(if n.sign == NUMERIC_NEG { -acc } else { acc })
}

/// The exact decimal text PostgreSQL would print for a numeric.
pub(crate) fn numeric_to_string(v: &[u8]) -> Result<String> {
    let n = parse_numeric(v)?;
    match n.sign {
        NUMERIC_NAN => return Ok("NaN".to_owned()),
        NUMERIC_PINF => return Ok("Infinity".to_owned()),
        NUMERIC_NINF => return Ok("-Infinity".to_owned()),
        _ => {}
    }
    let mut s = String::new();
    if n.sign == NUMERIC_NEG {
        s.push('-');
    }
    // Integer part: digit groups with weight >= 0.
    if n.weight < 0 {
        s.push('0');
    } else {
        for w in 0..=n.weight as usize {
            let d = if w < n.ndigits() { n.digit(w) } else { 0 };
            if w == 0 {
                s.push_str(&d.to_string());
            } else {
                s.push_str(&format!("{d:04}"));
            }
        }
    }
    if n.dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut w = n.weight as i32 + 1; // index of the first fractional group
        while frac.len() < usize::from(n.dscale) {
            let d = if w >= 0 && (w as usize) < n.ndigits() {
                n.digit(w as usize)
            } else {
                0
            };
            frac.push_str(&format!("{d:04}"));
            w += 1;
        }
        frac.truncate(n.dscale as usize);
        s.push_str(&frac);
    }
    Ok(s)
}

/// Turns binary COPY bytes into record batches of at most `batch_rows` rows.
pub struct BatchDecoder {
    schema: SchemaRef,
    cols: Vec<Col>,
    rows: usize,
    bytes: usize,
    header_done: bool,
    finished: bool,
    pending: Vec<u8>,
}

/// Outcome of feeding bytes to the decoder.
pub enum Fed {
    /// All complete tuples consumed; more bytes are welcome.
    More,
    /// The end-of-data marker was read.
    End,
}

impl BatchDecoder {
    /// `kinds` must match `schema`'s fields one for one.
    pub fn new(schema: SchemaRef, kinds: &[PgKind]) -> BatchDecoder {
        BatchDecoder {
            schema,
            cols: kinds.iter().map(Col::new).collect(),
            rows: 0,
            bytes: 0,
            header_done: false,
            finished: false,
            pending: Vec::new(),
        }
    }

    /// Rows decoded since the last [`BatchDecoder::take_batch`].
    pub fn buffered_rows(&self) -> usize {
        self.rows
    }

    /// Payload bytes decoded since the last batch.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Feed the next bytes of the COPY stream (chunks may split tuples anywhere).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Fed> {
        if self.finished {
            return if chunk.is_empty() {
                Ok(Fed::End)
            } else {
                Err(bad("data after the end-of-copy marker"))
            };
        }
        if self.pending.is_empty() {
            let used = self.consume(chunk)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.consume(&pending)?;
            self.pending = pending;
            self.pending.drain(..used);
        }
        Ok(if self.finished { Fed::End } else { Fed::More })
    }

    /// Check the stream ended cleanly.
    pub fn finish(&self) -> Result<()> {
        if !self.finished || !self.pending.is_empty() {
            return Err(bad("the COPY stream ended before its end marker"));
        }
        Ok(())
    }

    /// Consume whole tuples from `buf`, returning how many bytes were used.
    fn consume(&mut self, buf: &[u8]) -> Result<usize> {
        let mut pos = 0;
        if !self.header_done {
            if buf.len() < 19 {
                return Ok(0);
            }
            if &buf[..11] != SIGNATURE {
                return Err(bad("not a binary COPY stream (bad signature)"));
            }
            let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
            if buf.len() < 19 + ext {
                return Ok(0);
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        let ncols = self.cols.len();
        loop {
            let rest = &buf[pos..];
            if rest.len() < 2 {
                return Ok(pos);
            }
            let nfields = i16::from_be_bytes([rest[0], rest[1]]);
            if nfields == -1 {
                self.finished = true;
                return Ok(pos + 2);
            }
            if nfields as usize != ncols {
                return Err(bad(format!("tuple has {nfields} fields, expected {ncols}")));
            }
            // Find the tuple's end before touching any builder, so a split
            // tuple is never half-appended.
            let mut p = 2;
            for _ in 0..ncols {
                if rest.len() < p + 4 {
                    return Ok(pos);
                }
                let len = i32::from_be_bytes([rest[p], rest[p + 1], rest[p + 2], rest[p + 3]]);
                p += 4;
                if len > 0 {
                    p += len as usize;
                }
            }
            if rest.len() < p {
                return Ok(pos);
            }
            let mut p = 2;
            for (i, col) in self.cols.iter_mut().enumerate() {
                let len = i32::from_be_bytes([rest[p], rest[p + 1], rest[p + 2], rest[p + 3]]);
                p += 4;
                if len < 0 {
                    col.append_null();
                } else {
                    let v = &rest[p..p + len as usize];
                    p += len as usize;
                    col.append(v).map_err(|mut e| {
                        e.column = Some(i);
                        e
                    })?;
                }
            }
            self.rows += 1;
            self.bytes += p;
            pos += p;
        }
    }

    /// The rows decoded so far as a batch (None when there are none).
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.rows = 0;
        self.bytes = 0;
        // Arrays come from builders made for exactly these fields, so this cannot fail;
        // if it did it is a bug in the type mapping, reported rather than panicking.
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| bad(format!("bug in Weir's type mapping, please report it: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_decodes_exactly() {
        // 12345.6789 = [1, 2345, 6789] weight 1
        let v = numeric(1, 0, 4, &[1, 2345, 6789]);
        assert_eq!(numeric_to_string(&v).unwrap(), "12345.6789");
        assert_eq!(numeric_to_i128(&v, 10, 4).unwrap(), 123_456_789);
        // -0.05 = [500] weight -1, dscale 2
        let v = numeric(-1, NUMERIC_NEG, 2, &[500]);
        assert_eq!(numeric_to_string(&v).unwrap(), "-0.05");
        assert_eq!(numeric_to_i128(&v, 5, 2).unwrap(), -5);
        // 1e20 = [1] weight 5, dscale 0
        let v = numeric(5, 0, 0, &[1]);
        assert_eq!(numeric_to_string(&v).unwrap(), "100000000000000000000");
        assert!(numeric_to_i128(&v, 10, 2).is_ok());
        // zero
        assert_eq!(numeric_to_string(&numeric(0, 0, 3, &[])).unwrap(), "0.000");
        assert_eq!(
            numeric_to_string(&numeric(0, NUMERIC_NAN, 0, &[])).unwrap(),
            "NaN"
        );
        assert!(numeric_to_i128(&numeric(0, NUMERIC_NAN, 0, &[]), 10, 2).is_err());
    }

    /// Found by the fuzzer: a display scale of 65535 made the fraction loop
    /// wrap around (its length compared as u16) and never end.
    #[test]
    fn malformed_numerics_are_errors_not_hangs() {
        assert!(numeric_to_string(&numeric(10, 0, u16::MAX, &[1])).is_err());
        assert!(numeric_to_string(&numeric(0, 0xffff, 2, &[1])).is_err());
        assert!(numeric_to_string(&numeric(0, 0, 2, &[10_000])).is_err());
        assert!(numeric_to_string(&numeric(0, 0, 2, &[-1])).is_err());
        assert_eq!(
            numeric_to_string(&numeric(0, 0, 1000, &[1])).unwrap().len(),
            1002
        );
    }

    #[test]
    fn intervals_format_as_iso8601() {
        assert_eq!(
            iso8601_interval(14, 3, 14_706_789_000),
            "P1Y2M3DT4H5M6.789S"
        );
        assert_eq!(iso8601_interval(0, -1, -1), "P-1DT-0.000001S");
        assert_eq!(iso8601_interval(-1, 0, 0), "P-1M");
        assert_eq!(iso8601_interval(0, 0, 0), "PT0S");
        assert_eq!(iso8601_interval(0, 0, 60_000_000), "PT1M");
    }

    /// A binary COPY stream of `rows` rows with an int8, a text, a numeric and an int4[] column.
    fn sample_stream(rows: i64) -> Vec<u8> {
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&[0; 8]);
        for r in 0..rows {
            s.extend_from_slice(&4i16.to_be_bytes());
            s.extend_from_slice(&8i32.to_be_bytes());
            s.extend_from_slice(&r.to_be_bytes());
            let text = format!("row {r}, \"é\"");
            if r % 3 == 0 {
                s.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                s.extend_from_slice(&(text.len() as i32).to_be_bytes());
                s.extend_from_slice(text.as_bytes());
            }
            let n = numeric(0, 0, 2, &[r as i16, 2500]);
            s.extend_from_slice(&(n.len() as i32).to_be_bytes());
            s.extend_from_slice(&n);
            let mut arr = Vec::new();
            for v in [1i32, 0, 23, 1, 1] {
                arr.extend_from_slice(&v.to_be_bytes()); // ndim, flags, elem oid, dim, lbound
            }
            arr.extend_from_slice(&4i32.to_be_bytes());
            arr.extend_from_slice(&(r as i32).to_be_bytes());
            s.extend_from_slice(&(arr.len() as i32).to_be_bytes());
            s.extend_from_slice(&arr);
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    fn sample_decoder() -> BatchDecoder {
        let kinds = [
            PgKind::Int8,
            PgKind::Text,
            PgKind::Decimal {
                precision: 10,
                scale: 2,
            },
            PgKind::Array(Box::new(PgKind::Int4)),
        ];
        let fields: Vec<Field> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| Field::new(format!("c{i}"), k.data_type(), true))
            .collect();
        BatchDecoder::new(Arc::new(arrow::datatypes::Schema::new(fields)), &kinds)
    }

    #[test]
    fn any_split_of_the_stream_decodes_the_same() {
        let stream = sample_stream(20);
        let mut whole = sample_decoder();
        whole.feed(&stream).unwrap();
        whole.finish().unwrap();
        let expected = whole.take_batch().unwrap().unwrap();
        assert_eq!(expected.num_rows(), 20);
        for cut in 0..stream.len() {
            let mut d = sample_decoder();
            d.feed(&stream[..cut]).unwrap();
            d.feed(&stream[cut..]).unwrap();
            d.finish().unwrap();
            assert_eq!(d.take_batch().unwrap().unwrap(), expected, "split at {cut}");
        }
    }

    #[test]
    fn truncated_or_corrupted_streams_never_panic() {
        let stream = sample_stream(6);
        for cut in 0..stream.len() {
            let mut d = sample_decoder();
            let fed = d.feed(&stream[..cut]);
            assert!(
                fed.is_err() || d.finish().is_err(),
                "truncation at {cut} went unnoticed"
            );
        }
        // Deterministic byte flips: errors are fine, panics are not.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut s = stream.clone();
            let pos = (x % s.len() as u64) as usize;
            s[pos] ^= (x >> 32) as u8 | 1;
            let mut d = sample_decoder();
            if d.feed(&s).is_ok() && d.finish().is_ok() {
                let _ = d.take_batch();
            }
        }
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![Field::new(
            "a",
            arrow::datatypes::DataType::Int32,
            true,
        )]));
        let mut d = BatchDecoder::new(schema.clone(), &[PgKind::Int4]);
        assert!(d.feed(b"not a copy stream at all").is_err());
        let mut d = BatchDecoder::new(schema, &[PgKind::Int4]);
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&[0; 8]);
        s.extend_from_slice(&1i16.to_be_bytes());
        s.extend_from_slice(&3i32.to_be_bytes());
        s.extend_from_slice(&[1, 2, 3]);
        s.extend_from_slice(&(-1i16).to_be_bytes());
        // a wrong-size int4 is an error on that column
        let err = match d.feed(&s) {
            Err(e) => e,
            Ok(_) => panic!("expected an error"),
        };
        assert_eq!(err.column, Some(0));
    }
}
