//! Time-bucketed aggregates (docs/sql.md): granularities, key columns, measures, the per-
//! granularity bucket series with its retention, and the query types.
//!
//! Buckets live in `BTreeMap<bucket_ms, Arc<Bucket>>`, each bucket a
//! `BTreeMap<GroupKey, Measures>`: ordered by time first so retention pops expired buckets
//! off the front, and ordered throughout so iteration (queries, digest, snapshots) is
//! deterministic. The `Arc` makes a copy of the whole series cheap (copy-on-write per
//! bucket), so snapshots and digests are encoded from a copy, outside the state lock.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::AnalyticsError;
use crate::event::{Event, Kind};
use crate::overflow::{BucketIndex, Fold, KeyCaps, OTHER};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Minute buckets are kept for 48 hours of ingest time: enough for "last day" dashboards
/// and a late-arriving batch, small enough to bound memory (≤ 2 880 buckets per key).
pub const MINUTE_RETENTION_MS: i64 = 48 * HOUR_MS;
/// Hour buckets are kept for 90 days (≤ 2 160 buckets per key).
pub const HOUR_RETENTION_MS: i64 = 90 * DAY_MS;
/// Day buckets are kept for 3 × 365 days (≤ 1 095 buckets per key). Older history lives
/// in the record store's usage tables.
pub const DAY_RETENTION_MS: i64 = 3 * 365 * DAY_MS;

/// Bucket width. Epoch milliseconds carry no leap seconds, so UTC buckets are plain
/// integer floors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    pub fn as_str(&self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn width_ms(&self) -> i64 {
        match self {
            Granularity::Minute => MINUTE_MS,
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        }
    }

    /// How long buckets of this width are retained, measured back from the newest
    /// ingest time applied.
    pub fn retention_ms(&self) -> i64 {
        match self {
            Granularity::Minute => MINUTE_RETENTION_MS,
            Granularity::Hour => HOUR_RETENTION_MS,
            Granularity::Day => DAY_RETENTION_MS,
        }
    }

    /// Start of the UTC bucket holding `ts_ms` (floor, also for times before 1970).
    /// Saturates at `i64::MIN` instead of overflowing for the few values below the
    /// first representable bucket.
    pub fn bucket_start(&self, ts_ms: i64) -> i64 {
        let width = self.width_ms();
        ts_ms.div_euclid(width).saturating_mul(width)
    }
}

impl FromStr for Granularity {
    type Err = AnalyticsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Granularity::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| AnalyticsError::UnknownGranularity(s.to_string()))
    }
}

/// The key columns of an aggregate row (docs/sql.md), usable in `group_by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyColumn {
    Tenant,
    ApiName,
    ApiVersion,
    ApplicationId,
    Resource,
    Method,
}

impl KeyColumn {
    pub const ALL: [KeyColumn; 6] = [
        KeyColumn::Tenant,
        KeyColumn::ApiName,
        KeyColumn::ApiVersion,
        KeyColumn::ApplicationId,
        KeyColumn::Resource,
        KeyColumn::Method,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            KeyColumn::Tenant => "tenant",
            KeyColumn::ApiName => "api_name",
            KeyColumn::ApiVersion => "api_version",
            KeyColumn::ApplicationId => "application_id",
            KeyColumn::Resource => "resource",
            KeyColumn::Method => "method",
        }
    }
}

impl FromStr for KeyColumn {
    type Err = AnalyticsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyColumn::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| AnalyticsError::UnknownKeyColumn(s.to_string()))
    }
}

/// The measures of one aggregate row. Integers only (no float drift between replicas);
/// every sum saturates rather than wrapping or panicking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measures {
    /// Events of kind `request`.
    pub requests: u64,
    /// Requests answered 400–499.
    pub errors_4xx: u64,
    /// Requests answered 500–599.
    pub errors_5xx: u64,
    /// Events of kind `fault`.
    pub faults: u64,
    /// Events of kind `throttle`.
    pub throttled: u64,
    /// Events (any kind) that carried `response_time_ms`.
    pub latency_count: u64,
    pub latency_sum_ms: u64,
    pub latency_min_ms: Option<u64>,
    pub latency_max_ms: Option<u64>,
    /// Sum of `response_size` (any kind).
    pub bytes_sum: u64,
}

impl Measures {
    /// Counts one event.
    pub fn add(&mut self, event: &Event) {
        match event.kind {
            Kind::Request => {
                self.requests = self.requests.saturating_add(1);
                match event.response_code {
                    Some(400..=499) => self.errors_4xx = self.errors_4xx.saturating_add(1),
                    Some(500..=599) => self.errors_5xx = self.errors_5xx.saturating_add(1),
                    _ => {}
                }
            }
            Kind::Fault => self.faults = self.faults.saturating_add(1),
            Kind::Throttle => self.throttled = self.throttled.saturating_add(1),
        }
        if let Some(latency) = event.response_time_ms {
            self.merge(&Measures {
                latency_count: 1,
                latency_sum_ms: latency,
                latency_min_ms: Some(latency),
                latency_max_ms: Some(latency),
                ..Measures::default()
            });
        }
        if let Some(size) = event.response_size {
            self.bytes_sum = self.bytes_sum.saturating_add(size);
        }
    }

    /// Folds another row's measures into this one (rolling up across keys).
    pub fn merge(&mut self, other: &Measures) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors_4xx = self.errors_4xx.saturating_add(other.errors_4xx);
        self.errors_5xx = self.errors_5xx.saturating_add(other.errors_5xx);
        self.faults = self.faults.saturating_add(other.faults);
        self.throttled = self.throttled.saturating_add(other.throttled);
        self.latency_count = self.latency_count.saturating_add(other.latency_count);
        self.latency_sum_ms = self.latency_sum_ms.saturating_add(other.latency_sum_ms);
        self.latency_min_ms = combine(self.latency_min_ms, other.latency_min_ms, u64::min);
        self.latency_max_ms = combine(self.latency_max_ms, other.latency_max_ms, u64::max);
        self.bytes_sum = self.bytes_sum.saturating_add(other.bytes_sum);
    }
}

fn combine(a: Option<u64>, b: Option<u64>, pick: fn(u64, u64) -> u64) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

/// The full key of an aggregate row; missing optional fields are `""` (docs/api.md).
/// Field order = `KeyColumn::ALL` order, which is also the sort order of rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct GroupKey {
    pub tenant: String,
    pub api_name: String,
    pub api_version: String,
    pub application_id: String,
    pub resource: String,
    pub method: String,
}

impl GroupKey {
    pub fn of(event: &Event) -> Self {
        let or_empty = |field: &Option<String>| field.clone().unwrap_or_default();
        GroupKey {
            tenant: event.tenant.clone(),
            api_name: event.api_name.clone(),
            api_version: event.api_version.clone(),
            application_id: or_empty(&event.application_id),
            resource: or_empty(&event.resource),
            method: or_empty(&event.method),
        }
    }

    pub fn get(&self, column: KeyColumn) -> &str {
        match column {
            KeyColumn::Tenant => &self.tenant,
            KeyColumn::ApiName => &self.api_name,
            KeyColumn::ApiVersion => &self.api_version,
            KeyColumn::ApplicationId => &self.application_id,
            KeyColumn::Resource => &self.resource,
            KeyColumn::Method => &self.method,
        }
    }
}

/// Where an event was counted at minute, hour and day (`Granularity::ALL` order). The
/// record-store sink writes the usage rows under the same keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folds(pub [Fold; 3]);

impl Folds {
    pub fn get(&self, granularity: Granularity) -> Fold {
        self.0[granularity as usize]
    }
}

/// Events folded into overflow keys, per granularity since the state began. Replicated
/// (part of the digest and snapshots): every replica counts the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowCounts {
    pub minute: u64,
    pub hour: u64,
    pub day: u64,
}

impl OverflowCounts {
    pub fn get(&self, granularity: Granularity) -> u64 {
        match granularity {
            Granularity::Minute => self.minute,
            Granularity::Hour => self.hour,
            Granularity::Day => self.day,
        }
    }

    pub(crate) fn count(&mut self, granularity: Granularity) {
        let slot = match granularity {
            Granularity::Minute => &mut self.minute,
            Granularity::Hour => &mut self.hour,
            Granularity::Day => &mut self.day,
        };
        *slot = slot.saturating_add(1);
    }
}

impl GroupKey {
    /// An overflow key: every field but the tenant is `__other__`.
    pub fn is_overflow(&self) -> bool {
        [
            &self.api_name,
            &self.api_version,
            &self.application_id,
            &self.resource,
            &self.method,
        ]
        .iter()
        .all(|field| field.as_str() == OTHER)
    }

    /// The key an event of `self` is counted under after `fold`.
    pub fn folded(&self, fold: Fold) -> GroupKey {
        let other = || OTHER.to_string();
        match fold {
            Fold::Own => self.clone(),
            Fold::TenantOther => GroupKey {
                tenant: self.tenant.clone(),
                api_name: other(),
                api_version: other(),
                application_id: other(),
                resource: other(),
                method: other(),
            },
            Fold::AllOther => GroupKey {
                tenant: other(),
                api_name: other(),
                api_version: other(),
                application_id: other(),
                resource: other(),
                method: other(),
            },
        }
    }
}

/// One bucket's rows, by key.
pub(crate) type Rows = BTreeMap<GroupKey, Measures>;
/// The plain form of a series, as it is serialized.
pub(crate) type BucketMap = BTreeMap<i64, Rows>;

/// One bucket: its rows and the key cap's bookkeeping over them (derived from the rows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    rows: Rows,
    index: BucketIndex,
}

/// All buckets of one granularity, each behind an `Arc`: cloning a series (for a snapshot
/// or a digest, under the state lock) costs one bump per bucket, and `apply` copies only a
/// bucket it writes while a clone still holds it (`Arc::make_mut`), once. Beside the buckets
/// it keeps derived bookkeeping (never serialized, rebuilt when a snapshot loads): row
/// counters so `stats` and the row budget do not walk the map. Serializes as the bare map of
/// rows, exactly as a `BTreeMap<bucket_ms, BTreeMap<GroupKey, Measures>>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Series {
    buckets: BTreeMap<i64, Arc<Bucket>>,
    rows: usize,
    overflow_rows: usize,
}

impl Series {
    /// Counts `event` into the bucket starting at `bucket_ms`: under `key` if the bucket
    /// holds it or `caps` admit it, else under the overflow key `caps` send it to. When the
    /// series already holds `caps.max_rows_per_granularity` rows, an event that would add a
    /// row goes to its tenant's overflow key instead (the all-`__other__` key when the
    /// tenants cap sends it there), so a series holds at most the budget plus one row per
    /// tenant and bucket, and one tenant spending the budget cannot fold another tenant's
    /// rows out of that tenant. Returns where it was counted.
    pub fn add(&mut self, bucket_ms: i64, key: &GroupKey, event: &Event, caps: &KeyCaps) -> Fold {
        let budget_spent = self.rows >= caps.max_rows_per_granularity as usize;
        let bucket = Arc::make_mut(self.buckets.entry(bucket_ms).or_default());
        // Look up first: cloning the key for `entry` on every event would be wasteful.
        if let Some(measures) = bucket.rows.get_mut(key) {
            measures.add(event);
            return Fold::Own;
        }
        let mut fold = bucket.index.place(&key.tenant, key.is_overflow(), caps);
        let mut target = key.folded(fold);
        if !bucket.rows.contains_key(&target) && budget_spent && fold == Fold::Own {
            fold = Fold::TenantOther;
            target = key.folded(fold);
        }
        if let Some(measures) = bucket.rows.get_mut(&target) {
            measures.add(event);
            return fold;
        }
        let mut measures = Measures::default();
        measures.add(event);
        bucket.index.insert(&target.tenant, target.is_overflow());
        self.rows += 1;
        self.overflow_rows += usize::from(target.is_overflow());
        bucket.rows.insert(target, measures);
        fold
    }

    /// Drops every bucket that starts before `cutoff_ms`. Costs only what it removes.
    pub fn evict_before(&mut self, cutoff_ms: i64) {
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= cutoff_ms {
                break;
            }
            let bucket = entry.remove();
            self.rows -= bucket.rows.len();
            self.overflow_rows -= bucket.rows.keys().filter(|k| k.is_overflow()).count();
        }
    }

    /// Buckets starting in `from..to`, oldest first, with their rows.
    pub fn range(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, &Rows)> + '_ {
        self.buckets
            .range(from..to)
            .map(|(&bucket_ms, bucket)| (bucket_ms, &bucket.rows))
    }

    /// Every bucket, oldest first, with its rows.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Rows)> + '_ {
        self.buckets
            .iter()
            .map(|(&bucket_ms, bucket)| (bucket_ms, &bucket.rows))
    }

    /// The rows of the bucket starting at `bucket_ms`.
    #[cfg(test)]
    pub fn bucket(&self, bucket_ms: i64) -> Option<&Rows> {
        self.buckets.get(&bucket_ms).map(|bucket| &bucket.rows)
    }

    /// A plain copy of every row (tests build altered series from it).
    #[cfg(test)]
    pub fn to_map(&self) -> BucketMap {
        self.iter().map(|(b, rows)| (b, rows.clone())).collect()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows whose key is an overflow key (see [`crate::overflow`]).
    pub fn overflow_rows(&self) -> usize {
        self.overflow_rows
    }

    /// Whether two series share every bucket (a clone nothing has written to since).
    #[cfg(test)]
    pub fn shares_all_buckets_with(&self, other: &Series) -> bool {
        self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .values()
                .zip(other.buckets.values())
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    pub fn from_buckets(buckets: BucketMap) -> Self {
        let (mut rows, mut overflow_rows) = (0, 0);
        let buckets = buckets
            .into_iter()
            .map(|(bucket_ms, keys)| {
                let mut index = BucketIndex::default();
                for key in keys.keys() {
                    index.insert(&key.tenant, key.is_overflow());
                    overflow_rows += usize::from(key.is_overflow());
                }
                rows += keys.len();
                let bucket = Bucket { rows: keys, index };
                (bucket_ms, Arc::new(bucket))
            })
            .collect();
        Series {
            buckets,
            rows,
            overflow_rows,
        }
    }
}

impl Serialize for Series {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BucketMap::deserialize(deserializer).map(Series::from_buckets)
    }
}

/// A `/v1/aggregates` question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateQuery {
    pub granularity: Granularity,
    /// Inclusive lower bound on the bucket start, epoch ms.
    pub from_ms: Option<i64>,
    /// Exclusive upper bound on the bucket start, epoch ms.
    pub to_ms: Option<i64>,
    /// Only rows whose `tenant` equals this.
    pub tenant: Option<String>,
    /// Only rows whose `api_name` equals this.
    pub api: Option<String>,
    /// Only rows whose `api_version` equals this.
    pub version: Option<String>,
    /// Columns kept in the output, in this order; rows that differ only in other
    /// columns are merged. Empty = one row per bucket.
    pub group_by: Vec<KeyColumn>,
}

impl AggregateQuery {
    /// The documented default: no filters, grouped by all six key columns.
    pub fn new(granularity: Granularity) -> Self {
        AggregateQuery {
            granularity,
            from_ms: None,
            to_ms: None,
            tenant: None,
            api: None,
            version: None,
            group_by: KeyColumn::ALL.to_vec(),
        }
    }

    fn matches(&self, key: &GroupKey) -> bool {
        self.tenant.as_deref().is_none_or(|t| key.tenant == t)
            && self.api.as_deref().is_none_or(|api| key.api_name == api)
            && self.version.as_deref().is_none_or(|v| key.api_version == v)
    }
}

/// One answer row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRow {
    pub bucket_ms: i64,
    /// The `group_by` columns and their values, in `group_by` order.
    pub group: Vec<(KeyColumn, String)>,
    pub measures: Measures,
}

impl AggregateRow {
    /// The flat JSON object of docs/api.md:
    /// `{"bucket_ms": .., <group_by columns>.., <measures>..}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        object.insert("bucket_ms".into(), self.bucket_ms.into());
        for (column, value) in &self.group {
            object.insert(column.as_str().into(), value.clone().into());
        }
        if let Ok(serde_json::Value::Object(measures)) = serde_json::to_value(self.measures) {
            object.extend(measures);
        }
        serde_json::Value::Object(object)
    }
}

/// Answers `query` from one granularity's buckets, or stops as soon as the answer would
/// exceed `max_rows` rows (so a refused query costs at most that much work and memory,
/// plus one bucket's).
pub(crate) fn run_query(
    series: &Series,
    query: &AggregateQuery,
    max_rows: usize,
) -> Result<Vec<AggregateRow>, AnalyticsError> {
    let from = query.from_ms.unwrap_or(i64::MIN);
    let to = query.to_ms.unwrap_or(i64::MAX);
    if from >= to {
        return Ok(Vec::new());
    }
    let mut rows = Vec::new();
    for (bucket_ms, keys) in series.range(from, to) {
        // Merge this bucket's keys by the projected group values; BTreeMap keeps the
        // output sorted by group values within the bucket.
        let mut groups: BTreeMap<Vec<&str>, Measures> = BTreeMap::new();
        for (key, measures) in keys.iter().filter(|(key, _)| query.matches(key)) {
            let group = query
                .group_by
                .iter()
                .map(|&column| key.get(column))
                .collect();
            groups.entry(group).or_default().merge(measures);
        }
        if groups.len() > max_rows.saturating_sub(rows.len()) {
            return Err(AnalyticsError::TooManyRows { max_rows });
        }
        rows.extend(groups.into_iter().map(|(values, measures)| {
            AggregateRow {
                bucket_ms,
                group: query
                    .group_by
                    .iter()
                    .zip(values)
                    .map(|(&column, value)| (column, value.to_string()))
                    .collect(),
                measures,
            }
        }));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
