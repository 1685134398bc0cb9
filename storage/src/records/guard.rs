//! `check_read_only`: the parser's half of "reads cannot write".
//!
//! A statement passes only if it is exactly one query (`SELECT`, `WITH … SELECT`, set
//! operations, `VALUES`) with no locking clause, no `INTO`, no nested data-modifying
//! statement and no call to a function that touches files, extensions or session locks.
//! `EXPLAIN` is refused too: the SQL endpoint allows one `SELECT`/`WITH` statement, nothing else.
//!
//! What the parser cannot see it refuses: MySQL/MariaDB executable comments (`/*! … */`,
//! `/*M! … */`) and optimizer hints (`/*+ … */`), because the server runs text in them that
//! a comment-skipping checker would not look at. The read-only transaction and read-only
//! connection behind it are the second, independent half.

use std::ops::ControlFlow;

use sqlparser::ast::{Query, Select, SetExpr, Statement, Visit, Visitor};
use sqlparser::dialect::{MySqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::{Dialect, RecordError};

const LOCKING: &str = "locking clauses (FOR UPDATE, FOR SHARE, LOCK IN SHARE MODE) are not \
     allowed: the SQL endpoint only reads and never takes row locks";

/// Longer SQL is refused before parsing: bounds parser work, and no dashboard needs more.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// Functions that read or write files, load code, or leave session state (named locks)
/// behind on a pooled connection. Compared case-insensitively with every identifier.
const DENIED_FUNCTIONS: [&str; 11] = [
    // MySQL / MariaDB
    "load_file",
    "get_lock",
    "release_lock",
    "release_all_locks",
    "sys_exec",
    "sys_eval",
    // SQLite
    "load_extension",
    "readfile",
    "writefile",
    "fsdir",
    "fts3_tokenizer",
];

/// Checks that `sql` is exactly one read-only query. The error message says what was
/// refused and what is allowed.
pub fn check_read_only(sql: &str, dialect: Dialect) -> Result<(), RecordError> {
    check(sql, dialect).map_err(RecordError::SqlRejected)
}

fn check(sql: &str, dialect: Dialect) -> Result<(), String> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(format!(
            "the SQL is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        ));
    }
    check_comments(sql)?;
    let parsed = match dialect {
        Dialect::MySql => parse(&MySqlDialect {}, sql)?,
        Dialect::Sqlite => parse(&SQLiteDialect {}, sql)?,
    };
    let statement = match parsed.as_slice() {
        [] => return Err("no SQL statement given: send one SELECT query".into()),
        [one] => one,
        many => {
            return Err(format!(
                "exactly one statement is allowed, got {}: send a single SELECT query \
                 without a second statement after ';'",
                many.len()
            ))
        }
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(format!(
            "only a read-only query is allowed (SELECT, WITH … SELECT, UNION, VALUES); \
             this is {}",
            describe(sql)
        ));
    }
    match statement.visit(&mut ReadOnly) {
        ControlFlow::Break(reason) => Err(reason),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Parses, and refuses denied function names on the token stream (wherever they appear:
/// call, table function, quoted identifier).
fn parse(dialect: &dyn sqlparser::dialect::Dialect, sql: &str) -> Result<Vec<Statement>, String> {
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize()
        .map_err(|e| format!("cannot parse the SQL: {e}"))?;
    let words: Vec<_> = tokens
        .iter()
        .filter_map(|token| match token {
            Token::Word(word) => Some(Some(word)),
            Token::Whitespace(_) => None,
            _ => Some(None),
        })
        .collect();
    for (i, word) in words.iter().enumerate() {
        let Some(word) = word else { continue };
        let name = word.value.to_ascii_lowercase();
        if DENIED_FUNCTIONS.contains(&name.as_str()) {
            return Err(format!(
                "`{}` is not allowed: the SQL endpoint never touches files, extensions or \
                 session locks",
                word.value
            ));
        }
        // These MySQL forms do not parse at all; say what is wrong instead of "expected …".
        let unquoted = word.quote_style.is_none();
        if unquoted && (name == "outfile" || name == "dumpfile") {
            return Err(format!(
                "SELECT … INTO {} is not allowed: results are returned to you, never written \
                 to files",
                name.to_ascii_uppercase()
            ));
        }
        let next_is_in = words
            .get(i + 1)
            .and_then(|w| w.as_ref())
            .is_some_and(|w| w.value.eq_ignore_ascii_case("in") && w.quote_style.is_none());
        if unquoted && name == "lock" && next_is_in {
            return Err(LOCKING.into());
        }
    }
    Parser::parse_sql(dialect, sql).map_err(|e| format!("cannot parse the SQL: {e}"))
}

/// Executable comments and hints: refused anywhere in the text, string literals included
/// (a false alarm there costs a rephrase; a miss would run unchecked SQL).
fn check_comments(sql: &str) -> Result<(), String> {
    let lower = sql.to_ascii_lowercase();
    for (marker, shown) in [("/*!", "/*!"), ("/*m!", "/*M!"), ("/*+", "/*+")] {
        if lower.contains(marker) {
            let marker = shown;
            return Err(format!(
                "`{marker}` comments are not allowed: MySQL/MariaDB execute what is inside \
                 executable comments and optimizer hints; remove the comment"
            ));
        }
    }
    Ok(())
}

/// "an INSERT statement", from the first keyword of the SQL.
fn describe(sql: &str) -> String {
    let first = sql
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|word| !word.is_empty())
        .unwrap_or("this")
        .to_ascii_uppercase();
    let article = if first.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {first} statement")
}

/// Walks every query, subquery and CTE of the statement.
struct ReadOnly;

impl Visitor for ReadOnly {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        if matches!(statement, Statement::Query(_)) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(
                "data-modifying statements inside a query (e.g. in a WITH clause) are not \
                 allowed: the SQL endpoint only reads"
                    .into(),
            )
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if !query.locks.is_empty() {
            return ControlFlow::Break(LOCKING.into());
        }
        if let SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) =
            query.body.as_ref()
        {
            return ControlFlow::Break(
                "data-modifying statements inside a query are not allowed: the SQL endpoint \
                 only reads"
                    .into(),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<String> {
        if select.into.is_some() {
            return ControlFlow::Break(
                "SELECT … INTO is not allowed: results are returned to you, never stored in \
                 tables, variables or files"
                    .into(),
            );
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(sql: &str, dialect: Dialect) -> Result<(), String> {
        check(sql, dialect)
    }

    const BOTH: [Dialect; 2] = [Dialect::MySql, Dialect::Sqlite];

    #[test]
    fn accepts_queries() {
        let accepted = [
            "SELECT 1",
            "select * from events where api_name = 'pets' order by ts_ms desc limit 10",
            "SELECT api_name, SUM(requests), MAX(latency_max_ms) FROM usage_hour \
             WHERE bucket_ms >= 0 GROUP BY api_name HAVING SUM(requests) > 1",
            "WITH t AS (SELECT api_name, requests FROM usage_day) SELECT * FROM t",
            "SELECT api_name FROM usage_minute UNION SELECT api_name FROM usage_hour",
            "SELECT * FROM events WHERE event_id IN (SELECT event_id FROM events LIMIT 3)",
            "SELECT COUNT(*), COUNT(DISTINCT api_name), AVG(response_time_ms), MIN(ts_ms) FROM events",
            "SELECT (SELECT COUNT(*) FROM events) AS n",
            "SELECT e.event_id FROM events e JOIN usage_day u ON u.api_name = e.api_name",
            "SELECT 1;",
            "SELECT 'into outfile; drop table events' AS harmless_text",
            "SELECT 'update' AS word -- a comment\n",
            "VALUES (1, 2)",
            "SELECT * FROM (VALUES (1), (2)) AS v",
        ];
        for dialect in BOTH {
            for sql in accepted {
                assert_eq!(verdict(sql, dialect), Ok(()), "{dialect:?}: {sql}");
            }
        }
        let mysql_only = [
            "SELECT SLEEP(1)",
            "SELECT `api_name` FROM `events` LIMIT 1",
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT * FROM c",
        ];
        for sql in mysql_only {
            assert_eq!(verdict(sql, Dialect::MySql), Ok(()), "{sql}");
        }
        let sqlite_only = [
            "SELECT \"api_name\" FROM \"events\"",
            "SELECT * FROM pragma_table_info('events')",
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT COUNT(*) FROM c",
        ];
        for sql in sqlite_only {
            assert_eq!(verdict(sql, Dialect::Sqlite), Ok(()), "{sql}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let rejected = [
            ("INSERT INTO events (event_id) VALUES ('x')", "INSERT"),
            ("UPDATE usage_day SET requests = 0", "UPDATE"),
            ("DELETE FROM events", "DELETE"),
            ("REPLACE INTO sink_state VALUES (1, 0, 0)", "REPLACE"),
            ("DROP TABLE events", "DROP"),
            ("CREATE TABLE x (a INT)", "CREATE"),
            ("ALTER TABLE events ADD COLUMN x INT", "ALTER"),
            ("TRUNCATE TABLE events", "TRUNCATE"),
            ("SELECT 1; SELECT 2", "exactly one statement"),
            ("SELECT 1; DROP TABLE events", ""),
            ("SELECT * FROM events FOR UPDATE", "FOR UPDATE"),
            (
                "SELECT * FROM (SELECT * FROM events FOR UPDATE) x",
                "FOR UPDATE",
            ),
            ("SELECT * INTO copy FROM events", "INTO"),
            ("SELECT * FROM events INTO OUTFILE '/tmp/x'", "OUTFILE"),
            ("SELECT * INTO OUTFILE '/tmp/x' FROM events", "OUTFILE"),
            ("SELECT 1 INTO DUMPFILE '/tmp/x'", "DUMPFILE"),
            (
                "SELECT * FROM events LOCK IN SHARE MODE",
                "LOCK IN SHARE MODE",
            ),
            ("SET autocommit = 0", "SET"),
            ("GRANT ALL ON *.* TO 'x'", ""),
            ("EXPLAIN SELECT * FROM events", "EXPLAIN"),
            ("SELECT load_extension('x')", "load_extension"),
            ("SELECT LOAD_FILE('/etc/passwd')", "LOAD_FILE"),
            ("SELECT readfile('/etc/passwd')", "readfile"),
            ("SELECT writefile('/tmp/x', 'y')", "writefile"),
            ("SELECT GET_LOCK('x', 10)", "GET_LOCK"),
            ("SELECT 1 /*! , LOAD_FILE('/etc/passwd') */", "/*!"),
            ("SELECT 1 /*M!100000 FOR UPDATE */", "/*M!"),
            ("SELECT /*+ MAX_EXECUTION_TIME(1000000) */ 1", "/*+"),
            ("", "no SQL statement"),
            ("   ;  ", ""),
            ("SELEC 1", "cannot parse"),
            ("SELECT (1", "cannot parse"),
            (
                "WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d",
                "",
            ),
        ];
        for dialect in BOTH {
            for (sql, needle) in rejected {
                if std::env::var_os("SHOW_VERDICTS").is_some() {
                    eprintln!("{dialect:?} {sql:?} → {:?}", verdict(sql, dialect));
                }
                match verdict(sql, dialect) {
                    Ok(()) => panic!("{dialect:?} accepted {sql:?}"),
                    Err(message) => assert!(
                        message.contains(needle),
                        "{dialect:?}: {sql:?} → {message:?} (expected to mention {needle:?})"
                    ),
                }
            }
        }
        let mysql_only = [
            "SELECT * FROM events FOR SHARE",
            "SELECT api_name INTO @a FROM events LIMIT 1",
            "CALL p()",
            "LOAD DATA INFILE '/tmp/x' INTO TABLE events",
            "SHOW TABLES",
            "HANDLER events OPEN",
            "DO SLEEP(1)",
            "START TRANSACTION",
            "LOCK TABLES events WRITE",
            "SELECT 1 # trailing\n; DELETE FROM events",
        ];
        for sql in mysql_only {
            let v = verdict(sql, Dialect::MySql);
            if std::env::var_os("SHOW_VERDICTS").is_some() {
                eprintln!("MySql {sql:?} → {v:?}");
            }
            assert!(v.is_err(), "MySql accepted {sql:?}");
        }
        let sqlite_only = [
            "ATTACH DATABASE '/tmp/x.db' AS x",
            "DETACH DATABASE x",
            "PRAGMA query_only = OFF",
            "VACUUM INTO '/tmp/copy.db'",
            "SELECT * FROM fsdir('/')",
            "INSERT OR REPLACE INTO sink_state VALUES (1, 0, 0)",
        ];
        for sql in sqlite_only {
            let v = verdict(sql, Dialect::Sqlite);
            if std::env::var_os("SHOW_VERDICTS").is_some() {
                eprintln!("Sqlite {sql:?} → {v:?}");
            }
            assert!(v.is_err(), "Sqlite accepted {sql:?}");
        }
    }

    #[test]
    fn oversized_sql_is_refused_before_parsing() {
        let sql = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        assert!(verdict(&sql, Dialect::Sqlite)
            .unwrap_err()
            .contains("at most"));
    }
}
