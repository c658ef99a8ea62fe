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
