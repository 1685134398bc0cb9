//! Usage deltas: what a set of newly inserted events adds to `usage_minute/hour/day`.
//!
//! The measures come from `tally_analytics::Measures::add`, the same function the in-memory state
//! uses, so the tables and `/v1/aggregates` count alike by construction. Each event goes under
//! the key the state counted it under at that granularity (its own, or an `__other__` overflow
//! key when the bucket was full), which the state hands over with the event.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tally_analytics::{Event, Fold, Folds, Granularity, Measures};

/// The six key columns of a usage row (docs/sql.md); absent optional fields are `""`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct UsageKey<'a> {
    pub tenant: &'a str,
    pub api_name: &'a str,
    pub api_version: &'a str,
    pub application_id: &'a str,
    pub resource: &'a str,
    pub method: &'a str,
}

impl<'a> UsageKey<'a> {
    pub fn of(event: &'a Event) -> Self {
        UsageKey {
            tenant: &event.tenant,
            api_name: &event.api_name,
            api_version: &event.api_version,
            application_id: event.application_id.as_deref().unwrap_or(""),
            resource: event.resource.as_deref().unwrap_or(""),
            method: event.method.as_deref().unwrap_or(""),
        }
    }

    /// This key after the state's key cap folded it (`Fold::Own` leaves it as it is).
    pub fn folded(&self, fold: Fold) -> Self {
        let [tenant, api_name, api_version, application_id, resource, method] =
            fold.columns(self.columns());
        UsageKey {
            tenant,
            api_name,
            api_version,
            application_id,
            resource,
            method,
        }
    }

    pub fn columns(&self) -> [&'a str; 6] {
        [
            self.tenant,
            self.api_name,
            self.api_version,
            self.application_id,
            self.resource,
            self.method,
        ]
    }

    /// `key_hash` of the MySQL usage tables: SHA-256 over each column as
    /// `<UTF-8 byte length>:<bytes>`, in column order. The length prefix makes the encoding
    /// injective (no separator a value could contain). The tables' CHECK constraint computes
    /// the same expression in SQL, so a mismatch is refused rather than stored.
    pub fn hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for column in self.columns() {
            hasher.update(column.len().to_string());
            hasher.update(":");
            hasher.update(column);
        }
        hasher.finalize().into()
    }
}

/// The table that holds buckets of `granularity`.
pub(crate) fn table(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "usage_minute",
        Granularity::Hour => "usage_hour",
        Granularity::Day => "usage_day",
    }
}

/// Deltas per table, then per `(bucket_ms, key)`; ordered, so statements are deterministic.
pub(crate) type Deltas<'a> = BTreeMap<Granularity, BTreeMap<(i64, UsageKey<'a>), Measures>>;

/// Adds up `events` into per-bucket deltas for all three granularities, each under the key
/// its folds name for that granularity.
pub(crate) fn deltas<'a>(events: impl IntoIterator<Item = (&'a Event, Folds)>) -> Deltas<'a> {
    let mut deltas = Deltas::new();
    for (event, folds) in events {
        let key = UsageKey::of(event);
        for granularity in Granularity::ALL {
            let bucket = granularity.bucket_start(event.ts_ms);
            deltas
                .entry(granularity)
                .or_default()
                .entry((bucket, key.folded(folds.get(granularity))))
                .or_default()
                .add(event);
        }
    }
    deltas
}

/// Caps every measure at `max` (SQLite's INTEGER is signed: `i64::MAX`).
pub(crate) fn cap(measures: &Measures, max: u64) -> Measures {
    let c = |v: u64| v.min(max);
    Measures {
        requests: c(measures.requests),
        errors_4xx: c(measures.errors_4xx),
        errors_5xx: c(measures.errors_5xx),
        faults: c(measures.faults),
        throttled: c(measures.throttled),
        latency_count: c(measures.latency_count),
        latency_sum_ms: c(measures.latency_sum_ms),
        latency_min_ms: measures.latency_min_ms.map(c),
        latency_max_ms: measures.latency_max_ms.map(c),
        bytes_sum: c(measures.bytes_sum),
    }
}

#[cfg(test)]
mod tests {
    use tally_analytics::Kind;

    use super::*;

    fn event(id: &str, ts_ms: i64, kind: Kind, code: Option<u16>, latency: Option<u64>) -> Event {
        Event {
            event_id: id.into(),
            ts_ms,
            kind,
            api_name: "pets".into(),
            api_version: "v1".into(),
            response_code: code,
            response_time_ms: latency,
            response_size: Some(10),
            ..Event::default()
        }
    }

    #[test]
    fn deltas_bucket_by_utc_floor_and_count_like_memory() {
        let events = [
            event("a", 60_000 * 5 + 1, Kind::Request, Some(404), Some(7)),
            event("b", 60_000 * 5 + 59_999, Kind::Request, Some(503), None),
            event("c", 60_000 * 6, Kind::Fault, None, Some(3)),
            event("d", -1, Kind::Throttle, None, None),
        ];
        let deltas = deltas(events.iter().map(|e| (e, Folds::default())));
        let minute = &deltas[&Granularity::Minute];
        let key = UsageKey::of(&events[0]);
        let m5 = minute[&(300_000, key.clone())];
        assert_eq!((m5.requests, m5.errors_4xx, m5.errors_5xx), (2, 1, 1));
        assert_eq!((m5.latency_count, m5.latency_min_ms), (1, Some(7)));
        assert_eq!(m5.bytes_sum, 20);
        assert_eq!(minute[&(360_000, key.clone())].faults, 1);
        assert_eq!(minute[&(-60_000, key.clone())].throttled, 1);
        let day = &deltas[&Granularity::Day];
        assert_eq!(day[&(0, key.clone())].requests, 2);
        assert_eq!(day[&(-86_400_000, key)].throttled, 1);
    }

    #[test]
    fn folded_events_go_under_the_overflow_key_of_their_granularity() {
        let a = event("a", 60_000, Kind::Request, Some(200), Some(1));
        let b = Event {
            tenant: "acme".into(),
            resource: Some("/x".into()),
            ..event("b", 60_001, Kind::Request, Some(500), None)
        };
        let folds = Folds([Fold::Own, Fold::TenantOther, Fold::AllOther]);
        let deltas = deltas([(&a, Folds::default()), (&b, folds)]);
        let keys = |g: Granularity| -> Vec<[&str; 6]> {
            deltas[&g].keys().map(|(_, k)| k.columns()).collect()
        };
        let other = tally_analytics::OTHER;
        assert_eq!(
            keys(Granularity::Minute),
            [
                ["", "pets", "v1", "", "", ""],
                ["acme", "pets", "v1", "", "/x", ""]
            ]
        );
        assert_eq!(
            keys(Granularity::Hour),
            [
                ["", "pets", "v1", "", "", ""],
                ["acme", other, other, other, other, other]
            ]
        );
        assert_eq!(
            keys(Granularity::Day),
            [["", "pets", "v1", "", "", ""], [other; 6]]
        );
        let day: u64 = deltas[&Granularity::Day].values().map(|m| m.requests).sum();
        assert_eq!(day, 2);
    }

    #[test]
    fn key_hash_is_length_prefixed() {
        let a = UsageKey {
            tenant: "a:",
            api_name: "b",
            api_version: "",
            application_id: "",
            resource: "",
            method: "",
        };
        let b = UsageKey {
            tenant: "a",
            api_name: ":b",
            ..a.clone()
        };
        assert_ne!(a.hash(), b.hash());
        // sha256("2:a:1:b0:0:0:0:")
        let expected = Sha256::digest("2:a:1:b0:0:0:0:");
        assert_eq!(a.hash().as_slice(), expected.as_slice());
    }
}
