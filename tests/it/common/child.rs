//! A mirroring `tandem serve` child process, for tests that SIGKILL it.

use super::mirror::mirror_yaml;
use super::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// A mirroring `tandem serve` child process (so it can be SIGKILLed) over
/// fresh `primary` and `secondary` databases that both hold `schema`.
pub struct ChildTandem {
    pub dir: tempfile::TempDir,
    pub cfg: std::path::PathBuf,
    pub log: std::path::PathBuf,
    pub listen: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub child: std::process::Child,
}

impl ChildTandem {
    pub async fn start(primary: &str, secondary: &str, schema: &[&str]) -> Self {
        Self::start_with(primary, secondary, schema, "", None).await
    }

    /// Mirrors to the secondary through `secondary_port` (e.g. a relay).
    pub async fn start_via(
        primary: &str,
        secondary: &str,
        schema: &[&str],
        secondary_port: u16,
    ) -> Self {
        Self::start_full(primary, secondary, schema, "", None, secondary_port).await
    }

    /// `migration_extra`: more keys of the `migration:` block, indented.
    /// `journal_fs_kib`: the journal directory is a tmpfs of that size,
    /// mounted in a mount namespace of the child's own (`unshare -m`), so
    /// the journal's disk fills up for real.
    pub async fn start_with(
        primary: &str,
        secondary: &str,
        schema: &[&str],
        migration_extra: &str,
        journal_fs_kib: Option<u32>,
    ) -> Self {
        Self::start_full(
            primary,
            secondary,
            schema,
            migration_extra,
            journal_fs_kib,
            MARIADB_PORT,
        )
        .await
    }

    async fn start_full(
        primary: &str,
        secondary: &str,
        schema: &[&str],
        migration_extra: &str,
        journal_fs_kib: Option<u32>,
        secondary_port: u16,
    ) -> Self {
        fresh_database(primary).await;
        fresh_database(secondary).await;
        for db in [primary, secondary] {
            let mut c = Conn::new(direct_opts(db)).await.unwrap();
            for ddl in schema {
                c.query_drop(*ddl).await.unwrap();
            }
            c.disconnect().await.unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let (listen, admin) = (free_addr(), free_addr());
        let yaml = mirror_yaml(
            primary,
            secondary,
            secondary_port,
            &dir.path().join("journal"),
            &dir.path().join("rules"),
            migration_extra,
        )
        .replace(
            "listen: 127.0.0.1:0",
            &format!("listen: {listen}\nadmin: {admin}"),
        );
        let cfg = dir.path().join("tandem.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let log = dir.path().join("tandem.log");
        let child = match journal_fs_kib {
            None => spawn_tandem(&cfg, &log),
            Some(kib) => {
                let journal = dir.path().join("journal");
                std::fs::create_dir_all(&journal).unwrap();
                spawn_in_tmpfs(&cfg, &log, &journal, kib)
            }
        };
        wait_listening(listen).await;
        Self {
            dir,
            cfg,
            log,
            listen,
            admin,
            child,
        }
    }

    pub fn journal(&self) -> std::path::PathBuf {
        self.dir.path().join("journal")
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub async fn restart(&mut self) {
        self.child = spawn_tandem(&self.cfg, &self.log);
        wait_listening(self.listen).await;
    }
}

impl Drop for ChildTandem {
    /// A failed assertion must not leave the server running.
    /// When the test failed, the child's directory (log, journal, config)
    /// is kept under `target/failed-children/` and its path printed: a
    /// rare interleaving is studied from what the server wrote.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("failed-children")
                .join(format!("{}-{}", std::process::id(), self.listen.port()));
            if copy_tree(self.dir.path(), &keep).is_ok() {
                eprintln!(
                    "kept the child Tandem's log and journal in {}",
                    keep.display()
                );
            }
        }
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// `tandem serve` as a child process (so it can be SIGKILLed).
pub fn spawn_tandem(cfg: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    spawn_tandem_with(cfg, log, None)
}

/// `spawn_tandem`, crashing at `failpoint` (`TANDEM_FAILPOINT`) when given.
pub fn spawn_tandem_with(
    cfg: &std::path::Path,
    log: &std::path::Path,
    failpoint: Option<&str>,
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.args(["serve", "--config"])
        .arg(cfg)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    match failpoint {
        Some(f) => cmd.env("TANDEM_FAILPOINT", f),
        None => cmd.env_remove("TANDEM_FAILPOINT"),
    };
    cmd.spawn().unwrap()
}

/// Polls /status until the mirror has applied everything journaled.
pub async fn wait_caught_up_http(admin: std::net::SocketAddr) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (code, _, body) = http(admin, "GET", "/status").await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["mirror"]["lag_transactions"] == 0 {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "no catch-up: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `tandem serve` in a mount namespace of its own where `dir` is a tmpfs
/// of `kib` KiB.
pub fn spawn_in_tmpfs(
    cfg: &std::path::Path,
    log: &std::path::Path,
    dir: &std::path::Path,
    kib: u32,
) -> std::process::Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    std::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            &format!("mount -t tmpfs -o size={kib}k tandem-journal \"$1\" && exec \"$2\" serve --config \"$3\""),
            "sh",
        ])
        .arg(dir)
        .arg(env!("CARGO_BIN_EXE_tandem"))
        .arg(cfg)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}
