//! Wire and end-to-end tests: one test crate (one link, shared helpers
//! compiled once), each module a topic, all against the real MariaDB.

mod common;

mod admin;
mod auth_plugins;
mod backend_tls;
mod backfill;
mod backfill_live;
mod call;
mod clients;
mod clients_view;
mod cluster;
mod cluster_xa;
mod cutover;
mod ddl;
mod effects;
mod exactness;
mod fidelity;
mod fuzz_corpus;
mod inflight;
mod journal_full;
mod load_data;
mod mirror;
mod mirror_applier;
mod postgres;
mod privileges;
mod protocol;
mod reload;
mod session_move;
mod shadow;
mod soak;
mod staged;
mod temporary;
mod tls;
mod two_servers;
mod verify;
mod xa;
