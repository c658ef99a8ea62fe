//! What a session on a cluster is bound to: one connection per shard it
//! has touched, opened on first use with the client's capability flags,
//! collation and account, then brought to the session's state by replaying
//! its prelude (the database it selected, its SETs) so that every shard
//! connection behaves as the one connection of a direct client would.

use super::{BackendConn, BackendError, Lease, Pool};
use crate::config::Account;
use crate::protocol::command::COM_QUERY;
use crate::protocol::response::Expect;
use mysql_common::constants::CapabilityFlags;
use std::collections::HashMap;
use std::sync::Arc;

pub struct ShardSet {
    /// Shard backend names, by shard index.
    names: Vec<String>,
    leases: Vec<Option<Lease>>,
    caps: CapabilityFlags,
    ext_caps: u32,
    collation: u8,
    account: Option<Account>,
    /// Statements that bring a new shard connection to the session's
    /// state, in order (`USE`, SETs), with the shard-specific database.
    prelude: Vec<Prelude>,
}

/// One replayed statement.
#[derive(Debug, Clone)]
pub enum Prelude {
    /// Select the shard's physical database.
    UseDatabase,
    /// A statement run as it is.
    Sql(Vec<u8>),
}

impl ShardSet {
    /// Binds shard 0's `lease` (the login's) among `names`.
    pub fn new(
        names: Vec<String>,
        lease: Lease,
        caps: CapabilityFlags,
        ext_caps: u32,
        collation: u8,
        account: Option<Account>,
        selected_db: bool,
    ) -> Self {
        let mut leases: Vec<Option<Lease>> = names.iter().map(|_| None).collect();
        leases[0] = Some(lease);
        ShardSet {
            names,
            leases,
            caps,
            ext_caps,
            collation,
            account,
            prelude: if selected_db {
                vec![Prelude::UseDatabase]
            } else {
                Vec::new()
            },
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, shard: usize) -> &str {
        &self.names[shard]
    }

    /// Shards with an open connection.
    pub fn open_shards(&self) -> Vec<usize> {
        (0..self.leases.len())
            .filter(|&i| self.leases[i].is_some())
            .collect()
    }

    /// Remembers a statement to replay on connections opened later (it
    /// already ran on the open ones).
    pub fn remember(&mut self, p: Prelude) {
        if matches!(p, Prelude::UseDatabase) {
            self.prelude.retain(|x| !matches!(x, Prelude::UseDatabase));
        }
        self.prelude.push(p);
    }

    /// Forgets the session state (COM_RESET_CONNECTION, change user).
    pub fn forget_state(&mut self, keep_db: bool) {
        self.prelude
            .retain(|p| keep_db && matches!(p, Prelude::UseDatabase));
    }

    /// The connection to `shard`, opened (and brought to the session's
    /// state) when the session has none yet. `dbs`: each shard's physical
    /// database.
    pub async fn conn(
        &mut self,
        pools: &HashMap<String, Arc<Pool>>,
        dbs: &[Option<String>],
        shard: usize,
    ) -> Result<&mut BackendConn, BackendError> {
        if self.leases[shard].is_none() {
            let pool = pools.get(&self.names[shard]).ok_or_else(|| {
                BackendError::Unsupported(format!("no pool for shard {}", self.names[shard]))
            })?;
            let mut lease = pool
                .acquire(
                    self.caps,
                    self.ext_caps,
                    self.collation,
                    self.account.as_ref(),
                )
                .await?;
            lease.reusable = false;
            for p in &self.prelude {
                match p {
                    Prelude::UseDatabase => {
                        if let Some(db) = dbs.get(shard).cloned().flatten() {
                            if lease.conn().current_db.as_deref() != Some(db.as_str()) {
                                lease.conn().init_db(&db).await?;
                            }
                        }
                    }
                    Prelude::Sql(sql) => {
                        let mut payload = vec![COM_QUERY];
                        payload.extend_from_slice(sql);
                        lease.conn().run(&payload, Expect::ResultSet).await?;
                    }
                }
            }
            lease.reusable = true;
            self.leases[shard] = Some(lease);
        }
        match self.leases[shard].as_mut() {
            Some(l) => Ok(l.conn()),
            None => Err(BackendError::Unsupported(
                "shard connection vanished".into(),
            )),
        }
    }

    /// The open connection to `shard` (None: not opened).
    pub fn open(&mut self, shard: usize) -> Option<&mut BackendConn> {
        self.leases[shard].as_mut().map(|l| l.conn())
    }

    /// The wires of `shards` (open, ascending), for reading several
    /// answers at once.
    pub fn wires(&mut self, shards: &[usize]) -> Vec<&mut crate::protocol::Wire> {
        self.leases
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| shards.contains(i))
            .filter_map(|(_, l)| l.as_mut().map(|l| &mut l.conn().wire))
            .collect()
    }

    /// Marks a command in flight on `shard` (false) or finished (true).
    pub fn set_reusable(&mut self, shard: usize, reusable: bool) {
        if let Some(l) = self.leases[shard].as_mut() {
            l.reusable = reusable;
        }
    }

    /// Closes `shard`'s connection (its state unknown, e.g. a branch that
    /// may still be open): the server rolls back what it held, and the
    /// next use opens a new one.
    pub fn discard(&mut self, shard: usize) {
        if let Some(mut l) = self.leases.get_mut(shard).and_then(Option::take) {
            l.reusable = false;
        }
    }

    /// Closes every connection instead of pooling it (a session that may
    /// leave state behind on a server).
    pub fn discard_all(&mut self) {
        for l in self.leases.iter_mut().flatten() {
            l.reusable = false;
        }
    }
}
