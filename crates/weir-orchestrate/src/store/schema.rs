//! The metadata store's schema, one migration a version, for SQLite and
//! PostgreSQL side by side (a version is never edited once released: add one).

use crate::db::Migrations;

pub(super) const SQLITE: &[&str] = &[
    // 1: runs, task instances, attempts, pools, the notification outbox.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        dag TEXT NOT NULL,
        kind TEXT NOT NULL,
        interval_start INTEGER NOT NULL,
        interval_end INTEGER NOT NULL,
        state TEXT NOT NULL,
        max_active_tasks INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        ended_at INTEGER,
        dag_json TEXT NOT NULL
    );
    CREATE UNIQUE INDEX runs_one_per_interval ON runs (dag, interval_start, interval_end)
        WHERE kind = 'scheduled';
    CREATE INDEX runs_by_state ON runs (dag, state);
    CREATE TABLE task_instances (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        task_id TEXT NOT NULL,
        ord INTEGER NOT NULL,
        pool TEXT,
        state TEXT NOT NULL,
        ups_total INTEGER NOT NULL,
        ups_done INTEGER NOT NULL DEFAULT 0,
        ups_success INTEGER NOT NULL DEFAULT 0,
        ups_failed INTEGER NOT NULL DEFAULT 0,
        ups_skipped INTEGER NOT NULL DEFAULT 0,
        tries INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        interruptions INTEGER NOT NULL DEFAULT 0,
        next_try_at INTEGER,
        lease_owner TEXT,
        lease_expires_at INTEGER,
        output TEXT,
        PRIMARY KEY (run_id, task_id)
    );
    CREATE INDEX task_instances_by_state ON task_instances (run_id, state, ord);
    CREATE TABLE attempts (
        run_id INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        try_number INTEGER NOT NULL,
        state TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        error TEXT,
        error_kind TEXT,
        rows_moved INTEGER,
        bytes_moved INTEGER,
        peak_rss_kb INTEGER,
        log_path TEXT NOT NULL,
        log_tail TEXT,
        owner TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id, try_number)
    );
    CREATE TABLE pools (
        dag TEXT NOT NULL,
        name TEXT NOT NULL,
        slots INTEGER NOT NULL,
        PRIMARY KEY (dag, name)
    );
    CREATE TABLE events (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        task_id TEXT,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        claimed_by TEXT,
        claimed_until INTEGER,
        sent_at INTEGER
    );",
    // 2: the SQLSTATE of a failed attempt; the web UI's users, sessions,
    // API tokens and audit log; pausing a DAG's schedule.
    "ALTER TABLE attempts ADD COLUMN error_code TEXT;
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        user_name TEXT NOT NULL,
        action TEXT NOT NULL,
        run_id INTEGER,
        task_id TEXT,
        detail TEXT NOT NULL
    );
    CREATE TABLE dag_controls (
        dag TEXT PRIMARY KEY,
        paused INTEGER NOT NULL,
        changed_by TEXT NOT NULL,
        changed_at INTEGER NOT NULL
    );
    CREATE INDEX runs_by_interval ON runs (dag, interval_start);
    CREATE INDEX attempts_failed_by_end ON attempts (ended_at) WHERE state = 'failed';
    CREATE INDEX task_instances_running ON task_instances (run_id) WHERE state = 'running';
    CREATE INDEX runs_by_end ON runs (ended_at);
    CREATE INDEX runs_by_dag_id ON runs (dag, id);",
    // 3: what a run was asked for (full refresh, tables, a dbt selector), as
    // JSON, NULL for a run of the whole pipeline; when an API token expires.
    "ALTER TABLE runs ADD COLUMN params TEXT;
    ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;",
];

pub(super) const POSTGRES: &[&str] = &[
    // 1: the same tables as SQLite's first version.
    "CREATE TABLE runs (
        id BIGSERIAL PRIMARY KEY,
        dag TEXT NOT NULL,
        kind TEXT NOT NULL,
        interval_start BIGINT NOT NULL,
        interval_end BIGINT NOT NULL,
        state TEXT NOT NULL,
        max_active_tasks BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        ended_at BIGINT,
        dag_json TEXT NOT NULL
    );
    CREATE UNIQUE INDEX runs_one_per_interval ON runs (dag, interval_start, interval_end)
        WHERE kind = 'scheduled';
    CREATE INDEX runs_by_state ON runs (dag, state);
    CREATE TABLE task_instances (
        run_id BIGINT NOT NULL REFERENCES runs (id),
        task_id TEXT NOT NULL,
        ord BIGINT NOT NULL,
        pool TEXT,
        state TEXT NOT NULL,
        ups_total BIGINT NOT NULL,
        ups_done BIGINT NOT NULL DEFAULT 0,
        ups_success BIGINT NOT NULL DEFAULT 0,
        ups_failed BIGINT NOT NULL DEFAULT 0,
        ups_skipped BIGINT NOT NULL DEFAULT 0,
        tries BIGINT NOT NULL DEFAULT 0,
        failures BIGINT NOT NULL DEFAULT 0,
        interruptions BIGINT NOT NULL DEFAULT 0,
        next_try_at BIGINT,
        lease_owner TEXT,
        lease_expires_at BIGINT,
        output TEXT,
        PRIMARY KEY (run_id, task_id)
    );
    CREATE INDEX task_instances_by_state ON task_instances (run_id, state, ord);
    CREATE TABLE attempts (
        run_id BIGINT NOT NULL,
        task_id TEXT NOT NULL,
        try_number BIGINT NOT NULL,
        state TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at BIGINT,
        error TEXT,
        error_kind TEXT,
        rows_moved BIGINT,
        bytes_moved BIGINT,
        peak_rss_kb BIGINT,
        log_path TEXT NOT NULL,
        log_tail TEXT,
        owner TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id, try_number)
    );
    CREATE TABLE pools (
        dag TEXT NOT NULL,
        name TEXT NOT NULL,
        slots BIGINT NOT NULL,
        PRIMARY KEY (dag, name)
    );
    CREATE TABLE events (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        run_id BIGINT NOT NULL,
        task_id TEXT,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        claimed_by TEXT,
        claimed_until BIGINT,
        sent_at BIGINT
    );",
    // 2: the SQLSTATE of a failed attempt; the web UI's users, sessions,
    // API tokens and audit log; pausing a DAG's schedule.
    "ALTER TABLE attempts ADD COLUMN error_code TEXT;
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT
    );
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        user_name TEXT NOT NULL,
        action TEXT NOT NULL,
        run_id BIGINT,
        task_id TEXT,
        detail TEXT NOT NULL
    );
    CREATE TABLE dag_controls (
        dag TEXT PRIMARY KEY,
        paused BIGINT NOT NULL,
        changed_by TEXT NOT NULL,
        changed_at BIGINT NOT NULL
    );
    CREATE INDEX runs_by_interval ON runs (dag, interval_start);
    CREATE INDEX attempts_failed_by_end ON attempts (ended_at) WHERE state = 'failed';
    CREATE INDEX task_instances_running ON task_instances (run_id) WHERE state = 'running';
    CREATE INDEX runs_by_end ON runs (ended_at);
    CREATE INDEX runs_by_dag_id ON runs (dag, id);",
    // 3: what a run was asked for (full refresh, tables, a dbt selector), as
    // JSON, NULL for a run of the whole pipeline; when an API token expires.
    "ALTER TABLE runs ADD COLUMN params TEXT;
    ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;",
];

pub(super) const MIGRATIONS: Migrations = Migrations {
    sqlite: SQLITE,
    postgres: POSTGRES,
};
