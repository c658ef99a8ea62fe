//! PostgreSQL as the secondary of a MySQL primary, step one: the schema a
//! MySQL table maps to (`mapping`), a chunked, resumable copy through
//! binary COPY (`copy`, `encode`) and a comparison of canonical values
//! across the two engines (`compare`, `canon`).
//!
//! The mapping's goal is that PostgreSQL hands back the values the
//! application reads from MySQL, not the most idiomatic PostgreSQL schema;
//! what cannot be mapped is refused with the reason, never approximated.
//! Mirroring writes into PostgreSQL is a later step: `tandem serve`
//! refuses a PostgreSQL secondary (`Config::serve_refusal`).

pub mod canon;
pub mod compare;
pub mod copy;
pub mod ddl;
pub mod encode;
pub mod mapping;

use crate::config::BackendConfig;
use tokio_postgres::{Client, NoTls};

/// A PostgreSQL identifier, quoted (case kept).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A table's qualified name in the backend's schema.
pub fn qualified(b: &BackendConfig, table: &str) -> String {
    format!("{}.{}", quote_ident(schema_of(b)), quote_ident(table))
}

/// The schema Tandem creates tables in (`?schema=` in the URL).
pub fn schema_of(b: &BackendConfig) -> &str {
    b.schema.as_deref().unwrap_or("public")
}

/// Opens a session to a PostgreSQL backend, pinned to UTC (TIMESTAMPTZ
/// values are written and read as instants) and to the output styles
/// `canon` reads.
pub async fn connect(b: &BackendConfig) -> Result<Client, String> {
    if b.tls.is_some() {
        return Err(format!(
            "{}: TLS to a PostgreSQL backend is not supported yet; remove ssl-mode from its URL",
            b.name
        ));
    }
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&b.host)
        .port(b.port)
        .user(&b.user)
        .application_name("tandem");
    if !b.password.is_empty() {
        cfg.password(&b.password);
    }
    if let Some(db) = &b.database {
        cfg.dbname(db);
    }
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| format!("{}: {}", b.name, describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    client
        .batch_execute(
            "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 1; SET bytea_output = 'hex'; \
             SET client_min_messages = warning",
        )
        .await
        .map_err(|e| format!("{}: {}", b.name, describe(&e)))?;
    Ok(client)
}

/// A PostgreSQL error with the server's message, detail and hint.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} ({})", d.message(), d.code().code());
            if let Some(detail) = d.detail() {
                s.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = d.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => e.to_string(),
    }
}
