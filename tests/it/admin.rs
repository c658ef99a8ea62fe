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
