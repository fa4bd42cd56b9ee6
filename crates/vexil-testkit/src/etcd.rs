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
//! A test that stops and starts etcd (fault injection) owns one instead: an [`EtcdCluster`] of
//! one or more members on loopback, made as in 2, whose members it may kill and start again
//! from their data; dropping it kills them and removes the directory.
//!
//! Every wait is bounded: `apt-get`, readiness polling (`GET /health` on the client URL),
//! waiting for a killed member to exit, and the watchdog's own lifetime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A client URL to use instead of starting a private etcd.
pub const ENDPOINT_VAR: &str = "VEXIL_TEST_ETCD";

/// How long a private etcd (every member of it) may take to report itself healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a killed member may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Starts the etcd [`endpoint`] falls back to: a one-member [`EtcdCluster`] that is never
/// dropped, as it serves the whole test process; its watchdog kills it once the process has
/// exited.
fn start_private() -> Result<String, String> {
    let cluster = EtcdCluster::try_start(1)?;
    let url = cluster.endpoints_csv();
    // Not dropped on purpose: dropping would kill the server other tests are using.
    std::mem::forget(cluster);
    Ok(url)
}

/// A private etcd cluster of N members on loopback, owned by one test, which may stop and
/// start its members (fault injection).
///
/// Each member has its own data directory in a new temporary directory and its own free
/// client and peer ports on 127.0.0.1. The cluster bootstraps statically (`--initial-cluster`,
/// `--initial-cluster-state new`, a cluster token of its own, so no member can join another
/// test's cluster) with short Raft timings (50 ms heartbeats, 500 ms election timeout), so that
/// losing a leader costs about a second, not several.
///
/// A member is stopped with SIGKILL, as a crash would stop it, and started again from its data
/// directory, so it rejoins as the same member. Its output goes to `<dir>/m<i>.log`, which the
/// panics quote.
///
/// Dropping the cluster kills every member and removes the directory; a watchdog process does
/// the same if the test process dies first. Every method blocks (bounded); from async code,
/// call the slow ones through `spawn_blocking`, or accept that they block the test's thread.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The `etcd` binary.
    etcd: PathBuf,
    /// The temporary directory: one data directory and log per member.
    dir: PathBuf,
    /// Names and ports, fixed once the cluster has started.
    members: Vec<Member>,
    /// `m0=http://127.0.0.1:PEER0,...`.
    initial_cluster: String,
    /// `--initial-cluster-token`: unique, so members of different clusters never mix.
    token: String,
    /// The running process of each member, `None` while it is stopped. The lock also keeps
    /// stops and starts from interleaving.
    processes: Mutex<Vec<Option<Child>>>,
    /// The watchdog, killed on drop once the cluster is gone (it has nothing left to do).
    watchdog: Option<Child>,
}

/// One member's fixed identity.
#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }
}

impl EtcdCluster {
    /// Starts a cluster of `members` members (1 or 3 typically) and waits (at most 30 s) until
    /// every member's `GET /health` says it is healthy. Installs Debian's `etcd-server` with
    /// `apt-get` when there is no `etcd` binary.
    ///
    /// # Panics
    /// When `members` is 0, or the cluster cannot be started; the message says what failed and
    /// quotes the failing member's log.
    pub fn start(members: usize) -> Self {
        Self::try_start(members)
            .unwrap_or_else(|e| panic!("starting a private etcd cluster of {members}: {e}"))
    }

    fn try_start(members: usize) -> Result<Self, String> {
        assert!(members > 0, "an etcd cluster needs at least one member");
        let etcd = ensure_binary()?;
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // The watchdog first, so that even a half-started cluster is cleaned up if we die now.
        let watchdog = spawn_watchdog(&dir);
        // From here on, an error drops `cluster`, which kills what started and removes the
        // directory.
        let mut cluster = Self {
            etcd,
            dir,
            members: Vec::new(),
            initial_cluster: String::new(),
            token: String::new(),
            processes: Mutex::new((0..members).map(|_| None).collect()),
            watchdog,
        };
        eprintln!(
            "vexil-testkit: starting a private etcd ({members} member{}) from {} in {}",
            if members == 1 { "" } else { "s" },
            cluster.etcd.display(),
            cluster.dir.display()
        );
        let mut last_error = String::new();
        // A free port is only free until someone takes it: a few tries, with new ports.
        for attempt in 0..3 {
            let ports = free_ports(2 * members)?;
            cluster.members = ports
                .chunks_exact(2)
                .enumerate()
                .map(|(i, pair)| Member {
                    name: format!("m{i}"),
                    client: pair[0],
                    peer: pair[1],
                })
                .collect();
            cluster.initial_cluster = cluster
                .members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url()))
                .collect::<Vec<_>>()
                .join(",");
            let dir_name = cluster
                .dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            cluster.token = format!("{dir_name}-{attempt}");
            // A failed attempt may have bootstrapped data directories for other ports.
            for i in 0..members {
                let _ = std::fs::remove_dir_all(cluster.data_dir(i));
            }
            match cluster.start_stopped("new") {
                Ok(()) => {
                    eprintln!(
                        "vexil-testkit: private etcd ready at {}",
                        cluster.endpoints_csv()
                    );
                    return Ok(cluster);
                }
                Err(e) => {
                    cluster.kill_all();
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// The members' client URLs, in member order: `["http://127.0.0.1:PORT", ...]`. They stay
    /// the same across stops and starts.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// [`endpoints`](Self::endpoints) joined with `,`, as `ETCD_ENDPOINTS` takes them.
    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    /// Whether member `i` answers `GET /health` with `"health":"true"` now (a member without
    /// a quorum answers `false`; a stopped one does not answer). One request, at most about
    /// 3 s.
    ///
    /// # Panics
    /// When there is no member `i`.
    pub fn member_healthy(&self, i: usize) -> bool {
        healthy(self.member(i).client)
    }

    /// Kills member `i` (SIGKILL, as a crash would) and waits (at most 10 s) until it has
    /// exited. Does nothing when it is stopped already.
    ///
    /// # Panics
    /// When there is no member `i`, or it does not exit in time.
    pub fn stop_member(&self, i: usize) {
        // A bad index panics here, clearly, before the lock is taken.
        self.member(i);
        let mut processes = self.lock_processes();
        if let Some(child) = processes[i].take() {
            kill_and_wait(child).unwrap_or_else(|e| panic!("stopping etcd member {i}: {e}"));
        }
    }

    /// Starts member `i` again from its data directory (so `--initial-cluster-state existing`)
    /// and waits (at most 30 s) until its `GET /health` says it is healthy. Does not restart a
    /// running member, but still waits for it.
    ///
    /// A member is healthy only as part of a quorum: when it and the running members are not
    /// a majority, this times out; start them together with [`start_all`](Self::start_all).
    ///
    /// # Panics
    /// When there is no member `i`, or it exits or stays unhealthy; the message quotes its log.
    pub fn start_member(&self, i: usize) {
        // A bad index panics here, clearly, before the lock is taken.
        self.member(i);
        let mut processes = self.lock_processes();
        if let Err(e) = self.start_in(&mut processes, &[i], "existing") {
            panic!("starting etcd member {i}: {e}");
        }
    }

    /// Stops every member, as [`stop_member`](Self::stop_member) does.
    ///
    /// # Panics
    /// When a member does not exit in time.
    pub fn stop_all(&self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }

    /// Starts every stopped member, then waits (at most 30 s in all) until every member is
    /// healthy: starting them one by one would wait for a quorum that is not there yet.
    ///
    /// # Panics
    /// When a member exits or stays unhealthy; the message quotes its log.
    pub fn start_all(&self) {
        if let Err(e) = self.start_stopped("existing") {
            panic!("starting the etcd cluster: {e}");
        }
    }

    /// Starts every stopped member with `--initial-cluster-state <state>` and waits until all
    /// are healthy.
    fn start_stopped(&self, state: &str) -> Result<(), String> {
        let all: Vec<usize> = (0..self.members.len()).collect();
        let mut processes = self.lock_processes();
        self.start_in(&mut processes, &all, state)
    }

    /// Spawns those of `which` that are not running, then waits (bounded by
    /// [`READY_TIMEOUT`]) until every one of `which` is healthy.
    fn start_in(
        &self,
        processes: &mut [Option<Child>],
        which: &[usize],
        state: &str,
    ) -> Result<(), String> {
        for &i in which {
            // A member that exited on its own (it crashed, or a test killed it) is stopped.
            if let Some(child) = &mut processes[i]
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                processes[i] = None;
            }
            if processes[i].is_none() {
                processes[i] = Some(self.spawn_member(i, state)?);
            }
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending = which.to_vec();
        loop {
            for &i in &pending {
                if let Some(child) = &mut processes[i]
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!(
                        "etcd member {i} exited early ({status})\n{}",
                        self.log_tail(i)
                    ));
                }
            }
            pending.retain(|&i| !healthy(self.members[i].client));
            let Some(&late) = pending.first() else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd members {pending:?} did not become healthy within {READY_TIMEOUT:?}\n{}",
                    self.log_tail(late)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Spawns member `i`.
    fn spawn_member(&self, i: usize, state: &str) -> Result<Child, String> {
        let member = &self.members[i];
        let log_path = self.dir.join(format!("{}.log", member.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(&self.etcd);
        // etcd reads its settings from `ETCD_*` variables too; the tests' own (such as
        // `ETCD_ENDPOINTS`) are not meant for it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        let client_url = member.client_url();
        let peer_url = member.peer_url();
        cmd.arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // zap: etcd 3.4's default logger (capnslog) ignores `--log-level` for Raft's
            // chatter, which would fill the log with every election.
            .args(["--logger", "zap", "--log-level", "warn"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        cmd.spawn()
            .map_err(|e| format!("starting {}: {e}", self.etcd.display()))
    }

    /// Kills every member, reporting (not panicking on) failures: for errors and `Drop`.
    fn kill_all(&self) {
        let mut processes = self.lock_processes();
        for (i, slot) in processes.iter_mut().enumerate() {
            if let Some(child) = slot.take()
                && let Err(e) = kill_and_wait(child)
            {
                eprintln!("vexil-testkit: killing etcd member {i}: {e}");
            }
        }
    }

    /// Member `i`, or a clear panic.
    fn member(&self, i: usize) -> &Member {
        self.members
            .get(i)
            .unwrap_or_else(|| panic!("no etcd member {i}: the cluster has {}", self.members.len()))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("m{i}"))
    }

    /// The end of member `i`'s log, for error messages.
    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("m{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!("m{i}.log (last lines):\n{}", lines[from..].join("\n"))
    }

    /// The processes; a panic while they were locked (a failed start) does not make the
    /// cluster unusable, least of all for its `Drop`.
    fn lock_processes(&self) -> MutexGuard<'_, Vec<Option<Child>>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "vexil-testkit: could not remove {}: {e}",
                self.dir.display()
            );
        }
        // Nothing is left for the watchdog to clean up.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// SIGKILLs a member's process and waits (bounded) until it has exited.
fn kill_and_wait(mut child: Child) -> Result<(), String> {
    // An error here means it had exited already, which is what we want.
    let _ = child.kill();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                return Err(format!(
                    "pid {} still runs {EXIT_TIMEOUT:?} after SIGKILL",
                    child.id()
                ));
            }
            Err(e) => return Err(format!("waiting for pid {}: {e}", child.id())),
        }
    }
    Ok(())
}

/// A new directory under the temporary directory, `vexil-etcd-<pid>-<n>-<clock>`: unique among
/// concurrent test processes, within one, and across runs that reuse a pid.
fn unique_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("vexil-etcd-{}-{n}-{clock:x}", std::process::id()))
}

/// Whether etcd's `/health` endpoint on `port` answers `"health":"true"`.
fn healthy(port: u16) -> bool {
    http(port, "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_some_and(|reply| reply.replace(' ', "").contains("\"health\":\"true\""))
}

/// Sends one HTTP/1.0 `request` to 127.0.0.1:`port` and returns the whole reply (head and
/// body), or `None` when nothing answers. Bounded: 1 s to connect, 2 s per read or write.
fn http(port: u16, request: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    // A timeout mid-body still leaves what was read, which the caller judges.
    let _ = stream.read_to_string(&mut reply);
    Some(reply)
}

/// Kills the cluster's members and removes its directory once this process is gone. It runs
/// in its own session (`setsid`) so that a Ctrl-C delivered to the test's process group does
/// not take the watchdog down before etcd.
///
/// Members come and go (and one may be starting as the test dies), so it finds them by their
/// command line, `--data-dir <dir>/...`, which no other process has. It repeats the sweep until
/// the directory has stayed gone for a few seconds (at most a minute), so that a member
/// spawned during the first sweep is caught by the next. Returns the watchdog, which the
/// caller may kill once it has cleaned up itself.
fn spawn_watchdog(dir: &Path) -> Option<Child> {
    let script = format!(
        r#"pid="$1"; dir="$2"
i=0
while kill -0 "$pid" 2>/dev/null && [ "$i" -lt {WATCHDOG_MAX_SECS} ]; do sleep 1; i=$((i + 1)); done
gone=0; n=0
while [ "$gone" -lt 3 ] && [ "$n" -lt 60 ]; do
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in
      *"--data-dir $dir/"*) kill -9 "${{p#/proc/}}" 2>/dev/null ;;
    esac
  done
  rm -rf "$dir" 2>/dev/null
  if [ -e "$dir" ]; then gone=0; else gone=$((gone + 1)); fi
  n=$((n + 1)); sleep 1
done"#
    );
    let spawned = Command::new("setsid")
        .arg("bash")
        .arg("-c")
        .arg(script)
        .arg("vexil-etcd-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    // Not waited for while the cluster lives: it outlives this process by design.
    match spawned {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!(
                "vexil-testkit: no watchdog for the private etcd in {} ({e}); stop it by hand",
                dir.display()
            );
            None
        }
    }
}

/// `n` distinct free ports: all are bound at once, so none is handed out twice.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("finding free ports: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("finding free ports: {e}"))
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{EtcdCluster, http};

    /// Polls `check` every 50 ms until it holds or `limit` passes.
    fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if check() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Standard base64 with padding, which etcd's JSON gateway wants for keys and values.
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
                if k <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// POSTs `body` to etcd's JSON gateway on `endpoint` and returns the reply's JSON body.
    fn post(endpoint: &str, path: &str, body: &serde_json::Value) -> Option<serde_json::Value> {
        let port: u16 = endpoint.rsplit(':').next()?.parse().ok()?;
        let body = body.to_string();
        let reply = http(
            port,
            &format!(
                "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )?;
        let (_, json) = reply.split_once("\r\n\r\n")?;
        serde_json::from_str(json).ok()
    }

    fn put(endpoint: &str, key: &str, value: &str) -> bool {
        let request =
            serde_json::json!({ "key": base64(key.as_bytes()), "value": base64(value.as_bytes()) });
        post(endpoint, "/v3/kv/put", &request).is_some_and(|reply| reply.get("header").is_some())
    }

    /// The value of `key` as base64, read (linearizably) through `endpoint`.
    fn get(endpoint: &str, key: &str) -> Option<String> {
        let request = serde_json::json!({ "key": base64(key.as_bytes()) });
        let reply = post(endpoint, "/v3/kv/range", &request)?;
        reply.pointer("/kvs/0/value")?.as_str().map(str::to_owned)
    }

    #[test]
    fn base64_pads_to_whole_quads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn a_three_member_cluster_survives_one_stopped_member() {
        let started = Instant::now();
        let cluster = EtcdCluster::start(3);
        eprintln!("3 members healthy after {:?}", started.elapsed());
        let endpoints = cluster.endpoints();
        assert_eq!(endpoints.len(), 3);
        assert!(endpoints.iter().all(|e| e.starts_with("http://127.0.0.1:")));
        assert_eq!(cluster.endpoints_csv(), endpoints.join(","));
        for i in 0..3 {
            assert!(cluster.member_healthy(i), "member {i} is not healthy");
        }

        cluster.stop_member(0);
        cluster.stop_member(0); // idempotent
        assert!(!cluster.member_healthy(0), "a stopped member answers");
        // When member 0 led, the others elect a new leader first: healthy soon, not at once.
        let stopped = Instant::now();
        for i in 1..3 {
            assert!(
                eventually(Duration::from_secs(15), || cluster.member_healthy(i)),
                "member {i} did not stay healthy without member 0"
            );
        }
        eprintln!(
            "members 1 and 2 healthy {:?} after the stop",
            stopped.elapsed()
        );
        assert!(put(&endpoints[1], "written-while-0-was-down", "yes"));

        let restarting = Instant::now();
        cluster.start_member(0);
        eprintln!("member 0 healthy again after {:?}", restarting.elapsed());
        assert!(cluster.member_healthy(0));
        assert_eq!(cluster.endpoints(), endpoints, "an endpoint moved");
        // It rejoined as the same member and caught up.
        assert_eq!(
            get(&endpoints[0], "written-while-0-was-down").as_deref(),
            Some(base64(b"yes").as_str())
        );
    }

    /// Which member leads, as member `i` sees it (`/v3/maintenance/status`).
    fn leader(cluster: &EtcdCluster) -> Option<usize> {
        let ids: Vec<String> = cluster
            .endpoints()
            .iter()
            .map(|e| {
                post(e, "/v3/maintenance/status", &serde_json::json!({}))
                    .and_then(|s| s.pointer("/header/member_id")?.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
        let status = post(
            &cluster.endpoints()[0],
            "/v3/maintenance/status",
            &serde_json::json!({}),
        )?;
        let leader = status.get("leader")?.as_str()?;
        ids.iter().position(|id| id == leader)
    }

    #[test]
    fn a_three_member_cluster_elects_a_new_leader_when_its_leader_is_killed() {
        let cluster = EtcdCluster::start(3);
        let old = leader(&cluster).expect("no leader");
        let killed = Instant::now();
        cluster.stop_member(old);
        let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
        for &i in &others {
            assert!(
                eventually(Duration::from_secs(15), || cluster.member_healthy(i)),
                "member {i} did not recover from losing the leader"
            );
        }
        eprintln!("healthy without the leader after {:?}", killed.elapsed());
        assert!(put(
            &cluster.endpoints()[others[0]],
            "after-election",
            "yes"
        ));
        cluster.start_member(old);
        assert!(cluster.member_healthy(old));
    }

    #[test]
    fn a_cluster_stopped_whole_starts_again_with_its_data() {
        let cluster = EtcdCluster::start(3);
        let endpoints = cluster.endpoints();
        assert!(put(&endpoints[2], "kept", "across restarts"));

        cluster.stop_all();
        for i in 0..3 {
            assert!(
                !cluster.member_healthy(i),
                "member {i} answers after stop_all"
            );
        }
        let restarting = Instant::now();
        cluster.start_all();
        eprintln!("3 members healthy again after {:?}", restarting.elapsed());
        for i in 0..3 {
            assert!(cluster.member_healthy(i), "member {i} is not healthy");
        }
        assert_eq!(
            get(&endpoints[0], "kept").as_deref(),
            Some(base64(b"across restarts").as_str())
        );

        let dir = cluster.dir.clone();
        drop(cluster);
        assert!(!dir.exists(), "{} is left after drop", dir.display());
        assert!(endpoints.iter().all(|e| {
            let port: u16 = e
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            http(port, "GET /health HTTP/1.0\r\n\r\n").is_none()
        }));
    }
}
