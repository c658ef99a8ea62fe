//! Hash sharding over virtual buckets, stable and documented so that
//! another program, and SQL, can compute it (docs/sharding.md):
//!
//! ```text
//! bucket = CRC32(canonical bytes) mod buckets        (CRC-32/ISO-HDLC, as MySQL's CRC32())
//! shard  = owners[bucket]                            (default: shards[bucket mod N])
//! ```
//!
//! Canonical bytes: an integer key's value in decimal ASCII (`-12`, `5`),
//! whatever its column type or literal form; a string key's comparison
//! form (`router::shard::Fold`): bytes as stored for binary strings,
//! trailing spaces removed under `_bin` collations, and upper-cased ASCII
//! with trailing spaces removed under `_ci` collations. In SQL:
//! `CRC32(CAST(k AS CHAR)) % 4096`, `CRC32(TRIM(TRAILING ' ' FROM k)) % 4096`,
//! `CRC32(UPPER(TRIM(TRAILING ' ' FROM k))) % 4096`.

use super::Canon;

/// The bytes a canonical value hashes as (None: not a hashable type).
pub fn canonical_bytes(v: &Canon) -> Option<std::borrow::Cow<'_, [u8]>> {
    match v {
        Canon::Int(i) => Some(i.to_string().into_bytes().into()),
        Canon::Bytes(b) => Some(b.as_slice().into()),
        Canon::Temporal(_) => None,
    }
}

/// The bucket of `bytes` among `buckets`.
pub fn bucket(bytes: &[u8], buckets: u32) -> u32 {
    crc32fast::hash(bytes) % buckets.max(1)
}
