//! Whether a write can be replayed on the secondary with the same effect,
//! and which values the primary generates that must be pinned for that.
//!
//! Pinnable (the mirror pins them the way statement-based replication does):
//! the statement time (NOW(), CURRENT_TIMESTAMP, CURDATE(), UNIX_TIMESTAMP(),
//! UTC_TIMESTAMP(), column defaults), RAND() seeds, LAST_INSERT_ID(), and
//! UUID() (spliced in as a literal). Unsafe: everything whose value on the
//! secondary cannot be forced to the primary's.

use super::lexer::{Tok, Token};
use super::{Class, WriteKind};

/// Generated values a write uses (each needs pinning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uses {
    pub time: bool,
    pub rand: bool,
    pub uuid: bool,
    pub last_insert_id: bool,
    /// SYSDATE() ignores SET TIMESTAMP; the session rewrites it to NOW().
    pub sysdate: bool,
    /// A top-level LIMIT (which rows it takes may depend on storage order
    /// or ties in ORDER BY: capture keys such UPDATEs and DELETEs).
    pub limit: bool,
    /// `NEXTVAL(s)` / `NEXT VALUE FOR s` in the rows of an `INSERT` or
    /// `REPLACE … VALUES`: capture takes the values first and writes them
    /// in as literals (anywhere else such a call is unsafe).
    pub nextval: bool,
}

impl Uses {
    /// The statement text must be rewritten (UUID() literals, SYSDATE()).
    pub fn needs_rewrite(&self) -> bool {
        self.uuid || self.sysdate
    }
}

/// Why a write cannot be mirrored deterministically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsafeReason {
    /// sqlparser could not parse it, so its effect is unknown.
    Unparsed,
    /// UPDATE/DELETE/INSERT … SELECT with LIMIT but no ORDER BY: which rows
    /// it touches depends on the storage order.
    LimitWithoutOrder,
    /// INSERT … SELECT without ORDER BY: auto-increment ids follow row order.
    InsertSelectWithoutOrder,
    /// LOAD DATA reads a file the secondary does not have.
    LoadData,
    /// CALL runs a procedure whose statements Tandem does not see.
    Call,
    /// Assigns a user variable (`@x := …`): its value would be computed
    /// again on the secondary, and a keyed write's locking read would
    /// assign it too. (Reading one is carried: `Determinism::user_vars`.)
    UserVariable,
    /// Reads a server/system variable that may differ on the secondary.
    SystemVariable,
    /// Calls a function whose value cannot be pinned.
    Function(String),
}

impl std::fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unparsed => f.write_str("the statement could not be parsed"),
            Self::LimitWithoutOrder => {
                f.write_str("LIMIT without ORDER BY picks rows by storage order")
            }
            Self::InsertSelectWithoutOrder => {
                f.write_str("INSERT ... SELECT without ORDER BY assigns ids by storage order")
            }
            Self::LoadData => f.write_str("LOAD DATA reads a file the secondary cannot see"),
            Self::Call => f.write_str("CALL runs statements Tandem cannot see"),
            Self::UserVariable => f.write_str("it assigns a user variable (@x := …) as it runs"),
            Self::SystemVariable => f.write_str("system variables may differ on the secondary"),
            Self::Function(name) if name.contains(' ') => {
                write!(f, "{name} cannot be made deterministic")
            }
            Self::Function(name) => write!(f, "{name}() cannot be made deterministic"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Determinism {
    pub uses: Uses,
    pub unsafe_reason: Option<UnsafeReason>,
    /// User variables the write reads (`@x`, as written): capture reads
    /// their values on the primary and sets them on the secondary first.
    pub user_vars: Vec<String>,
}

const TIME_FUNCS: &[&str] = &[
    "NOW",
    "CURRENT_TIMESTAMP",
    "CURDATE",
    "CURRENT_DATE",
    "CURTIME",
    "CURRENT_TIME",
    "UTC_TIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
    "UNIX_TIMESTAMP",
    "LOCALTIME",
    "LOCALTIMESTAMP",
];

/// Functions whose value cannot be pinned on the secondary.
pub const UNSAFE_FUNCS: &[&str] = &[
    "UUID_SHORT",
    "USER",
    "CURRENT_USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "CURRENT_ROLE",
    "FOUND_ROWS",
    "ROW_COUNT",
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "LOAD_FILE",
    "VERSION",
    "RANDOM_BYTES",
    "SYS_GUID",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "BENCHMARK",
    "SLEEP",
];

/// Analyzes one statement's tokens. Only writes get a verdict.
pub fn analyze(sql: &[u8], toks: &[Token], class: &Class, parsed: bool) -> Determinism {
    let Class::Write(kind) = class else {
        return Determinism::default();
    };
    let mut d = Determinism::default();
    let mut unsafe_reason = match kind {
        WriteKind::LoadData => Some(UnsafeReason::LoadData),
        WriteKind::Call => Some(UnsafeReason::Call),
        _ if !parsed => Some(UnsafeReason::Unparsed),
        _ => None,
    };
    let mut set = |r: UnsafeReason| {
        if unsafe_reason.is_none() {
            unsafe_reason = Some(r);
        }
    };
    let mut depth = 0i32;
    let mut user_vars: Vec<String> = Vec::new();
    let mut limit_without_order = false;
    let mut order_by_at_top = false;
    let mut top_select = false;
    for (i, t) in toks.iter().enumerate() {
        let next_is_paren = toks.get(i + 1).is_some_and(|n| n.kind == Tok::Punct(b'('));
        match t.kind {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Var => {
                let assigned = toks.get(i + 1).is_some_and(|n| n.kind == Tok::Punct(b':'))
                    && toks.get(i + 2).is_some_and(|n| n.kind == Tok::Punct(b'='));
                if t.text(sql).starts_with(b"@@") {
                    set(UnsafeReason::SystemVariable);
                } else if assigned {
                    set(UnsafeReason::UserVariable);
                } else {
                    let name = String::from_utf8_lossy(t.text(sql)).into_owned();
                    if !user_vars
                        .iter()
                        .any(|v: &String| v.eq_ignore_ascii_case(&name))
                    {
                        user_vars.push(name);
                    }
                }
            }
            Tok::Word => {
                let w = t.text(sql);
                let is = |name: &str| w.eq_ignore_ascii_case(name.as_bytes());
                if depth == 0
                    && is("ORDER")
                    && toks.get(i + 1).is_some_and(|n| n.is_word(sql, "BY"))
                {
                    order_by_at_top = true;
                }
                if depth == 0 && is("SELECT") {
                    top_select = true;
                }
                if is("NEXT")
                    && toks.get(i + 1).is_some_and(|n| n.is_word(sql, "VALUE"))
                    && toks.get(i + 2).is_some_and(|n| n.is_word(sql, "FOR"))
                {
                    d.uses.nextval = true;
                }
                if depth == 0 && is("LIMIT") {
                    d.uses.limit = true;
                    limit_without_order |= !order_by_at_top;
                }
                // Keywords usable without parentheses count as calls too.
                let bare_ok = is("CURRENT_TIMESTAMP")
                    || is("CURRENT_DATE")
                    || is("CURRENT_TIME")
                    || is("LOCALTIME")
                    || is("LOCALTIMESTAMP")
                    || is("CURRENT_USER");
                if !(next_is_paren || bare_ok) {
                    continue;
                }
                if TIME_FUNCS.iter().any(|f| is(f)) {
                    d.uses.time = true;
                } else if is("RAND") {
                    d.uses.rand = true;
                } else if is("UUID") {
                    d.uses.uuid = true;
                } else if is("SYSDATE") {
                    d.uses.time = true;
                    d.uses.sysdate = true;
                } else if is("LAST_INSERT_ID") {
                    d.uses.last_insert_id = true;
                } else if is("NEXTVAL") {
                    d.uses.nextval = true;
                } else if let Some(f) = UNSAFE_FUNCS.iter().find(|f| is(f)) {
                    set(UnsafeReason::Function(f.to_string()));
                }
            }
            _ => {}
        }
    }
    let unordered_insert_select =
        matches!(kind, WriteKind::Insert | WriteKind::Replace) && top_select && !order_by_at_top;
    // UUID() is spliced in as one literal per call site: right for a row of
    // VALUES, wrong for a statement that evaluates it once per matched row.
    let values_only = matches!(kind, WriteKind::Insert | WriteKind::Replace) && !top_select;
    if d.uses.uuid && !values_only {
        set(UnsafeReason::Function("UUID".into()));
    }
    // NEXTVAL likewise: its values are taken first, one per call site,
    // which only a row of VALUES evaluates once.
    if d.uses.nextval && !values_only {
        set(UnsafeReason::Function("NEXTVAL".into()));
    }
    // Last: capture can key an UPDATE or DELETE with this reason, and
    // must still see any other.
    if limit_without_order {
        set(UnsafeReason::LimitWithoutOrder);
    }
    // Also last: capture mirrors it anyway where row order cannot matter
    // (`order_free_insert`), and must still see any other reason.
    if unordered_insert_select {
        set(UnsafeReason::InsertSelectWithoutOrder);
    }
    d.unsafe_reason = unsafe_reason;
    d.user_vars = user_vars;
    d
}

#[cfg(test)]
mod tests {
    use crate::router::classify;

    fn verdict(sql: &str) -> (Option<String>, super::Uses) {
        let c = classify(sql.as_bytes());
        let d = &c.statements[0].determinism;
        (d.unsafe_reason.as_ref().map(|r| format!("{r:?}")), d.uses)
    }

    #[test]
    fn unsafe_writes_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("INSERT INTO t (a) VALUES (1)", None),
            ("INSERT INTO t (a, b) VALUES (NOW(6), RAND())", None),
            ("UPDATE t SET a = a + 1 WHERE id = 3", None),
            ("UPDATE t SET a = 1 ORDER BY id LIMIT 10", None),
            ("UPDATE t SET a = 1 LIMIT 10", Some("LimitWithoutOrder")),
            ("DELETE FROM t LIMIT 1", Some("LimitWithoutOrder")),
            ("DELETE FROM t ORDER BY id LIMIT 1", None),
            (
                "DELETE FROM t WHERE id IN (SELECT id FROM u ORDER BY id LIMIT 3)",
                None,
            ),
            (
                "INSERT INTO t SELECT * FROM u",
                Some("InsertSelectWithoutOrder"),
            ),
            ("INSERT INTO t SELECT * FROM u ORDER BY id", None),
            ("INSERT INTO t SELECT * FROM u ORDER BY id LIMIT 5", None),
            ("INSERT INTO t (a) VALUES ((SELECT MAX(a) FROM u))", None),
            ("INSERT INTO t (a) VALUES (@x)", None),
            ("UPDATE t SET a = (@x := @x + 1)", Some("UserVariable")),
            ("UPDATE t SET a = @@hostname", Some("SystemVariable")),
            ("INSERT INTO t (a) VALUES (SYSDATE())", None),
            (
                "UPDATE t SET u = UUID() WHERE id = 1",
                Some("Function(\"UUID\")"),
            ),
            (
                "INSERT INTO t SELECT UUID() FROM u ORDER BY id",
                Some("Function(\"UUID\")"),
            ),
            (
                "INSERT INTO t (a) VALUES (UUID_SHORT())",
                Some("Function(\"UUID_SHORT\")"),
            ),
            (
                "INSERT INTO t (a) VALUES (CURRENT_USER)",
                Some("Function(\"CURRENT_USER\")"),
            ),
            (
                "INSERT INTO t (a) VALUES (USER())",
                Some("Function(\"USER\")"),
            ),
            (
                "UPDATE t SET a = FOUND_ROWS()",
                Some("Function(\"FOUND_ROWS\")"),
            ),
            ("LOAD DATA LOCAL INFILE 'x' INTO TABLE t", Some("LoadData")),
            ("CALL p()", Some("Call")),
            ("INSERT INTO t VALUES (1) RETURNING id", None),
            ("INSERT t SET a = 1, b = 2 FROBNICATE", Some("Unparsed")),
            ("SELECT @x, SYSDATE() LIMIT 1", None),
            ("INSERT INTO t (a) VALUES ('@x LIMIT SYSDATE()')", None),
            ("REPLACE INTO t (id, a) VALUES (1, UUID())", None),
        ];
        for (sql, expected) in cases {
            assert_eq!(verdict(sql).0.as_deref(), *expected, "{sql}");
        }
    }

    #[test]
    fn pinned_values_are_detected() {
        let u =
            verdict("INSERT INTO t (a, b, c, d) VALUES (NOW(6), RAND(), UUID(), LAST_INSERT_ID())")
                .1;
        assert!(u.time && u.rand && u.uuid && u.last_insert_id);
        let u = verdict("UPDATE t SET ts = CURRENT_TIMESTAMP WHERE id = 1").1;
        assert!(u.time && !u.rand);
        let u = verdict("INSERT INTO t (a) VALUES (UNIX_TIMESTAMP())").1;
        assert!(u.time);
        let u = verdict("INSERT INTO t (now) VALUES (1)").1;
        assert!(!u.time, "a column named now is not a call");
        assert_eq!(
            verdict("SELECT NOW()").1,
            super::Uses::default(),
            "reads get no verdict"
        );
    }
}
