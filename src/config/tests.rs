use super::*;

const EXAMPLE: &str = include_str!("../../config/example.yaml");

#[test]
fn operator_example_is_accepted_as_shown() {
    let cfg = parse(EXAMPLE).unwrap();
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:3307");
    assert_eq!(cfg.admin.unwrap().to_string(), "127.0.0.1:9307");
    assert_eq!(cfg.primary, "legacy");
    assert_eq!(cfg.secondary.as_deref(), Some("next"));
    let legacy = &cfg.backends["legacy"];
    assert_eq!(
        (
            legacy.host.as_str(),
            legacy.port,
            legacy.user.as_str(),
            legacy.database.as_deref()
        ),
        ("127.0.0.1", 3306, "root", Some("shop"))
    );
    assert_eq!(legacy.pool, 32);
    assert_eq!(cfg.backends["next"].pool, 32, "documented default");
    assert_eq!(cfg.cutover_timeout, Duration::from_secs(5));
    assert_eq!(cfg.unsafe_writes, UnsafeWrites::Reject);
    assert!(cfg.users.contains_key("app"));
    assert_eq!(legacy.bookkeeping, "tandem", "documented default");
    let named = EXAMPLE.replace(
        "  # bookkeeping_database: tandem",
        "  bookkeeping_database: ops_tandem",
    );
    assert_eq!(
        parse(&named).unwrap().backends["next"].bookkeeping,
        "ops_tandem"
    );
    let bad = EXAMPLE.replace(
        "  # bookkeeping_database: tandem",
        "  bookkeeping_database: \"a`b\"",
    );
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.contains("migration.bookkeeping_database"), "{e}");
    let clash = EXAMPLE.replace(
        "  # bookkeeping_database: tandem",
        "  bookkeeping_database: shop_next",
    );
    let e = parse(&clash).unwrap_err().to_string();
    assert!(e.contains("backend next's own database"), "{e}");
    assert!(!cfg.rules.mirrored("audit_log"));
    assert!(cfg.rules.mirrored("orders"));
    assert!(cfg.rules.mirrored("not_listed"));
    assert_eq!(
        cfg.rules.tables["orders"].auto_increment.as_deref(),
        Some("id")
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = r#"
listen: nonsense
users:
  - name: a
  - name: b
    password: x
    password_hash: "*00"
backends:
  legacy: { kind: mysql, url: "postgres://x@h/db", pool: 0 }
migration:
  primary: nowhere
  secondary: alsonowhere
  cutover_timeout: soon
"#;
    let errs = parse(text).unwrap_err().0;
    let all = errs.join("\n");
    for needle in [
        "listen:",
        "users[0]: password or password_hash is required",
        "users[1]: set either password or password_hash",
        "backends.legacy.pool",
        "backends.legacy.url: scheme",
        "migration.primary: unknown backend or cluster \"nowhere\"",
        "migration.secondary: unknown backend",
        "migration.cutover_timeout",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn unknown_keys_and_bad_yaml_are_rejected() {
    let unknown = EXAMPLE.replace("pool: 32", "pool: 32\n    poool: 3");
    let err = parse(&unknown).unwrap_err().to_string();
    assert!(err.contains("poool"), "{err}");
    assert!(parse("listen: [").is_err());
    assert!(parse("").is_err());
}

#[test]
fn password_hash_and_url_credentials() {
    let text = r#"
users: [{ name: app, password_hash: "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3" }]
backends:
  a: { kind: mysql, url: "mysql://u%40x:p%3Aw@db.internal:3310" }
  pg: { kind: postgres, url: "postgres://me@localhost/test" }
migration: { primary: a }
rules: ./does-not-exist
"#;
    let cfg = parse(text).unwrap();
    let a = &cfg.backends["a"];
    assert_eq!(
        (a.user.as_str(), a.password.as_str(), a.port),
        ("u@x", "p:w", 3310)
    );
    assert_eq!(a.database, None);
    assert_eq!(cfg.backends["pg"].port, 5432);
    // A hash verifies the password it was made from (and carries no
    // SHA-256 verifier, unlike a plain password).
    assert!(cfg.users["app"].check_clear(b"app"));
    assert_ne!(cfg.users["app"], StoredPassword::from_plain("app"));
    assert!(cfg.secondary.is_none());
}

#[test]
fn postgres_primary_is_refused_for_now() {
    let text = r#"
backends: { pg: { kind: postgres, url: "postgres://me@localhost/test" } }
migration: { primary: pg }
"#;
    assert!(parse(text)
        .unwrap_err()
        .to_string()
        .contains("PostgreSQL primary"));
}

#[test]
fn mirroring_into_postgres_is_refused_until_it_exists() {
    let text = r#"
backends:
  a: { kind: mysql, url: "mysql://root@127.0.0.1/shop" }
  pg: { kind: postgres, url: "postgres://me@localhost/test" }
migration: { primary: a, secondary: pg }
"#;
    // The offline tools take it (schema, backfill, verify); serving and
    // reloading into it are refused, naming what works.
    let cfg = parse(text).unwrap();
    assert_eq!(cfg.postgres_secondary().unwrap().name, "pg");
    assert_eq!(
        cfg.postgres_secondary().unwrap().schema.as_deref(),
        Some("public")
    );
    let e = cfg.serve_refusal().unwrap();
    assert!(
        e.contains("cannot mirror writes into PostgreSQL yet"),
        "{e}"
    );
    assert!(e.contains("tandem backfill --create-tables"), "{e}");
    let other = parse(&text.replace("/test\"", "/test?schema=app\"")).unwrap();
    assert_eq!(
        other.postgres_secondary().unwrap().schema.as_deref(),
        Some("app")
    );
}

#[test]
fn rules_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "tables: { t: { mirror: false } }",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.yaml"), "tables: { t: {} }").unwrap();
    std::fs::write(dir.path().join("c.yml"), "tables: { u: { mirrorr: true } }").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let errs = load_rules(dir.path()).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("b.yaml") && errs[0].contains("already has a rule"));
    assert!(errs[1].contains("c.yml") && errs[1].contains("mirrorr"));
}

#[test]
fn diff_names_what_cannot_change_live() {
    let old = parse(EXAMPLE).unwrap();
    let same = parse(EXAMPLE).unwrap();
    assert!(diff(&old, &same).unwrap().is_empty());

    let moved = parse(
        &EXAMPLE
            .replace("listen: 127.0.0.1:3307", "listen: 127.0.0.1:3310")
            .replace("primary: legacy ", "primary: next ")
            .replace("secondary: next ", "secondary: legacy "),
    )
    .unwrap();
    let errs = diff(&old, &moved).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("listen:"), "{errs:?}");

    let mut workers = old.clone();
    workers.apply_workers = 8;
    let errs = diff(&old, &workers).unwrap_err().0;
    assert!(errs[0].starts_with("migration.apply_workers:"), "{errs:?}");
    // Out of range at load.
    let bad = EXAMPLE.replace("migration:\n", "migration:\n  apply_workers: 0\n");
    assert_ne!(bad, EXAMPLE);
    let errs = parse(&bad).unwrap_err().0;
    assert!(errs.iter().any(|e| e.contains("apply_workers")), "{errs:?}");

    // apply_batch_wait: default 10ms, at most 1s, read at start.
    assert_eq!(old.apply_batch_wait, Duration::from_millis(10));
    check_restart_duration(&old, "apply_batch_wait", "2s", |c| c.apply_batch_wait);
    // journal_commit_wait: default 1ms, at most 100ms, read at start.
    assert_eq!(old.journal_commit_wait, Duration::from_millis(1));
    check_restart_duration(&old, "journal_commit_wait", "101ms", |c| {
        c.journal_commit_wait
    });

    // apply_errors: default continue; a change is a live setting.
    assert_eq!(old.apply_errors, ApplyErrors::Continue);
    let halt =
        parse(&EXAMPLE.replace("migration:\n", "migration:\n  apply_errors: halt\n")).unwrap();
    assert_eq!(halt.apply_errors, ApplyErrors::Halt);
    assert!(diff(&old, &halt).unwrap().settings);
    let errs = parse(&EXAMPLE.replace("migration:\n", "migration:\n  apply_errors: skip\n"))
        .unwrap_err()
        .0;
    assert!(errs.iter().any(|e| e.contains("apply_errors")), "{errs:?}");

    // The flip alone is a cutover (run by the reload path).
    let flipped = parse(
        &EXAMPLE
            .replace("primary: legacy ", "primary: next ")
            .replace("secondary: next ", "secondary: legacy "),
    )
    .unwrap();
    let c = diff(&old, &flipped).unwrap();
    assert_eq!(c.cutover.as_deref(), Some("next"));
    assert!(!c.secondary);
    // Dropping the secondary in the same edit is not a flip.
    let mut no_secondary = flipped.clone();
    no_secondary.secondary = None;
    let errs = diff(&old, &no_secondary).unwrap_err().0;
    assert!(
        errs[0].contains("cutover") && errs[0].contains("secondary"),
        "{errs:?}"
    );

    let repointed =
        parse(&EXAMPLE.replace("127.0.0.1:3306/shop\n", "127.0.0.1:3399/shop\n")).unwrap();
    let errs = diff(&old, &repointed).unwrap_err().0;
    assert!(errs[0].starts_with("backends.legacy.url"), "{errs:?}");

    let live = parse(
        &EXAMPLE
            .replace("pool: 32", "pool: 8")
            .replace("app-secret", "rotated"),
    )
    .unwrap();
    let c = diff(&old, &live).unwrap();
    assert_eq!(c.backends, vec!["legacy".to_string()]);
    assert!(c.users && !c.rules && !c.secondary);
}

/// A `migration.<key>` duration read at start: `0s` parses (and a reload
/// refuses the change), `too_long` and a non-duration are refused.
fn check_restart_duration(old: &Config, key: &str, too_long: &str, get: fn(&Config) -> Duration) {
    let with =
        |v: &str| parse(&EXAMPLE.replace("migration:\n", &format!("migration:\n  {key}: {v}\n")));
    let prefix = format!("migration.{key}:");
    let none = with("0s").unwrap();
    assert_eq!(get(&none), Duration::ZERO);
    let errs = diff(old, &none).unwrap_err().0;
    assert!(errs[0].starts_with(&prefix), "{errs:?}");
    for bad in [too_long, "soon"] {
        let errs = with(bad).unwrap_err().0;
        assert!(
            errs.iter().any(|e| e.starts_with(&prefix)),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn an_admin_address_reachable_from_other_hosts_needs_a_token() {
    let open = EXAMPLE.replace("admin: 127.0.0.1:9307", "admin: 0.0.0.0:9307");
    if std::env::var("TANDEM_ADMIN_TOKEN").is_err() {
        let e = parse(&open).unwrap_err().to_string();
        assert!(e.contains("no admin token is set"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "t0ken-123\n").unwrap();
    let with = open.replace(
        "admin: 0.0.0.0:9307",
        &format!(
            "admin_token_file: {}\nadmin_token_scope: status\nadmin: 0.0.0.0:9307",
            token.display()
        ),
    );
    let cfg = parse(&with).unwrap();
    assert_eq!(cfg.admin_token.as_ref().unwrap().expose(), "t0ken-123");
    assert_eq!(cfg.admin_token_scope, AdminTokenScope::Status);
    // Never printed.
    assert!(!format!("{cfg:?}").contains("t0ken"));
    let missing = with.replace(&token.display().to_string(), "/nonexistent/admin.token");
    let e = parse(&missing).unwrap_err().to_string();
    assert!(
        e.contains("admin_token_file: cannot read /nonexistent/admin.token"),
        "{e}"
    );
    std::fs::write(&token, "\n").unwrap();
    let e = parse(&with).unwrap_err().to_string();
    assert!(e.contains("is empty"), "{e}");
}

#[test]
fn backend_passwords_never_print() {
    let with = EXAMPLE.replace(
        "mysql://root@127.0.0.1:3306/shop",
        "mysql://root:hunter2-secret@127.0.0.1:3306/shop",
    );
    let cfg = parse(&with).unwrap();
    assert_eq!(cfg.backends["legacy"].password, "hunter2-secret");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains(r#"password: "***""#));
}

/// The auction example's shape with the cluster as the primary, its rules
/// in a directory of the test's own.
fn cluster_config(
    rules: &str,
    cluster_extra: &str,
    migration: &str,
) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("auction.yaml"), rules).unwrap();
    let text = format!(
        r#"
backends:
  legacy: {{ kind: mysql, url: "mysql://root@127.0.0.1:3306/auction" }}
  s0: {{ kind: mysql, url: "mysql://root@127.0.0.1:3306/auction_s0" }}
  s1: {{ kind: mysql, url: "mysql://root@127.0.0.1:3306/auction_s1" }}
clusters:
  auction2:
    database: auction
    shards: [s0, s1]
{cluster_extra}
migration:
{migration}
rules: {}
"#,
        dir.path().display()
    );
    parse(&text)
}

const AUCTION_RULES: &str = r#"
tables:
  users: { shard_key: id }
  bids: { shard_key: user_id, auto_increment: id, scatter_writes: reject }
  bid_history:
    shard_key: created_at
    shard_by: range
    ranges:
      - { below: "2025-01-01", shard: s0 }
      - { shard: s1 }
  regions:
    shard_key: code
    shard_by: list
    values:
      - { shard: s0, in: [eu, 7] }
    default_shard: s1
  categories: { reference: true }
"#;

#[test]
fn a_cluster_and_its_table_rules_are_accepted_as_documented() {
    let cfg = cluster_config(AUCTION_RULES, "", "  primary: auction2").unwrap();
    let c = cfg.cluster().expect("the primary is the cluster");
    assert_eq!(c.buckets(), 4096, "documented default");
    assert_eq!(c.owners[5], 1, "bucket b -> shards[b mod N]");
    assert_eq!(
        cfg.primary_backend().name,
        "s0",
        "the first shard greets clients"
    );
    assert_eq!(
        c.tables["bid_history"].placement,
        Placement::Range {
            key: "created_at".into(),
            ranges: vec![(Some("2025-01-01".into()), 0), (None, 1)]
        }
    );
    assert_eq!(c.tables["categories"].placement, Placement::Reference);
    assert!(matches!(
        &c.tables["regions"].placement,
        Placement::List { values, default: Some(1), .. } if values[1] == ("7".to_string(), 0)
    ));
    let explicit = cluster_config(
        AUCTION_RULES,
        "    buckets: 4\n    assignment: { s0: [\"0-2\"], s1: [\"3\"] }",
        "  primary: auction2",
    )
    .unwrap();
    assert_eq!(&explicit.cluster().unwrap().owners[..], &[0, 0, 0, 1]);
}

#[test]
fn cluster_mistakes_are_named_with_their_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (AUCTION_RULES, "    buckets: 0", "  primary: auction2", "clusters.auction2.buckets"),
        (
            AUCTION_RULES,
            "    buckets: 4\n    assignment: { s0: [\"0-2\"] }",
            "  primary: auction2",
            "bucket 3 has no shard",
        ),
        (
            AUCTION_RULES,
            "    buckets: 4\n    assignment: { s0: [\"0-2\"], s1: [\"2-3\"] }",
            "  primary: auction2",
            "bucket 2 is assigned twice",
        ),
        (
            "tables:\n  orders: {}\n",
            "",
            "  primary: auction2",
            "tables.orders: on cluster auction2 every table needs shard_key",
        ),
        (
            "tables:\n  t: { shard_key: a, shard_by: range, ranges: [ { below: 10, shard: s0 }, { below: 5, shard: s1 }, { shard: s1 } ] }\n",
            "",
            "  primary: auction2",
            "ascending order",
        ),
        (
            "tables:\n  t: { shard_key: a, shard_by: range, ranges: [ { below: 10, shard: s0 } ] }\n",
            "",
            "  primary: auction2",
            "the last range takes everything above",
        ),
        (
            "tables:\n  t: { shard_key: a, shard_by: list, values: [ { shard: s9, in: [1] } ] }\n",
            "",
            "  primary: auction2",
            "\"s9\" is not a shard of cluster auction2",
        ),
        (
            "tables:\n  t: { reference: true, shard_key: a }\n",
            "",
            "  primary: auction2",
            "a reference table",
        ),
        (
            AUCTION_RULES,
            "",
            "  primary: legacy\n  secondary: auction2",
            "mirroring into cluster \"auction2\"",
        ),
        (
            AUCTION_RULES,
            "",
            "  primary: auction2\n  secondary: legacy",
            "mirroring from cluster \"auction2\"",
        ),
    ];
    for (rules, extra, migration, says) in cases {
        let e = cluster_config(rules, extra, migration)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "want {says:?} in:\n{e}");
    }
}

#[test]
fn a_reload_may_add_table_rules_but_not_move_rows() {
    let old = cluster_config(AUCTION_RULES, "", "  primary: auction2").unwrap();
    let more = format!("{AUCTION_RULES}  extra: {{ shard_key: id }}\n");
    let new = cluster_config(&more, "", "  primary: auction2").unwrap();
    assert!(diff(&old, &new).unwrap().rules);
    let moved = AUCTION_RULES.replace("below: \"2025-01-01\"", "below: \"2024-01-01\"");
    let new = cluster_config(&moved, "", "  primary: auction2").unwrap();
    let e = diff(&old, &new).unwrap_err().to_string();
    assert!(
        e.contains("tables.bid_history: the edit would change where its rows live"),
        "{e}"
    );
    let new = cluster_config(AUCTION_RULES, "    buckets: 1024", "  primary: auction2").unwrap();
    let e = diff(&old, &new).unwrap_err().to_string();
    assert!(e.contains("change which shard owns some buckets"), "{e}");
}
