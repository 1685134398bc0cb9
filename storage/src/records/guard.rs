//! `check_read_only`: the parser's half of "reads cannot write".
//!
//! A statement passes only if it is exactly one query (`SELECT`, `WITH … SELECT`, set
//! operations, `VALUES`) with no locking clause, no `INTO`, no nested data-modifying
//! statement, no call to a function that touches files, leaves session state behind,
//! waits on purpose or builds a value of a length the query picks, and no user variable,
//! `:=` assignment or parameter (queries share pooled connections: nothing one query sets
//! may reach the next). `EXPLAIN` is refused too: the SQL endpoint allows one
//! `SELECT`/`WITH` statement, nothing else.
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

/// Why a function is denied; the error message says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denied {
    /// Reads or writes files, runs programs, loads code.
    Files,
    /// Leaves state behind on a pooled connection (named locks, sequences, the session's
    /// last insert id).
    SessionState,
    /// Waits on purpose: sleeps, busy loops, replication waits. One such query holds a read
    /// connection for the whole statement timeout while doing nothing useful.
    Waits,
    /// Builds a value whose length the query chooses (a few bytes of SQL, gigabytes of
    /// memory). Dashboards format values in the client instead.
    HugeValues,
}

/// Functions the endpoint refuses, compared case-insensitively with every identifier
/// (quoted or not: MySQL calls a back-quoted native function too). Value builders that
/// are not here (`CONCAT`, `REPLACE`, `printf`, `GROUP_CONCAT`, …) are bounded by the
/// engine limits the read connections run under (see `connect.rs`) and by the answer's
/// byte budget.
const DENIED_FUNCTIONS: &[(&str, Denied)] = &[
    // MySQL / MariaDB
    ("load_file", Denied::Files),
    ("sys_exec", Denied::Files),
    ("sys_eval", Denied::Files),
    ("get_lock", Denied::SessionState),
    ("release_lock", Denied::SessionState),
    ("release_all_locks", Denied::SessionState),
    ("is_free_lock", Denied::SessionState),
    ("is_used_lock", Denied::SessionState),
    ("last_insert_id", Denied::SessionState),
    ("nextval", Denied::SessionState),
    ("setval", Denied::SessionState),
    ("lastval", Denied::SessionState),
    ("sleep", Denied::Waits),
    ("benchmark", Denied::Waits),
    ("master_pos_wait", Denied::Waits),
    ("source_pos_wait", Denied::Waits),
    ("master_gtid_wait", Denied::Waits),
    ("wait_for_executed_gtid_set", Denied::Waits),
    ("wait_until_sql_thread_after_gtids", Denied::Waits),
    ("repeat", Denied::HugeValues),
    ("space", Denied::HugeValues),
    ("rpad", Denied::HugeValues),
    ("lpad", Denied::HugeValues),
    ("uncompress", Denied::HugeValues),
    // SQLite
    ("load_extension", Denied::Files),
    ("readfile", Denied::Files),
    ("writefile", Denied::Files),
    ("fsdir", Denied::Files),
    ("fts3_tokenizer", Denied::Files),
    ("zeroblob", Denied::HugeValues),
    ("randomblob", Denied::HugeValues),
];

/// Identifiers with this prefix are refused too: the `lib_mysqludf_sys` family
/// (`sys_exec`, `sys_eval`, `sys_get`, `sys_set`, …) runs programs on the database host.
const DENIED_PREFIX: &str = "sys_";

fn denied(name: &str) -> Option<Denied> {
    if name.starts_with(DENIED_PREFIX) {
        return Some(Denied::Files);
    }
    DENIED_FUNCTIONS
        .iter()
        .find(|(denied, _)| *denied == name)
        .map(|(_, why)| *why)
}

fn denied_message(shown: &str, why: Denied) -> String {
    let reason = match why {
        Denied::Files => "the SQL endpoint never touches files, programs or extensions",
        Denied::SessionState => {
            "queries share pooled connections, so nothing may leave session state (locks, \
             sequences, insert ids) behind"
        }
        Denied::Waits => {
            "it waits on purpose and would hold one of the few read connections for the \
             whole statement timeout"
        }
        Denied::HugeValues => {
            "it builds a value as long as the query asks for; format values in the client"
        }
    };
    format!("`{shown}` is not allowed: {reason}")
}

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
        Dialect::MySql => parse(&MySqlDialect {}, sql, true)?,
        Dialect::Sqlite => parse(&SQLiteDialect {}, sql, false)?,
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
fn parse(
    dialect: &dyn sqlparser::dialect::Dialect,
    sql: &str,
    mysql: bool,
) -> Result<Vec<Statement>, String> {
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
    check_variables(&tokens, mysql)?;
    for (i, word) in words.iter().enumerate() {
        let Some(word) = word else { continue };
        let name = word.value.to_ascii_lowercase();
        if let Some(why) = denied(&name) {
            return Err(denied_message(&word.value, why));
        }
        let unquoted = word.quote_style.is_none();
        let next_is = |offset: usize, keyword: &str| {
            words
                .get(i + offset)
                .and_then(|w| w.as_ref())
                .is_some_and(|w| w.value.eq_ignore_ascii_case(keyword) && w.quote_style.is_none())
        };
        // These MySQL forms do not parse at all; say what is wrong instead of "expected …".
        if unquoted && (name == "outfile" || name == "dumpfile") {
            return Err(format!(
                "SELECT … INTO {} is not allowed: results are returned to you, never written \
                 to files",
                name.to_ascii_uppercase()
            ));
        }
        if unquoted && name == "lock" && next_is(1, "in") {
            return Err(LOCKING.into());
        }
        // MariaDB's sequence syntax: `NEXT VALUE FOR s` moves the sequence (a write).
        if unquoted && (name == "next" || name == "previous") && next_is(1, "value") {
            return Err(
                "`NEXT VALUE FOR` / `PREVIOUS VALUE FOR` are not allowed: sequences are \
                 session state, and moving one is a write"
                    .into(),
            );
        }
    }
    Parser::parse_sql(dialect, sql).map_err(|e| format!("cannot parse the SQL: {e}"))
}

/// User variables, assignments and parameters. A user variable set by one query would
/// survive on the pooled connection into the next one (and hold server memory there);
/// parameters are never bound, so SQLite would read them as NULL. System variables
/// (`@@version`) may be read on MySQL: nothing in a query can assign them.
fn check_variables(tokens: &[Token], mysql: bool) -> Result<(), String> {
    const VARIABLES: &str = "user variables (`@name`) and `:=` are not allowed: queries share \
         pooled connections, and a variable set by one would survive into the next";
    for token in tokens {
        match token {
            Token::Assignment => return Err(VARIABLES.into()),
            Token::Word(w)
                if mysql
                    && w.quote_style.is_none()
                    && w.value.starts_with('@')
                    && !w.value.starts_with("@@") =>
            {
                return Err(VARIABLES.into())
            }
            Token::AtSign | Token::AtAt if mysql => return Err(VARIABLES.into()),
            Token::Placeholder(_) | Token::AtSign | Token::AtAt | Token::Colon => {
                return Err(
                    "parameters (`?`, `:name`, `@name`, `$name`) are not supported: \
                     write the values into the SQL"
                        .into(),
                )
            }
            _ => {}
        }
    }
    Ok(())
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
            "SELECT `api_name` FROM `events` LIMIT 1",
            "SELECT @@version, @@session.time_zone",
            "SELECT GROUP_CONCAT(api_name) FROM events",
            "SELECT CONCAT(api_name, ':', method), FORMAT(12345.678, 2) FROM events",
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT * FROM c",
        ];
        for sql in mysql_only {
            assert_eq!(verdict(sql, Dialect::MySql), Ok(()), "{sql}");
        }
        let sqlite_only = [
            "SELECT \"api_name\" FROM \"events\"",
            "SELECT * FROM pragma_table_info('events')",
            "SELECT printf('%.2f', 1.5), group_concat(api_name, ',') FROM events",
            "SELECT '12:30' AS t, '@x' AS v, '?' AS q",
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

    /// Every denied function, in both dialects, called plainly, in another case, back-quoted
    /// or as a table function: refused, with the reason of its kind.
    #[test]
    fn denied_functions_are_refused_with_their_reason() {
        let reasons = [
            (Denied::Files, "files"),
            (Denied::SessionState, "session state"),
            (Denied::Waits, "waits on purpose"),
            (Denied::HugeValues, "builds a value"),
        ];
        for (name, why) in DENIED_FUNCTIONS {
            let needle = reasons.iter().find(|(w, _)| w == why).unwrap().1;
            let upper = name.to_ascii_uppercase();
            for sql in [
                format!("SELECT {name}(1)"),
                format!("SELECT {upper}('x', 2) FROM events"),
                format!("SELECT * FROM events WHERE api_name = {name}(1, 2)"),
                format!("SELECT * FROM {name}('/')"),
                format!("SELECT `{name}`(1)"),
                format!("SELECT {name} /* comment */ (1)"),
            ] {
                for dialect in BOTH {
                    let message = verdict(&sql, dialect).unwrap_err();
                    assert!(
                        message.contains(needle) && message.to_ascii_lowercase().contains(name),
                        "{dialect:?}: {sql:?} → {message:?} (expected {needle:?})"
                    );
                }
            }
        }
        // The sys_ family, whatever the member.
        for sql in ["SELECT sys_get('x')", "SELECT SYS_SET('a', 'b')"] {
            let message = verdict(sql, Dialect::MySql).unwrap_err();
            assert!(message.contains("files"), "{sql:?} → {message:?}");
        }
        // The ones named in the brief of this guard, spelled as attackers do.
        let hostile = [
            "SELECT SLEEP(10)",
            "SELECT BENCHMARK(100000000, MD5('x'))",
            "SELECT MASTER_POS_WAIT('log', 4)",
            "SELECT WAIT_FOR_EXECUTED_GTID_SET('x', 10)",
            "SELECT REPEAT('x', 16000000) FROM events a, events b",
            "SELECT RPAD('x', 1000000000, 'y')",
            "SELECT zeroblob(999999999) FROM events",
            "SELECT hex(randomblob(1000000000))",
            "SELECT NEXT VALUE FOR s",
            "SELECT PREVIOUS VALUE FOR s",
        ];
        for sql in hostile {
            for dialect in BOTH {
                assert!(
                    verdict(sql, dialect).is_err(),
                    "{dialect:?} accepted {sql:?}"
                );
            }
        }
    }

    /// A name in a string literal is text, not a call.
    #[test]
    fn denied_names_inside_strings_are_text() {
        for dialect in BOTH {
            assert_eq!(
                verdict("SELECT 'sleep(5) and repeat(x)' AS s", dialect),
                Ok(())
            );
        }
    }

    #[test]
    fn user_variables_assignments_and_parameters_are_refused() {
        let mysql = [
            ("SELECT @x := 1", "user variables"),
            ("SELECT @x", "user variables"),
            (
                "SELECT * FROM events WHERE ts_ms > @since",
                "user variables",
            ),
            ("SELECT @'quoted'", "user variables"),
            ("SELECT @`quoted`", "user variables"),
            (
                "SELECT api_name FROM events WHERE (@n := @n + 1) < 3",
                "user variables",
            ),
            ("SELECT ?", "parameters"),
        ];
        for (sql, needle) in mysql {
            let message = verdict(sql, Dialect::MySql).unwrap_err();
            assert!(message.contains(needle), "{sql:?} → {message:?}");
        }
        let sqlite = [
            "SELECT ?",
            "SELECT ?1",
            "SELECT :name",
            "SELECT @name",
            "SELECT $name",
            "SELECT * FROM events WHERE ts_ms > :since",
        ];
        for sql in sqlite {
            let message = verdict(sql, Dialect::Sqlite).unwrap_err();
            assert!(message.contains("parameters"), "{sql:?} → {message:?}");
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
