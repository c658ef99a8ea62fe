//! A session moved to the new primary by a cutover keeps what it had on
//! the old one, or fails loudly: variables by value (never by running the
//! SETs' expressions again), an open cursor and long data sent for a
//! statement not executed yet (the session stays where they are until
//! they are done), and its database (a move that cannot select it closes
//! the connection with the reason, never leaving it in another database).

use crate::common::mirror::*;
use crate::common::raw::{default_caps, err_of, RawClient};
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::Duration;
use tandem::protocol::response::Expect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_move_by_value_not_by_expression() {
    let env = MirrorEnv::launch("mv_vars", MARIADB_PORT, "", Some("")).await;
    env.create_both("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    for sql in [
        "INSERT INTO t (v) VALUES (1)",
        "SET @id = LAST_INSERT_ID()",
        "SET @n = 0",
        "SET @n = @n + 1",
        "SET @n = @n + 1",
        "SET @n = @n + 1",
        "SET @when = NOW(6), time_zone = '+03:00'",
        "SELECT 2.5e0, _latin1 X'E9' INTO @d, @s",
        "INSERT INTO t (v) VALUES (2)",
    ] {
        c.query_drop(sql).await.unwrap();
    }
    let read = "SELECT @id, @n, @d, HEX(@s), CHARSET(@s), @when, @@time_zone, DATABASE()";
    type Vars = (i64, i64, f64, String, String, String, String, String);
    let before: Vars = c.query_first(read).await.unwrap().unwrap();
    assert_eq!((before.0, before.1, before.2), (1, 3, 2.5));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let after: Vars = c.query_first(read).await.unwrap().unwrap();
    assert_eq!(after.7, env.secondary, "moved");
    assert_eq!(
        (after.0, after.1, after.2, &after.3, &after.4, &after.5, &after.6),
        (before.0, before.1, before.2, &before.3, &before.4, &before.5, &before.6),
        "the same values on the new primary"
    );
    drop(c);
    env.stop().await;
}

/// COM_STMT_PREPARE of `sql` on a raw client: the statement id.
async fn prepare(c: &mut RawClient, sql: &str) -> u32 {
    let mut p = vec![0x16];
    p.extend_from_slice(sql.as_bytes());
    let r = c.command(&p, Expect::Prepare).await;
    assert_eq!(r[0][0], 0x00, "prepare: {:?}", err_of(&r[0]));
    u32::from_le_bytes([r[0][1], r[0][2], r[0][3], r[0][4]])
}

/// COM_STMT_FETCH of `n` rows: the rows' packets (the EOF dropped).
async fn fetch(c: &mut RawClient, id: u32, n: u32) -> Vec<Vec<u8>> {
    let mut p = vec![0x1c];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&n.to_le_bytes());
    let mut r = c.command(&p, Expect::Fetch).await;
    let last = r.pop().unwrap();
    assert_eq!(last[0], 0xFE, "fetch ends with EOF: {:?}", err_of(&last));
    r
}

/// The first column (a 4-byte INT) of a binary row.
fn int_of(row: &[u8]) -> i32 {
    // 0x00 header, a one-byte NULL bitmap for one column, then the value.
    i32::from_le_bytes([row[2], row[3], row[4], row[5]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_cursor_is_fetched_to_its_end_across_a_cutover() {
    let env = MirrorEnv::launch("mv_cursor", MARIADB_PORT, "", Some("")).await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY)").await;
    env.create_both("INSERT INTO t SELECT seq FROM seq_1_to_6")
        .await;
    let mut c = RawClient::connect(
        ("127.0.0.1", env.server.addr.port()),
        USER,
        PASSWORD,
        Some(&env.primary),
        default_caps(false),
        "mysql_native_password",
    )
    .await
    .unwrap();
    let id = prepare(&mut c, "SELECT id FROM t ORDER BY id").await;
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.push(0x01); // CURSOR_TYPE_READ_ONLY
    exec.extend_from_slice(&1u32.to_le_bytes());
    let r = c.command(&exec, Expect::ResultSet).await;
    assert_eq!(
        r.len(),
        3,
        "column count, definition, EOF: the cursor is open"
    );
    let rows = fetch(&mut c, id, 2).await;
    assert_eq!(rows.iter().map(|r| int_of(r)).collect::<Vec<_>>(), [1, 2]);

    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let rows = fetch(&mut c, id, 10).await;
    assert_eq!(
        rows.iter().map(|r| int_of(r)).collect::<Vec<_>>(),
        [3, 4, 5, 6],
        "the cursor goes on where it was opened"
    );
    // Done with it: the next statement runs on the new primary.
    let r = c.query("SELECT DATABASE()").await;
    let row = &r[r.len() - 2];
    assert_eq!(&row[1..], env.secondary.as_bytes());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_data_holds_the_cutover_until_its_execute() {
    let env = MirrorEnv::launch("mv_long", MARIADB_PORT, "", Some("")).await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, doc TEXT)")
        .await;
    let mut c = RawClient::login(env.server.addr, USER, PASSWORD, &env.primary).await;
    let id = prepare(&mut c, "INSERT INTO t VALUES (?, ?)").await;
    let mut long = vec![0x18];
    long.extend_from_slice(&id.to_le_bytes());
    long.extend_from_slice(&1u16.to_le_bytes());
    long.extend_from_slice(b"sent before the cutover");
    crate::common::raw::write_packet(&mut c.stream, 0, &long)
        .await
        .unwrap();

    // The cutover waits for the statement.
    let cutover = env.cutover_waiting(&["--wait", "20s"]).await;
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.push(0x00);
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0x00); // NULL bitmap
    exec.push(0x01); // types follow
    exec.extend_from_slice(&[0x03, 0x00, 0xfe, 0x00]); // LONG, STRING
    exec.extend_from_slice(&7i32.to_le_bytes()); // the STRING came as long data
    let r = c.command(&exec, Expect::ResultSet).await;
    assert_eq!(r[0][0], 0x00, "{:?}", err_of(&r[0]));
    let (code, out, err) = cutover.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("t").await, 1);
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    let doc: Option<String> = s
        .query_first("SELECT doc FROM t WHERE id = 7")
        .await
        .unwrap();
    assert_eq!(doc.as_deref(), Some("sent before the cutover"));
    s.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_cannot_select_the_database_closes_the_session() {
    let env = MirrorEnv::launch("mv_usedb", MARIADB_PORT, "", Some("")).await;
    let other = "tandem_m_mv_usedb_other";
    fresh_database(other).await;
    let mut c = env.proxy().await;
    c.query_drop(format!("USE `{other}`")).await.unwrap();
    // Gone from under the session (on both sides: one server here).
    drop_databases(&[other]).await;
    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    match c.query_first::<String, _>("SELECT DATABASE()").await {
        Err(mysql_async::Error::Server(e)) => {
            assert!(e.message.contains("cannot move to the new primary"), "{e}")
        }
        Err(e) => panic!("expected the server's error, got {e}"),
        Ok(db) => panic!("the session went on in {db:?}"),
    }
    assert!(c.ping().await.is_err(), "the connection is closed");
    env.stop().await;
}
