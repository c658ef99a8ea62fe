//! Who may log in and as whom: proxy users and their passwords, the
//! database accounts they act as (`backend_user`), per-user limits, TLS for
//! application connections, and the `Secret` type that keeps passwords and
//! tokens out of every printout.

use super::model::{self, RawConfig};
use super::{BackendConfig, StoredPassword};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// The access part of a validated config.
pub(super) struct Access {
    pub(super) tls: Option<ClientTls>,
    pub(super) users: HashMap<String, StoredPassword>,
    pub(super) users_require_tls: HashSet<String>,
    pub(super) accounts: HashMap<String, Account>,
    pub(super) user_limits: HashMap<String, usize>,
}

/// Validates `users:` and `tls:`; problems go to `errors`, with their keys.
pub(super) fn validate(raw: &RawConfig, errors: &mut Vec<String>) -> Access {
    let tls = raw.tls.as_ref().and_then(|t| match ClientTls::load(t) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(format!("tls: {e}"));
            None
        }
    });
    let users_require_tls: std::collections::HashSet<String> = raw
        .users
        .iter()
        .filter(|u| u.require_tls)
        .map(|u| u.name.clone())
        .collect();
    if !users_require_tls.is_empty() && raw.tls.is_none() {
        errors.push(
            "users[].require_tls: set, but no tls: section (certificate and key) to log in with"
                .to_string(),
        );
    }
    let mut accounts = HashMap::new();
    for (i, u) in raw.users.iter().enumerate() {
        let key = format!("users[{i}]");
        let sources = [
            u.backend_password.is_some(),
            u.backend_password_file.is_some(),
            u.backend_password_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            errors.push(format!(
                "{key}: set at most one of backend_password, backend_password_file, backend_password_env"
            ));
            continue;
        }
        let Some(user) = &u.backend_user else {
            if sources.iter().any(|s| *s) {
                errors.push(format!("{key}: a backend password without backend_user"));
            }
            continue;
        };
        let password = if let Some(p) = &u.backend_password {
            p.clone()
        } else if let Some(f) = &u.backend_password_file {
            match std::fs::read_to_string(f) {
                Ok(t) => t.lines().next().unwrap_or_default().to_string(),
                Err(e) => {
                    errors.push(format!("{key}.backend_password_file: cannot read {f}: {e}"));
                    continue;
                }
            }
        } else if let Some(v) = &u.backend_password_env {
            match std::env::var(v) {
                Ok(p) => p,
                Err(_) => {
                    errors.push(format!("{key}.backend_password_env: {v} is not set"));
                    continue;
                }
            }
        } else {
            String::new()
        };
        accounts.insert(
            u.name.clone(),
            Account {
                user: user.clone(),
                password: Secret::new(&password),
            },
        );
    }
    let mut users = HashMap::new();
    for (i, u) in raw.users.iter().enumerate() {
        let key = format!("users[{i}]");
        if u.name.is_empty() {
            errors.push(format!("{key}.name: must not be empty"));
        }
        let stored = match (&u.password, &u.password_hash) {
            (Some(_), Some(_)) => {
                errors.push(format!(
                    "{key}: set either password or password_hash, not both"
                ));
                continue;
            }
            (None, None) => {
                errors.push(format!("{key}: password or password_hash is required"));
                continue;
            }
            (Some(p), None) => StoredPassword::from_plain(p),
            (None, Some(h)) => match StoredPassword::from_hash(h) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{key}.password_hash: {e}"));
                    continue;
                }
            },
        };
        if users.insert(u.name.clone(), stored).is_some() {
            errors.push(format!("{key}.name: user {:?} is listed twice", u.name));
        }
    }
    let user_limits = raw
        .users
        .iter()
        .filter_map(|u| u.max_connections.map(|n| (u.name.clone(), n)))
        .collect();
    Access {
        tls,
        users,
        users_require_tls,
        accounts,
        user_limits,
    }
}

/// The admin API's bearer token (`admin_token_file`, else
/// `TANDEM_ADMIN_TOKEN`); an admin address off loopback needs one.
pub(super) fn admin_token(
    raw: &RawConfig,
    admin: Option<std::net::SocketAddr>,
    errors: &mut Vec<String>,
) -> Option<Secret> {
    let admin_token = match &raw.admin_token_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => {
                let t = text.lines().next().unwrap_or_default().trim();
                if t.is_empty() {
                    errors.push(format!("admin_token_file: {p} is empty"));
                }
                (!t.is_empty()).then(|| Secret::new(t))
            }
            Err(e) => {
                errors.push(format!("admin_token_file: cannot read {p}: {e}"));
                None
            }
        },
        None => std::env::var("TANDEM_ADMIN_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(|t| Secret::new(&t)),
    };
    if let (Some(a), None) = (admin, &admin_token) {
        if !a.ip().is_loopback() {
            errors.push(format!(
                "admin: {a} can be reached from other hosts and no admin token is set: anyone who reaches it could reload the config or cut over; set admin_token_file (or TANDEM_ADMIN_TOKEN), or bind 127.0.0.1"
            ));
        }
    }
    admin_token
}

/// A secret from the config (a token): compared, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(std::sync::Arc<str>);

impl Secret {
    pub fn new(s: &str) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for comparing it or sending it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// TLS for application connections: the rustls server config built from
/// `tls.cert` and `tls.key` (TLS 1.2 and 1.3 only), and whether plain-text
/// logins are refused.
#[derive(Clone)]
pub struct ClientTls {
    pub config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    pub require: bool,
    pub cert: PathBuf,
    /// Of the certificate and key files and `require`: a reload that
    /// changes none of them is no change (a certificate swap is one).
    pub digest: u64,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("cert", &self.cert)
            .field("require", &self.require)
            .finish()
    }
}

impl ClientTls {
    fn load(raw: &model::RawTls) -> Result<Self, String> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&read(&raw.cert)?);
        h.update(&read(&raw.key)?);
        h.update(&[u8::from(raw.require)]);
        let digest = h.digest();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&raw.cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("cert {}: {e}", raw.cert))?;
        if certs.is_empty() {
            return Err(format!("cert {}: no certificate in it", raw.cert));
        }
        let key =
            PrivateKeyDer::from_pem_file(&raw.key).map_err(|e| format!("key {}: {e}", raw.key))?;
        let config = rustls::ServerConfig::builder_with_protocol_versions(&[
            &rustls::version::TLS13,
            &rustls::version::TLS12,
        ])
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert {} with key {}: {e}", raw.cert, raw.key))?;
        Ok(ClientTls {
            config: std::sync::Arc::new(config),
            require: raw.require,
            cert: PathBuf::from(&raw.cert),
            digest,
        })
    }
}

/// A database account a proxy user acts as on the backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub password: Secret,
}

impl Account {
    /// `b` with this account's credentials instead of the URL's.
    pub fn on(&self, b: &BackendConfig) -> BackendConfig {
        let mut b = b.clone();
        b.user = self.user.clone();
        b.password = self.password.expose().to_string();
        b
    }
}
