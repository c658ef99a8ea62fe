//! The admin API: /status JSON and /metrics in Prometheus text format.

use crate::common::*;
use mysql_async::prelude::*;

/// Checks every line against the text exposition format; returns samples.
fn parse_exposition(body: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            assert!(matches!(kind, "HELP" | "TYPE" | "UNIT"), "{line}");
            let name = parts.next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').unwrap();
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
                }
            }
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.push((series.to_string(), v));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {series} in {samples:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics() {
    let env = TestEnv::start_with("admin_api", "admin: 127.0.0.1:0").await;
    let admin = env.server.admin_addr.expect("admin listener");
    let mut c = env.proxy().await;
    c.query_drop("CREATE TABLE m (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO m VALUES (1)").await.unwrap();
    for _ in 0..3 {
        let _: Vec<i32> = c.query("SELECT id FROM m").await.unwrap();
    }
    c.query_drop("THIS IS NOT SQL").await.unwrap_err();
    let _ = mysql_async::Conn::new(proxy_builder(env.addr, None).pass(Some("wrong"))).await;

    let (code, ctype, body) = http(admin, "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        ctype.contains("openmetrics-text") || ctype.contains("text/plain"),
        "{ctype}"
    );
    let samples = parse_exposition(&body);
    assert!(sample(&samples, "tandem_statements_total{class=\"read\"}") >= 3.0);
    assert!(sample(&samples, "tandem_statements_total{class=\"write\"}") >= 1.0);
    assert!(sample(&samples, "tandem_statements_total{class=\"ddl\"}") >= 1.0);
    assert!(sample(&samples, "tandem_statements_unparsed_total") >= 1.0);
    assert!(sample(&samples, "tandem_auth_failures_total") >= 1.0);
    assert_eq!(sample(&samples, "tandem_client_connections"), 1.0);
    assert!(sample(&samples, "tandem_backend_connections{backend=\"legacy\"}") >= 1.0);
    assert!(sample(&samples, "tandem_route_cache_hits_total") >= 2.0);

    let (code, ctype, body) = http(admin, "GET", "/status").await;
    assert_eq!(code, 200);
    assert!(ctype.contains("application/json"), "{ctype}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["primary"], "legacy");
    assert_eq!(status["secondary"], serde_json::Value::Null);
    assert_eq!(status["clients"]["connected"], 1);
    assert_eq!(status["backends"]["legacy"]["database"], env.db.as_str());
    assert!(status["router"]["unparsed"].as_u64().unwrap() >= 1);

    let (code, _, _) = http(admin, "GET", "/nope").await;
    assert_eq!(code, 404);
    c.disconnect().await.unwrap();
    env.stop().await;
}

/// An HTTP request with an optional bearer token; returns the status code.
async fn call(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `POST /reload` and `POST /cutover` accepted anyone who reached the
/// admin port. With a token every POST needs it (a wrong one is refused
/// too, counted in `tandem_admin_refused_total`); GETs stay open under
/// the default scope, and `admin_token_scope: status` closes /status but
/// leaves /metrics to Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_posts_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.token");
    std::fs::write(&file, "s3cret-admin-token\n").unwrap();
    let extra = format!("admin: 127.0.0.1:0\nadmin_token_file: {}", file.display());
    let env = TestEnv::start_with("admin_token", &extra).await;
    let admin = env.server.admin_addr.expect("admin listener");
    assert_eq!(call(admin, "POST", "/reload", None).await, 401);
    assert_eq!(call(admin, "POST", "/reload", Some("wrong")).await, 401);
    assert_eq!(
        call(admin, "POST", "/cutover", Some("s3cret-admin-")).await,
        401
    );
    // Let through (this test server has no config file to reload: 422).
    assert_eq!(
        call(admin, "POST", "/reload", Some("s3cret-admin-token")).await,
        422
    );
    assert_eq!(call(admin, "GET", "/status", None).await, 200);
    let (code, _, body) = http(admin, "GET", "/metrics").await;
    assert_eq!(code, 200);
    let samples = parse_exposition(&body);
    assert_eq!(sample(&samples, "tandem_admin_refused_total"), 3.0);
    env.stop().await;

    let extra = format!("{extra}\nadmin_token_scope: status");
    let env = TestEnv::start_with("admin_token_status", &extra).await;
    let admin = env.server.admin_addr.expect("admin listener");
    assert_eq!(call(admin, "GET", "/status", None).await, 401);
    assert_eq!(
        call(admin, "GET", "/status", Some("s3cret-admin-token")).await,
        200
    );
    assert_eq!(call(admin, "GET", "/metrics", None).await, 200);
    env.stop().await;
}

/// Secrets never leave Tandem: a backend URL's password, a user's own and
/// backend passwords and the admin token appear in none of `/status`,
/// `/metrics`, the config's debug form, what `tandem check-config` prints,
/// or a running `tandem serve`'s logs at debug level, nor in what
/// `check-config` and `serve` say of a primary that refuses connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_status_metrics_logs_and_errors() {
    const ACCOUNT: &str = "tandem_it_secret";
    let secrets = [
        "url-pw-7f3a9",
        "user-pw-5c1e2",
        "backend-pw-9d4b6",
        "admin-token-2e8f1",
    ];
    let db = "tandem_it_secrets";
    fresh_database(db).await;
    fresh_database(&format!("{db}_next")).await;
    let mut root = mysql_async::Conn::new(direct_opts("mysql")).await.unwrap();
    for host in ["%", "localhost", "127.0.0.1"] {
        for (user, pw) in [(ACCOUNT, secrets[0]), ("tandem_it_secret_app", secrets[2])] {
            root.query_drop(format!("DROP USER IF EXISTS '{user}'@'{host}'"))
                .await
                .unwrap();
            root.query_drop(format!(
                "CREATE USER '{user}'@'{host}' IDENTIFIED BY '{pw}'"
            ))
            .await
            .unwrap();
            root.query_drop(format!("GRANT ALL ON *.* TO '{user}'@'{host}'"))
                .await
                .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{}\n", secrets[3])).unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    let yaml = |admin: std::net::SocketAddr, port: u16| {
        format!(
            r#"
listen: 127.0.0.1:0
admin: {admin}
admin_token_file: {}
users:
  - name: app
    password: {}
    backend_user: tandem_it_secret_app
    backend_password: {}
backends:
  legacy:
    kind: mysql
    url: mysql://{ACCOUNT}:{}@{MARIADB_HOST}:{port}/{db}
  next:
    kind: mysql
    url: mysql://{ACCOUNT}:{}@{MARIADB_HOST}:{MARIADB_PORT}/{db}_next
migration:
  primary: legacy
  secondary: next
  journal: {}
rules: {}
"#,
            token.display(),
            secrets[1],
            secrets[2],
            secrets[0],
            secrets[0],
            dir.path().join("journal").display(),
            dir.path().join("rules").display()
        )
    };
    let clean = |what: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows a secret:\n{text}");
        }
    };
    let run = |args: &[&str], cfg: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .arg("--config")
            .arg(cfg)
            .env("TANDEM_LOG", "debug")
            .output()
            .unwrap()
    };
    let text_of = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // A primary that refuses the connection: check-config and serve fail
    // saying so, without the passwords.
    let refused = dir.path().join("refused.yaml");
    std::fs::write(&refused, yaml(free_addr(), 1)).unwrap();
    let cfg = tandem::config::parse(&std::fs::read_to_string(&refused).unwrap()).unwrap();
    clean("the config's debug form", &format!("{cfg:?}"));
    for (args, fails) in [(&["check-config"][..], false), (&["serve"][..], true)] {
        let out = run(args, &refused);
        let text = text_of(&out);
        assert_eq!(!out.status.success(), fails, "{args:?}: {text}");
        assert!(text.contains("legacy"), "{args:?}: {text}");
        clean(&format!("{args:?}"), &text);
    }

    // A running server: /status, /metrics and its debug logs.
    let admin = free_addr();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, yaml(admin, MARIADB_PORT)).unwrap();
    let log = dir.path().join("serve.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--config"])
        .arg(&good)
        .env("TANDEM_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut pages = String::new();
    for _ in 0..300 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            for path in ["/status", "/metrics"] {
                let (code, _, body) = http(admin, "GET", path).await;
                assert_eq!(code, 200, "{path}: {body}");
                pages.push_str(&body);
            }
            break;
        }
    }
    assert!(pages.contains("legacy"), "{pages}");
    clean("/status and /metrics", &pages);
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("DEBUG") || logs.contains("INFO"), "{logs}");
    clean("serve's logs", &logs);
    for host in ["%", "localhost", "127.0.0.1"] {
        for user in [ACCOUNT, "tandem_it_secret_app"] {
            let _ = root
                .query_drop(format!("DROP USER IF EXISTS '{user}'@'{host}'"))
                .await;
        }
    }
    root.disconnect().await.unwrap();
    drop_databases(&[db, &format!("{db}_next")]).await;
}
