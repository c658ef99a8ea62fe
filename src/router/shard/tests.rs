use super::group::{Cmp, Col, Cond};
use super::route::ShardPlan;
use super::*;
use crate::config::model::ScatterWrites;
use crate::config::TablePlacement;
use std::sync::Arc;

fn cluster(n: usize) -> ClusterConfig {
    ClusterConfig {
        name: "c".into(),
        database: "app".into(),
        shards: (0..n).map(|i| format!("s{i}")).collect(),
        owners: (0..4096u32)
            .map(|b| (b as usize % n) as u16)
            .collect::<Vec<_>>()
            .into(),
        tables: Default::default(),
        merge_buffer: 1 << 20,
        cross_shard: Default::default(),
    }
}

fn hash() -> Placement {
    Placement::Hash { key: "id".into() }
}

#[test]
fn integers_hash_by_value_whatever_the_literal() {
    let c = cluster(4);
    let at = |l: Literal| {
        let v = canon(&KeyType::Int, &l).unwrap();
        shard_of(&c, &hash(), &KeyType::Int, &v).unwrap()
    };
    let five = at(Literal::Number("5".into()));
    assert_eq!(at(Literal::Str(b"5".to_vec())), five);
    assert_eq!(at(Literal::Number("5.0".into())), five);
    assert_eq!(at(Literal::Str(b" 5".to_vec())), five);
    // The documented function: CRC32 of the decimal text, mod buckets.
    assert_eq!(five, (crc32fast::hash(b"5") % 4096) as usize % 4);
    assert!(matches!(
        canon(&KeyType::Int, &Literal::Number("5.5".into())),
        Err(Unroutable::Every(_))
    ));
    assert!(matches!(
        canon(&KeyType::Int, &Literal::Str(b"05abc".to_vec())),
        Err(Unroutable::Every(_))
    ));
    assert!(matches!(
        canon(&KeyType::Int, &Literal::Null),
        Err(Unroutable::Nowhere(_))
    ));
}

#[test]
fn strings_hash_by_their_collations_comparison_form() {
    let ci = KeyType::Str(Fold::AsciiCi);
    let s = |t: &str| canon(&ci, &Literal::Str(t.as_bytes().to_vec())).unwrap();
    assert_eq!(s("Ann"), s("ann  "));
    assert!(matches!(
        canon(&ci, &Literal::Str("Åsa".as_bytes().to_vec())),
        Err(Unroutable::Every(_))
    ));
    let bin = KeyType::Str(Fold::BinPad);
    let b = |t: &str| canon(&bin, &Literal::Str(t.as_bytes().to_vec())).unwrap();
    assert_ne!(b("Ann"), b("ann"));
    assert_eq!(b("Ann"), b("Ann "));
    let bytes = KeyType::Str(Fold::Bytes);
    assert_ne!(
        canon(&bytes, &Literal::Str(b"a ".to_vec())),
        canon(&bytes, &Literal::Str(b"a".to_vec()))
    );
    // A number against a string key is compared numerically by MySQL.
    assert!(matches!(
        canon(&ci, &Literal::Number("5".into())),
        Err(Unroutable::Every(_))
    ));
}

#[test]
fn ranges_and_lists_place_by_their_bounds() {
    let c = cluster(3);
    let ty = KeyType::Temporal { datetime: true };
    let p = Placement::Range {
        key: "created_at".into(),
        ranges: vec![
            (Some("2025-01-01".into()), 0),
            (Some("2026-01-01".into()), 1),
            (None, 2),
        ],
    };
    let at = |t: &str| {
        let v = canon(&ty, &Literal::Str(t.as_bytes().to_vec())).unwrap();
        shard_of(&c, &p, &ty, &v).unwrap()
    };
    assert_eq!(at("2024-12-31 23:59:59.999999"), 0);
    assert_eq!(at("2025-01-01"), 1);
    assert_eq!(at("2025-01-01 00:00:00"), 1);
    assert_eq!(at("2027-06-01 10:00:00"), 2);
    let list = Placement::List {
        key: "region".into(),
        values: vec![("eu".into(), 0), ("us".into(), 1)],
        default: None,
    };
    let ci = KeyType::Str(Fold::AsciiCi);
    let v = canon(&ci, &Literal::Str(b"EU".to_vec())).unwrap();
    assert_eq!(shard_of(&c, &list, &ci, &v), Ok(0));
    let v = canon(&ci, &Literal::Str(b"apac".to_vec())).unwrap();
    assert!(matches!(
        shard_of(&c, &list, &ci, &v),
        Err(Unroutable::Nowhere(_))
    ));
}

fn auction() -> (
    ClusterConfig,
    impl Fn(&str) -> Option<Arc<route::TableFacts>>,
) {
    let mut c = cluster(4);
    let put = |c: &mut ClusterConfig, t: &str, p: Placement| {
        c.tables.insert(
            t.into(),
            TablePlacement {
                placement: p,
                scatter_writes: ScatterWrites::Allow,
                key_updates: Default::default(),
            },
        );
    };
    put(&mut c, "users", Placement::Hash { key: "id".into() });
    put(
        &mut c,
        "bids",
        Placement::Hash {
            key: "user_id".into(),
        },
    );
    put(
        &mut c,
        "auctions",
        Placement::Hash {
            key: "seller_id".into(),
        },
    );
    put(&mut c, "categories", Placement::Reference);
    let facts = |t: &str| {
        let (cols, key): (&[&str], &str) = match t {
            "users" => (&["id", "name"], "id"),
            "bids" => (&["id", "user_id", "amount"], "user_id"),
            "auctions" => (&["id", "seller_id", "title"], "seller_id"),
            "categories" => (&["id", "name"], ""),
            _ => return None,
        };
        Some(Arc::new(route::TableFacts {
            columns: cols.iter().map(|s| s.to_string()).collect(),
            key_type: (!key.is_empty()).then_some(KeyType::Int),
            auto_increment: None,
            key_default: None,
        }))
    };
    (c, facts)
}

fn plan(sql: &str) -> Result<route::ShardPlan, route::Refusal> {
    let (c, facts) = auction();
    let mut toks = Vec::new();
    crate::router::lexer::tokenize(sql.as_bytes(), &mut toks);
    route::plan(sql.as_bytes(), &toks, &c, &facts)
}

fn shard(id: i128) -> usize {
    let (c, _) = auction();
    shard_of(&c, &hash(), &KeyType::Int, &Canon::Int(id)).unwrap()
}

#[test]
fn statements_go_to_exactly_the_shards_their_keys_name() {
    use route::{Merge, Shards};
    let one = |sql: &str| match plan(sql).unwrap().shards {
        Shards::Set(s) => s,
        Shards::Any => vec![],
    };
    assert_eq!(one("SELECT * FROM users WHERE id = 7"), vec![shard(7)]);
    assert_eq!(
        one("SELECT * FROM users WHERE id = 7 AND name = 'x'"),
        vec![shard(7)]
    );
    let mut both = vec![shard(7), shard(8)];
    both.sort();
    both.dedup();
    assert_eq!(one("SELECT * FROM users WHERE id IN (7, 8)"), both);
    assert_eq!(one("SELECT * FROM users WHERE id = 7 OR id = 8"), both);
    assert_eq!(
        one("SELECT * FROM users WHERE id = 7 OR name = 'x'"),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        one("SELECT * FROM users WHERE name = 'x'"),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        one("SELECT u.name, b.amount FROM users u JOIN bids b ON b.user_id = u.id WHERE u.id = 9"),
        vec![shard(9)]
    );
    assert_eq!(
        one("SELECT * FROM bids b JOIN categories c ON c.id = b.id WHERE b.user_id = 3"),
        vec![shard(3)]
    );
    assert_eq!(one("SELECT * FROM categories"), Vec::<usize>::new());
    assert_eq!(
        one("UPDATE users SET name = 'y' WHERE id = 5"),
        vec![shard(5)]
    );
    assert_eq!(one("DELETE FROM users WHERE id IN (5)"), vec![shard(5)]);
    let p =
        plan("INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')").unwrap();
    if let Some(texts) = &p.texts {
        for (s, t) in texts {
            let t = String::from_utf8_lossy(t);
            for id in 1..=4 {
                assert_eq!(t.contains(&format!("({id}, ")), shard(id) == *s, "{t}");
            }
        }
    }
    assert!(
        matches!(p.merge, Merge::Write { last: Some(l) } if l == shard(4)) || p.texts.is_none()
    );
    let p = plan("SELECT id FROM users ORDER BY id DESC LIMIT 5 OFFSET 10").unwrap();
    assert_eq!(
        p.merge,
        Merge::Ordered {
            keys: vec![(0, true)],
            offset: 10,
            limit: Some(5)
        }
    );
    assert_eq!(
        String::from_utf8(p.texts.unwrap()[0].1.clone()).unwrap(),
        "SELECT id FROM users ORDER BY id DESC LIMIT 15"
    );
    let p = plan("SELECT COUNT(*), SUM(amount), MAX(amount) FROM bids").unwrap();
    let Merge::Grouped(g) = &p.merge else {
        panic!("{p:?}")
    };
    assert_eq!(
        g.cols,
        vec![
            Col::Agg(route::Agg::Count),
            Col::Agg(route::Agg::Sum),
            Col::Agg(route::Agg::Max)
        ]
    );
    assert!(g.whole && g.group.is_empty() && g.keys.is_empty());
    let text = |p: &ShardPlan| String::from_utf8(p.texts.as_ref().unwrap()[0].1.clone()).unwrap();
    assert_eq!(
        text(&p),
        "SELECT COUNT(*), SUM(amount), MAX(amount) FROM bids"
    );
    // Groups spanning shards: sorted on the group, HAVING and LIMIT kept
    // for the merge, helpers appended.
    let p = plan(
        "SELECT auction_id, AVG(amount) AS a FROM bids WHERE amount > 1 GROUP BY auction_id \
         HAVING COUNT(*) > 2 ORDER BY a DESC LIMIT 3 FOR UPDATE",
    )
    .unwrap();
    assert_eq!(
        text(&p),
        "SELECT auction_id, AVG(amount) AS a, SUM(amount), COUNT(amount), COUNT(*) FROM bids \
         WHERE amount > 1 GROUP BY auction_id ORDER BY 1 FOR UPDATE"
    );
    let Merge::Grouped(g) = &p.merge else {
        panic!("{p:?}")
    };
    assert_eq!(g.visible, 2);
    assert_eq!(g.cols[1], Col::Avg { sum: 2, count: 3 });
    assert_eq!(g.order, Some(vec![(1, true)]));
    assert_eq!((g.offset, g.limit), (0, Some(3)));
    assert!(matches!(
        g.having,
        Some(Cond::Cmp {
            col: 4,
            op: Cmp::Gt,
            ..
        })
    ));
    // MariaDB's shared locking read: routed as the read, and every
    // shard's text locks as the client's.
    let p = plan("SELECT SUM(amount) FROM bids LOCK IN SHARE MODE").unwrap();
    assert_eq!(text(&p), "SELECT SUM(amount) FROM bids LOCK IN SHARE MODE");
    let p = plan("SELECT amount FROM bids WHERE user_id = 7 lock in share mode ;").unwrap();
    assert!(p.texts.is_none() && p.shards == Shards::Set(vec![shard(7)]));
    // Ordered on the group: streamed, each shard limited.
    let p = plan("SELECT user_id % 3 AS k, COUNT(DISTINCT auction_id) FROM bids GROUP BY k ORDER BY k DESC LIMIT 2, 5")
        .unwrap();
    assert_eq!(
        text(&p),
        "SELECT user_id % 3 AS k, COUNT(DISTINCT auction_id), auction_id FROM bids GROUP BY k, \
         auction_id ORDER BY 1 DESC, 3"
    );
    // Ordered on a column it does not return: a helper column, dropped.
    let p = plan("SELECT id FROM users ORDER BY name DESC LIMIT 2").unwrap();
    assert_eq!(
        text(&p),
        "SELECT id, name FROM users ORDER BY 2 DESC LIMIT 2"
    );
    let Merge::Grouped(g) = &p.merge else {
        panic!("{p:?}")
    };
    assert!(g.each_row && g.visible == 1 && g.order.is_none());
    let p = plan("SELECT DISTINCT name FROM users ORDER BY name LIMIT 4").unwrap();
    assert_eq!(
        text(&p),
        "SELECT DISTINCT name FROM users ORDER BY 1 LIMIT 4"
    );
    // Every group on one shard (grouped on the shard key): merged only.
    let p = plan(
        "SELECT user_id, COUNT(*) FROM bids GROUP BY user_id HAVING COUNT(*) > 1 ORDER BY user_id",
    )
    .unwrap();
    assert_eq!(
        p.merge,
        Merge::Ordered {
            keys: vec![(0, false)],
            offset: 0,
            limit: None
        }
    );
    assert_eq!(
        plan("INSERT INTO categories VALUES (1, 'x')")
            .unwrap()
            .merge,
        Merge::Same
    );
}

#[test]
fn what_cannot_be_answered_exactly_is_refused_with_the_reason() {
    for sql in [
        "SELECT * FROM nope WHERE id = 1",
        "SELECT u.id FROM users u JOIN bids b ON b.id = u.id",
        "SELECT * FROM users WHERE id IN (SELECT user_id FROM bids)",
        "SELECT name, GROUP_CONCAT(id) FROM users GROUP BY name",
        "SELECT DISTINCT name, COUNT(*) FROM users",
        "SELECT COUNT(DISTINCT name), COUNT(DISTINCT id) FROM users",
        "SELECT name FROM users GROUP BY name HAVING COUNT(*) > MAX(id)",
        "SELECT DISTINCT name FROM users ORDER BY id",
        "UPDATE users SET id = 3 WHERE id = 2",
        "INSERT INTO users (name) VALUES ('x')",
        "INSERT INTO users (id, name) SELECT id, name FROM auctions",
        "DELETE FROM users ORDER BY id LIMIT 1",
        "SELECT COUNT(*) + 1 FROM users",
    ] {
        let r = plan(sql);
        assert!(r.is_err(), "{sql}: {r:?}");
    }
    let e = plan("SELECT * FROM nope").unwrap_err();
    assert!(e.0.contains("`nope` has no rule"), "{e:?}");
}

#[test]
fn timestamps_are_placed_by_their_utc_value() {
    let at = |s: &str, off| {
        canon(
            &KeyType::Timestamp { offset: off },
            &Literal::Str(s.as_bytes().to_vec()),
        )
    };
    assert_eq!(
        at("2025-01-01 03:00:00", Some(5 * 3600)),
        Ok(Canon::Temporal("2024-12-31 22:00:00.000000".into()))
    );
    assert_eq!(
        at("2024-02-28 23:30:00.5", Some(-3600)),
        Ok(Canon::Temporal("2024-02-29 00:30:00.500000".into()))
    );
    assert_eq!(
        at("2025-06-01", Some(0)),
        Ok(Canon::Temporal("2025-06-01 00:00:00.000000".into()))
    );
    assert!(matches!(at("2025-06-01", None), Err(Unroutable::Every(_))));
    // Bounds in the config are UTC whatever the session's zone.
    assert_eq!(
        canon_text(&KeyType::Timestamp { offset: Some(7200) }, "2025-01-01"),
        Ok(Canon::Temporal("2025-01-01 00:00:00.000000".into()))
    );
}
