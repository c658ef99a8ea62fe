//! caching_sha2_password as a MySQL 8 server does it, for clients whose
//! login answers with that plugin (MySQL 8 connectors' default; announced
//! by Tandem under `auth_plugin: caching_sha2_password`).
//!
//! - Fast path: the scramble is checked against SHA256(SHA256(password)),
//!   known from a plain-text config password or cached after this user's
//!   last full authentication; the server answers `0x01 0x03`, then OK.
//! - Full path (`0x01 0x04`): over TLS the client sends its password; in
//!   clear it asks for the server's RSA public key (`0x02`) and sends the
//!   password XOR the salt, RSA-OAEP encrypted. The password is checked
//!   against the stored verifier and its SHA-256 verifier cached, keyed by
//!   the stored password so that a changed password forgets it.
//!
//! The RSA key pair (3072 bits, `rsa` 0.10: constant-time private key
//! operations) is made on the first request for it and kept for the
//! process's life; its public half is what the client is sent.

use crate::protocol::auth::{sha2_fast_ok, sha2_verifier_of, StoredPassword};
use crate::protocol::wire::Wire;
use crate::protocol::ProtocolError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const MAX_AUTH_PACKET: usize = 64 * 1024;
const FAST_AUTH_OK: [u8; 2] = [0x01, 0x03];
const FULL_AUTH: [u8; 2] = [0x01, 0x04];
const REQUEST_PUBLIC_KEY: u8 = 0x02;

/// The verifier cache and the RSA key, shared by all sessions.
#[derive(Default)]
pub struct Sha2Auth {
    cache: Mutex<HashMap<String, (StoredPassword, [u8; 32])>>,
    rsa: tokio::sync::OnceCell<Arc<RsaKey>>,
}

struct RsaKey {
    key: rsa::PrivateKey,
    pem: String,
}

impl Sha2Auth {
    fn verifier(&self, user: &str, stored: &StoredPassword) -> Option<[u8; 32]> {
        stored.sha2_verifier().or_else(|| {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(user)
                .filter(|(s, _)| s == stored)
                .map(|(_, v)| *v)
        })
    }

    fn remember(&self, user: &str, stored: &StoredPassword, password: &[u8]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            user.to_string(),
            (stored.clone(), sha2_verifier_of(password)),
        );
    }

    async fn rsa(&self) -> Result<Arc<RsaKey>, ProtocolError> {
        self.rsa
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(|| {
                    use rsa::pkcs8::{EncodePublicKey, LineEnding};
                    use rsa::Generate;
                    let key = rsa::PrivateKey::try_generate().map_err(|e| e.to_string())?;
                    let pem = key
                        .to_public_key()
                        .to_public_key_pem(LineEnding::LF)
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(Arc::new(RsaKey { key, pem }))
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot make the RSA key for caching_sha2_password");
                    ProtocolError::Malformed("RSA key for caching_sha2_password")
                })
            })
            .await
            .cloned()
    }
}

/// Runs the caching_sha2_password exchange after the client's scramble
/// `data` (for `salt`); `seq` is the next sequence id to send. True:
/// authenticated (the caller sends OK); false: the caller sends the
/// access-denied error.
pub(super) async fn authenticate(
    shared: &crate::state::Shared,
    client: &mut Wire,
    user: &str,
    stored: Option<&StoredPassword>,
    salt: &[u8],
    data: &[u8],
    seq: &mut u8,
) -> Result<bool, ProtocolError> {
    let (auth, metrics) = (&shared.sha2, &shared.metrics);
    if data.is_empty() {
        // No password given.
        return Ok(stored == Some(&StoredPassword::Empty));
    }
    if let Some(v) = stored.and_then(|s| auth.verifier(user, s)) {
        if sha2_fast_ok(&v, salt, data) {
            client.send_packet(seq, &FAST_AUTH_OK).await?;
            count(metrics, "fast");
            return Ok(true);
        }
    }
    // Unknown user, nothing cached or a mismatch: the full path (the
    // same exchange whatever the reason, as MySQL's).
    client.send_packet(seq, &FULL_AUTH).await?;
    let mut answer = read(client, seq).await?;
    let password = if client.is_tls() {
        let mut p = answer;
        if p.last() == Some(&0) {
            p.pop();
        }
        p
    } else {
        let key = auth.rsa().await?;
        if answer == [REQUEST_PUBLIC_KEY] {
            let mut msg = Vec::with_capacity(key.pem.len() + 1);
            msg.push(0x01);
            msg.extend_from_slice(key.pem.as_bytes());
            client.send_packet(seq, &msg).await?;
            answer = read(client, seq).await?;
        }
        // A client that had the key already sends the ciphertext at once.
        match key.key.oaep_decrypt::<sha1_oaep::Sha1>(&answer) {
            Ok(mut p) => {
                for (i, b) in p.iter_mut().enumerate() {
                    *b ^= salt[i % salt.len()];
                }
                if p.last() == Some(&0) {
                    p.pop();
                }
                p
            }
            Err(_) => return Ok(false),
        }
    };
    let Some(stored) = stored else {
        return Ok(false);
    };
    let ok = stored.check_clear(&password);
    if ok {
        auth.remember(user, stored, &password);
        count(
            metrics,
            if client.is_tls() {
                "full_tls"
            } else {
                "full_rsa"
            },
        );
    }
    Ok(ok)
}

fn count(metrics: &crate::metrics::Metrics, path: &'static str) {
    metrics
        .sha2_logins
        .get_or_create(&crate::metrics::PathLabel { path })
        .inc();
}

async fn read(client: &mut Wire, seq: &mut u8) -> Result<Vec<u8>, ProtocolError> {
    let p = client.read_packet(Some(*seq), MAX_AUTH_PACKET).await?;
    *seq = p.last_seq.wrapping_add(1);
    Ok(p.payload)
}
