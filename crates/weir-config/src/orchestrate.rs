//! The `orchestrate:` section of `weir.yml`: when the pipeline runs, how its
//! tasks retry and time out, how many run at once, the extra tasks a project
//! adds and who hears about failures.

use std::time::Duration;

use crate::yaml::{At, Reader};
use crate::{Location, Secret, SecretUrl};

/// How a run's tasks are scheduled, retried and limited.
#[derive(Debug, Clone, PartialEq)]
pub struct OrchestrateConfig {
    /// `@once`, `@hourly`, `@daily`, `@weekly`, `@monthly`, a cron
    /// expression, or `None` for manual runs only.
    pub schedule: Option<String>,
    /// IANA time zone the cron expression is read in.
    pub timezone: String,
    /// The first interval starts at or after this instant (RFC 3339 or a date).
    pub start_date: Option<chrono::DateTime<chrono::Utc>>,
    /// Run every missed interval (true) or only the latest due one (false).
    pub catchup: bool,
    pub max_active_runs: usize,
    pub max_active_tasks: usize,
    /// One task per dbt model and test (true), or a single `transform` task.
    pub transform_per_node: bool,
    /// Where run history lives: `None` is the SQLite file under `.weir/`.
    pub metadata: Option<SecretUrl>,
    /// How long a worker holds a task without renewing its lease; a worker
    /// that dies loses its tasks to others after this.
    pub lease: Duration,
    /// How often an idle worker looks for tasks others made ready.
    pub poll: Duration,
    /// Named concurrency limits: `(name, slots)`.
    pub pools: Vec<(String, usize)>,
    /// Policy for every task, overridden per group and per task.
    pub defaults: TaskPolicy,
    pub extract: TaskPolicy,
    pub load: TaskPolicy,
    pub transform: TaskPolicy,
    /// Settings for particular built-in tasks, by task id or a prefix ending
    /// in `*` (`extract.olist_geolocation`, `model.olist.fct_*`); applied
    /// over the group's, the longest pattern last.
    pub overrides: Vec<(String, TaskPolicy, Location)>,
    pub tasks: Vec<UserTask>,
    pub notify: NotifyConfig,
}

impl Default for OrchestrateConfig {
    fn default() -> Self {
        OrchestrateConfig {
            schedule: None,
            timezone: "UTC".to_owned(),
            start_date: None,
            catchup: false,
            max_active_runs: 1,
            max_active_tasks: DEFAULT_MAX_ACTIVE_TASKS,
            transform_per_node: true,
            metadata: None,
            lease: DEFAULT_LEASE,
            poll: DEFAULT_POLL,
            pools: Vec::new(),
            defaults: TaskPolicy::default(),
            extract: TaskPolicy::default(),
            load: TaskPolicy::default(),
            transform: TaskPolicy::default(),
            overrides: Vec::new(),
            tasks: Vec::new(),
            notify: NotifyConfig::default(),
        }
    }
}

pub const DEFAULT_MAX_ACTIVE_TASKS: usize = 16;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// The pool extract tasks use unless told otherwise (`source.jobs` slots).
pub const SOURCE_POOL: &str = "source";

/// Retry, timeout and placement settings; `None` means "inherit".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPolicy {
    pub retries: Option<u32>,
    pub retry_delay: Option<Duration>,
    /// The back-off never waits longer than this.
    pub max_retry_delay: Option<Duration>,
    /// [`NO_TIMEOUT`] for `timeout: none`; unset means the default
    /// ([`DEFAULT_TIMEOUT`]).
    pub timeout: Option<Duration>,
    pub pool: Option<String>,
    pub trigger_rule: Option<TriggerRule>,
}

/// How long an attempt may run when nothing says otherwise: long enough
/// for a first full extract of a large table, short enough that a hung
/// connection does not block a daily pipeline for good. `timeout:` changes
/// it (a timed-out attempt is retried, so it must fit the work).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// `timeout: none`: the attempt may run forever.
pub const NO_TIMEOUT: Duration = Duration::MAX;

/// Does an `overrides` pattern (an id, or a prefix ending in `*`) name `task`?
pub fn pattern_matches(pattern: &str, task: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => task.starts_with(prefix),
        None => pattern == task,
    }
}

impl TaskPolicy {
    /// `self`, with what it leaves unset taken from `base`.
    pub fn or(&self, base: &TaskPolicy) -> TaskPolicy {
        TaskPolicy {
            retries: self.retries.or(base.retries),
            retry_delay: self.retry_delay.or(base.retry_delay),
            max_retry_delay: self.max_retry_delay.or(base.max_retry_delay),
            timeout: self.timeout.or(base.timeout),
            pool: self.pool.clone().or_else(|| base.pool.clone()),
            trigger_rule: self.trigger_rule.or(base.trigger_rule),
        }
    }
}

/// When a task runs, given the final states of the tasks it depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TriggerRule {
    /// Every upstream task succeeded (the default).
    #[default]
    AllSuccess,
    /// Every upstream task finished, however it ended.
    AllDone,
    /// At least one upstream task failed.
    OneFailed,
}

impl TriggerRule {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all_success" => Some(TriggerRule::AllSuccess),
            "all_done" => Some(TriggerRule::AllDone),
            "one_failed" => Some(TriggerRule::OneFailed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllDone => "all_done",
            TriggerRule::OneFailed => "one_failed",
        }
    }
}

/// A task the project adds to the built-in pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct UserTask {
    pub name: String,
    pub location: Location,
    pub kind: UserTaskKind,
    /// Task ids (`start`, `extract.T`, `load.T`, `transform`, `end`, or
    /// another user task's name).
    pub depends_on: Vec<String>,
    pub policy: TaskPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserTaskKind {
    /// SQL on the warehouse (`on: warehouse`, the default) or the source.
    Sql { on: SqlTarget, sql: String },
    /// A shell command (`sh -c`), its output captured in the task's log.
    Shell { command: String },
    /// Does nothing; groups dependencies.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlTarget {
    Warehouse,
    Source,
}

/// Who hears about failures, retries given up and recoveries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotifyConfig {
    /// POSTed a JSON body with a Slack-compatible `text` field. A secret as
    /// a whole: services like Slack put their token in the path.
    pub webhook: Option<Secret>,
    /// Run with `sh -c`, the event in `WEIR_EVENT_*` variables and as JSON on stdin.
    pub command: Option<String>,
}

/// `90`, `90s`, `500ms`, `5m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    (secs.is_finite() && (0.0..1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// `2026-01-01` (midnight UTC) or an RFC 3339 instant.
pub fn parse_start_date(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Check a schedule string the way the scheduler will read it.
pub fn check_schedule(s: &str) -> Result<(), String> {
    match s {
        "@once" | "none" => Ok(()),
        _ => s
            .parse::<croner::Cron>()
            .map(|_| ())
            .map_err(|e| format!("`{s}` is not a schedule (@once, @hourly, @daily, @weekly, @monthly or a cron expression): {e}")),
    }
}

/// The keys of the `orchestrate:` section.
pub(crate) const KEYS: &[&str] = &[
    "schedule",
    "timezone",
    "start_date",
    "catchup",
    "max_active_runs",
    "max_active_tasks",
    "transform_tasks",
    "metadata",
    "lease",
    "poll",
    "pools",
    "defaults",
    "extract",
    "load",
    "transform",
    "overrides",
    "tasks",
    "notify",
];

pub(crate) fn read(r: &mut Reader<'_>, at: At<'_>) -> OrchestrateConfig {
    let mut o = OrchestrateConfig::default();
    let m = r.mapping(at, KEYS);
    let get = |k: &str| m.get(k).map(|(n, p)| At { node: n, path: p });
    if let Some(a) = get("schedule") {
        if let Some(s) = r.string(a) {
            match check_schedule(&s) {
                Ok(()) if s == "none" => {}
                Ok(()) => o.schedule = Some(s),
                Err(e) => r.error(a.node, a.path, e),
            }
        }
    }
    if let Some(a) = get("timezone") {
        if let Some(s) = r.string(a) {
            if s.parse::<chrono_tz::Tz>().is_ok() {
                o.timezone = s;
            } else {
                r.error(
                    a.node,
                    a.path,
                    format!("`{s}` is not an IANA time zone (e.g. UTC, America/Sao_Paulo)"),
                );
            }
        }
    }
    if let Some(a) = get("start_date") {
        if let Some(s) = r.string(a) {
            o.start_date = parse_start_date(&s);
            if o.start_date.is_none() {
                r.error(
                    a.node,
                    a.path,
                    format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time"),
                );
            }
        }
    }
    if let Some(a) = get("catchup") {
        o.catchup = r.bool(a).unwrap_or(false);
    }
    if let Some(a) = get("max_active_runs") {
        o.max_active_runs = r.uint(a, 1, 64).map_or(1, |v| v as usize);
    }
    if let Some(a) = get("max_active_tasks") {
        o.max_active_tasks = r
            .uint(a, 1, 4096)
            .map_or(DEFAULT_MAX_ACTIVE_TASKS, |v| v as usize);
    }
    if let Some(a) = get("transform_tasks") {
        o.transform_per_node = r.choice(a, &["per_node", "single"]).as_deref() != Some("single");
    }
    if let Some(a) = get("metadata") {
        if let Some(s) = r.string(a) {
            if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                o.metadata = Some(SecretUrl::new(s));
            } else if s != "sqlite" {
                r.error(
                    a.node,
                    a.path,
                    "`metadata` is `sqlite` (the default) or a postgres:// URL",
                );
            }
        }
    }
    for (key, slot, min) in [
        ("lease", &mut o.lease, Duration::from_secs(1)),
        ("poll", &mut o.poll, Duration::from_millis(10)),
    ] {
        if let Some(a) = get(key) {
            if let Some(s) = r.string(a) {
                match parse_duration(&s) {
                    Some(d) if d >= min => *slot = d,
                    Some(_) => r.error(
                        a.node,
                        a.path,
                        format!("`{s}` is too short (at least {:?})", min),
                    ),
                    None => r.error(
                        a.node,
                        a.path,
                        format!("`{s}` is not a duration (e.g. 30s, 5m, 2h)"),
                    ),
                }
            }
        }
    }
    if let Some(a) = get("pools") {
        for (name, (n, p)) in r.mapping(a, &[]) {
            if let Some(v) = r.uint(At { node: n, path: &p }, 1, 4096) {
                o.pools.push((name, v as usize));
            }
        }
    }
    for (key, slot) in [
        ("defaults", &mut o.defaults),
        ("extract", &mut o.extract),
        ("load", &mut o.load),
        ("transform", &mut o.transform),
    ] {
        if let Some(a) = get(key) {
            let pm = r.mapping(a, POLICY_KEYS);
            *slot = read_policy(r, &pm);
        }
    }
    if let Some(a) = get("overrides") {
        for (pattern, (n, p)) in r.mapping(a, &[]) {
            let pm = r.mapping(At { node: n, path: &p }, POLICY_KEYS);
            let policy = read_policy(r, &pm);
            let location = Location {
                file: r.file.to_path_buf(),
                line: n.span.start.line(),
                column: n.span.start.col() + 1,
            };
            o.overrides.push((pattern, policy, location));
        }
    }
    if let Some(a) = get("tasks") {
        o.tasks = read_tasks(r, a);
    }
    if let Some(a) = get("notify") {
        let nm = r.mapping(a, &["webhook", "command"]);
        if let Some((n, p)) = nm.get("webhook") {
            o.notify.webhook = r.string(At { node: n, path: p }).map(Secret::new);
        }
        if let Some((n, p)) = nm.get("command") {
            o.notify.command = r.string(At { node: n, path: p });
        }
    }
    if o.catchup && o.start_date.is_none() {
        if let Some(a) = get("catchup") {
            r.error(
                a.node,
                a.path,
                "`catchup: true` needs a `start_date` to catch up from",
            );
        }
    }
    // Pools named by policies must exist.
    let mut named: Vec<(String, At<'_>)> = Vec::new();
    for key in ["defaults", "extract", "load", "transform"] {
        if let Some(a) = get(key) {
            if let saphyr::YamlDataOwned::Mapping(map) = &a.node.data {
                for (k, v) in map {
                    if k.data.as_str() == Some("pool") {
                        if let Some(s) = v.data.as_str() {
                            named.push((
                                s.to_owned(),
                                At {
                                    node: v,
                                    path: a.path,
                                },
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut pools: Vec<String> = o.pools.iter().map(|p| p.0.clone()).collect();
    pools.push(SOURCE_POOL.to_owned());
    for (name, a) in named {
        if !pools.contains(&name) {
            r.error(
                a.node,
                &format!("{}.pool", a.path),
                format!("no pool named `{name}` under orchestrate.pools"),
            );
        }
    }
    for (pattern, policy, location) in &o.overrides {
        if let Some(p) = &policy.pool {
            if !pools.contains(p) {
                r.errors.push(crate::ConfigError {
                    location: location.clone(),
                    key: format!("orchestrate.overrides.{pattern}.pool"),
                    message: format!("no pool named `{p}` under orchestrate.pools"),
                });
            }
        }
    }
    for t in &o.tasks {
        if let Some(p) = &t.policy.pool {
            if !pools.contains(p) {
                r.errors.push(crate::ConfigError {
                    location: t.location.clone(),
                    key: format!("orchestrate.tasks.{}.pool", t.name),
                    message: format!("no pool named `{p}` under orchestrate.pools"),
                });
            }
        }
    }
    o
}

const POLICY_KEYS: &[&str] = &[
    "retries",
    "retry_delay",
    "max_retry_delay",
    "timeout",
    "pool",
    "trigger_rule",
];

type Entries<'n> = std::collections::BTreeMap<String, (&'n saphyr::MarkedYamlOwned, String)>;

fn read_policy(r: &mut Reader<'_>, m: &Entries<'_>) -> TaskPolicy {
    let mut p = TaskPolicy::default();
    let get = |k: &str| m.get(k).map(|(n, p)| At { node: n, path: p });
    if let Some(a) = get("retries") {
        p.retries = r.uint(a, 0, 100_000).map(|v| v as u32);
    }
    for (key, slot) in [
        ("retry_delay", &mut p.retry_delay),
        ("max_retry_delay", &mut p.max_retry_delay),
        ("timeout", &mut p.timeout),
    ] {
        if let Some(a) = get(key) {
            if let Some(s) = r.string(a) {
                if key == "timeout" && matches!(s.trim(), "none" | "off") {
                    *slot = Some(NO_TIMEOUT);
                    continue;
                }
                *slot = parse_duration(&s);
                match slot {
                    None => r.error(
                        a.node,
                        a.path,
                        format!("`{s}` is not a duration (e.g. 30s, 5m, 2h)"),
                    ),
                    // A zero timeout cancels every attempt as it starts.
                    Some(d) if key == "timeout" && d.is_zero() => {
                        *slot = None;
                        r.error(
                            a.node,
                            a.path,
                            format!("`{s}` would cancel every attempt as it starts; give a positive duration, or `none` for no timeout"),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }
    if let Some(a) = get("pool") {
        p.pool = r.string(a);
    }
    if let Some(a) = get("trigger_rule") {
        p.trigger_rule = r
            .choice(a, &["all_success", "all_done", "one_failed"])
            .and_then(|s| TriggerRule::parse(&s));
    }
    p
}

fn read_tasks(r: &mut Reader<'_>, at: At<'_>) -> Vec<UserTask> {
    use saphyr::YamlDataOwned;
    let YamlDataOwned::Sequence(items) = &at.node.data else {
        r.error(at.node, at.path, "expected a list of tasks");
        return Vec::new();
    };
    let mut out: Vec<UserTask> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", at.path);
        let mut keys = vec!["name", "sql", "on", "shell", "empty", "depends_on"];
        keys.extend_from_slice(POLICY_KEYS);
        let m = r.mapping(
            At {
                node: item,
                path: &path,
            },
            &keys,
        );
        let get = |k: &str| m.get(k).map(|(n, p)| At { node: n, path: p });
        let Some(name) = get("name").and_then(|a| r.string(a)) else {
            if !m.contains_key("name") {
                r.error(item, &path, "missing required key `name`");
            }
            continue;
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            || name.is_empty()
        {
            r.error(
                item,
                &path,
                format!("task name `{name}` may hold only letters, digits, `_`, `-` and `.`"),
            );
        }
        if out.iter().any(|t| t.name == name) {
            r.error(item, &path, format!("task `{name}` is defined twice"));
        }
        let kinds: Vec<&str> = ["sql", "shell", "empty"]
            .into_iter()
            .filter(|k| m.contains_key(*k))
            .collect();
        let kind = match kinds.as_slice() {
            ["sql"] => {
                let on = match get("on") {
                    Some(a) => match r.choice(a, &["warehouse", "source"]).as_deref() {
                        Some("source") => SqlTarget::Source,
                        _ => SqlTarget::Warehouse,
                    },
                    None => SqlTarget::Warehouse,
                };
                let sql = get("sql").and_then(|a| r.string(a)).unwrap_or_default();
                UserTaskKind::Sql { on, sql }
            }
            ["shell"] => UserTaskKind::Shell {
                command: get("shell").and_then(|a| r.string(a)).unwrap_or_default(),
            },
            ["empty"] => UserTaskKind::Empty,
            _ => {
                r.error(
                    item,
                    &path,
                    "a task needs exactly one of `sql`, `shell` or `empty: true`",
                );
                continue;
            }
        };
        if m.contains_key("on") && !matches!(kind, UserTaskKind::Sql { .. }) {
            let a = get("on").expect("checked");
            r.error(a.node, a.path, "`on` applies to `sql` tasks only");
        }
        let depends_on = get("depends_on")
            .and_then(|a| r.strings(a))
            .unwrap_or_default();
        let policy = read_policy(r, &m);
        out.push(UserTask {
            name,
            location: Location {
                file: r.file.to_path_buf(),
                line: item.span.start.line(),
                column: item.span.start.col() + 1,
            },
            kind,
            depends_on,
            policy,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_every_unit() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn start_dates_are_dates_or_instants() {
        assert_eq!(
            parse_start_date("2026-01-02").unwrap().to_rfc3339(),
            "2026-01-02T00:00:00+00:00"
        );
        assert_eq!(
            parse_start_date("2026-01-02T03:00:00-03:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-02T06:00:00+00:00"
        );
        assert!(parse_start_date("yesterday").is_none());
    }
}
