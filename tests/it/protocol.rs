//! Connection-level behaviour: authentication, commands, malformed input,
//! large packets, KILL, pooling hygiene, concurrency.

use crate::common::raw::{default_caps, read_packet, write_packet, RawClient};
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn, OptsBuilder};
use std::time::{Duration, Instant};
use tandem::protocol::response::Expect;
use tokio::io::AsyncWriteExt;

async fn raw_proxy(env: &TestEnv) -> RawClient {
    RawClient::connect(
        ("127.0.0.1", env.addr.port()),
        USER,
        PASSWORD,
        Some(&env.db),
        default_caps(true),
        "mysql_native_password",
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_outcomes() {
    let env = TestEnv::start("proto_auth").await;
    let port = env.addr.port();
    // Wrong password: ERR 1045 with the standard message.
    let err = RawClient::connect(
        ("127.0.0.1", port),
        USER,
        "nope",
        None,
        default_caps(true),
        "mysql_native_password",
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.0, 1045);
    assert!(
        err.1
            .contains("Access denied for user 'app'@'127.0.0.1' (using password: YES)"),
        "{}",
        err.1
    );
    // Unknown user: same answer (no user enumeration).
    let err = RawClient::connect(
        ("127.0.0.1", port),
        "ghost",
        "x",
        None,
        default_caps(true),
        "mysql_native_password",
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.0, 1045);
    // A MySQL 8 driver starting with caching_sha2_password is switched to
    // mysql_native_password and logs in.
    let mut c = RawClient::connect(
        ("127.0.0.1", port),
        USER,
        PASSWORD,
        Some(&env.db),
        default_caps(true),
        "caching_sha2_password",
    )
    .await
    .unwrap();
    let r = c.query("SELECT 1").await;
    assert_eq!(r.len(), 4, "column count, definition, row, OK");
    // password_hash users log in too.
    let opts = OptsBuilder::from_opts(proxy_builder(env.addr, None))
        .user(Some("other"))
        .pass(Some("app"));
    let mut other = Conn::new(opts).await.unwrap();
    let db: Option<String> = other.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(
        db.as_deref(),
        Some(env.db.as_str()),
        "default database of the backend URL"
    );
    other.disconnect().await.unwrap();
    // mysql_async with the wrong password.
    let opts = proxy_builder(env.addr, None).pass(Some("bad"));
    let e = Conn::new(opts).await.unwrap_err();
    assert!(e.to_string().contains("1045"), "{e}");
    // Connecting with an unknown database: ERR 1049 as from MariaDB.
    let e = Conn::new(proxy_builder(env.addr, Some("no_such_database_x")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1049"), "{e}");
    let failures = env.server.shared.metrics.auth_failures.get();
    assert!(failures >= 3, "every failed login is counted ({failures})");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_answers_1047_and_connection_stays_usable() {
    let env = TestEnv::start("proto_unknown").await;
    let mut c = raw_proxy(&env).await;
    for cmd in [0x0A_u8, 0x0D, 0x1D, 0x20, 0x7F, 0xFE] {
        let r = c.command(&[cmd, 1, 2, 3], Expect::Single).await;
        assert_eq!(r[0][0], 0xFF);
        assert_eq!(
            u16::from_le_bytes([r[0][1], r[0][2]]),
            1047,
            "command {cmd:#x}"
        );
    }
    let r = c.command(&[0x0E], Expect::Single).await;
    assert_eq!(r[0][0], 0x00, "ping still works");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_that_connection() {
    let env =
        TestEnv::start_with("proto_malformed", "limits:\n  max_allowed_packet: 1048576").await;
    let mut healthy = env.proxy().await;

    // Out-of-order sequence id.
    let mut c = raw_proxy(&env).await;
    write_packet(&mut c.stream, 5, b"\x03SELECT 1")
        .await
        .unwrap();
    assert!(c.is_closed().await, "sequence error closes");

    // A packet larger than max_allowed_packet (announced by its header).
    let mut c = raw_proxy(&env).await;
    let mut big = vec![0x03];
    big.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    let _ = write_packet(&mut c.stream, 0, &big).await;
    assert!(c.is_closed().await, "oversized packet closes");

    // Truncated packet, then the client goes away.
    let mut c = raw_proxy(&env).await;
    c.stream.write_all(&[50, 0, 0, 0, 3, b'S']).await.unwrap();
    c.stream.shutdown().await.unwrap();
    drop(c);

    // An empty command packet.
    let mut c = raw_proxy(&env).await;
    write_packet(&mut c.stream, 0, &[]).await.unwrap();
    assert!(c.is_closed().await, "empty command closes");

    // Garbage instead of a handshake response.
    let mut s = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let _ = read_packet(&mut s).await.unwrap();
    write_packet(&mut s, 1, &[1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
    )
    .await;

    // Garbage bytes of random lengths.
    for seed in 0..20u32 {
        let mut s = tokio::net::TcpStream::connect(env.addr).await.unwrap();
        let _ = read_packet(&mut s).await.unwrap();
        let junk: Vec<u8> = (0..(seed * 37 % 300))
            .map(|i| (i * 7919 + seed) as u8)
            .collect();
        let _ = s.write_all(&junk).await;
        drop(s);
    }

    // The healthy connection never noticed.
    let n: Option<i32> = healthy.query_first("SELECT 42").await.unwrap();
    assert_eq!(n, Some(42));
    let fresh = env.proxy().await;
    fresh.disconnect().await.unwrap();
    healthy.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_packets_both_directions() {
    raise_server_limits().await;
    let env = TestEnv::start("proto_large").await;
    let mut p = env.proxy().await;
    p.query_drop("CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    // 20 MiB as a text statement (client → proxy frames split at 16 MiB).
    let size = 20 * 1024 * 1024;
    let payload: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    p.query_drop(format!("INSERT INTO big VALUES (1, '{payload}')"))
        .await
        .unwrap();
    // Exactly one frame's worth (0xFFFFFF payload incl. command byte) is the edge case.
    let edge_len = 0xFF_FFFF - 1 - "INSERT INTO big VALUES (2, '')".len();
    let edge: String = "e".repeat(edge_len);
    p.query_drop(format!("INSERT INTO big VALUES (2, '{edge}')"))
        .await
        .unwrap();
    // And back (server → client rows larger than one frame), text and binary.
    let back: Vec<u8> = p
        .query_first("SELECT b FROM big WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), size);
    assert_eq!(back, payload.as_bytes());
    let back: Vec<u8> = p
        .exec_first("SELECT b FROM big WHERE id = ?", (2,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), edge_len);
    let both: Vec<(i32, u64)> = p
        .query("SELECT id, LENGTH(b) FROM big ORDER BY id")
        .await
        .unwrap();
    assert_eq!(both, vec![(1, size as u64), (2, edge_len as u64)]);
    p.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_id_and_kill_behave_as_direct() {
    let env = TestEnv::start("proto_kill").await;
    let mut a = env.proxy().await;
    let mut b = env.proxy().await;
    let id: u32 = a
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, a.id(), "CONNECTION_ID() equals the handshake id");
    let named: Vec<mysql_async::Row> = a.query("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(named[0].columns_ref()[0].name_str(), "CONNECTION_ID()");
    // KILL QUERY from another client interrupts the running statement.
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = a.query_first("SELECT SLEEP(30)").await;
        (r, a)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.query_drop(format!("KILL QUERY {id}")).await.unwrap();
    let (r, mut a) = sleeper.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // MariaDB reports an interrupted SLEEP as result 1 (or error 1317).
    match r {
        Ok(v) => assert_eq!(v, Some(1)),
        Err(e) => assert!(e.to_string().contains("1317"), "{e}"),
    }
    let still: Option<i32> = a.query_first("SELECT 5").await.unwrap();
    assert_eq!(still, Some(5), "KILL QUERY leaves the connection open");
    // Unknown ids: ER_NO_SUCH_THREAD, never a backend thread outside Tandem.
    let e = b.query_drop("KILL 4000000000").await.unwrap_err();
    assert!(e.to_string().contains("1094"), "{e}");
    // KILL CONNECTION closes the other client's session.
    b.query_drop(format!("KILL {id}")).await.unwrap();
    let e = a.query_drop("SELECT 1").await;
    assert!(e.is_err(), "killed connection cannot run queries");
    b.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connection_and_change_user() {
    let env = TestEnv::start("proto_reset").await;
    let mut c = env.proxy().await;
    c.query_drop("SET @x = 1").await.unwrap();
    let stmt = c.prep("SELECT 1").await.unwrap();
    c.reset().await.unwrap();
    let x: Option<Option<i32>> = c.query_first("SELECT @x").await.unwrap();
    assert_eq!(
        x,
        Some(None),
        "user variables cleared by COM_RESET_CONNECTION"
    );
    let _ = stmt;
    // COM_CHANGE_USER re-authenticates for real.
    c.query_drop("SET @y = 2").await.unwrap();
    c.change_user(
        ChangeUserOpts::default()
            .with_user(Some("other".into()))
            .with_pass(Some("app".into()))
            .with_db_name(Some(env.db.clone())),
    )
    .await
    .unwrap();
    let y: Option<Option<i32>> = c.query_first("SELECT @y").await.unwrap();
    assert_eq!(y, Some(None), "session state reset for the new user");
    let db: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some(env.db.as_str()));
    let bad = c
        .change_user(
            ChangeUserOpts::default()
                .with_user(Some("other".into()))
                .with_pass(Some("wrong".into())),
        )
        .await;
    assert!(bad.is_err(), "wrong password on change user is refused");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_do_not_leak_session_state() {
    // One backend connection, reused by consecutive clients.
    let env = TestEnv::start_full("proto_pool", 1, "").await;
    let other = format!("{}_x", env.db);
    let mut d = env.direct().await;
    d.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{other}`"))
        .await
        .unwrap();
    let mut first = env.proxy().await;
    let backend_thread: u64 = first
        .query_first("SELECT @@pseudo_thread_id")
        .await
        .unwrap()
        .unwrap();
    first
        .query_drop("SET @leak = 'yes', SESSION sql_mode = 'ANSI_QUOTES', NAMES latin1")
        .await
        .unwrap();
    first
        .query_drop("CREATE TEMPORARY TABLE leak_tmp (x INT)")
        .await
        .unwrap();
    first.query_drop(format!("USE `{other}`")).await.unwrap();
    first.query_drop("BEGIN").await.unwrap();
    first.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = env.proxy().await;
    let thread2: u64 = second
        .query_first("SELECT @@pseudo_thread_id")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(backend_thread, thread2, "the backend connection was reused");
    let row: (Option<String>, Option<String>, String, String) = second
        .query_first("SELECT @leak, DATABASE(), @@sql_mode, @@character_set_client")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.0, None);
    assert_eq!(row.1.as_deref(), Some(env.db.as_str()));
    assert_ne!(row.2, "ANSI_QUOTES");
    assert_ne!(row.3, "latin1");
    assert!(second.query_drop("SELECT * FROM leak_tmp").await.is_err());
    let in_trans: Option<i32> = second.query_first("SELECT @@in_transaction").await.unwrap();
    assert_eq!(in_trans, Some(0));
    second.disconnect().await.unwrap();
    d.query_drop(format!("DROP DATABASE `{other}`"))
        .await
        .unwrap();
    d.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_stays_within_its_size_across_capability_keys() {
    let env = TestEnv::start_full("proto_poolkeys", 2, "").await;
    for i in 0..12 {
        // CLIENT_FOUND_ROWS changes server behaviour, so it is part of the pool key.
        let opts = proxy_builder(env.addr, Some(&env.db)).client_found_rows(i % 2 == 0);
        let mut c = Conn::new(opts).await.unwrap();
        c.query_drop("CREATE TABLE IF NOT EXISTS fr (id INT PRIMARY KEY, v INT)")
            .await
            .unwrap();
        c.query_drop("INSERT INTO fr VALUES (1, 1) ON DUPLICATE KEY UPDATE v = v")
            .await
            .unwrap();
        c.query_drop("UPDATE fr SET v = 1 WHERE id = 1")
            .await
            .unwrap();
        // Found-rows semantics follow the client's flag, as on a direct connection.
        assert_eq!(
            c.affected_rows(),
            if i % 2 == 0 { 1 } else { 0 },
            "client {i}"
        );
        c.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let open = env.server.shared.pools.load()["legacy"].open_connections();
        assert!(open <= 2, "pool of 2 has {open} connections open");
    }
    let mut d = env.direct().await;
    let n: Option<i64> = d
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}' AND USER = 'root' AND ID <> CONNECTION_ID()",
            env.db
        ))
        .await
        .unwrap();
    assert!(
        n.unwrap() <= 2,
        "server sees {n:?} connections from the pool"
    );
    d.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_answers_too_many_connections() {
    let env = TestEnv::start_full("proto_exhaust", 1, "limits:\n  pool_wait_timeout: 200ms").await;
    let held = env.proxy().await;
    let e = Conn::new(proxy_builder(env.addr, Some(&env.db)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1040"), "{e}");
    held.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ok = env.proxy().await;
    ok.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statements_and_procedures_return_every_result() {
    let env = TestEnv::start("proto_multi").await;
    let mut c = env.proxy().await;
    c.query_drop("CREATE PROCEDURE three() BEGIN SELECT 1 AS a; SELECT 2 AS b; SELECT 3 AS c; END")
        .await
        .unwrap();
    let mut r = c.query_iter("CALL three()").await.unwrap();
    let mut sets = Vec::new();
    while !r.is_empty() {
        let rows: Vec<i32> = r.collect().await.unwrap();
        sets.push(rows);
    }
    assert_eq!(sets, vec![vec![1], vec![2], vec![3]]);
    drop(r);
    let mut r = c
        .query_iter("SELECT 10; SELECT 20; SELECT 30")
        .await
        .unwrap();
    let mut vals = Vec::new();
    while !r.is_empty() {
        let rows: Vec<i32> = r.collect().await.unwrap();
        vals.extend(rows);
    }
    assert_eq!(vals, vec![10, 20, 30]);
    drop(r);
    c.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_infile() {
    let env = TestEnv::start("proto_infile").await;
    let mut d = env.direct().await;
    let local: Option<String> = d.query_first("SELECT @@global.local_infile").await.unwrap();
    if local.as_deref() == Some("0") || local.as_deref() == Some("OFF") {
        d.query_drop("SET GLOBAL local_infile = 1").await.unwrap();
    }
    d.disconnect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let mut csv = String::new();
    for i in 0..50_000 {
        csv.push_str(&format!("{i},name-{i}\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let opts = proxy_builder(env.addr, Some(&env.db)).local_infile_handler(Some(
        mysql_async::WhiteListFsHandler::new(vec![file.clone()]),
    ));
    let mut c = Conn::new(opts).await.unwrap();
    c.query_drop("CREATE TABLE li (id INT PRIMARY KEY, name VARCHAR(40))")
        .await
        .unwrap();
    c.query_drop(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE li FIELDS TERMINATED BY ','",
        file.display()
    ))
    .await
    .unwrap();
    assert_eq!(c.affected_rows(), 50_000);
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM li").await.unwrap();
    assert_eq!(n, Some(50_000));
    c.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_result_streams_through() {
    let env = TestEnv::start("proto_stream").await;
    let mut c = env.proxy().await;
    c.query_drop("CREATE TABLE s (id INT PRIMARY KEY, pad CHAR(100))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO s SELECT seq, REPEAT('p', 100) FROM seq_1_to_200000")
        .await
        .unwrap();
    // Text protocol, consumed row by row (unbuffered on the client side).
    let mut r = c
        .query_iter("SELECT id, pad FROM s ORDER BY id")
        .await
        .unwrap();
    let mut count = 0u64;
    let mut sum = 0u64;
    r.for_each(|row: mysql_async::Row| {
        let id: u64 = row.get(0).unwrap();
        count += 1;
        sum += id;
    })
    .await
    .unwrap();
    drop(r);
    assert_eq!(count, 200_000);
    assert_eq!(sum, 200_000 * 200_001 / 2);
    // Binary protocol as well.
    let rows: Vec<(u64, String)> = c
        .exec("SELECT id, pad FROM s WHERE id > ?", (100_000,))
        .await
        .unwrap();
    assert_eq!(rows.len(), 100_000);
    // Abandoning a result half-way: the client disconnects mid-stream.
    let mut r = c.query_iter("SELECT id, pad FROM s").await.unwrap();
    let _first: Option<mysql_async::Row> = r.next().await.unwrap();
    drop(r);
    drop(c);
    let mut again = env.proxy().await;
    let n: Option<i64> = again.query_first("SELECT COUNT(*) FROM s").await.unwrap();
    assert_eq!(n, Some(200_000));
    again.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_connections() {
    raise_server_limits().await;
    let env = TestEnv::start_full("proto_500", 600, "").await;
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let opts = proxy_builder(env.addr, Some(&env.db));
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await?;
            let v: Option<u32> = c.query_first(format!("SELECT {i}")).await?;
            Ok::<_, mysql_async::Error>((c, v))
        }));
    }
    let mut conns = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (c, v) = t.await.unwrap().unwrap();
        assert_eq!(v, Some(i as u32));
        conns.push(c);
    }
    // All 500 are open at once and still answer.
    assert_eq!(env.server.shared.registry.len(), 500);
    for (i, c) in conns.iter_mut().enumerate().step_by(50) {
        let v: Option<u64> = c.exec_first("SELECT ?", (i as u64,)).await.unwrap();
        assert_eq!(v, Some(i as u64));
    }
    for c in conns {
        c.disconnect().await.unwrap();
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_statements_finish() {
    let env = TestEnv::start("proto_shutdown").await;
    let mut busy = env.proxy().await;
    let idle = env.proxy().await;
    let addr = env.addr;
    let running = tokio::spawn(async move {
        let r: Option<i64> = busy.query_first("SELECT SLEEP(1)").await.unwrap();
        r
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let TestEnv { server, db, .. } = env;
    server.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited for the running statement"
    );
    assert_eq!(
        running.await.unwrap(),
        Some(0),
        "the running statement completed normally"
    );
    assert!(
        Conn::new(proxy_builder(addr, Some(&db))).await.is_err(),
        "no new connections"
    );
    drop(idle);
    let mut root = Conn::new(direct_opts("mysql")).await.unwrap();
    root.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .await
        .unwrap();
    root.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_vanishes_gives_a_clear_error() {
    // A backend that is not listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let yaml = format!(
        "listen: 127.0.0.1:0\nusers: [{{ name: app, password: x }}]\nbackends:\n  gone: {{ kind: mysql, url: \"mysql://root@{dead}/db\" }}\nmigration: {{ primary: gone }}\nlimits: {{ connect_timeout: 1s }}\n"
    );
    let server = tandem::server::start(tandem::config::parse(&yaml).unwrap())
        .await
        .unwrap();
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(server.addr.port())
        .user(Some("app"))
        .pass(Some("x"))
        .prefer_socket(false);
    let e = Conn::new(opts).await.unwrap_err();
    assert!(
        e.to_string().contains("backend 'gone' is unavailable"),
        "{e}"
    );
    server.shutdown().await;

    // A backend connection killed behind Tandem's back mid-session.
    let env = TestEnv::start("proto_vanish").await;
    let mut c = env.proxy().await;
    let thread: u64 = c
        .query_first("SELECT @@pseudo_thread_id")
        .await
        .unwrap()
        .unwrap();
    let mut d = env.direct().await;
    d.query_drop(format!("KILL {thread}")).await.unwrap();
    let e = c.query_drop("SELECT 1").await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("2013")
            || msg.contains("1927")
            || msg.contains("Lost connection")
            || msg.contains("killed"),
        "{msg}"
    );
    let mut fresh = env.proxy().await;
    let one: Option<i32> = fresh.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    fresh.disconnect().await.unwrap();
    d.disconnect().await.unwrap();
    env.stop().await;
}

/// 1,000 sockets that connect and never answer the greeting used to hold
/// client slots until their handshake timed out, so a real client got
/// "Too many connections". Past `limits.max_unauthenticated` the oldest
/// pending handshake is closed: the real client logs in (and the time it
/// took is printed, not judged). A user's own `max_connections` refuses
/// the next session with MySQL's 1203.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_do_not_keep_clients_out_and_users_have_limits() {
    let env = TestEnv::start_with(
        "stalled",
        "limits:\n  max_client_connections: 512\n  max_unauthenticated: 128\n  handshake_timeout: 60s",
    )
    .await;
    let mut stalled = Vec::with_capacity(1000);
    for _ in 0..1000 {
        match tokio::net::TcpStream::connect(env.addr).await {
            Ok(s) => stalled.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    // Let the server accept them all.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let mut c = env.proxy().await;
    eprintln!(
        "logged in beside 1,000 stalled handshakes in {:?}",
        started.elapsed()
    );
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    drop(c);
    drop(stalled);
    env.stop().await;

    // A user with max_connections: 2.
    let db = "tandem_userlimit";
    fresh_database(db).await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nusers:\n  - {{ name: capped, password: capped-pw, max_connections: 2 }}\n\
         backends:\n  legacy: {{ kind: mysql, url: \"mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}\" }}\n\
         migration: {{ primary: legacy }}\nrules: ./rules\n"
    );
    let server = tandem::server::start(tandem::config::parse(&yaml).unwrap())
        .await
        .unwrap();
    let login = || {
        Conn::new(
            proxy_builder(server.addr, Some(db))
                .user(Some("capped"))
                .pass(Some("capped-pw")),
        )
    };
    let a = login().await.unwrap();
    let b = login().await.unwrap();
    let e = login().await.unwrap_err();
    assert!(
        matches!(&e, mysql_async::Error::Server(s) if s.code == 1203),
        "{e}"
    );
    drop(a);
    // A closed session frees its place.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match login().await {
            Ok(c) => {
                drop(c);
                break;
            }
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(b);
    server.shutdown().await;
}

/// A statement with thousands of `JOIN`s without `ON` (40 KB) made the
/// parser recurse until the stack overflowed, which aborts the process:
/// one client could stop Tandem for everyone. It now reaches the server,
/// whose answer the client gets (the same as directly), and the session
/// and Tandem go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_with_thousands_of_joins_gets_the_servers_answer() {
    let env = TestEnv::start("proto_joins").await;
    let mut sql = String::from("SELECT * FROM t0");
    for i in 1..5000 {
        sql.push_str(&format!(" JOIN t{i}"));
    }
    let mut direct = env.direct().await;
    let want = match direct.query_drop(&sql).await {
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        other => panic!("directly: {other:?}"),
    };
    let mut c = env.proxy().await;
    let got = match c.query_drop(&sql).await {
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        other => panic!("through Tandem: {other:?}"),
    };
    assert_eq!(got, want);
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    drop((c, direct));
    env.stop().await;
}
