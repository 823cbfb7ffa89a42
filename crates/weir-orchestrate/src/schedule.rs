//! When runs are due: schedules, logical data intervals and catch-up, as pure
//! functions of "now" so the scheduler's decisions can be tested with any clock.
//!
//! An interval is `[start, end)` between two consecutive ticks of the schedule,
//! in UTC. It is due once `end` has passed. Consecutive intervals share their
//! boundary, so however the wall clock moves (daylight saving, a clock set
//! back or forward), no instant is covered twice or left out; and each interval
//! is stored under its start, once.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A run's logical data interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// When a DAG runs by itself.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Only when asked (`weir run`, `weir backfill`).
    Manual,
    /// Once, at the start date.
    Once,
    Cron {
        cron: Box<croner::Cron>,
        tz: chrono_tz::Tz,
    },
}

/// The clock the scheduler reads; tests inject their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Most intervals `due` returns at once: a schedule years behind catches up in
/// batches instead of creating millions of runs in one go.
pub const MAX_DUE: usize = 1000;

impl Schedule {
    /// `None` or `none`: manual. The `@` names are cron shorthands.
    pub fn parse(text: Option<&str>, timezone: &str) -> Result<Schedule, String> {
        let tz = chrono_tz::Tz::from_str(timezone)
            .map_err(|_| format!("`{timezone}` is not an IANA time zone"))?;
        match text {
            None | Some("none") => Ok(Schedule::Manual),
            Some("@once") => Ok(Schedule::Once),
            Some(s) => croner::Cron::from_str(s)
                .map(|cron| Schedule::Cron {
                    cron: Box::new(cron),
                    tz,
                })
                .map_err(|e| format!("`{s}` is not a schedule: {e}")),
        }
    }

    /// The first tick at or after `t` (`inclusive`) or strictly after it.
    pub fn next_tick(&self, t: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        let Schedule::Cron { cron, tz } = self else {
            return None;
        };
        cron.find_next_occurrence(&t.with_timezone(tz), inclusive)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last tick at or before `t`.
    pub fn prev_tick(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let Schedule::Cron { cron, tz } = self else {
            return None;
        };
        cron.find_previous_occurrence(&t.with_timezone(tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The intervals to create runs for at `now`, oldest first.
    ///
    /// `last_end` is the end of the newest interval that has a run already (of
    /// any state): nothing at or before it is due again. With `catchup` every
    /// complete interval since then is due; without it only the newest one.
    pub fn due(
        &self,
        start_date: DateTime<Utc>,
        last_end: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        catchup: bool,
    ) -> Vec<Interval> {
        match self {
            Schedule::Manual => Vec::new(),
            Schedule::Once => {
                if last_end.is_none() && now >= start_date {
                    vec![Interval {
                        start: start_date,
                        end: start_date,
                    }]
                } else {
                    Vec::new()
                }
            }
            Schedule::Cron { .. } => {
                let Some(first) = self.next_tick(start_date, true) else {
                    return Vec::new();
                };
                let from = last_end.map_or(first, |e| e.max(first));
                if catchup {
                    // `from` is a tick, so the intervals start there.
                    self.between(from, now, MAX_DUE)
                } else {
                    // The newest complete interval: it ends at the last tick
                    // not after now, and starts at the tick before that.
                    let Some(end) = self.prev_tick(now) else {
                        return Vec::new();
                    };
                    let Some(start) = self.prev_tick(end - chrono::Duration::seconds(1)) else {
                        return Vec::new();
                    };
                    if start < first || last_end.is_some_and(|l| end <= l) {
                        return Vec::new();
                    }
                    // After a schedule change the newest interval may begin
                    // before the last one ended: start it there instead.
                    let start = last_end.map_or(start, |l| start.max(l));
                    vec![Interval { start, end }]
                }
            }
        }
    }

    /// The intervals that start at or after `from` and end at or before
    /// `to`, oldest first, at most `limit` of them (a backfill). Empty for a
    /// schedule without periodic ticks.
    pub fn between(&self, from: DateTime<Utc>, to: DateTime<Utc>, limit: usize) -> Vec<Interval> {
        let Schedule::Cron { .. } = self else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let Some(mut a) = self.next_tick(from, true) else {
            return out;
        };
        while out.len() < limit {
            let Some(b) = self.next_tick(a, false) else {
                break;
            };
            if b > to {
                break;
            }
            out.push(Interval { start: a, end: b });
            a = b;
        }
        out
    }

    /// When the next interval will be due after `now` (for sleeping).
    pub fn next_due_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_tick(now, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn show(v: &[Interval]) -> Vec<String> {
        v.iter()
            .map(|i| format!("{} → {}", i.start.to_rfc3339(), i.end.to_rfc3339()))
            .collect()
    }

    #[test]
    fn named_schedules_tick_where_cron_does() {
        let s = Schedule::parse(Some("@hourly"), "UTC").unwrap();
        assert_eq!(
            s.next_tick(t("2026-03-01T10:20:00Z"), false),
            Some(t("2026-03-01T11:00:00Z"))
        );
        let d = Schedule::parse(Some("@daily"), "UTC").unwrap();
        assert_eq!(
            d.next_tick(t("2026-03-01T00:00:00Z"), true),
            Some(t("2026-03-01T00:00:00Z"))
        );
        let w = Schedule::parse(Some("@weekly"), "UTC").unwrap();
        // Sunday midnight.
        assert_eq!(
            w.next_tick(t("2026-03-04T12:00:00Z"), false),
            Some(t("2026-03-08T00:00:00Z"))
        );
        let m = Schedule::parse(Some("@monthly"), "UTC").unwrap();
        assert_eq!(
            m.next_tick(t("2026-01-31T12:00:00Z"), false),
            Some(t("2026-02-01T00:00:00Z"))
        );
        assert!(Schedule::parse(Some("61 * * * *"), "UTC").is_err());
        assert!(Schedule::parse(Some("@daily"), "Mars/Olympus").is_err());
    }

    #[test]
    fn catchup_runs_every_missed_interval_in_order() {
        let s = Schedule::parse(Some("@daily"), "UTC").unwrap();
        let due = s.due(
            t("2026-03-01T00:00:00Z"),
            None,
            t("2026-03-04T05:00:00Z"),
            true,
        );
        assert_eq!(
            show(&due),
            [
                "2026-03-01T00:00:00+00:00 → 2026-03-02T00:00:00+00:00",
                "2026-03-02T00:00:00+00:00 → 2026-03-03T00:00:00+00:00",
                "2026-03-03T00:00:00+00:00 → 2026-03-04T00:00:00+00:00",
            ]
        );
        // After those ran, nothing is due until the next midnight.
        let last = due.last().unwrap().end;
        assert!(s
            .due(
                t("2026-03-01T00:00:00Z"),
                Some(last),
                t("2026-03-04T23:59:59Z"),
                true
            )
            .is_empty());
        assert_eq!(
            s.due(
                t("2026-03-01T00:00:00Z"),
                Some(last),
                t("2026-03-05T00:00:00Z"),
                true
            )
            .len(),
            1
        );
    }

    #[test]
    fn without_catchup_only_the_newest_interval_runs() {
        let s = Schedule::parse(Some("@daily"), "UTC").unwrap();
        let due = s.due(
            t("2026-03-01T00:00:00Z"),
            None,
            t("2026-03-04T05:00:00Z"),
            false,
        );
        assert_eq!(
            show(&due),
            ["2026-03-03T00:00:00+00:00 → 2026-03-04T00:00:00+00:00"]
        );
        // Asked again the same day: already run.
        assert!(s
            .due(
                t("2026-03-01T00:00:00Z"),
                Some(due[0].end),
                t("2026-03-04T09:00:00Z"),
                false
            )
            .is_empty());
        // Not before the start date's first full interval.
        assert!(s
            .due(
                t("2026-03-01T00:00:00Z"),
                None,
                t("2026-03-01T12:00:00Z"),
                false
            )
            .is_empty());
    }

    #[test]
    fn a_clock_set_back_runs_nothing_again() {
        let s = Schedule::parse(Some("@hourly"), "UTC").unwrap();
        let start = t("2026-03-01T00:00:00Z");
        let ran = s.due(start, None, t("2026-03-01T05:30:00Z"), true);
        assert_eq!(ran.len(), 5);
        let last = ran.last().unwrap().end;
        // The clock jumps back two hours, then forward a day.
        assert!(s
            .due(start, Some(last), t("2026-03-01T03:30:00Z"), true)
            .is_empty());
        let after_jump = s.due(start, Some(last), t("2026-03-02T05:30:00Z"), true);
        assert_eq!(after_jump.len(), 24);
        assert_eq!(after_jump[0].start, last);
        for w in after_jump.windows(2) {
            assert_eq!(w[0].end, w[1].start, "intervals must be contiguous");
        }
    }

    #[test]
    fn daylight_saving_neither_repeats_nor_skips_a_day() {
        // São Paulo had no DST in 2026; New York springs forward on 8 March
        // (02:00 → 03:00) and falls back on 1 November (02:00 → 01:00).
        let s = Schedule::parse(Some("30 2 * * *"), "America/New_York").unwrap();
        let due = s.due(
            t("2026-03-06T00:00:00Z"),
            None,
            t("2026-03-11T00:00:00Z"),
            true,
        );
        let starts: Vec<String> = due
            .iter()
            .map(|i| {
                i.start
                    .with_timezone(&chrono_tz::America::New_York)
                    .to_rfc3339()
            })
            .collect();
        // 02:30 does not exist on 8 March: that day's run is at the first
        // instant after the gap, once.
        assert_eq!(
            starts,
            [
                "2026-03-06T02:30:00-05:00",
                "2026-03-07T02:30:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:30:00-04:00",
            ]
        );
        // 01:30 happens twice on 1 November: a daily job runs once, at the first.
        let s = Schedule::parse(Some("30 1 * * *"), "America/New_York").unwrap();
        let due = s.due(
            t("2026-10-30T00:00:00Z"),
            None,
            t("2026-11-04T00:00:00Z"),
            true,
        );
        let days: Vec<String> = due
            .iter()
            .map(|i| {
                i.start
                    .with_timezone(&chrono_tz::America::New_York)
                    .to_rfc3339()
            })
            .collect();
        assert_eq!(
            days,
            [
                "2026-10-30T01:30:00-04:00",
                "2026-10-31T01:30:00-04:00",
                "2026-11-01T01:30:00-04:00",
                "2026-11-02T01:30:00-05:00",
            ]
        );
        for w in due.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }

    #[test]
    fn once_runs_once() {
        let s = Schedule::parse(Some("@once"), "UTC").unwrap();
        let start = t("2026-03-01T00:00:00Z");
        assert!(s
            .due(start, None, t("2026-02-01T00:00:00Z"), true)
            .is_empty());
        assert_eq!(s.due(start, None, t("2026-03-02T00:00:00Z"), true).len(), 1);
        assert!(s
            .due(start, Some(start), t("2026-03-09T00:00:00Z"), true)
            .is_empty());
        assert!(Schedule::Manual
            .due(start, None, t("2030-01-01T00:00:00Z"), true)
            .is_empty());
    }

    #[test]
    fn a_schedule_years_behind_catches_up_in_batches() {
        let s = Schedule::parse(Some("@hourly"), "UTC").unwrap();
        let due = s.due(
            t("2020-01-01T00:00:00Z"),
            None,
            t("2026-01-01T00:00:00Z"),
            true,
        );
        assert_eq!(due.len(), MAX_DUE);
    }
}
