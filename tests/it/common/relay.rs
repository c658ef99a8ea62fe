//! A TCP relay the test controls, placed between Tandem and a backend:
//! `cut()` drops every relayed connection and refuses new ones until
//! `restore()`; `freeze()` stops relaying but keeps every connection open,
//! like a host that died without closing them (until `cut()`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    frozen: watch::Sender<bool>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let gen_tx = generation.clone();
        let (frozen, _) = watch::channel(false);
        let frozen_tx = frozen.clone();
        let up2 = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = gen_tx.subscribe();
                let mut frozen = frozen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut c, mut s) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut c, &mut s) => {}
                        _ = cut.changed() => {}
                        _ = async { let _ = frozen.wait_for(|f| *f).await; } => {
                            // Both ends stay open and silent until cut.
                            let _ = cut.changed().await;
                        }
                    }
                    drop((c, s));
                });
            }
        });
        Self {
            addr,
            up,
            generation,
            frozen,
        }
    }

    /// Drops all relayed connections and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
        self.frozen.send_replace(false);
    }

    /// Stops relaying; connections stay open (see the module doc).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }
}
