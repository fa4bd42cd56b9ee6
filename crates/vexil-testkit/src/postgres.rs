//! A real PostgreSQL for tests: finding (or starting) a server once per test process, and a
//! fresh, uniquely named database per test.
//!
//! [`admin_url`] picks the server, in this order:
//! 1. `VEXIL_TEST_PG_URL`, when set: a URL to a role that may `CREATE DATABASE` (its path
//!    names the database to connect to for that, e.g. `/postgres`);
//! 2. the machine's own server on `127.0.0.1:5432`, when it lets user `postgres` in without a
//!    password (this machine kind runs one);
//! 3. a private cluster: PostgreSQL from Debian (`apt-get install postgresql` when no `initdb`
//!    is found under `/usr/lib/postgresql/*/bin/` or on `PATH`), `initdb` in a temporary
//!    directory (as the `postgres` OS user when running as root: `initdb` refuses root), started
//!    with `pg_ctl` on a free port on 127.0.0.1 with trust authentication. A small watchdog
//!    process stops it (`pg_ctl stop -m immediate`) and removes the directory once the test
//!    process has exited, however it exits: no destructor or `atexit` runs for a `static`.
//!
//! A test that stops and starts its server (fault injection) owns one instead: a
//! [`PrivateCluster`] is made as in 3, on a port of its own, and may be
//! [stopped](PrivateCluster::stop) and [started again](PrivateCluster::start_again) on that
//! same port and data directory; dropping it stops the server and removes the directory.
//!
//! `VEXIL_TEST_PG_PRIVATE=1` skips 1 and 2, to exercise the private-cluster path on a machine
//! that has a server.
//!
//! [`fresh_database`] creates `vexil_test_<unique>` on that server, and its guard drops it
//! (best effort, `WITH (FORCE)`). When the server supports it, the database's default collation
//! is ICU `en-US`, which sorts `a` before `B` where byte order puts `B` first, so a store that
//! relies on the default collation for key order fails its tests instead of passing by luck on
//! a `C`-locale cluster.
//!
//! Every wait here is bounded: connection attempts, `apt-get`, `initdb`, `pg_ctl`, readiness
//! and shutdown polling, and the watchdog's own lifetime.

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

/// An admin URL to use instead of finding a server.
pub const URL_VAR: &str = "VEXIL_TEST_PG_URL";

/// Set to `1` to ignore [`URL_VAR`] and the machine's server, and start a private cluster.
pub const PRIVATE_VAR: &str = "VEXIL_TEST_PG_PRIVATE";

/// The machine's server, as this machine kind provides it.
const MACHINE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long one connection attempt (or one admin statement) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a private cluster may take to accept connections once `pg_ctl` says it started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a watchdog waits for its test process (a day), so none lingers forever.
const WATCHDOG_MAX_SECS: u32 = 86_400;

static ADMIN_URL: OnceLock<String> = OnceLock::new();

/// The URL of a PostgreSQL the tests may use, as a role that may create databases. The first
/// call in a process finds or starts the server (see the module docs); later calls return the
/// same URL. Blocking: from async code, call it through `spawn_blocking` (as
/// [`fresh_database`] does).
///
/// # Panics
/// When no server can be found or started; the message says what failed.
pub fn admin_url() -> String {
    ADMIN_URL
        .get_or_init(|| {
            find_or_start().unwrap_or_else(|e| panic!("no PostgreSQL for the tests: {e}"))
        })
        .clone()
}

/// A database created by [`fresh_database`]; dropped (best effort) when this guard is.
#[derive(Debug)]
pub struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL to the database, as the admin role.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&self.name));
        let admin = self.admin.clone();
        let dropped = on_own_runtime(async move {
            let mut conn = connect(&admin).await?;
            tokio::time::timeout(
                CONNECT_TIMEOUT,
                sqlx::query(AssertSqlSafe(sql)).execute(&mut conn),
            )
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
            let _ = conn.close().await;
            Ok::<_, String>(())
        });
        if let Err(e) = dropped {
            eprintln!(
                "vexil-testkit: could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

/// Creates a new, empty, uniquely named database on [`admin_url`]'s server and returns a URL to
/// it with the guard that drops it.
///
/// # Panics
/// When there is no server, or the database cannot be created.
pub async fn fresh_database() -> (String, Database) {
    let admin = match tokio::task::spawn_blocking(admin_url).await {
        Ok(url) => url,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("finding PostgreSQL: {e}"),
        },
    };
    let mut conn = connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL: {e}"));
    let mut last_error = String::new();
    // A few names, in case a leftover database from an earlier run has this one.
    for _ in 0..5 {
        let name = unique_name();
        match create_database_on(&mut conn, &name).await {
            Ok(()) => {
                let _ = conn.close().await;
                let url = with_database(&admin, &name);
                return (url.clone(), Database { admin, name, url });
            }
            Err(e) => last_error = e,
        }
    }
    panic!("creating a test database: {last_error}");
}

/// `CREATE DATABASE name`, with ICU `en-US` as its default collation when the server has it.
async fn create_database_on(conn: &mut PgConnection, name: &str) -> Result<(), String> {
    let quoted = quote(name);
    let icu = format!(
        "CREATE DATABASE {quoted} TEMPLATE template0 ENCODING 'UTF8' \
         LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    );
    match admin_statement(conn, icu).await {
        Ok(()) => Ok(()),
        // No ICU (or PostgreSQL before 15): the server's default collation will do.
        Err(_) => admin_statement(conn, format!("CREATE DATABASE {quoted}")).await,
    }
}

async fn admin_statement(conn: &mut PgConnection, sql: String) -> Result<(), String> {
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Connects once, bounded by [`CONNECT_TIMEOUT`].
async fn connect(url: &str) -> Result<PgConnection, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url))
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|e| e.to_string())
}

/// Whether `url` accepts a connection and a query.
fn answers(url: &str) -> bool {
    let url = url.to_owned();
    on_own_runtime(async move {
        let mut conn = connect(&url).await.ok()?;
        let ok = sqlx::query("SELECT 1").execute(&mut conn).await.is_ok();
        let _ = conn.close().await;
        ok.then_some(())
    })
    .is_some()
}

/// Runs `fut` to completion on a new single-threaded runtime in a new thread, so it works from
/// plain and async code alike (a runtime cannot block on another inside itself).
fn on_own_runtime<T: Send, F: Future<Output = T> + Send>(fut: F) -> T {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("building a runtime: {e}"))
                .block_on(fut)
        });
        match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn find_or_start() -> Result<String, String> {
    let private = std::env::var(PRIVATE_VAR).is_ok_and(|v| v == "1" || v == "true");
    if !private {
        if let Ok(url) = std::env::var(URL_VAR)
            && !url.is_empty()
        {
            return Ok(url);
        }
        if answers(MACHINE_URL) {
            return Ok(MACHINE_URL.to_owned());
        }
    }
    start_private_cluster()
}

/// `vexil_test_<pid>_<n>_<clock>`: unique among concurrent test processes (pid), within one
/// (counter), and across runs that reuse a pid (clock).
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!("vexil_test_{}_{n}_{clock:x}", std::process::id())
}

/// An identifier in double quotes (names here are generated, but quoting costs nothing).
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `url` with its database (the path) replaced by `name`; the query string is kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let mut out = match base[authority..].find('/') {
        Some(slash) => base[..authority + slash].to_owned(),
        None => base.to_owned(),
    };
    out.push('/');
    out.push_str(name);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

// -------------------------------------------------------------------------------------------
// The private cluster
// -------------------------------------------------------------------------------------------

/// How long `pg_ctl` may take to start or stop the server (its `-t`).
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// How long a stopped server may keep its port open after `pg_ctl stop` has returned.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the cluster [`admin_url`] falls back to: a [`PrivateCluster`] that is never dropped,
/// as it serves the whole test process; its watchdog stops it once the process has exited.
fn start_private_cluster() -> Result<String, String> {
    let cluster = PrivateCluster::try_start()?;
    let url = cluster.url("postgres");
    // Not dropped on purpose: dropping would stop the server other tests are using.
    std::mem::forget(cluster);
    Ok(url)
}

/// A private PostgreSQL cluster owned by one test, which the test may stop and start again.
///
/// It is made as [`admin_url`]'s own private cluster is (see the module docs): PostgreSQL from
/// Debian, `initdb` in a new temporary directory (as the `postgres` OS user when running as
/// root), `pg_ctl start` on a free port on 127.0.0.1 with trust authentication, user
/// `postgres`. Durability is off (`fsync=off`), as nothing here outlives the test.
///
/// Dropping it stops the server at once (`pg_ctl stop -m immediate`) and removes the directory;
/// a watchdog process does the same if the test process dies first.
///
/// Every method blocks (for up to about a minute at worst) except [`create_database`]. They may
/// be called from async tests too: waiting for the server runs on a runtime of its own.
///
/// [`create_database`]: PrivateCluster::create_database
#[derive(Debug)]
pub struct PrivateCluster {
    /// The directory holding `initdb` and `pg_ctl`.
    bin: PathBuf,
    /// Whether we are root, so `initdb` and `pg_ctl` must run as the `postgres` OS user.
    root_user: bool,
    /// The temporary directory: the data directory, the server's log and its Unix socket.
    dir: PathBuf,
    /// `dir/data`.
    data: PathBuf,
    /// The TCP port on 127.0.0.1, the same across restarts.
    port: u16,
    /// Whether the server is (meant to be) running. The lock also keeps a stop and a start from
    /// running at once.
    running: Mutex<bool>,
    /// The watchdog, killed on drop once the cluster is gone (it has nothing left to do).
    watchdog: Option<Child>,
}

impl PrivateCluster {
    /// Creates the cluster (`initdb` in a new temporary directory) and starts it with `pg_ctl`
    /// on a free port on 127.0.0.1; returns once it accepts connections. Installs PostgreSQL
    /// with `apt-get` when needed. Every wait is bounded.
    ///
    /// # Panics
    /// When the cluster cannot be created or started; the message says what failed and carries
    /// the server's log.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("starting a private PostgreSQL: {e}"))
    }

    fn try_start() -> Result<Self, String> {
        let bin = ensure_binaries()?;
        let root_user = is_root();
        let dir = unique_dir("vexil-pg");
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // The watchdog first, so that even a half-made cluster is cleaned up if we die now.
        let watchdog = spawn_watchdog(root_user, &bin, &data, &dir);
        // From here on, an error drops `cluster`, which stops whatever started and removes
        // the directory.
        let mut cluster = Self {
            bin,
            root_user,
            dir,
            data,
            port: 0,
            running: Mutex::new(false),
            watchdog,
        };
        if root_user {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&cluster.dir),
                "chown the cluster directory to postgres",
            )?;
        }
        eprintln!(
            "vexil-testkit: starting a private PostgreSQL from {} in {}",
            cluster.bin.display(),
            cluster.dir.display()
        );
        run(
            as_postgres(root_user, &cluster.dir, "timeout")
                .arg("300")
                .arg(cluster.bin.join("initdb"))
                .arg("-D")
                .arg(&cluster.data)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
                .arg("--no-sync"),
            "initdb",
        )?;
        let mut last_error = String::new();
        // A free port is only free until someone takes it: a few tries.
        for _ in 0..3 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    *cluster.lock_running() = true;
                    cluster.wait_ready()?;
                    eprintln!(
                        "vexil-testkit: private PostgreSQL ready at {}",
                        cluster.url("postgres")
                    );
                    return Ok(cluster);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>`. The port stays the same across
    /// [`stop`](PrivateCluster::stop) and [`start_again`](PrivateCluster::start_again).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name` (async: it connects with sqlx; bounded by a 10 s timeout per
    /// step) and returns its URL. The default collation is ICU `en-US` when the server has
    /// it, as for [`fresh_database`].
    ///
    /// # Panics
    /// When the server is stopped or the database cannot be created (e.g. it exists).
    pub async fn create_database(&self, name: &str) -> String {
        let admin = self.url("postgres");
        let mut conn = connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to the private PostgreSQL at {admin}: {e}"));
        let created = create_database_on(&mut conn, name).await;
        let _ = conn.close().await;
        if let Err(e) = created {
            panic!("creating database {name} on {admin}: {e}");
        }
        self.url(name)
    }

    /// Stops the server (`pg_ctl stop -m fast`: open sessions are ended, no crash recovery on
    /// the next start) and waits until its port refuses connections. Does nothing when it is
    /// already stopped.
    ///
    /// # Panics
    /// When the server does not stop in time; the message carries its log.
    pub fn stop(&self) {
        let mut running = self.lock_running();
        if !*running {
            return;
        }
        let stopped = self.pg_ctl(&["-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "stop"]);
        // `pg_ctl stop` also fails when the server is already gone (say, a test killed it),
        // which is what was wanted; only a server still holding its pid file is an error.
        if let Err(e) = stopped
            && self.data.join("postmaster.pid").exists()
        {
            panic!("{e}\n{}", self.log_tail());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.port_open() {
            assert!(
                Instant::now() < deadline,
                "the private PostgreSQL on port {} still accepts connections {STOP_TIMEOUT:?} \
                 after pg_ctl stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        *running = false;
    }

    /// Starts the stopped server again, on the same port and data directory, and waits
    /// (bounded) until it accepts connections. Does nothing when it is running.
    ///
    /// # Panics
    /// When it does not start in time, or the port was taken while it was stopped; the message
    /// carries the server's log.
    pub fn start_again(&self) {
        let mut running = self.lock_running();
        if *running {
            return;
        }
        if let Err(e) = self.pg_ctl_start() {
            panic!(
                "restarting the private PostgreSQL on port {}: {e}",
                self.port
            );
        }
        *running = true;
        if let Err(e) = self.wait_ready() {
            panic!("restarting the private PostgreSQL: {e}");
        }
    }

    /// `pg_ctl start` on [`port`](Self::port), waiting (bounded) for the server to be ready.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        let log = log.to_string_lossy();
        self.pg_ctl(&[
            "-l",
            &log,
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "-o",
            &settings,
            "start",
        ])
        .map_err(|e| format!("{e}\n{}", self.log_tail()))
    }

    /// Runs `pg_ctl -D <data> <args>` as the right user.
    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        run(
            as_postgres(
                self.root_user,
                &self.dir,
                self.bin.join("pg_ctl").as_os_str(),
            )
            .arg("-D")
            .arg(&self.data)
            .args(args),
            &format!("pg_ctl {}", args.last().copied().unwrap_or_default()),
        )
    }

    /// Polls until the server answers a query, for at most [`READY_TIMEOUT`].
    fn wait_ready(&self) -> Result<(), String> {
        let url = self.url("postgres");
        let deadline = Instant::now() + READY_TIMEOUT;
        while !answers(&url) {
            if Instant::now() > deadline {
                return Err(format!(
                    "the private cluster in {} did not accept connections within \
                     {READY_TIMEOUT:?}\n{}",
                    self.dir.display(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Whether something accepts TCP connections on the cluster's port.
    fn port_open(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    }

    /// The end of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("postgres.log (last lines):\n{}", lines[from..].join("\n"))
    }

    /// The running flag; a panic while it was held (a failed stop or start) does not make
    /// the cluster unusable, least of all for its `Drop`.
    fn lock_running(&self) -> MutexGuard<'_, bool> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Whatever the flag says: a start that failed half-way may have left a server behind.
        if self.data.join("postmaster.pid").exists()
            && let Err(e) = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"])
        {
            eprintln!("vexil-testkit: stopping the private PostgreSQL: {e}");
        }
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

/// A new directory name under the temporary directory, `<prefix>-<pid>-<n>-<clock>`: unique
/// among concurrent test processes, within one, and across runs that reuse a pid.
fn unique_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("{prefix}-{}-{n}-{clock:x}", std::process::id()))
}

/// Stops the cluster and removes its directory once this process is gone. It runs in its own
/// session (`setsid`) so that a Ctrl-C delivered to the test's process group does not take the
/// watchdog down before the cluster. Returns the watchdog, which the caller may kill once it
/// has cleaned up itself.
///
/// The test may die while `initdb` or `pg_ctl start` runs, and those go on without it: so it
/// repeats the stop and the removal until the directory has stayed gone for a few seconds (at
/// most 90, beyond `pg_ctl`'s own 60 s limit). A server whose directory vanished under it stops
/// itself once it notices its lock file is gone.
fn spawn_watchdog(root_user: bool, bin: &Path, data: &Path, dir: &Path) -> Option<Child> {
    let script = format!(
        r#"pid="$1"; pg_ctl="$2"; data="$3"; dir="$4"; shift 4
i=0
while kill -0 "$pid" 2>/dev/null && [ "$i" -lt {WATCHDOG_MAX_SECS} ]; do sleep 1; i=$((i + 1)); done
gone=0; n=0
while [ "$gone" -lt 3 ] && [ "$n" -lt 90 ]; do
  if [ -f "$data/postmaster.pid" ]; then
    "$@" timeout 60 "$pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1
  fi
  rm -rf "$dir" 2>/dev/null
  if [ -e "$dir" ]; then gone=0; else gone=$((gone + 1)); fi
  n=$((n + 1)); sleep 1
done"#
    );
    let mut cmd = Command::new("setsid");
    cmd.arg("bash")
        .arg("-c")
        .arg(script)
        .arg("vexil-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(bin.join("pg_ctl"))
        .arg(data)
        .arg(dir);
    if root_user {
        cmd.args(["runuser", "-u", "postgres", "--"]);
    }
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Not waited for while the cluster lives: it outlives this process by design.
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!(
                "vexil-testkit: no watchdog for the private PostgreSQL in {} ({e}); stop it by hand",
                dir.display()
            );
            None
        }
    }
}

/// A command run as the `postgres` OS user when we are root (`initdb` and `pg_ctl` refuse
/// root), in `dir` (the user may not be able to enter the current directory).
fn as_postgres(root_user: bool, dir: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = if root_user {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.current_dir(dir);
    cmd
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

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// The directory holding `initdb` and `pg_ctl`, installing PostgreSQL from Debian if there is
/// none.
fn ensure_binaries() -> Result<PathBuf, String> {
    if let Some(bin) = find_binaries() {
        return Ok(bin);
    }
    if !is_root() {
        return Err("no initdb/pg_ctl found, and installing PostgreSQL needs root".into());
    }
    eprintln!("vexil-testkit: installing postgresql from Debian (apt-get)");
    for args in [
        &["900", "apt-get", "update"][..],
        &["900", "apt-get", "install", "-y", "postgresql"][..],
    ] {
        run(
            Command::new("timeout")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &args[1..].join(" "),
        )?;
    }
    find_binaries().ok_or_else(|| "postgresql installed, but no initdb/pg_ctl found".into())
}

/// The newest `/usr/lib/postgresql/<major>/bin` with both programs, else the directory of an
/// `initdb` on `PATH` that has `pg_ctl` beside it.
fn find_binaries() -> Option<PathBuf> {
    let complete = |bin: &Path| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file();
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin);
    newest.or_else(|| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|dir| complete(dir))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sqlx::Connection;
    use sqlx::postgres::PgConnection;

    use super::{PrivateCluster, connect, quote, with_database};

    /// `SELECT 1` on a new connection to `url`.
    async fn select_one(url: &str) -> Result<i32, String> {
        let mut conn = connect(url).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        Ok(one)
    }

    #[tokio::test]
    async fn a_private_cluster_refuses_connections_when_stopped_and_serves_again_when_restarted() {
        let started = Instant::now();
        let cluster = PrivateCluster::start();
        eprintln!("started in {:?}", started.elapsed());
        let url = cluster.create_database("fault_injection").await;
        assert_eq!(url, cluster.url("fault_injection"));
        assert_eq!(select_one(&url).await, Ok(1));

        // A connection open across the stop is ended by it (`-m fast`), not waited for.
        let mut open = PgConnection::connect(&url).await.expect("connecting");
        let stopping = Instant::now();
        cluster.stop();
        eprintln!("stopped in {:?}", stopping.elapsed());
        cluster.stop(); // idempotent
        assert!(
            select_one(&url).await.is_err(),
            "connected to a stopped server"
        );
        assert!(sqlx::query("SELECT 1").execute(&mut open).await.is_err());

        let restarting = Instant::now();
        cluster.start_again();
        eprintln!("restarted in {:?}", restarting.elapsed());
        assert_eq!(cluster.url("fault_injection"), url, "the port changed");
        assert_eq!(select_one(&url).await, Ok(1));

        let dir = cluster.dir.clone();
        drop(cluster);
        assert!(!dir.exists(), "{} is left after drop", dir.display());
        assert!(
            select_one(&url).await.is_err(),
            "the server outlived its drop"
        );
    }

    #[test]
    fn the_database_in_a_url_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "t2"),
            "postgres://u:p@h:1/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "t3"), "postgres://u@h/t3");
        assert_eq!(
            with_database("postgres://u@h?host=/run/pg", "t4"),
            "postgres://u@h/t4?host=/run/pg"
        );
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote("vexil_test_1"), "\"vexil_test_1\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
