//! Reading a posted body into records, before any field is interpreted.
//!
//! We do not deserialize straight into a struct: serde would stop at the first problem
//! and silently keep the last of two duplicate keys. Instead each record is read as the
//! list of its `(name, value)` pairs in document order, so `validate` can report every
//! unknown, duplicate or ill-typed field of every record in one answer.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One record of a batch, as written.
#[derive(Debug)]
pub(crate) enum RawRecord {
    /// A JSON object: its fields in document order, duplicates kept.
    Object(Vec<(String, Value)>),
    /// Some other JSON value; names what it was ("an array", "a string", ...).
    NotObject(&'static str),
    /// An NDJSON line that is not valid JSON; the message says where and why.
    Malformed(String),
}

/// A whole JSON (non-NDJSON) body.
pub(crate) enum RawBody {
    /// A single object or an array. `records` holds at most `limit` records; `total`
    /// counts all of them so the caller can reject an oversized batch with its size.
    Records {
        records: Vec<RawRecord>,
        total: usize,
    },
    /// The top level was neither an object nor an array.
    Other(&'static str),
}

/// Reads a JSON body (one object or an array of records), keeping at most `limit`
/// records in memory. Syntax errors carry serde_json's line and column.
pub(crate) fn read_json(body: &[u8], limit: usize) -> Result<RawBody, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de.deserialize_any(BodyVisitor { limit })?;
    // Rejects trailing garbage such as a second top-level value.
    de.end()?;
    Ok(parsed)
}

/// Reads an NDJSON body: one record per non-empty line. Keeps at most `limit` records;
/// returns them with the count of all non-empty lines.
pub(crate) fn read_ndjson(body: &[u8], limit: usize) -> (Vec<RawRecord>, usize) {
    let mut records = Vec::new();
    let mut total = 0;
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        // Parse the line untrimmed at the front so reported columns match the body.
        let line = line.trim_ascii_end();
        if line.trim_ascii_start().is_empty() {
            continue;
        }
        total += 1;
        if records.len() >= limit {
            // Only counted: the batch will be rejected as too large anyway.
            continue;
        }
        let record = serde_json::from_slice::<RawRecord>(line).unwrap_or_else(|err| {
            RawRecord::Malformed(format!(
                "malformed JSON on NDJSON line {}, column {}: {}",
                index + 1,
                err.column(),
                message_without_position(&err)
            ))
        });
        records.push(record);
    }
    (records, total)
}

/// serde_json's `Display` appends " at line L column C"; for NDJSON we report the body
/// line ourselves, so strip it.
pub(crate) fn message_without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}

impl<'de> Deserialize<'de> for RawRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RecordVisitor)
    }
}

fn read_object<'de, A: MapAccess<'de>>(mut map: A) -> Result<Vec<(String, Value)>, A::Error> {
    let mut fields = Vec::new();
    while let Some(entry) = map.next_entry::<String, Value>()? {
        fields.push(entry);
    }
    Ok(fields)
}

fn skip_array<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the scalar `visit_*` methods of a visitor whose non-structured values all
/// map to `$make("a description")`.
macro_rules! scalars_as {
    ($value:ty, $make:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            Ok($make("a boolean"))
        }
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_str<E>(self, _: &str) -> Result<$value, E> {
            Ok($make("a string"))
        }
        fn visit_unit<E>(self) -> Result<$value, E> {
            Ok($make("null"))
        }
        fn visit_none<E>(self) -> Result<$value, E> {
            Ok($make("null"))
        }
    };
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = RawRecord;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRecord, A::Error> {
        read_object(map).map(RawRecord::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawRecord, A::Error> {
        skip_array(seq)?;
        Ok(RawRecord::NotObject("an array"))
    }

    scalars_as!(RawRecord, RawRecord::NotObject);
}

struct BodyVisitor {
    limit: usize,
}

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = RawBody;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBody, A::Error> {
        let record = RawRecord::Object(read_object(map)?);
        Ok(RawBody::Records {
            records: vec![record],
            total: 1,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBody, A::Error> {
        let mut records = Vec::new();
        while records.len() < self.limit {
            match seq.next_element::<RawRecord>()? {
                Some(record) => records.push(record),
                None => {
                    let total = records.len();
                    return Ok(RawBody::Records { records, total });
                }
            }
        }
        // Over the limit: count the rest without keeping it.
        let mut total = records.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            total += 1;
        }
        Ok(RawBody::Records { records, total })
    }

    scalars_as!(RawBody, RawBody::Other);
}
