//! Proxy users' stored passwords, client proof verification, salts.
//!
//! mysql_native_password: the server stores SHA1(SHA1(password)). A client
//! proves knowledge of the password by sending
//! SHA1(password) XOR SHA1(salt || SHA1(SHA1(password))).
//!
//! caching_sha2_password's fast path: the client sends
//! SHA256(password) XOR SHA256(SHA256(SHA256(password)) || salt); the server
//! checks it against SHA256(SHA256(password)), which it knows from a
//! plain-text config password or from an earlier full authentication (the
//! "cache"; see `frontend::sha2`).

use rand::RngCore;
use sha1::{Digest, Sha1};

pub const NATIVE_PLUGIN: &str = "mysql_native_password";
pub const SHA2_PLUGIN: &str = "caching_sha2_password";
pub const SALT_LEN: usize = 20;

/// The stored form of a proxy user's password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// The user has no password: only an empty auth response is accepted.
    Empty,
    /// SHA1(SHA1(password)) (from `password_hash`).
    Native([u8; 20]),
    /// Both verifiers (from a plain `password`): SHA1(SHA1(password)) and
    /// SHA256(SHA256(password)).
    Both([u8; 20], [u8; 32]),
}

impl std::fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::Native(_) => f.write_str("Native(<redacted>)"),
            Self::Both(..) => f.write_str("Both(<redacted>)"),
        }
    }
}

impl StoredPassword {
    pub fn from_plain(password: &str) -> Self {
        if password.is_empty() {
            return Self::Empty;
        }
        let stage1 = Sha1::digest(password.as_bytes());
        Self::Both(
            Sha1::digest(stage1).into(),
            sha2_verifier_of(password.as_bytes()),
        )
    }

    /// SHA256(SHA256(password)) when known from the config.
    pub fn sha2_verifier(&self) -> Option<[u8; 32]> {
        match self {
            Self::Both(_, v) => Some(*v),
            _ => None,
        }
    }

    /// Checks a password the client sent in full (caching_sha2_password's
    /// full authentication, over TLS or RSA-encrypted).
    pub fn check_clear(&self, password: &[u8]) -> bool {
        match self {
            Self::Empty => password.is_empty(),
            Self::Native(stored) | Self::Both(stored, _) => {
                let candidate: [u8; 20] = Sha1::digest(Sha1::digest(password)).into();
                same(&candidate, stored)
            }
        }
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
            Self::Native(stored) | Self::Both(stored, _) => {
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
                same(&candidate, stored)
            }
        }
    }
}

/// Constant-time comparison.
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// SHA256(SHA256(password)): what caching_sha2_password's fast path checks.
pub fn sha2_verifier_of(password: &[u8]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(Sha256::digest(password)).into()
}

/// Checks a caching_sha2_password fast-path response against `salt` and
/// the verifier SHA256(SHA256(password)).
pub fn sha2_fast_ok(verifier: &[u8; 32], salt: &[u8], response: &[u8]) -> bool {
    use sha2::{Digest as _, Sha256};
    if response.len() != 32 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(verifier);
    h.update(salt);
    let mask = h.finalize();
    let mut stage1 = [0u8; 32];
    for i in 0..32 {
        stage1[i] = response[i] ^ mask[i];
    }
    let candidate: [u8; 32] = Sha256::digest(stage1).into();
    same(&candidate, verifier)
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
        assert!(h.check_clear(b"app") && !h.check_clear(b"ap"));
        assert_eq!(
            h.sha2_verifier(),
            None,
            "a native hash has no SHA-256 verifier"
        );
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
    fn verifies_caching_sha2_fast_scramble() {
        use mysql_common::scramble::scramble_sha256;
        let salt = new_salt();
        let stored = StoredPassword::from_plain("app-secret");
        let v = stored
            .sha2_verifier()
            .expect("known from the plain password");
        let good = scramble_sha256(&salt, b"app-secret").unwrap();
        let bad = scramble_sha256(&salt, b"wrong").unwrap();
        let other_salt = scramble_sha256(&new_salt(), b"app-secret").unwrap();
        assert!(sha2_fast_ok(&v, &salt, &good));
        assert!(!sha2_fast_ok(&v, &salt, &bad));
        assert!(!sha2_fast_ok(&v, &salt, &other_salt));
        assert!(!sha2_fast_ok(&v, &salt, &good[..31]));
        assert!(stored.check_clear(b"app-secret"));
        assert!(!stored.check_clear(b"app-secre"));
        assert!(StoredPassword::Empty.check_clear(b""));
    }

    #[test]
    fn salt_has_no_nul() {
        for _ in 0..100 {
            assert!(!new_salt().contains(&0));
        }
    }
}
