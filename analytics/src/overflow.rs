//! The distinct-key cap: where an event's key lands in a bucket that is already full.
//!
//! Every field of an aggregate key is chosen by the client, so without a cap a stream of
//! random `resource` values (or tenants) grows the state without bound, and since the
//! rows are in snapshots and the log it grows again on restart. The cap works per bucket
//! of one granularity:
//!
//! * a bucket holds at most `max_tenants_per_bucket` tenants; an event of a further
//!   tenant folds into the key whose six fields are all [`OTHER`];
//! * a tenant holds at most `max_keys_per_tenant_bucket` keys in a bucket; an event with a
//!   further key folds into that tenant's overflow key (`tenant` kept, the other five
//!   fields [`OTHER`]).
//!
//! A folded event counts exactly as it would under its own key, so totals per bucket never
//! change. Overflow keys themselves are never refused (there is at most one per tenant and
//! one for all tenants), and neither is a key the bucket already holds. The tenant
//! `__other__` is not counted against the tenants cap (it is where the cap sends tenants),
//! so a bucket holds at most `(max_tenants + 1) × (max_keys + 1)` rows.
//!
//! Over all buckets of one granularity, a **row budget** (`max_rows_per_granularity`)
//! bounds the total: once the series holds that many rows, an event that would add a row
//! under its own key goes to its tenant's overflow key instead (which the tenants cap may
//! already have made the all-`__other__` key). That adds at most one row per tenant and
//! bucket, so a granularity holds at most `budget + buckets × (max_tenants + 1)` rows,
//! however the keys are spread over buckets; and a tenant that spends the budget folds only
//! its own new keys, never another tenant's rows out of their tenant. Rows freed by
//! retention make room again. The decision reads only the series and the entry's caps.
//!
//! The caps are **proposer-stamped**: the leader writes the caps it uses into each ingest
//! entry, and `apply` uses the entry's caps, so every replica decides the same at every
//! index whatever its own configuration. Entries written before the cap existed carry no
//! caps and apply unlimited, exactly as that version applied them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The value of every overflowed key field: `tenant` of the all-tenants overflow key, and
/// the five other fields of every overflow key.
pub const OTHER: &str = "__other__";

/// Default of [`KeyCaps::max_keys_per_tenant_bucket`].
pub const DEFAULT_MAX_KEYS_PER_TENANT_BUCKET: u32 = 200;
/// Default of [`KeyCaps::max_tenants_per_bucket`].
pub const DEFAULT_MAX_TENANTS_PER_BUCKET: u32 = 10;
/// Default of [`KeyCaps::max_rows_per_granularity`]: at most 3 × 250,000 + 7,600 rows (one
/// `__other__` row per fillable bucket) at ≈ 580 bytes each with short key fields (measured
/// by `tests/row_size.rs`) ≈ 420 MiB of aggregates per data node, whatever is posted.
pub const DEFAULT_MAX_ROWS_PER_GRANULARITY: u32 = 250_000;

/// The caps one ingest entry is applied with (stamped by its proposer).
///
/// It is written into the log (inside the raft crate's ingest entry), so its shape never
/// changes: a new cap is a new shape there, beside the old one (the entry that carried the
/// first two caps alone still decodes, and applies without a row budget).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCaps {
    /// Distinct keys a tenant may hold in one bucket, its overflow key not counted.
    pub max_keys_per_tenant_bucket: u32,
    /// Distinct tenants one bucket may hold, the tenant `__other__` not counted.
    pub max_tenants_per_bucket: u32,
    /// Rows (bucket × key) one granularity may hold before any new row goes to its
    /// bucket's all-`__other__` key (at most one more row per bucket).
    pub max_rows_per_granularity: u32,
}

impl KeyCaps {
    /// What entries written before the cap existed apply with: no folding at all.
    pub const UNLIMITED: KeyCaps = KeyCaps {
        max_keys_per_tenant_bucket: u32::MAX,
        max_tenants_per_bucket: u32::MAX,
        max_rows_per_granularity: u32::MAX,
    };
}

impl Default for KeyCaps {
    fn default() -> Self {
        KeyCaps {
            max_keys_per_tenant_bucket: DEFAULT_MAX_KEYS_PER_TENANT_BUCKET,
            max_tenants_per_bucket: DEFAULT_MAX_TENANTS_PER_BUCKET,
            max_rows_per_granularity: DEFAULT_MAX_ROWS_PER_GRANULARITY,
        }
    }
}

/// Which key of a bucket an event was counted under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fold {
    /// Its own key (also when the bucket was past retention and nothing was counted).
    #[default]
    Own,
    /// Its tenant's overflow key: `(tenant, "__other__", …)`.
    TenantOther,
    /// The all-tenants overflow key: `("__other__", …)`.
    AllOther,
}

impl Fold {
    /// The six key columns (`KeyColumn::ALL` order) the event was counted under, given its
    /// own columns.
    pub fn columns(self, own: [&str; 6]) -> [&str; 6] {
        match self {
            Fold::Own => own,
            Fold::TenantOther => [own[0], OTHER, OTHER, OTHER, OTHER, OTHER],
            Fold::AllOther => [OTHER; 6],
        }
    }
}

/// What one bucket holds per tenant, kept beside its rows (derived: rebuilt from the rows
/// when a snapshot loads, never serialized). Tenant → keys it holds that are not its
/// overflow key. A tenant is present once it holds any row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BucketIndex {
    tenants: BTreeMap<String, u32>,
}

impl BucketIndex {
    /// Tenants counted against the tenants cap.
    fn counted_tenants(&self) -> usize {
        self.tenants.len() - usize::from(self.tenants.contains_key(OTHER))
    }

    /// Where a key the bucket does not hold yet goes under `caps`. Pure: the same index,
    /// key and caps always give the same answer.
    pub fn place(&self, tenant: &str, overflow_key: bool, caps: &KeyCaps) -> Fold {
        let held = self.tenants.get(tenant);
        if held.is_none()
            && tenant != OTHER
            && self.counted_tenants() >= caps.max_tenants_per_bucket as usize
        {
            return Fold::AllOther;
        }
        if overflow_key {
            return Fold::Own;
        }
        if held.copied().unwrap_or(0) >= caps.max_keys_per_tenant_bucket {
            return Fold::TenantOther;
        }
        Fold::Own
    }

    /// Records that the bucket now holds a key of `tenant` (an overflow key or not).
    pub fn insert(&mut self, tenant: &str, overflow_key: bool) {
        let keys = match self.tenants.get_mut(tenant) {
            Some(keys) => keys,
            None => self.tenants.entry(tenant.to_string()).or_insert(0),
        };
        if !overflow_key {
            *keys = keys.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(keys: u32, tenants: u32) -> KeyCaps {
        KeyCaps {
            max_keys_per_tenant_bucket: keys,
            max_tenants_per_bucket: tenants,
            ..KeyCaps::UNLIMITED
        }
    }

    #[test]
    fn a_full_tenant_folds_into_its_overflow_key_and_a_new_tenant_into_all_other() {
        let mut index = BucketIndex::default();
        let caps = caps(2, 1);
        for _ in 0..2 {
            assert_eq!(index.place("acme", false, &caps), Fold::Own);
            index.insert("acme", false);
        }
        assert_eq!(index.place("acme", false, &caps), Fold::TenantOther);
        // Its overflow key is admitted.
        assert_eq!(index.place("acme", true, &caps), Fold::Own);
        index.insert("acme", true);
        assert_eq!(index.place("beta", false, &caps), Fold::AllOther);
        // A new tenant cannot sneak in through an overflow-shaped key either.
        assert_eq!(index.place("beta", true, &caps), Fold::AllOther);
        // The all-other key and the tenant `__other__` are always admitted, the tenant's
        // keys up to the cap.
        assert_eq!(index.place(OTHER, true, &caps), Fold::Own);
        index.insert(OTHER, true);
        for _ in 0..2 {
            assert_eq!(index.place(OTHER, false, &caps), Fold::Own);
            index.insert(OTHER, false);
        }
        assert_eq!(index.place(OTHER, false, &caps), Fold::TenantOther);
        assert_eq!(
            Fold::TenantOther.columns([OTHER, "a", "b", "c", "d", "e"]),
            [OTHER; 6]
        );
    }

    #[test]
    fn unlimited_caps_never_fold() {
        let mut index = BucketIndex::default();
        for i in 0..1_000 {
            let tenant = format!("t{}", i % 50);
            assert_eq!(index.place(&tenant, false, &KeyCaps::UNLIMITED), Fold::Own);
            index.insert(&tenant, false);
        }
    }

    #[test]
    fn fold_columns() {
        let own = ["acme", "pets", "v1", "app", "/a", "GET"];
        assert_eq!(Fold::Own.columns(own), own);
        assert_eq!(
            Fold::TenantOther.columns(own),
            ["acme", OTHER, OTHER, OTHER, OTHER, OTHER]
        );
        assert_eq!(Fold::AllOther.columns(own), [OTHER; 6]);
    }
}
