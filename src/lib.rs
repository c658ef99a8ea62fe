//! Tandem: a MySQL-protocol proxy for zero-downtime database migrations.
//! See ARCHITECTURE.md for the code map and the invariants each module keeps.

pub mod admin;
pub mod backend;
pub mod backfill;
pub mod config;
pub mod cutover;
pub mod failpoint;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod mirror;
pub mod pg;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod schema;
pub mod schema_objects;
pub mod server;
pub mod shadow;
pub mod shard_tools;
pub mod sql;
pub mod state;
pub mod verify;

#[cfg(test)]
mod robustness_tests;
