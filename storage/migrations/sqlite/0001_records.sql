-- Tally record store, SQLite dialect, version 1. Documented in docs/sql.md.
--
-- STRICT tables: a value of the wrong type is an error, not silently coerced. TEXT
-- compares bytewise (BINARY collation): 'A' <> 'a' and 'GET' <> 'GET '. INTEGER is signed
-- 64-bit, so counters and latencies are capped at 2^63-1 here (MySQL holds 2^64-1).

CREATE TABLE events (
    event_id                      TEXT    NOT NULL PRIMARY KEY,
    log_index                     INTEGER NOT NULL CHECK (log_index >= 0),
    ts_ms                         INTEGER NOT NULL,
    ingest_ms                     INTEGER NOT NULL,
    kind                          TEXT    NOT NULL CHECK (kind IN ('request', 'fault', 'throttle')),
    tenant                        TEXT    NOT NULL DEFAULT '',
    api_name                      TEXT    NOT NULL DEFAULT '',
    api_version                   TEXT    NOT NULL DEFAULT '',
    application_id                TEXT    NOT NULL DEFAULT '',
    resource                      TEXT    NOT NULL DEFAULT '',
    method                        TEXT    NOT NULL DEFAULT '',
    api_context                   TEXT    NULL,
    api_creator                   TEXT    NULL,
    hostname                      TEXT    NULL,
    destination                   TEXT    NULL,
    protocol                      TEXT    NULL,
    application_name              TEXT    NULL,
    application_owner             TEXT    NULL,
    username                      TEXT    NULL,
    user_tenant                   TEXT    NULL,
    user_ip                       TEXT    NULL,
    user_agent                    TEXT    NULL,
    response_code                 INTEGER NULL CHECK (response_code BETWEEN 0 AND 65535),
    response_time_ms              INTEGER NULL CHECK (response_time_ms >= 0),
    backend_latency_ms            INTEGER NULL CHECK (backend_latency_ms >= 0),
    security_latency_ms           INTEGER NULL CHECK (security_latency_ms >= 0),
    throttling_latency_ms         INTEGER NULL CHECK (throttling_latency_ms >= 0),
    request_mediation_latency_ms  INTEGER NULL CHECK (request_mediation_latency_ms >= 0),
    response_mediation_latency_ms INTEGER NULL CHECK (response_mediation_latency_ms >= 0),
    other_latency_ms              INTEGER NULL CHECK (other_latency_ms >= 0),
    response_size                 INTEGER NULL CHECK (response_size >= 0),
    cache_hit                     INTEGER NULL CHECK (cache_hit IN (0, 1)),
    error_code                    TEXT    NULL,
    error_message                 TEXT    NULL,
    throttled_reason              TEXT    NULL
) STRICT;

CREATE INDEX events_api_name_ts ON events (api_name, ts_ms);
CREATE INDEX events_ts ON events (ts_ms);
CREATE INDEX events_log_index ON events (log_index);

CREATE TABLE usage_minute (
    bucket_ms      INTEGER NOT NULL,
    tenant         TEXT    NOT NULL DEFAULT '',
    api_name       TEXT    NOT NULL DEFAULT '',
    api_version    TEXT    NOT NULL DEFAULT '',
    application_id TEXT    NOT NULL DEFAULT '',
    resource       TEXT    NOT NULL DEFAULT '',
    method         TEXT    NOT NULL DEFAULT '',
    requests       INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    errors_4xx     INTEGER NOT NULL DEFAULT 0 CHECK (errors_4xx >= 0),
    errors_5xx     INTEGER NOT NULL DEFAULT 0 CHECK (errors_5xx >= 0),
    faults         INTEGER NOT NULL DEFAULT 0 CHECK (faults >= 0),
    throttled      INTEGER NOT NULL DEFAULT 0 CHECK (throttled >= 0),
    latency_count  INTEGER NOT NULL DEFAULT 0 CHECK (latency_count >= 0),
    latency_sum_ms INTEGER NOT NULL DEFAULT 0 CHECK (latency_sum_ms >= 0),
    latency_min_ms INTEGER NULL,
    latency_max_ms INTEGER NULL,
    bytes_sum      INTEGER NOT NULL DEFAULT 0 CHECK (bytes_sum >= 0),
    PRIMARY KEY (bucket_ms, tenant, api_name, api_version, application_id, resource, method)
) STRICT, WITHOUT ROWID;

CREATE INDEX usage_minute_api_name_bucket ON usage_minute (api_name, bucket_ms);

CREATE TABLE usage_hour (
    bucket_ms      INTEGER NOT NULL,
    tenant         TEXT    NOT NULL DEFAULT '',
    api_name       TEXT    NOT NULL DEFAULT '',
    api_version    TEXT    NOT NULL DEFAULT '',
    application_id TEXT    NOT NULL DEFAULT '',
    resource       TEXT    NOT NULL DEFAULT '',
    method         TEXT    NOT NULL DEFAULT '',
    requests       INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    errors_4xx     INTEGER NOT NULL DEFAULT 0 CHECK (errors_4xx >= 0),
    errors_5xx     INTEGER NOT NULL DEFAULT 0 CHECK (errors_5xx >= 0),
    faults         INTEGER NOT NULL DEFAULT 0 CHECK (faults >= 0),
    throttled      INTEGER NOT NULL DEFAULT 0 CHECK (throttled >= 0),
    latency_count  INTEGER NOT NULL DEFAULT 0 CHECK (latency_count >= 0),
    latency_sum_ms INTEGER NOT NULL DEFAULT 0 CHECK (latency_sum_ms >= 0),
    latency_min_ms INTEGER NULL,
    latency_max_ms INTEGER NULL,
    bytes_sum      INTEGER NOT NULL DEFAULT 0 CHECK (bytes_sum >= 0),
    PRIMARY KEY (bucket_ms, tenant, api_name, api_version, application_id, resource, method)
) STRICT, WITHOUT ROWID;

CREATE INDEX usage_hour_api_name_bucket ON usage_hour (api_name, bucket_ms);

CREATE TABLE usage_day (
    bucket_ms      INTEGER NOT NULL,
    tenant         TEXT    NOT NULL DEFAULT '',
    api_name       TEXT    NOT NULL DEFAULT '',
    api_version    TEXT    NOT NULL DEFAULT '',
    application_id TEXT    NOT NULL DEFAULT '',
    resource       TEXT    NOT NULL DEFAULT '',
    method         TEXT    NOT NULL DEFAULT '',
    requests       INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    errors_4xx     INTEGER NOT NULL DEFAULT 0 CHECK (errors_4xx >= 0),
    errors_5xx     INTEGER NOT NULL DEFAULT 0 CHECK (errors_5xx >= 0),
    faults         INTEGER NOT NULL DEFAULT 0 CHECK (faults >= 0),
    throttled      INTEGER NOT NULL DEFAULT 0 CHECK (throttled >= 0),
    latency_count  INTEGER NOT NULL DEFAULT 0 CHECK (latency_count >= 0),
    latency_sum_ms INTEGER NOT NULL DEFAULT 0 CHECK (latency_sum_ms >= 0),
    latency_min_ms INTEGER NULL,
    latency_max_ms INTEGER NULL,
    bytes_sum      INTEGER NOT NULL DEFAULT 0 CHECK (bytes_sum >= 0),
    PRIMARY KEY (bucket_ms, tenant, api_name, api_version, application_id, resource, method)
) STRICT, WITHOUT ROWID;

CREATE INDEX usage_day_api_name_bucket ON usage_day (api_name, bucket_ms);

-- Where the sink has reached: exactly one row, updated in the same transaction as the
-- rows it covers.
CREATE TABLE sink_state (
    id            INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    applied_index INTEGER NOT NULL CHECK (applied_index >= 0),
    updated_ms    INTEGER NULL
) STRICT;

INSERT INTO sink_state (id, applied_index, updated_ms) VALUES (1, 0, NULL);
