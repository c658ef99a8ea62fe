//! What one journal record holds: a transaction that committed on the
//! primary, with everything the secondary needs to produce the same rows.
//!
//! Values the primary generated are pinned the way MySQL's statement-based
//! replication pins them: the statement's timestamp (NOW(), CURRENT_TIMESTAMP,
//! column defaults), the first auto-increment id it generated (INSERT_ID),
//! LAST_INSERT_ID() and the RAND() seeds; session settings that change a
//! write's meaning travel with each statement.

use serde::{Deserialize, Serialize};

/// Format version of a bare committed transaction (first byte).
const VERSION: u8 = 1;
/// Format version of a [`JournalRecord`] (intent or outcome).
const RECORD_VERSION: u8 = 2;

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
}

impl JournalRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Decodes either format; a version-1 record is a transaction known to
    /// have committed (token 0: nothing to resolve).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, rest)) => {
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
    /// to be spliced in).
    pub sql: Vec<u8>,
    /// Tables the statement writes (for `mirror: false` rules and divergence).
    pub tables: Vec<String>,
    /// DDL commits implicitly, so it is applied outside a transaction.
    pub ddl: bool,
    pub pins: Pins,
    /// Session variables as `name = SQL literal` (sql_mode, time_zone,
    /// character_set_client, foreign_key_checks, auto_increment_increment, …).
    pub session: Vec<(String, String)>,
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
                session: vec![("sql_mode".into(), "'STRICT_ALL_TABLES'".into())],
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
        assert_eq!(
            JournalRecord::decode(&txn.encode()).unwrap(),
            JournalRecord::Intent { token: 0, txn }
        );
        assert!(JournalRecord::decode(&[3, 0]).is_err());
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
