//! What one journal record holds: a transaction that committed on the
//! primary, with everything the secondary needs to produce the same rows.
//!
//! Values the primary generated are pinned the way MySQL's statement-based
//! replication pins them: the statement's timestamp (NOW(), CURRENT_TIMESTAMP,
//! column defaults), the first auto-increment id it generated (INSERT_ID),
//! LAST_INSERT_ID() and the RAND() seeds; session settings that change a
//! write's meaning travel with each statement.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Format version of a bare committed transaction (first byte).
const VERSION: u8 = 1;
/// Format version of a [`JournalRecord`] whose statements each carry their
/// session settings (read, no longer written).
const RECORD_VERSION_2: u8 = 2;
/// Format version of a [`JournalRecord`] as written now: a transaction's
/// distinct session settings are stored once and its statements refer to
/// them by index (they are nearly always the same for every statement, and
/// were most of a record's bytes and allocations).
const RECORD_VERSION: u8 = 3;

/// Begins the CREATE of a temporary table a write carries to the
/// secondary (`frontend::session::capture::carry`): a failed apply may
/// leave such a table on the apply connection, which is then replaced.
pub const CARRIED_COPY: &[u8] = b"/* tandem: carried temporary table */ ";

/// Session variables as `name = SQL literal`, shared by the statements
/// that ran under them.
pub type SessionVars = Arc<Vec<(String, String)>>;

/// One journal entry as the capture path writes it.
///
/// A session journals an `Intent` (and waits for its fsync) *before* it
/// forwards COMMIT to the primary, so intent order is commit order for every
/// pair of transactions that touched the same rows; after the COMMIT's answer
/// it journals the `Outcome`. The applier applies an intent only once its
/// outcome says committed. An intent left without an outcome by a crash is
/// resolved at start-up against the marker row (`token`) the transaction
/// wrote on the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalRecord {
    Intent {
        token: u64,
        txn: MirrorTxn,
    },
    /// `at_us`: when the primary answered the COMMIT (µs since the epoch;
    /// 0 when settled later from the marker).
    Outcome {
        intent: u64,
        committed: bool,
        at_us: i64,
    },
    /// The primary's answer to a write on tables without transactions
    /// (`mirror::effect`), journaled before it ran: it took effect, with
    /// the first id it generated, or with the error it ended in (possibly
    /// after changing rows, which the same statement on the same rows
    /// repeats: the secondary must answer the same error).
    Effect {
        intent: u64,
        insert_id: Option<u64>,
        error: Option<u16>,
        at_us: i64,
    },
}

impl JournalRecord {
    pub fn encode(&self) -> Vec<u8> {
        let record = match self {
            JournalRecord::Intent { token, txn } => RecordOut::Intent {
                token: *token,
                txn: TxnOut::of(txn),
            },
            JournalRecord::Outcome {
                intent,
                committed,
                at_us,
            } => RecordOut::Outcome {
                intent: *intent,
                committed: *committed,
                at_us: *at_us,
            },
            JournalRecord::Effect {
                intent,
                insert_id,
                error,
                at_us,
            } => RecordOut::Effect {
                intent: *intent,
                insert_id: *insert_id,
                error: *error,
                at_us: *at_us,
            },
        };
        // Serialization of these plain structs into a Vec cannot fail.
        postcard::to_extend(&record, vec![RECORD_VERSION]).unwrap_or_default()
    }

    /// Decodes every format; a version-1 record is a transaction known to
    /// have committed (token 0: nothing to resolve).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, rest)) => postcard::from_bytes::<RecordIn>(rest)
                .map_err(|e| RecordError::Decode(e.to_string()))?
                .into_record(),
            Some((&RECORD_VERSION_2, rest)) => {
                postcard::from_bytes(rest).map_err(|e| RecordError::Decode(e.to_string()))
            }
            Some((&VERSION, _)) => Ok(JournalRecord::Intent {
                token: 0,
                txn: MirrorTxn::decode(bytes)?,
            }),
            Some((&v, _)) => Err(RecordError::Version(v)),
            None => Err(RecordError::Decode("empty record".into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorTxn {
    /// When the primary acknowledged the commit (µs since the Unix epoch);
    /// lag in seconds is measured from here.
    pub committed_at_us: i64,
    /// Tandem connection id of the session that committed (for logs and
    /// dead letters).
    pub conn_id: u32,
    pub statements: Vec<MirrorStatement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatement {
    /// Current database when the statement ran on the primary.
    pub db: Option<String>,
    /// The exact statement bytes to run (already rewritten where a value had
    /// to be spliced in). Bytes, not a sequence of numbers, to serde: the
    /// same postcard encoding, copied in one piece.
    #[serde(with = "serde_bytes")]
    pub sql: Vec<u8>,
    /// Tables the statement writes (for `mirror: false` rules and divergence).
    pub tables: Vec<String>,
    /// DDL commits implicitly, so it is applied outside a transaction.
    pub ddl: bool,
    pub pins: Pins,
    /// Session variables as `name = SQL literal` (sql_mode, time_zone,
    /// character_set_client, foreign_key_checks, auto_increment_increment, …).
    pub session: SessionVars,
}

/// Values pinned to what the primary used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// `SET TIMESTAMP` in microseconds since the epoch.
    pub timestamp_us: Option<i64>,
    /// `SET INSERT_ID`: the first auto-increment value the statement generated.
    pub insert_id: Option<u64>,
    /// `SET LAST_INSERT_ID` before the statement (for LAST_INSERT_ID() in it).
    pub last_insert_id: Option<u64>,
    /// `SET @@rand_seed1, @@rand_seed2` before the statement.
    pub rand_seeds: Option<(u32, u32)>,
}

/// A [`JournalRecord`] as version 3 writes it (borrowing the record).
#[derive(Serialize)]
enum RecordOut<'a> {
    Intent {
        token: u64,
        txn: TxnOut<'a>,
    },
    Outcome {
        intent: u64,
        committed: bool,
        at_us: i64,
    },
    /// Appended last: records of the two variants above decode as before.
    Effect {
        intent: u64,
        insert_id: Option<u64>,
        error: Option<u16>,
        at_us: i64,
    },
}

#[derive(Serialize)]
struct TxnOut<'a> {
    committed_at_us: i64,
    conn_id: u32,
    /// The distinct session settings of the statements.
    sessions: Vec<&'a [(String, String)]>,
    statements: Vec<StatementOut<'a>>,
}

#[derive(Serialize)]
struct StatementOut<'a> {
    db: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    sql: &'a [u8],
    tables: &'a [String],
    ddl: bool,
    pins: &'a Pins,
    /// Index into the transaction's `sessions`.
    session: u32,
}

impl<'a> TxnOut<'a> {
    fn of(txn: &'a MirrorTxn) -> Self {
        let mut shared: Vec<&'a SessionVars> = Vec::new();
        let statements = txn
            .statements
            .iter()
            .map(|st| {
                let at = match shared
                    .iter()
                    .position(|s| Arc::ptr_eq(s, &st.session) || **s == st.session)
                {
                    Some(at) => at,
                    None => {
                        shared.push(&st.session);
                        shared.len() - 1
                    }
                };
                StatementOut {
                    db: st.db.as_deref(),
                    sql: &st.sql,
                    tables: &st.tables,
                    ddl: st.ddl,
                    pins: &st.pins,
                    session: at as u32,
                }
            })
            .collect();
        TxnOut {
            committed_at_us: txn.committed_at_us,
            conn_id: txn.conn_id,
            sessions: shared.into_iter().map(|s| s.as_slice()).collect(),
            statements,
        }
    }
}

/// A version-3 record as read back.
#[derive(Deserialize)]
enum RecordIn {
    Intent {
        token: u64,
        txn: TxnIn,
    },
    Outcome {
        intent: u64,
        committed: bool,
        at_us: i64,
    },
    Effect {
        intent: u64,
        insert_id: Option<u64>,
        error: Option<u16>,
        at_us: i64,
    },
}

#[derive(Deserialize)]
struct TxnIn {
    committed_at_us: i64,
    conn_id: u32,
    sessions: Vec<Vec<(String, String)>>,
    statements: Vec<StatementIn>,
}

#[derive(Deserialize)]
struct StatementIn {
    db: Option<String>,
    #[serde(with = "serde_bytes")]
    sql: Vec<u8>,
    tables: Vec<String>,
    ddl: bool,
    pins: Pins,
    session: u32,
}

impl RecordIn {
    fn into_record(self) -> Result<JournalRecord, RecordError> {
        Ok(match self {
            RecordIn::Outcome {
                intent,
                committed,
                at_us,
            } => JournalRecord::Outcome {
                intent,
                committed,
                at_us,
            },
            RecordIn::Effect {
                intent,
                insert_id,
                error,
                at_us,
            } => JournalRecord::Effect {
                intent,
                insert_id,
                error,
                at_us,
            },
            RecordIn::Intent { token, txn } => {
                let sessions: Vec<SessionVars> = txn.sessions.into_iter().map(Arc::new).collect();
                let statements = txn
                    .statements
                    .into_iter()
                    .map(|st| {
                        let session =
                            sessions.get(st.session as usize).cloned().ok_or_else(|| {
                                RecordError::Decode(format!(
                                    "a statement refers to session settings {} of {}",
                                    st.session,
                                    sessions.len()
                                ))
                            })?;
                        Ok(MirrorStatement {
                            db: st.db,
                            sql: st.sql,
                            tables: st.tables,
                            ddl: st.ddl,
                            pins: st.pins,
                            session,
                        })
                    })
                    .collect::<Result<_, RecordError>>()?;
                JournalRecord::Intent {
                    token,
                    txn: MirrorTxn {
                        committed_at_us: txn.committed_at_us,
                        conn_id: txn.conn_id,
                        statements,
                    },
                }
            }
        })
    }
}

/// Every table the statements write, in order (duplicates kept).
pub fn tables_of(statements: &[MirrorStatement]) -> Vec<String> {
    statements.iter().flat_map(|s| s.tables.clone()).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record format version {0} is not supported by this build")]
    Version(u8),
    #[error("undecodable record: {0}")]
    Decode(String),
}

impl MirrorTxn {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        // Serialization of these plain structs into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| RecordError::Decode(e.to_string()))
            }
            Some((&v, _)) => Err(RecordError::Version(v)),
            None => Err(RecordError::Decode("empty record".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_binary_sql() {
        let txn = MirrorTxn {
            committed_at_us: 1_700_000_000_123_456,
            conn_id: 7,
            statements: vec![MirrorStatement {
                db: Some("shop".into()),
                sql: b"INSERT INTO b VALUES (_binary'\xff\xfe')".to_vec(),
                tables: vec!["b".into()],
                ddl: false,
                pins: Pins {
                    timestamp_us: Some(1),
                    insert_id: Some(42),
                    last_insert_id: None,
                    rand_seeds: Some((1, 2)),
                },
                session: Arc::new(vec![("sql_mode".into(), "'STRICT_ALL_TABLES'".into())]),
            }],
        };
        assert_eq!(MirrorTxn::decode(&txn.encode()).unwrap(), txn);
    }

    #[test]
    fn intents_and_outcomes_round_trip_and_v1_reads_as_committed() {
        let txn = MirrorTxn {
            committed_at_us: 5,
            conn_id: 1,
            statements: vec![],
        };
        let i = JournalRecord::Intent {
            token: 99,
            txn: txn.clone(),
        };
        assert_eq!(JournalRecord::decode(&i.encode()).unwrap(), i);
        let o = JournalRecord::Outcome {
            intent: 7,
            committed: false,
            at_us: 3,
        };
        assert_eq!(JournalRecord::decode(&o.encode()).unwrap(), o);
        for (insert_id, error) in [(Some(41), None), (None, Some(1062)), (None, None)] {
            let e = JournalRecord::Effect {
                intent: 8,
                insert_id,
                error,
                at_us: 4,
            };
            assert_eq!(JournalRecord::decode(&e.encode()).unwrap(), e);
        }
        assert_eq!(
            JournalRecord::decode(&txn.encode()).unwrap(),
            JournalRecord::Intent { token: 0, txn }
        );
        assert!(JournalRecord::decode(&[3, 0]).is_err());
        assert!(matches!(
            JournalRecord::decode(&[4, 0]),
            Err(RecordError::Version(4))
        ));
    }

    fn statement(sql: &str, session: &SessionVars) -> MirrorStatement {
        MirrorStatement {
            db: Some("shop".into()),
            sql: sql.as_bytes().to_vec(),
            tables: vec!["t".into()],
            ddl: false,
            pins: Pins {
                insert_id: Some(3),
                ..Pins::default()
            },
            session: session.clone(),
        }
    }

    #[test]
    fn a_transaction_stores_each_distinct_session_once_and_shares_it_when_read() {
        let a: SessionVars = Arc::new(vec![
            (
                "sql_mode".into(),
                "'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'".into(),
            ),
            ("time_zone".into(), "'+00:00'".into()),
        ]);
        // Equal settings in another Arc count as the same.
        let a2: SessionVars = Arc::new(a.as_ref().clone());
        let b: SessionVars = Arc::new(vec![("time_zone".into(), "'+02:00'".into())]);
        let txn = MirrorTxn {
            committed_at_us: 11,
            conn_id: 2,
            statements: vec![
                statement("UPDATE t SET x = 1 WHERE id = 1", &a),
                statement("UPDATE t SET x = 2 WHERE id = 2", &a2),
                statement("SET time_zone = '+02:00'", &b),
                statement("UPDATE t SET x = 3 WHERE id = 3", &a),
            ],
        };
        let rec = JournalRecord::Intent { token: 5, txn };
        let bytes = rec.encode();
        assert_eq!(bytes[0], RECORD_VERSION);
        // The long sql_mode literal is written once, not three times.
        let once = b"STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION";
        assert_eq!(memchr::memmem::find_iter(&bytes, once).count(), 1);
        let back = JournalRecord::decode(&bytes).unwrap();
        assert_eq!(back, rec);
        let JournalRecord::Intent { txn, .. } = back else {
            panic!("an intent was encoded")
        };
        let s = &txn.statements;
        assert!(Arc::ptr_eq(&s[0].session, &s[1].session));
        assert!(Arc::ptr_eq(&s[0].session, &s[3].session));
        assert!(!Arc::ptr_eq(&s[0].session, &s[2].session));
        // A statement whose session index points nowhere is refused.
        let mut broken = TxnOut::of(&txn);
        broken.statements[0].session = 9;
        let out = RecordOut::Intent {
            token: 1,
            txn: broken,
        };
        let bytes = postcard::to_extend(&out, vec![RECORD_VERSION]).unwrap();
        assert!(matches!(
            JournalRecord::decode(&bytes),
            Err(RecordError::Decode(m)) if m.contains("session settings 9 of 2")
        ));
    }

    /// The layout version 2 wrote (what a journal from before an upgrade
    /// holds): the statement text as a sequence of numbers, each
    /// statement with its own settings.
    #[derive(Serialize)]
    enum RecordV2 {
        Intent {
            token: u64,
            txn: TxnV2,
        },
        Outcome {
            intent: u64,
            committed: bool,
            at_us: i64,
        },
    }
    #[derive(Serialize)]
    struct TxnV2 {
        committed_at_us: i64,
        conn_id: u32,
        statements: Vec<StatementV2>,
    }
    #[derive(Serialize)]
    struct StatementV2 {
        db: Option<String>,
        sql: Vec<u8>,
        tables: Vec<String>,
        ddl: bool,
        pins: Pins,
        session: Vec<(String, String)>,
    }

    #[test]
    fn version_2_records_still_read() {
        let v2 = RecordV2::Intent {
            token: 8,
            txn: TxnV2 {
                committed_at_us: 4,
                conn_id: 3,
                statements: vec![StatementV2 {
                    db: None,
                    sql: b"INSERT INTO b VALUES (_binary'\xff')".to_vec(),
                    tables: vec!["b".into()],
                    ddl: false,
                    pins: Pins::default(),
                    session: vec![("foreign_key_checks".into(), "1".into())],
                }],
            },
        };
        let bytes = postcard::to_extend(&v2, vec![RECORD_VERSION_2]).unwrap();
        let JournalRecord::Intent { token, txn } = JournalRecord::decode(&bytes).unwrap() else {
            panic!("an intent was encoded")
        };
        assert_eq!(token, 8);
        assert_eq!(txn.conn_id, 3);
        assert_eq!(
            txn.statements[0].sql,
            b"INSERT INTO b VALUES (_binary'\xff')"
        );
        assert_eq!(
            *txn.statements[0].session,
            vec![("foreign_key_checks".to_string(), "1".to_string())]
        );
        let o = RecordV2::Outcome {
            intent: 8,
            committed: true,
            at_us: 9,
        };
        let bytes = postcard::to_extend(&o, vec![RECORD_VERSION_2]).unwrap();
        assert_eq!(
            JournalRecord::decode(&bytes).unwrap(),
            JournalRecord::Outcome {
                intent: 8,
                committed: true,
                at_us: 9
            }
        );
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        assert!(matches!(
            MirrorTxn::decode(&[9, 1, 2]),
            Err(RecordError::Version(9))
        ));
        assert!(MirrorTxn::decode(&[]).is_err());
        assert!(MirrorTxn::decode(&[1, 0xFF, 0xFF, 0xFF]).is_err());
    }
}
