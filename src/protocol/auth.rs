//! mysql_native_password: stored hashes, client proof verification, salts.
//!
//! The server stores SHA1(SHA1(password)). A client proves knowledge of the
//! password by sending SHA1(password) XOR SHA1(salt || SHA1(SHA1(password))).

use rand::RngCore;
use sha1::{Digest, Sha1};

pub const NATIVE_PLUGIN: &str = "mysql_native_password";
pub const SALT_LEN: usize = 20;

/// The stored form of a proxy user's password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// The user has no password: only an empty auth response is accepted.
    Empty,
    /// SHA1(SHA1(password)).
    Native([u8; 20]),
}

impl std::fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::Native(_) => f.write_str("Native(<redacted>)"),
        }
    }
}

impl StoredPassword {
    pub fn from_plain(password: &str) -> Self {
        if password.is_empty() {
            return Self::Empty;
        }
        let stage1 = Sha1::digest(password.as_bytes());
        Self::Native(Sha1::digest(stage1).into())
    }

    /// Parses `*<40 hex>` (the format of mysql.user.authentication_string).
    pub fn from_hash(hash: &str) -> Result<Self, String> {
        if hash.is_empty() {
            return Ok(Self::Empty);
        }
        let hex = hash
            .strip_prefix('*')
            .ok_or_else(|| "password_hash must start with '*'".to_string())?;
        if hex.len() != 40 {
            return Err("password_hash must be '*' followed by 40 hex digits".into());
        }
        let mut out = [0u8; 20];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).map_err(|_| "password_hash is not hex")?;
            out[i] =
                u8::from_str_radix(s, 16).map_err(|_| "password_hash is not hex".to_string())?;
        }
        Ok(Self::Native(out))
    }

    /// Checks a client's mysql_native_password response against `salt`.
    pub fn verify(&self, salt: &[u8], response: &[u8]) -> bool {
        match self {
            Self::Empty => response.is_empty(),
            Self::Native(stored) => {
                if response.len() != 20 {
                    return false;
                }
                let mut h = Sha1::new();
                h.update(salt);
                h.update(stored);
                let mask = h.finalize();
                let mut stage1 = [0u8; 20];
                for i in 0..20 {
                    stage1[i] = response[i] ^ mask[i];
                }
                let candidate: [u8; 20] = Sha1::digest(stage1).into();
                // Constant-time comparison.
                candidate
                    .iter()
                    .zip(stored.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            }
        }
    }
}

/// A fresh salt: 20 random bytes, none of them NUL (the handshake carries the
/// salt as a NUL-terminated string).
pub fn new_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    for b in salt.iter_mut() {
        // Keep printable-ish, never NUL or '$' as the server does.
        *b = (*b & 0x7F).max(1);
        if *b == b'$' {
            *b = b'%';
        }
    }
    salt
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::scramble::scramble_native;

    #[test]
    fn verifies_native_scramble() {
        let salt = new_salt();
        let stored = StoredPassword::from_plain("app-secret");
        let good = scramble_native(&salt, b"app-secret").unwrap();
        let bad = scramble_native(&salt, b"wrong").unwrap();
        assert!(stored.verify(&salt, &good));
        assert!(!stored.verify(&salt, &bad));
        assert!(!stored.verify(&salt, &[]));
        assert!(!stored.verify(&salt, &good[..19]));
    }

    #[test]
    fn parses_mysql_hash_format() {
        // SELECT PASSWORD('app') in MariaDB.
        let h = StoredPassword::from_hash("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3").unwrap();
        assert_eq!(h, StoredPassword::from_plain("app"));
        assert!(StoredPassword::from_hash("5BCB").is_err());
        assert!(StoredPassword::from_hash("*ZZCB3E6AC345B435C7C2E6B7949A04CE6F6563D3").is_err());
    }

    #[test]
    fn empty_password_accepts_only_empty_response() {
        let salt = new_salt();
        assert!(StoredPassword::Empty.verify(&salt, &[]));
        assert!(!StoredPassword::Empty.verify(&salt, &[1; 20]));
    }

    #[test]
    fn salt_has_no_nul() {
        for _ in 0..100 {
            assert!(!new_salt().contains(&0));
        }
    }
}
