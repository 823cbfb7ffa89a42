//! dbt's `modules` context: the parts of Python's `datetime` and `re` that
//! dbt projects use, on chrono and the regex crate.
//!
//! minijinja has no operator overloading for objects, so `date - timedelta`
//! cannot work; everything reached through methods and attributes does.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Local, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use minijinja::value::{from_args, DynObject, Kwargs, Object, ObjectRepr};
use minijinja::{Error, ErrorKind, State, Value};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// `modules`: `datetime` and `re`.
#[derive(Debug)]
pub(crate) struct Modules;

impl Object for Modules {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "datetime" => Some(Value::from_object(DatetimeModule)),
            "re" => Some(Value::from_object(ReModule)),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct DatetimeModule;

impl Object for DatetimeModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "datetime" => Some(Value::from_object(DatetimeClass)),
            "date" => Some(Value::from_object(DateClass)),
            "timedelta" => Some(Value::from_object(TimedeltaClass)),
            _ => None,
        }
    }
}

/// Python's `strftime` codes in chrono's spelling (`%f` is microseconds).
fn py_format(fmt: &str) -> String {
    fmt.replace("%f", "%6f")
}

/// chrono's formatter fails (and `to_string` would panic) on an unknown code.
fn strftime(value: impl fmt::Display, format: &str) -> Result<Value, Error> {
    use std::fmt::Write;
    let mut s = String::new();
    write!(s, "{value}").map_err(|_| invalid(format!("strftime: bad format {format:?}")))?;
    Ok(Value::from(s))
}

/// A `datetime.datetime`: naive, or aware in UTC.
#[derive(Debug, Clone, Copy)]
struct Dt {
    naive: NaiveDateTime,
    utc: bool,
}

impl Dt {
    fn isoformat(&self, sep: &str) -> String {
        let mut s = self
            .naive
            .format(&format!("%Y-%m-%d{sep}%H:%M:%S"))
            .to_string();
        let us = self.naive.and_utc().timestamp_subsec_micros();
        if us != 0 {
            s.push_str(&format!(".{us:06}"));
        }
        if self.utc {
            s.push_str("+00:00");
        }
        s
    }
}

impl Object for Dt {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let n = &self.naive;
        Some(Value::from(match key.as_str()? {
            "year" => i64::from(n.year()),
            "month" => i64::from(n.month()),
            "day" => i64::from(n.day()),
            "hour" => i64::from(n.hour()),
            "minute" => i64::from(n.minute()),
            "second" => i64::from(n.second()),
            "microsecond" => i64::from(n.and_utc().timestamp_subsec_micros()),
            _ => return None,
        }))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "strftime" => {
                let (f,): (String,) = from_args(args)?;
                let pf = py_format(&f);
                strftime(self.naive.format(&pf), &f)
            }
            "isoformat" => {
                let (sep,): (Option<String>,) = from_args(args)?;
                Ok(Value::from(self.isoformat(sep.as_deref().unwrap_or("T"))))
            }
            "date" => Ok(Value::from_object(Date(self.naive.date()))),
            "weekday" => Ok(Value::from(self.naive.weekday().num_days_from_monday())),
            "isoweekday" => Ok(Value::from(self.naive.weekday().number_from_monday())),
            "timestamp" => {
                let secs = if self.utc {
                    self.naive.and_utc()
                } else {
                    self.naive
                        .and_local_timezone(Local)
                        .earliest()
                        .map(|d| d.with_timezone(&Utc))
                        .unwrap_or_else(|| self.naive.and_utc())
                };
                Ok(Value::from(secs.timestamp_micros() as f64 / 1e6))
            }
            "replace" => {
                let (kw,): (Kwargs,) = from_args(args)?;
                let n = self.naive;
                let get = |k: &str, cur: u32| -> Result<u32, Error> {
                    Ok(kw.get::<Option<u32>>(k)?.unwrap_or(cur))
                };
                let date = NaiveDate::from_ymd_opt(
                    kw.get::<Option<i32>>("year")?.unwrap_or(n.year()),
                    get("month", n.month())?,
                    get("day", n.day())?,
                );
                let time = NaiveTime::from_hms_micro_opt(
                    get("hour", n.hour())?,
                    get("minute", n.minute())?,
                    get("second", n.second())?,
                    get("microsecond", n.and_utc().timestamp_subsec_micros())?,
                );
                kw.assert_all_used()?;
                match (date, time) {
                    (Some(d), Some(t)) => Ok(Value::from_object(Dt {
                        naive: d.and_time(t),
                        utc: self.utc,
                    })),
                    _ => Err(invalid("datetime.replace: value out of range")),
                }
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<Ordering> {
        Some(self.naive.cmp(&other.downcast_ref::<Dt>()?.naive))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.isoformat(" "))
    }
}

/// A `datetime.date`.
#[derive(Debug, Clone, Copy)]
struct Date(NaiveDate);

impl Object for Date {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Value::from(match key.as_str()? {
            "year" => i64::from(self.0.year()),
            "month" => i64::from(self.0.month()),
            "day" => i64::from(self.0.day()),
            _ => return None,
        }))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "strftime" => {
                let (f,): (String,) = from_args(args)?;
                let pf = py_format(&f);
                strftime(self.0.format(&pf), &f)
            }
            "isoformat" => Ok(Value::from(self.0.format("%Y-%m-%d").to_string())),
            "weekday" => Ok(Value::from(self.0.weekday().num_days_from_monday())),
            "isoweekday" => Ok(Value::from(self.0.weekday().number_from_monday())),
            "replace" => {
                let (kw,): (Kwargs,) = from_args(args)?;
                let d = NaiveDate::from_ymd_opt(
                    kw.get::<Option<i32>>("year")?.unwrap_or(self.0.year()),
                    kw.get::<Option<u32>>("month")?.unwrap_or(self.0.month()),
                    kw.get::<Option<u32>>("day")?.unwrap_or(self.0.day()),
                );
                kw.assert_all_used()?;
                d.map(|d| Value::from_object(Date(d)))
                    .ok_or_else(|| invalid("date.replace: value out of range"))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<Ordering> {
        Some(self.0.cmp(&other.downcast_ref::<Date>()?.0))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// A `datetime.timedelta`, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Timedelta(i64);

impl Object for Timedelta {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let days = self.0.div_euclid(86_400_000_000);
        let rest = self.0.rem_euclid(86_400_000_000);
        Some(Value::from(match key.as_str()? {
            "days" => days,
            "seconds" => rest / 1_000_000,
            "microseconds" => rest % 1_000_000,
            _ => return None,
        }))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "total_seconds" => Ok(Value::from(self.0 as f64 / 1e6)),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Python's str(timedelta): "2 days, 3:04:05[.000006]".
        let days = self.0.div_euclid(86_400_000_000);
        let rest = self.0.rem_euclid(86_400_000_000);
        let (s, us) = (rest / 1_000_000, rest % 1_000_000);
        if days != 0 {
            write!(f, "{days} day{}, ", if days.abs() == 1 { "" } else { "s" })?;
        }
        write!(f, "{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)?;
        if us != 0 {
            write!(f, ".{us:06}")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct DatetimeClass;

/// Positional arguments and keyword arguments (minijinja passes the latter last).
pub(crate) fn split_kwargs(args: &[Value]) -> Result<(&[Value], Option<Kwargs>), Error> {
    match args.split_last() {
        Some((last, pos)) if last.is_kwargs() => {
            let (kw,): (Kwargs,) = from_args(std::slice::from_ref(last))?;
            Ok((pos, Some(kw)))
        }
        _ => Ok((args, None)),
    }
}

fn parse_iso_datetime(s: &str) -> Option<Dt> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(Dt {
            naive: d.with_timezone(&Utc).naive_utc(),
            utc: true,
        });
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Some(Dt {
                naive: n,
                utc: false,
            });
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(|d| Dt {
        naive: d.and_time(NaiveTime::MIN),
        utc: false,
    })
}

impl Object for DatetimeClass {
    /// `datetime(year, month, day, hour=0, minute=0, second=0, microsecond=0)`,
    /// positionally or by name.
    fn call(self: &Arc<Self>, _state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (pos, kw) = split_kwargs(args)?;
        const NAMES: [&str; 7] = [
            "year",
            "month",
            "day",
            "hour",
            "minute",
            "second",
            "microsecond",
        ];
        let mut parts = [0i64; 7];
        for (i, name) in NAMES.iter().enumerate() {
            let v = match (pos.get(i), &kw) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(kw)) => kw.get::<Option<Value>>(name)?,
                (None, None) => None,
            };
            match v {
                Some(v) => {
                    parts[i] = v
                        .as_i64()
                        .ok_or_else(|| invalid(format!("datetime(): {name} must be an integer")))?
                }
                None if i < 3 => return Err(invalid(format!("datetime(): missing {name}"))),
                None => {}
            }
        }
        if let Some(kw) = &kw {
            kw.assert_all_used()?;
        }
        let u = |i: usize| u32::try_from(parts[i]).ok();
        let naive = i32::try_from(parts[0])
            .ok()
            .zip(u(1).zip(u(2)))
            .and_then(|(y, (m, d))| NaiveDate::from_ymd_opt(y, m, d))
            .zip(
                u(3).zip(u(4))
                    .zip(u(5).zip(u(6)))
                    .and_then(|((h, mi), (s, us))| NaiveTime::from_hms_micro_opt(h, mi, s, us)),
            )
            .map(|(d, t)| d.and_time(t));
        naive
            .map(|naive| Value::from_object(Dt { naive, utc: false }))
            .ok_or_else(|| invalid("datetime(): value out of range"))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let dt = match method {
            // `now(tz)` with any time zone gives UTC, aware; `now()` local, naive.
            "now" if !args.is_empty() => Dt {
                naive: Utc::now().naive_utc(),
                utc: true,
            },
            "now" | "today" => Dt {
                naive: Local::now().naive_local(),
                utc: false,
            },
            "utcnow" => Dt {
                naive: Utc::now().naive_utc(),
                utc: false,
            },
            "strptime" => {
                let (s, f): (String, String) = from_args(args)?;
                let f = py_format(&f);
                let naive = NaiveDateTime::parse_from_str(&s, &f)
                    .or_else(|_| {
                        NaiveDate::parse_from_str(&s, &f).map(|d| d.and_time(NaiveTime::MIN))
                    })
                    .map_err(|e| invalid(format!("strptime({s:?}, {f:?}): {e}")))?;
                Dt { naive, utc: false }
            }
            "fromisoformat" => {
                let (s,): (String,) = from_args(args)?;
                parse_iso_datetime(&s).ok_or_else(|| {
                    invalid(format!("fromisoformat: invalid isoformat string {s:?}"))
                })?
            }
            "fromtimestamp" | "utcfromtimestamp" => {
                let (ts,): (f64,) = from_args(args)?;
                let utc = DateTime::<Utc>::from_timestamp_micros((ts * 1e6) as i64)
                    .ok_or_else(|| invalid("fromtimestamp: out of range"))?;
                Dt {
                    naive: if method == "fromtimestamp" {
                        utc.with_timezone(&Local).naive_local()
                    } else {
                        utc.naive_utc()
                    },
                    utc: false,
                }
            }
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        };
        Ok(Value::from_object(dt))
    }
}

#[derive(Debug)]
struct DateClass;

impl Object for DateClass {
    fn call(self: &Arc<Self>, _state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (y, m, d): (i32, u32, u32) = from_args(args)?;
        NaiveDate::from_ymd_opt(y, m, d)
            .map(|d| Value::from_object(Date(d)))
            .ok_or_else(|| invalid("date(): value out of range"))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "today" => Ok(Value::from_object(Date(Local::now().date_naive()))),
            "fromisoformat" => {
                let (s,): (String,) = from_args(args)?;
                NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .map(|d| Value::from_object(Date(d)))
                    .map_err(|_| invalid(format!("fromisoformat: invalid isoformat string {s:?}")))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct TimedeltaClass;

impl Object for TimedeltaClass {
    /// `timedelta(days=0, seconds=0, microseconds=0, milliseconds=0, minutes=0, hours=0, weeks=0)`.
    fn call(self: &Arc<Self>, _state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (days, seconds, micros, kw): (Option<f64>, Option<f64>, Option<f64>, Kwargs) =
            from_args(args)?;
        let mut us = 0f64;
        for (v, scale) in [
            (days.or(kw.get("days")?), 86_400e6),
            (seconds.or(kw.get("seconds")?), 1e6),
            (micros.or(kw.get("microseconds")?), 1.0),
            (kw.get("milliseconds")?, 1e3),
            (kw.get("minutes")?, 60e6),
            (kw.get("hours")?, 3_600e6),
            (kw.get("weeks")?, 604_800e6),
        ] {
            us += v.unwrap_or(0.0) * scale;
        }
        kw.assert_all_used()?;
        Ok(Value::from_object(Timedelta(us.round() as i64)))
    }
}

#[derive(Debug)]
struct ReModule;

/// Python's replacement syntax (`\1`, `\g<name>`) in the regex crate's (`${1}`).
fn py_replacement(repl: &str) -> String {
    let mut out = String::with_capacity(repl.len());
    let mut chars = repl.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|c| *c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn compile(pattern: &str) -> Result<regex::Regex, Error> {
    regex::Regex::new(pattern).map_err(|e| invalid(format!("re: bad pattern {pattern:?}: {e}")))
}

/// The `re` functions, on an already compiled pattern.
fn re_call(re: &regex::Regex, method: &str, args: &[Value]) -> Result<Value, Error> {
    match method {
        "match" | "search" | "fullmatch" => {
            let (s,): (String,) = from_args(args)?;
            let caps = re.captures(&s).filter(|c| {
                let m = c.get(0).map_or(0..0, |m| m.range());
                match method {
                    "match" => m.start == 0,
                    "fullmatch" => m.start == 0 && m.end == s.len(),
                    _ => true,
                }
            });
            // Python's `match` and `fullmatch` anchor; a later match may still be
            // anchored when the first is not (e.g. alternations), so retry anchored.
            let caps = match (caps, method) {
                (Some(c), _) => Some(c),
                (None, "match") => compile(&format!("^(?:{})", re.as_str()))?.captures(&s),
                (None, "fullmatch") => compile(&format!("^(?:{})$", re.as_str()))?.captures(&s),
                _ => None,
            };
            Ok(caps.map_or(Value::from(()), |c| {
                Value::from_object(Match(
                    c.iter().map(|m| m.map(|m| m.as_str().to_owned())).collect(),
                ))
            }))
        }
        "sub" => {
            let (repl, s, count): (String, String, Option<usize>) = from_args(args)?;
            let repl = py_replacement(&repl);
            Ok(Value::from(
                re.replacen(&s, count.unwrap_or(0), repl.as_str())
                    .into_owned(),
            ))
        }
        "findall" => {
            let (s,): (String,) = from_args(args)?;
            let groups = re.captures_len() - 1;
            let items: Vec<Value> = re
                .captures_iter(&s)
                .map(|c| {
                    let g = |i: usize| Value::from(c.get(i).map_or("", |m| m.as_str()));
                    match groups {
                        0 => g(0),
                        1 => g(1),
                        n => Value::from((1..=n).map(g).collect::<Vec<_>>()),
                    }
                })
                .collect();
            Ok(Value::from(items))
        }
        "split" => {
            let (s,): (String,) = from_args(args)?;
            Ok(Value::from(
                re.split(&s).map(Value::from).collect::<Vec<_>>(),
            ))
        }
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}

impl Object for ReModule {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "compile" => {
                let (p,): (String,) = from_args(args)?;
                Ok(Value::from_object(Pattern(compile(&p)?)))
            }
            "escape" => {
                let (s,): (String,) = from_args(args)?;
                Ok(Value::from(regex::escape(&s)))
            }
            _ => {
                let (p, rest) = args
                    .split_first()
                    .ok_or_else(|| Error::from(ErrorKind::MissingArgument))?;
                let p = p
                    .as_str()
                    .ok_or_else(|| invalid("re: the pattern must be a string"))?;
                re_call(&compile(p)?, method, rest)
            }
        }
    }
}

#[derive(Debug)]
struct Pattern(regex::Regex);

impl Object for Pattern {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str()? == "pattern").then(|| Value::from(self.0.as_str()))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        re_call(&self.0, method, args)
    }
}

/// A match: `group(n=0)`, `groups()`.
#[derive(Debug)]
struct Match(Vec<Option<String>>);

impl Object for Match {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let text = |i: usize| -> Value {
            self.0
                .get(i)
                .cloned()
                .flatten()
                .map_or(Value::from(()), Value::from)
        };
        match method {
            "group" => {
                let (i,): (Option<usize>,) = from_args(args)?;
                Ok(text(i.unwrap_or(0)))
            }
            "groups" => Ok(Value::from((1..self.0.len()).map(text).collect::<Vec<_>>())),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<re.Match {:?}>",
            self.0.first().cloned().flatten().unwrap_or_default()
        )
    }
}
