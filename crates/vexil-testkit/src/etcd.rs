//! A real etcd for tests: found (or started) once per test process. Tests isolate themselves
//! with a unique key prefix each ([`unique_prefix`]), so one server serves them all.
//!
//! [`endpoint`] picks the server, in this order:
//! 1. `VEXIL_TEST_ETCD`, when set: a client URL such as `http://127.0.0.1:2379`;
//! 2. a private `etcd` (Debian's `etcd-server`, installed with `apt-get` when no `etcd` binary
//!    is on `PATH` and we are root), with its data in a temporary directory and its client and
//!    peer URLs on free ports on 127.0.0.1. A small watchdog process kills it and removes the
//!    directory once the test process has exited, however it exits (no destructor runs for a
//!    `static`), mirroring [`crate::postgres`].
//!
//! Every wait is bounded: `apt-get`, readiness polling (`GET /health` on the client URL) and the
//! watchdog's own lifetime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A client URL to use instead of starting a private etcd.
pub const ENDPOINT_VAR: &str = "VEXIL_TEST_ETCD";

/// How long a private etcd may take to report itself healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a watchdog waits for its test process (a day), so none lingers forever.
const WATCHDOG_MAX_SECS: u32 = 86_400;

static ENDPOINT: OnceLock<String> = OnceLock::new();

/// The client URL of an etcd the tests may use. The first call in a process finds or starts
/// the server (see the module docs); later calls return the same URL. Blocking: from async
/// code, call it through `spawn_blocking` (a start takes well under a second once installed).
///
/// # Panics
/// When no server can be found or started; the message says what failed.
pub fn endpoint() -> String {
    ENDPOINT
        .get_or_init(|| find_or_start().unwrap_or_else(|e| panic!("no etcd for the tests: {e}")))
        .clone()
}

/// A key prefix no other test (in this process, a concurrent one, or an earlier run) uses:
/// `/vexil-test/<pid>-<n>-<clock>/`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!("/vexil-test/{}-{n}-{clock:x}/", std::process::id())
}

fn find_or_start() -> Result<String, String> {
    if let Ok(url) = std::env::var(ENDPOINT_VAR)
        && !url.is_empty()
    {
        return Ok(url);
    }
    start_private()
}

fn start_private() -> Result<String, String> {
    let etcd = ensure_binary()?;
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("vexil-etcd-{}-{clock:x}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut last_error = String::new();
    // A free port is only free until someone takes it: a few tries.
    for attempt in 0..3 {
        let (client, peer) = (free_port()?, free_port()?);
        let data = dir.join(format!("data-{attempt}"));
        let log_path = dir.join(format!("etcd-{attempt}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        eprintln!(
            "vexil-testkit: starting a private etcd from {} in {}",
            etcd.display(),
            dir.display()
        );
        let mut child = Command::new(&etcd)
            .arg("--name")
            .arg("vexil-test")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("vexil-test={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", etcd.display()))?;
        spawn_watchdog(child.id(), &dir);
        match wait_ready(&mut child, client) {
            Ok(()) => {
                eprintln!("vexil-testkit: private etcd ready at {client_url}");
                return Ok(client_url);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                last_error = format!("{e}\n{log}");
            }
        }
    }
    Err(last_error)
}

/// Polls `GET /health` until etcd reports itself healthy, the process exits, or
/// [`READY_TIMEOUT`] passes.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("etcd exited early ({status})"));
        }
        if healthy(port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "etcd did not become healthy within {READY_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether etcd's `/health` endpoint on `port` answers `"health":"true"`.
fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.replace(' ', "").contains("\"health\":\"true\"")
}

/// Kills etcd and removes its directory once this process is gone. It runs in its own session
/// (`setsid`) so that a Ctrl-C delivered to the test's process group does not take the watchdog
/// down before etcd.
fn spawn_watchdog(etcd_pid: u32, dir: &Path) {
    let script = format!(
        r#"pid="$1"; etcd="$2"; dir="$3"
i=0
while kill -0 "$pid" 2>/dev/null && [ "$i" -lt {WATCHDOG_MAX_SECS} ]; do sleep 1; i=$((i + 1)); done
kill -9 "$etcd" 2>/dev/null
sleep 1
rm -rf "$dir""#
    );
    let spawned = Command::new("setsid")
        .arg("bash")
        .arg("-c")
        .arg(script)
        .arg("vexil-etcd-watchdog")
        .arg(std::process::id().to_string())
        .arg(etcd_pid.to_string())
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    // Never waited for: it outlives this process by design.
    if let Err(e) = spawned {
        eprintln!(
            "vexil-testkit: no watchdog for the private etcd in {} ({e}); stop it by hand",
            dir.display()
        );
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// The `etcd` binary, installing Debian's `etcd-server` if there is none.
fn ensure_binary() -> Result<PathBuf, String> {
    if let Some(bin) = find_binary() {
        return Ok(bin);
    }
    if !is_root() {
        return Err("no etcd binary found, and installing etcd-server needs root".into());
    }
    eprintln!("vexil-testkit: installing etcd-server from Debian (apt-get)");
    for args in [
        &["900", "apt-get", "update"][..],
        &["900", "apt-get", "install", "-y", "etcd-server"][..],
    ] {
        run(
            Command::new("timeout")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &args[1..].join(" "),
        )?;
    }
    find_binary().ok_or_else(|| "etcd-server installed, but no etcd binary found".into())
}

fn find_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

/// Runs `cmd` to completion; a failure carries its output.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
