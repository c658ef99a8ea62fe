//! Opens N client connections to a MySQL endpoint, runs one query on each,
//! then holds them idle for S seconds (used by scripts/bench.sh to measure
//! Tandem's memory with many idle clients).
//!
//! usage: idle_connections HOST PORT USER PASSWORD DB N SECONDS

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 8 {
        eprintln!("usage: idle_connections HOST PORT USER PASSWORD DB N SECONDS");
        std::process::exit(2);
    }
    let (n, secs): (usize, u64) = (a[6].parse()?, a[7].parse()?);
    let opts = OptsBuilder::default()
        .ip_or_hostname(a[1].clone())
        .tcp_port(a[2].parse()?)
        .user(Some(a[3].clone()))
        .pass(Some(a[4].clone()))
        .db_name(Some(a[5].clone()))
        .prefer_socket(false);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Conn::new(opts.clone()).await?;
        c.query_drop("SELECT 1").await?;
        conns.push(c);
    }
    println!("open {n}");
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    for c in conns {
        c.disconnect().await?;
    }
    Ok(())
}
