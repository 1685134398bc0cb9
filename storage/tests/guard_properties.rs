//! Property test of the SQL guard (`check_read_only`): whatever text arrives at
//! `POST /v1/sql` — random Unicode, or SQL-looking token soup built from keywords,
//! operators, quotes, comments and denied names — the guard answers (accept or a reason)
//! and never panics, in both dialects, and answers the same way twice.
//!
//! `PROPTEST_CASES` scales the run (default 2,000 cases per property: a few seconds).

use proptest::prelude::*;
use tally_storage::records::{check_read_only, Dialect};

const DEFAULT_CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        // No persistence files in the source tree; a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces of SQL, hostile and harmless, that the token soup is made of.
const PIECES: &[&str] = &[
    "SELECT",
    "select",
    "WITH",
    "RECURSIVE",
    "AS",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "UNION",
    "ALL",
    "VALUES",
    "INSERT",
    "INTO",
    "UPDATE",
    "DELETE",
    "SET",
    "DROP",
    "FOR UPDATE",
    "LOCK IN SHARE MODE",
    "OUTFILE",
    "EXPLAIN",
    "PRAGMA",
    "ATTACH",
    "CALL",
    "NEXT VALUE FOR",
    "events",
    "usage_day",
    "api_name",
    "*",
    "1",
    "0x1F",
    "1e309",
    "-",
    "+",
    "/",
    "||",
    "(",
    ")",
    "((",
    "))",
    ",",
    ";",
    ".",
    "=",
    ":=",
    ":",
    "?",
    "?1",
    "@",
    "@@",
    "@x",
    "@@version",
    "$1",
    "'",
    "\"",
    "`",
    "'text'",
    "\"ident\"",
    "`ident`",
    "'it''s'",
    "'\\'",
    "/*",
    "*/",
    "/*!",
    "/*M!",
    "/*+",
    "--",
    "#",
    "\n",
    " ",
    "\t",
    "SLEEP(1)",
    "sleep",
    "zeroblob(1e9)",
    "randomblob",
    "REPEAT('x', 9)",
    "GROUP_CONCAT(",
    "load_file",
    "sys_exec",
    "CASE WHEN",
    "THEN",
    "ELSE",
    "END",
    "OVER (",
    "PARTITION BY",
    "JOIN",
    "ON",
    "NOT",
    "IN",
    "EXISTS",
    "NULL",
    "é",
    "🦀",
    "\u{0}",
    "\\",
    "[",
    "]",
    "{",
    "}",
    "->",
    "->>",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..60).prop_map(|pieces| {
        let mut sql = String::new();
        for piece in pieces {
            sql.push_str(piece);
            sql.push(' ');
        }
        sql
    })
}

fn judge_twice(sql: &str) {
    for dialect in [Dialect::MySql, Dialect::Sqlite] {
        let first = check_read_only(sql, dialect).map_err(|e| e.to_string());
        let second = check_read_only(sql, dialect).map_err(|e| e.to_string());
        assert_eq!(first, second, "{dialect:?}: {sql:?}");
        if let Err(message) = first {
            assert!(!message.is_empty(), "{dialect:?}: {sql:?}: empty reason");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(sql in "\\PC{0,200}") {
        judge_twice(&sql);
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        judge_twice(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn sql_looking_soup_never_panics(sql in soup()) {
        judge_twice(&sql);
    }

}

/// Nesting deeper than the parser's recursion limit is a refusal, not a stack overflow
/// (a few fixed depths: each deep case costs the tokenizer its whole length).
#[test]
fn deep_nesting_is_an_answer_not_a_stack_overflow() {
    for depth in [1, 10, 49, 50, 51, 200, 5_000, 30_000] {
        for (open, close) in [("(", ")"), ("(SELECT ", ")"), ("-", ""), ("NOT ", "")] {
            let sql = format!("SELECT {}1{}", open.repeat(depth), close.repeat(depth));
            judge_twice(&sql);
        }
    }
}
