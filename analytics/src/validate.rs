//! Validation of posted batches (docs/api.md).
//!
//! A batch is accepted or rejected as a whole. Rejection reports every problem found
//! (up to [`MAX_ERROR_DETAILS`]), each with the 0-based record number and the field, so
//! a client can fix the whole batch in one round trip. Unknown fields are errors: a typo
//! such as `respone_code` must never silently drop data.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::event::{Event, Kind};
use crate::raw::{self, RawBody, RawRecord};

/// Most events one request may carry. Larger batches are rejected whole.
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;

/// Most per-field errors listed in a [`BatchError`]; the message gives the full count.
pub const MAX_ERROR_DETAILS: usize = 100;

/// Earliest accepted event time: 2000-01-01T00:00:00Z. Anything earlier is a unit mistake
/// (seconds for milliseconds) or a zeroed clock, not an API call we can bucket usefully.
pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;

/// First rejected event time: 2200-01-01T00:00:00Z (exclusive bound). Anything later is a
/// unit mistake (microseconds for milliseconds) and would pin far-future buckets.
pub const MAX_TIMESTAMP_MS: i64 = 7_258_118_400_000;

const EVENT_ID_MAX_CHARS: usize = 128;
const SHORT_TEXT: usize = 256;
const LONG_TEXT: usize = 1024;
const API_VERSION_MAX_CHARS: usize = 64;
/// Longest field name echoed back in an error, so a hostile key cannot bloat the reply.
const MAX_ECHOED_NAME: usize = 64;

/// Every field of the event schema (docs/api.md), as named in the JSON input.
pub const KNOWN_FIELDS: [&str; 33] = [
    "event_id",
    "timestamp",
    "kind",
    "api_name",
    "api_version",
    "tenant",
    "api_context",
    "api_creator",
    "resource",
    "method",
    "hostname",
    "destination",
    "protocol",
    "application_id",
    "application_name",
    "application_owner",
    "username",
    "user_tenant",
    "user_ip",
    "user_agent",
    "response_code",
    "response_time_ms",
    "backend_latency_ms",
    "security_latency_ms",
    "throttling_latency_ms",
    "request_mediation_latency_ms",
    "response_mediation_latency_ms",
    "other_latency_ms",
    "response_size",
    "cache_hit",
    "error_code",
    "error_message",
    "throttled_reason",
];

const REQUIRED_FIELDS: [&str; 4] = ["event_id", "timestamp", "api_name", "api_version"];

/// How the body is framed (chosen by the HTTP layer from the Content-Type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one object, or an array of objects.
    Json,
    /// `application/x-ndjson`: one object per line; empty lines are skipped.
    Ndjson,
}

/// A rejected batch. `message` is a human summary; `details` lists the problems.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct BatchError {
    pub message: String,
    pub details: Vec<FieldError>,
}

/// One problem in one record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// 0-based position of the record in the batch (NDJSON: counting non-empty lines).
    pub record: usize,
    /// The offending field, or `None` when the record as a whole is wrong.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "record {}, field `{}`: {}",
                self.record, field, self.message
            ),
            None => write!(f, "record {}: {}", self.record, self.message),
        }
    }
}

impl BatchError {
    fn whole(message: impl Into<String>) -> Self {
        BatchError {
            message: message.into(),
            details: Vec::new(),
        }
    }
}

/// Parses and validates a posted body. Either every event is valid and all are returned
/// in input order, or nothing is and the error says why.
pub fn parse_events(body: &[u8], format: BodyFormat) -> Result<Vec<Event>, BatchError> {
    if body.trim_ascii().is_empty() {
        return Err(BatchError::whole("empty batch: the body is empty"));
    }
    let (records, total) = match format {
        BodyFormat::Json => match raw::read_json(body, MAX_EVENTS_PER_BATCH) {
            Ok(RawBody::Records { records, total }) => (records, total),
            Ok(RawBody::Other(what)) => {
                return Err(BatchError::whole(format!(
                    "body must be a JSON object or an array of objects, got {what}"
                )))
            }
            Err(err) => {
                return Err(BatchError::whole(format!(
                    "malformed JSON at line {}, column {}: {}",
                    err.line(),
                    err.column(),
                    raw::message_without_position(&err)
                )))
            }
        },
        BodyFormat::Ndjson => raw::read_ndjson(body, MAX_EVENTS_PER_BATCH),
    };
    if total == 0 {
        return Err(BatchError::whole("empty batch: the body holds no events"));
    }
    if total > MAX_EVENTS_PER_BATCH {
        return Err(BatchError::whole(format!(
            "batch holds {total} events; at most {MAX_EVENTS_PER_BATCH} are allowed per request"
        )));
    }

    let mut report = Report::default();
    let mut events = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        match record {
            RawRecord::Object(fields) => {
                if let Some(event) = parse_record(index, fields, &mut report) {
                    events.push(event);
                }
            }
            RawRecord::NotObject(what) => {
                report.record(index, None, format!("must be a JSON object, got {what}"))
            }
            RawRecord::Malformed(message) => report.record(index, None, message),
        }
    }
    report.finish(total)?;
    Ok(events)
}

/// Collects errors across the batch, keeping the first [`MAX_ERROR_DETAILS`].
#[derive(Default)]
struct Report {
    details: Vec<FieldError>,
    errors: usize,
    bad_records: usize,
    last_bad_record: Option<usize>,
}

impl Report {
    fn record(&mut self, record: usize, field: Option<&str>, message: String) {
        self.errors += 1;
        if self.last_bad_record != Some(record) {
            self.bad_records += 1;
            self.last_bad_record = Some(record);
        }
        if self.details.len() < MAX_ERROR_DETAILS {
            self.details.push(FieldError {
                record,
                field: field.map(echo_name),
                message,
            });
        }
    }

    /// Whether the next problem still makes it into the details (or only into the count).
    fn lists_more(&self) -> bool {
        self.details.len() < MAX_ERROR_DETAILS
    }

    fn field(&mut self, record: usize, field: &str, message: String) {
        self.record(record, Some(field), message);
    }

    fn finish(self, total: usize) -> Result<(), BatchError> {
        let Some(first) = self.details.first() else {
            return Ok(());
        };
        let mut message = if self.errors == 1 {
            format!("invalid batch, nothing was accepted: {first}")
        } else {
            format!(
                "invalid batch, nothing was accepted: {} errors in {} of {} records; first: {first}",
                self.errors, self.bad_records, total
            )
        };
        if self.errors > self.details.len() {
            message.push_str(&format!(
                " (details list the first {} errors)",
                self.details.len()
            ));
        }
        Err(BatchError {
            message,
            details: self.details,
        })
    }
}

/// How far ahead of the receiving node's clock an event time may be. Buckets ahead of
/// ingest time are not evicted until ingest time catches up, so far-future events would pin
/// memory; a gateway clock this far off is a bug worth hearing about.
pub const MAX_FUTURE_SKEW_MS: i64 = 24 * 3_600_000;

/// Rejects a batch holding events more than [`MAX_FUTURE_SKEW_MS`] ahead of `now_ms`.
///
/// The caller passes its clock in (this crate reads none); it runs before proposal, so the
/// verdict never depends on which replica applies the entry.
pub fn check_future_skew(events: &[Event], now_ms: i64) -> Result<(), BatchError> {
    let limit = now_ms.saturating_add(MAX_FUTURE_SKEW_MS);
    let details: Vec<FieldError> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.ts_ms > limit)
        .take(MAX_ERROR_DETAILS)
        .map(|(record, e)| FieldError {
            record,
            field: Some("timestamp".into()),
            message: format!(
                "{} ms is more than 24 h ahead of the server clock ({now_ms} ms); check the gateway's clock",
                e.ts_ms
            ),
        })
        .collect();
    if details.is_empty() {
        return Ok(());
    }
    Err(BatchError {
        message: format!(
            "batch rejected: {} record(s) have a timestamp in the future",
            details.len()
        ),
        details,
    })
}

fn parse_record(record: usize, fields: Vec<(String, Value)>, report: &mut Report) -> Option<Event> {
    let errors_before = report.errors;
    let mut event = Event::default();
    let mut seen = BTreeSet::new();
    let mut provided = BTreeSet::new();
    let mut kind_is_valid = true;

    for (name, value) in &fields {
        if !seen.insert(name.as_str()) {
            report.field(record, name, "appears more than once in the record".into());
            continue;
        }
        if !KNOWN_FIELDS.contains(&name.as_str()) {
            // The suggestion costs edit distances: only for problems that will be listed,
            // so a batch of 10,000 records full of unknown keys costs no more than 100.
            let message = if report.lists_more() {
                unknown_field_message(name)
            } else {
                String::new()
            };
            report.field(record, name, message);
            continue;
        }
        // null for an optional field means absent; for a required one, missing.
        if value.is_null() {
            continue;
        }
        provided.insert(name.as_str());
        if let Err(message) = assign(&mut event, name, value) {
            if name == "kind" {
                kind_is_valid = false;
            }
            report.field(record, name, message);
        }
    }

    for required in REQUIRED_FIELDS {
        if !provided.contains(required) {
            report.field(record, required, "is required".into());
        }
    }
    if kind_is_valid && event.kind == Kind::Request && !provided.contains("response_code") {
        report.field(
            record,
            "response_code",
            "is required when kind is \"request\"".into(),
        );
    }

    (report.errors == errors_before).then_some(event)
}

/// Validates one known, non-null field and stores it in `event`.
fn assign(event: &mut Event, name: &str, value: &Value) -> Result<(), String> {
    match name {
        "event_id" => event.event_id = event_id(value)?,
        "timestamp" => event.ts_ms = timestamp(value)?,
        "kind" => event.kind = kind(value)?,
        "api_name" => event.api_name = text(value, 1, SHORT_TEXT)?,
        "api_version" => event.api_version = text(value, 1, API_VERSION_MAX_CHARS)?,
        "tenant" => event.tenant = text(value, 0, SHORT_TEXT)?,
        "user_ip" => event.user_ip = Some(ip_address(value)?),
        "response_code" => event.response_code = Some(response_code(value)?),
        "cache_hit" => event.cache_hit = Some(boolean(value)?),
        _ => {
            if let Some((slot, max_chars)) = optional_text_slot(event, name) {
                *slot = Some(text(value, 0, max_chars)?);
            } else if let Some(slot) = optional_uint_slot(event, name) {
                *slot = Some(non_negative_integer(value)?);
            } else {
                // KNOWN_FIELDS and this dispatch disagree: a bug, but never a panic.
                return Err("is not supported".into());
            }
        }
    }
    Ok(())
}

fn optional_text_slot<'a>(
    event: &'a mut Event,
    name: &str,
) -> Option<(&'a mut Option<String>, usize)> {
    let slot = match name {
        "api_context" => (&mut event.api_context, LONG_TEXT),
        "api_creator" => (&mut event.api_creator, LONG_TEXT),
        "resource" => (&mut event.resource, LONG_TEXT),
        "method" => (&mut event.method, LONG_TEXT),
        "hostname" => (&mut event.hostname, LONG_TEXT),
        "destination" => (&mut event.destination, LONG_TEXT),
        "protocol" => (&mut event.protocol, LONG_TEXT),
        "application_id" => (&mut event.application_id, SHORT_TEXT),
        "application_name" => (&mut event.application_name, SHORT_TEXT),
        "application_owner" => (&mut event.application_owner, SHORT_TEXT),
        "username" => (&mut event.username, LONG_TEXT),
        "user_tenant" => (&mut event.user_tenant, LONG_TEXT),
        "user_agent" => (&mut event.user_agent, LONG_TEXT),
        "error_code" => (&mut event.error_code, LONG_TEXT),
        "error_message" => (&mut event.error_message, LONG_TEXT),
        "throttled_reason" => (&mut event.throttled_reason, SHORT_TEXT),
        _ => return None,
    };
    Some(slot)
}

fn optional_uint_slot<'a>(event: &'a mut Event, name: &str) -> Option<&'a mut Option<u64>> {
    let slot = match name {
        "response_time_ms" => &mut event.response_time_ms,
        "backend_latency_ms" => &mut event.backend_latency_ms,
        "security_latency_ms" => &mut event.security_latency_ms,
        "throttling_latency_ms" => &mut event.throttling_latency_ms,
        "request_mediation_latency_ms" => &mut event.request_mediation_latency_ms,
        "response_mediation_latency_ms" => &mut event.response_mediation_latency_ms,
        "other_latency_ms" => &mut event.other_latency_ms,
        "response_size" => &mut event.response_size,
        _ => return None,
    };
    Some(slot)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn text(value: &Value, min_chars: usize, max_chars: usize) -> Result<String, String> {
    let Value::String(s) = value else {
        return Err(format!("must be a string, got {}", type_name(value)));
    };
    let chars = s.chars().count();
    if chars < min_chars {
        return Err("must not be empty".into());
    }
    if chars > max_chars {
        return Err(format!(
            "must be at most {max_chars} characters, got {chars}"
        ));
    }
    Ok(s.clone())
}

fn event_id(value: &Value) -> Result<String, String> {
    let id = text(value, 1, EVENT_ID_MAX_CHARS)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if let Some(bad) = id.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "may contain only A-Z a-z 0-9 . _ : - (found {bad:?})"
        ));
    }
    Ok(id)
}

fn timestamp(value: &Value) -> Result<i64, String> {
    const FORMS: &str =
        "must be integer epoch milliseconds or an RFC 3339 string like \"2024-05-01T12:00:00.000Z\"";
    let ms = match value {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(ms), _) => ms,
            (None, Some(_)) => return Err(out_of_range(&n.to_string())),
            (None, None) => return Err(format!("{FORMS}, got the non-integer number {n}")),
        },
        Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(time) => time.timestamp_millis(),
            Err(_) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "{FORMS}; send epoch milliseconds as a JSON number, not a string"
                ))
            }
            Err(err) => return Err(format!("{FORMS}: {err}")),
        },
        other => return Err(format!("{FORMS}, got {}", type_name(other))),
    };
    if (MIN_TIMESTAMP_MS..MAX_TIMESTAMP_MS).contains(&ms) {
        return Ok(ms);
    }
    let mut message = out_of_range(&ms.to_string());
    if (MIN_TIMESTAMP_MS / 1000..MAX_TIMESTAMP_MS / 1000).contains(&ms) {
        message.push_str(" (it looks like seconds; send milliseconds)");
    }
    Err(message)
}

fn out_of_range(ms: &str) -> String {
    format!("{ms} ms is outside the accepted range 2000-01-01T00:00:00Z ..< 2200-01-01T00:00:00Z")
}

fn kind(value: &Value) -> Result<Kind, String> {
    const EXPECTED: &str = "must be \"request\", \"fault\" or \"throttle\"";
    let Value::String(s) = value else {
        return Err(format!("{EXPECTED}, got {}", type_name(value)));
    };
    Kind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == s)
        .ok_or_else(|| format!("{EXPECTED}, got {:?}", echo_name(s)))
}

fn non_negative_integer(value: &Value) -> Result<u64, String> {
    let Value::Number(n) = value else {
        return Err(format!(
            "must be a non-negative integer, got {}",
            type_name(value)
        ));
    };
    if let Some(v) = n.as_u64() {
        Ok(v)
    } else if n.is_i64() {
        Err(format!("must be ≥ 0, got {n}"))
    } else {
        // Floats, and integers too large for u64 (serde_json reads those as floats).
        Err(format!(
            "must be a non-negative integer below 2^64, got {n}"
        ))
    }
}

fn response_code(value: &Value) -> Result<u16, String> {
    match value.as_u64() {
        Some(code @ 100..=599) => Ok(code as u16),
        _ if value.is_number() => Err(format!("must be an HTTP status 100–599, got {value}")),
        _ => Err(format!(
            "must be an integer HTTP status 100–599, got {}",
            type_name(value)
        )),
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("must be true or false, got {}", type_name(value)))
}

fn ip_address(value: &Value) -> Result<String, String> {
    let s = text(value, 0, LONG_TEXT)?;
    match s.parse::<IpAddr>() {
        Ok(_) => Ok(s),
        Err(_) => Err(format!(
            "must be an IPv4 or IPv6 address, got {:?}",
            echo_name(&s)
        )),
    }
}

fn unknown_field_message(name: &str) -> String {
    let mut message = "unknown field".to_string();
    if let Some(near) = nearest_known_field(name) {
        message.push_str(&format!("; did you mean `{near}`?"));
    }
    message
}

/// The known field within edit distance 2 of `name`, if any: catches typos like
/// `respone_code` or `eventId`-style slips without guessing wildly.
fn nearest_known_field(name: &str) -> Option<&'static str> {
    if name.chars().count() > MAX_ECHOED_NAME {
        return None;
    }
    KNOWN_FIELDS
        .iter()
        .map(|known| (edit_distance(name, known), *known))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, known)| known)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Field names and values echoed into errors are cut short so a hostile input cannot
/// make the error response larger than it needs to be.
fn echo_name(name: &str) -> String {
    if name.chars().count() <= MAX_ECHOED_NAME {
        name.to_string()
    } else {
        let cut: String = name.chars().take(MAX_ECHOED_NAME).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests;
