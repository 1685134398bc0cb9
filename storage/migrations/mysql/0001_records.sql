-- Tally record store, MySQL/MariaDB dialect, version 1. Documented in docs/sql.md.
--
-- Text columns use a binary, NO PAD collation (MariaDB utf8mb4_nopad_bin, MySQL 8
-- utf8mb4_0900_bin, chosen by the version comments below): 'A' <> 'a' and 'GET' <> 'GET ',
-- exactly as the in-memory aggregation compares keys. Requires MariaDB >= 10.2 or
-- MySQL >= 8.0; connect() verifies the collation took effect.

CREATE TABLE events (
    event_id                      VARCHAR(128)    NOT NULL,
    log_index                     BIGINT UNSIGNED NOT NULL,
    ts_ms                         BIGINT          NOT NULL,
    ingest_ms                     BIGINT          NOT NULL,
    kind                          ENUM('request', 'fault', 'throttle') NOT NULL,
    tenant                        VARCHAR(256)    NOT NULL DEFAULT '',
    api_name                      VARCHAR(256)    NOT NULL DEFAULT '',
    api_version                   VARCHAR(64)     NOT NULL DEFAULT '',
    application_id                VARCHAR(256)    NOT NULL DEFAULT '',
    resource                      VARCHAR(1024)   NOT NULL DEFAULT '',
    method                        VARCHAR(1024)   NOT NULL DEFAULT '',
    api_context                   VARCHAR(1024)   NULL,
    api_creator                   VARCHAR(1024)   NULL,
    hostname                      VARCHAR(1024)   NULL,
    destination                   VARCHAR(1024)   NULL,
    protocol                      VARCHAR(1024)   NULL,
    application_name              VARCHAR(256)    NULL,
    application_owner             VARCHAR(256)    NULL,
    username                      VARCHAR(1024)   NULL,
    user_tenant                   VARCHAR(1024)   NULL,
    user_ip                       VARCHAR(1024)   NULL,
    user_agent                    VARCHAR(1024)   NULL,
    response_code                 SMALLINT UNSIGNED NULL,
    response_time_ms              BIGINT UNSIGNED NULL,
    backend_latency_ms            BIGINT UNSIGNED NULL,
    security_latency_ms           BIGINT UNSIGNED NULL,
    throttling_latency_ms         BIGINT UNSIGNED NULL,
    request_mediation_latency_ms  BIGINT UNSIGNED NULL,
    response_mediation_latency_ms BIGINT UNSIGNED NULL,
    other_latency_ms              BIGINT UNSIGNED NULL,
    response_size                 BIGINT UNSIGNED NULL,
    cache_hit                     BOOLEAN         NULL,
    error_code                    VARCHAR(1024)   NULL,
    error_message                 VARCHAR(1024)   NULL,
    throttled_reason              VARCHAR(256)    NULL,
    PRIMARY KEY (event_id),
    KEY events_api_name_ts (api_name, ts_ms),
    KEY events_ts (ts_ms),
    KEY events_log_index (log_index)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 /*M!100202 COLLATE=utf8mb4_nopad_bin */ /*!80000 COLLATE=utf8mb4_0900_bin */;

CREATE TABLE usage_minute (
    bucket_ms      BIGINT          NOT NULL,
    tenant         VARCHAR(256)    NOT NULL DEFAULT '',
    api_name       VARCHAR(256)    NOT NULL DEFAULT '',
    api_version    VARCHAR(64)     NOT NULL DEFAULT '',
    application_id VARCHAR(256)    NOT NULL DEFAULT '',
    resource       VARCHAR(1024)   NOT NULL DEFAULT '',
    method         VARCHAR(1024)   NOT NULL DEFAULT '',
    requests       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    errors_4xx     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    errors_5xx     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    faults         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    throttled      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_count  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_sum_ms BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_min_ms BIGINT UNSIGNED NULL,
    latency_max_ms BIGINT UNSIGNED NULL,
    bytes_sum      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    -- SHA-256 of the six key columns, each as <byte length>:<bytes>; see docs/sql.md.
    key_hash       BINARY(32)      NOT NULL,
    PRIMARY KEY (bucket_ms, key_hash),
    KEY usage_minute_api_name_bucket (api_name, bucket_ms),
    CONSTRAINT usage_minute_key_hash CHECK (key_hash = UNHEX(SHA2(CONCAT(
        LENGTH(tenant), ':', tenant,
        LENGTH(api_name), ':', api_name,
        LENGTH(api_version), ':', api_version,
        LENGTH(application_id), ':', application_id,
        LENGTH(resource), ':', resource,
        LENGTH(method), ':', method), 256)))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 /*M!100202 COLLATE=utf8mb4_nopad_bin */ /*!80000 COLLATE=utf8mb4_0900_bin */;

CREATE TABLE usage_hour (
    bucket_ms      BIGINT          NOT NULL,
    tenant         VARCHAR(256)    NOT NULL DEFAULT '',
    api_name       VARCHAR(256)    NOT NULL DEFAULT '',
    api_version    VARCHAR(64)     NOT NULL DEFAULT '',
    application_id VARCHAR(256)    NOT NULL DEFAULT '',
    resource       VARCHAR(1024)   NOT NULL DEFAULT '',
    method         VARCHAR(1024)   NOT NULL DEFAULT '',
    requests       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    errors_4xx     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    errors_5xx     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    faults         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    throttled      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_count  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_sum_ms BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_min_ms BIGINT UNSIGNED NULL,
    latency_max_ms BIGINT UNSIGNED NULL,
    bytes_sum      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    -- SHA-256 of the six key columns, each as <byte length>:<bytes>; see docs/sql.md.
    key_hash       BINARY(32)      NOT NULL,
    PRIMARY KEY (bucket_ms, key_hash),
    KEY usage_hour_api_name_bucket (api_name, bucket_ms),
    CONSTRAINT usage_hour_key_hash CHECK (key_hash = UNHEX(SHA2(CONCAT(
        LENGTH(tenant), ':', tenant,
        LENGTH(api_name), ':', api_name,
        LENGTH(api_version), ':', api_version,
        LENGTH(application_id), ':', application_id,
        LENGTH(resource), ':', resource,
        LENGTH(method), ':', method), 256)))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 /*M!100202 COLLATE=utf8mb4_nopad_bin */ /*!80000 COLLATE=utf8mb4_0900_bin */;

CREATE TABLE usage_day (
    bucket_ms      BIGINT          NOT NULL,
    tenant         VARCHAR(256)    NOT NULL DEFAULT '',
    api_name       VARCHAR(256)    NOT NULL DEFAULT '',
    api_version    VARCHAR(64)     NOT NULL DEFAULT '',
    application_id VARCHAR(256)    NOT NULL DEFAULT '',
    resource       VARCHAR(1024)   NOT NULL DEFAULT '',
    method         VARCHAR(1024)   NOT NULL DEFAULT '',
    requests       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    errors_4xx     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    errors_5xx     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    faults         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    throttled      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_count  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_sum_ms BIGINT UNSIGNED NOT NULL DEFAULT 0,
    latency_min_ms BIGINT UNSIGNED NULL,
    latency_max_ms BIGINT UNSIGNED NULL,
    bytes_sum      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    -- SHA-256 of the six key columns, each as <byte length>:<bytes>; see docs/sql.md.
    key_hash       BINARY(32)      NOT NULL,
    PRIMARY KEY (bucket_ms, key_hash),
    KEY usage_day_api_name_bucket (api_name, bucket_ms),
    CONSTRAINT usage_day_key_hash CHECK (key_hash = UNHEX(SHA2(CONCAT(
        LENGTH(tenant), ':', tenant,
        LENGTH(api_name), ':', api_name,
        LENGTH(api_version), ':', api_version,
        LENGTH(application_id), ':', application_id,
        LENGTH(resource), ':', resource,
        LENGTH(method), ':', method), 256)))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 /*M!100202 COLLATE=utf8mb4_nopad_bin */ /*!80000 COLLATE=utf8mb4_0900_bin */;

-- Where the sink has reached: exactly one row, updated in the same transaction as the
-- rows it covers.
CREATE TABLE sink_state (
    id            TINYINT UNSIGNED NOT NULL,
    applied_index BIGINT UNSIGNED  NOT NULL,
    updated_ms    BIGINT           NULL,
    PRIMARY KEY (id),
    CONSTRAINT sink_state_single_row CHECK (id = 1)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 /*M!100202 COLLATE=utf8mb4_nopad_bin */ /*!80000 COLLATE=utf8mb4_0900_bin */;

INSERT INTO sink_state (id, applied_index, updated_ms) VALUES (1, 0, NULL);
