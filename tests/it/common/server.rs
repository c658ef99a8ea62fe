//! A MariaDB server of the test's own: `mariadb-install-db` into a
//! temporary directory, `mariadbd` on a free port and its own socket, with
//! the settings the test needs (another time zone, another
//! auto-increment lock mode), stopped when dropped. For what one shared
//! server cannot show: two servers that differ.

use mysql_async::{Opts, OptsBuilder};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct OwnServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl OwnServer {
    /// Starts a server with `args` (e.g. `--default-time-zone=+05:00`) and
    /// environment `env` (e.g. `TZ`); panics with its error log when it
    /// does not come up.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> OwnServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        // Its bootstrap's temporary tables in a directory of its own too:
        // in /tmp their names (pid, thread, counter) can meet the shared
        // server's, which then removes them.
        let install = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            install.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        let port = super::free_addr().port();
        let log = dir.path().join("error.log");
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            // Temporary tables of its own: the shared server's are in /tmp.
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--bind-address=127.0.0.1")
            .arg("--user=root")
            .arg("--skip-log-bin")
            .arg("--innodb-buffer-pool-size=32M")
            .arg("--max-connections=200")
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("mariadbd starts");
        let server = OwnServer {
            port,
            child,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = mysql_async::Conn::new(server.opts("mysql")).await {
                let _ = c.disconnect().await;
                return server;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "own mariadbd on port {port} did not come up: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Root connection options for database `db` on this server.
    pub fn opts(&self, db: &str) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("root"))
            .db_name(Some(db))
            .prefer_socket(false)
            .into()
    }
}

impl OwnServer {
    /// SIGKILLs the server (a crash: nothing flushed, clients cut off).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
