//! The check that a usage table equals a `GROUP BY` over `events`, written in SQL so it
//! runs inside the record store (MariaDB/MySQL or SQLite), independent of Tally's code.
//! Shared by the integration tests and the chaos suite's `usage` checker.

pub const KEY_COLUMNS: [&str; 6] = [
    "tenant",
    "api_name",
    "api_version",
    "application_id",
    "resource",
    "method",
];

pub const MEASURE_COLUMNS: &str = "requests, errors_4xx, errors_5xx, faults, throttled, \
     latency_count, latency_sum_ms, latency_min_ms, latency_max_ms, bytes_sum";

/// `usage_<g>` recomputed in SQL from `events`.
fn group_by_events_sql(mysql: bool, width_ms: i64) -> String {
    let bucket = if mysql {
        format!("FLOOR(ts_ms / {width_ms}) * {width_ms}")
    } else {
        // SQLite: integer division floors for the positive times used here.
        format!("(ts_ms / {width_ms}) * {width_ms}")
    };
    format!(
        "SELECT {bucket} AS bucket_ms, tenant, api_name, api_version, application_id, \
                resource, method, \
                SUM(kind = 'request') AS requests, \
                SUM(CASE WHEN kind = 'request' AND response_code BETWEEN 400 AND 499 \
                    THEN 1 ELSE 0 END) AS errors_4xx, \
                SUM(CASE WHEN kind = 'request' AND response_code BETWEEN 500 AND 599 \
                    THEN 1 ELSE 0 END) AS errors_5xx, \
                SUM(kind = 'fault') AS faults, \
                SUM(kind = 'throttle') AS throttled, \
                COUNT(response_time_ms) AS latency_count, \
                COALESCE(SUM(response_time_ms), 0) AS latency_sum_ms, \
                MIN(response_time_ms) AS latency_min_ms, \
                MAX(response_time_ms) AS latency_max_ms, \
                COALESCE(SUM(response_size), 0) AS bytes_sum \
         FROM events GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
}

/// Rows in `table` and not in the `GROUP BY` over `events`, and the other way round.
pub fn usage_symmetric_difference_sql(mysql: bool, table: &str, width_ms: i64) -> String {
    let cols = format!("bucket_ms, {}, {MEASURE_COLUMNS}", KEY_COLUMNS.join(", "));
    format!(
        "WITH g AS ({grouped}) \
         SELECT 'only_in_group_by' AS side, d.* FROM \
             (SELECT {cols} FROM g EXCEPT SELECT {cols} FROM {table}) AS d \
         UNION ALL \
         SELECT 'only_in_{table}' AS side, e.* FROM \
             (SELECT {cols} FROM {table} EXCEPT SELECT {cols} FROM g) AS e",
        grouped = group_by_events_sql(mysql, width_ms)
    )
}
