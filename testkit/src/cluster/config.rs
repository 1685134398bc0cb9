//! A node's configuration file, written by the harness: the TOML `tally serve --config`
//! reads (docs/architecture.md#configuration), and free loopback ports to put in it.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tally_protocol::Role;

/// A scalar value of the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    fn to_toml(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => toml_string(s),
        }
    }
}

macro_rules! value_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Value {
                Value::Int(i64::try_from(n).expect("config integer out of range"))
            }
        }
    )*};
}
value_from_int!(i32, i64, u16, u32, u64, usize);

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

/// Optional tables of the config file (`raft`, `sink`, `sql`, `ingest`): table → key →
/// value. Keys are written in order, tables too.
pub type Sections = BTreeMap<String, BTreeMap<String, Value>>;

/// Everything one node's config file says.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub role: Role,
    /// `host:port` the node binds.
    pub listen: String,
    /// `host:port` peers reach it at, when that is not `listen` (a proxy in between).
    pub advertise: Option<String>,
    /// Local address its outgoing peer connections bind.
    pub source_ip: Option<String>,
    pub data_dir: PathBuf,
    pub record_store: Option<String>,
    pub secret: String,
    pub witnesses: Vec<u64>,
    /// `[cluster.members]`: id → the address peers use.
    pub members: BTreeMap<u64, String>,
    pub sections: Sections,
}

impl NodeConfig {
    /// The file's text. Every string is a quoted TOML basic string.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        // Top-level keys come before the first table header.
        out.push_str(&format!("id = {}\n", self.id));
        out.push_str(&format!("role = {}\n", toml_string(self.role.as_str())));
        out.push_str(&format!("listen = {}\n", toml_string(&self.listen)));
        if let Some(a) = &self.advertise {
            out.push_str(&format!("advertise = {}\n", toml_string(a)));
        }
        if let Some(ip) = &self.source_ip {
            out.push_str(&format!("source_ip = {}\n", toml_string(ip)));
        }
        out.push_str(&format!(
            "data_dir = {}\n",
            toml_string(&self.data_dir.display().to_string())
        ));
        if let Some(url) = &self.record_store {
            out.push_str(&format!("record_store = {}\n", toml_string(url)));
        }
        let witnesses: Vec<String> = self.witnesses.iter().map(u64::to_string).collect();
        out.push_str(&format!(
            "\n[cluster]\nsecret = {}\nwitnesses = [{}]\n\n[cluster.members]\n",
            toml_string(&self.secret),
            witnesses.join(", ")
        ));
        for (id, addr) in &self.members {
            out.push_str(&format!("{id} = {}\n", toml_string(addr)));
        }
        for (table, keys) in &self.sections {
            if keys.is_empty() {
                continue;
            }
            out.push_str(&format!("\n[{table}]\n"));
            for (key, value) in keys {
                out.push_str(&format!("{key} = {}\n", value.to_toml()));
            }
        }
        out
    }
}

/// A TOML basic string holding `s` (quotes, backslashes and control characters escaped).
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `n` distinct free loopback ports: binds port 0 `n` times at once, reads the ports back,
/// then releases them all (another process may still take one before the node binds it).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// One free loopback address, `127.0.0.1:port`.
pub fn free_addr() -> Result<String> {
    Ok(format!("127.0.0.1:{}", free_ports(1)?[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeConfig {
        NodeConfig {
            id: 1,
            role: Role::Data,
            listen: "127.0.0.1:7101".into(),
            advertise: None,
            source_ip: None,
            data_dir: "/tmp/x \"y\"\\z".into(),
            record_store: Some("sqlite:///tmp/r.db".into()),
            secret: "s\"e\ncret".into(),
            witnesses: vec![3],
            members: [(1, "127.0.0.1:7101"), (2, "127.0.0.1:7102")]
                .into_iter()
                .map(|(i, a)| (i, a.to_string()))
                .collect(),
            sections: Sections::new(),
        }
    }

    #[test]
    fn strings_are_quoted_and_escaped() {
        assert_eq!(toml_string("plain"), "\"plain\"");
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_string("a\nb\u{7}"), "\"a\\u000Ab\\u0007\"");
        for s in ["", "é ü", "\"", "\\\\", "tab\there", "\u{1}"] {
            let v: toml::Value = toml::from_str(&format!("k = {}", toml_string(s))).unwrap();
            assert_eq!(v["k"].as_str(), Some(s));
        }
    }

    #[test]
    fn the_config_parses_back_to_what_was_given() {
        let mut c = sample();
        c.sections
            .entry("raft".into())
            .or_default()
            .insert("snapshot_threshold".into(), 5u64.into());
        c.sections
            .entry("sql".into())
            .or_default()
            .insert("max_rows".into(), 10usize.into());
        c.sections.entry("sink".into()).or_default();
        let v: toml::Value = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(v["id"].as_integer(), Some(1));
        assert_eq!(v["role"].as_str(), Some("data"));
        assert_eq!(v["data_dir"].as_str(), Some("/tmp/x \"y\"\\z"));
        assert_eq!(v["record_store"].as_str(), Some("sqlite:///tmp/r.db"));
        assert!(v.get("advertise").is_none());
        assert_eq!(v["cluster"]["secret"].as_str(), Some("s\"e\ncret"));
        assert_eq!(v["cluster"]["witnesses"][0].as_integer(), Some(3));
        assert_eq!(
            v["cluster"]["members"]["2"].as_str(),
            Some("127.0.0.1:7102")
        );
        assert_eq!(v["raft"]["snapshot_threshold"].as_integer(), Some(5));
        assert_eq!(v["sql"]["max_rows"].as_integer(), Some(10));
        // An empty table is left out.
        assert!(v.get("sink").is_none());
    }

    #[test]
    fn a_witness_behind_a_proxy() {
        let mut c = sample();
        c.id = 3;
        c.role = Role::Witness;
        c.record_store = None;
        c.advertise = Some("127.0.0.1:9003".into());
        c.source_ip = Some("127.77.0.3".into());
        let v: toml::Value = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(v["role"].as_str(), Some("witness"));
        assert_eq!(v["advertise"].as_str(), Some("127.0.0.1:9003"));
        assert_eq!(v["source_ip"].as_str(), Some("127.77.0.3"));
        assert!(v.get("record_store").is_none());
    }

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = free_ports(5).unwrap();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 5);
        for p in ports {
            assert_ne!(p, 0);
            // Released: binding it again works.
            assert!(
                TcpListener::bind(("127.0.0.1", p)).is_ok(),
                "port {p} released"
            );
        }
        assert!(free_addr().unwrap().starts_with("127.0.0.1:"));
    }
}
