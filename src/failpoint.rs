//! Crash points for tests: `TANDEM_FAILPOINT=<name>` in a `tandem serve`
//! process's environment aborts the process (as SIGKILL would: no clean-up,
//! sockets closed by the kernel) the first time it reaches the point of
//! that name. Tests use it to crash Tandem at an exact step of a protocol
//! (e.g. `xa-after-prepare`); unset, a point costs one comparison.

use std::sync::OnceLock;

/// Aborts the process when `name` is the failpoint the environment names.
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("TANDEM_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
