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
//! polling and the watchdog's own lifetime.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
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
        let quoted = quote(&name);
        let icu = format!(
            "CREATE DATABASE {quoted} TEMPLATE template0 ENCODING 'UTF8' \
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        );
        let plain = format!("CREATE DATABASE {quoted}");
        let created = match admin_statement(&mut conn, icu).await {
            Ok(()) => Ok(()),
            // No ICU (or PostgreSQL before 15): the server's default collation will do.
            Err(_) => admin_statement(&mut conn, plain).await,
        };
        match created {
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

fn start_private_cluster() -> Result<String, String> {
    let bin = ensure_binaries()?;
    let root_user = is_root();
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("vexil-pg-{}-{clock:x}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if root_user {
        run(
            Command::new("chown").arg("postgres:postgres").arg(&dir),
            "chown the cluster directory to postgres",
        )?;
    }
    eprintln!(
        "vexil-testkit: starting a private PostgreSQL from {} in {}",
        bin.display(),
        dir.display()
    );
    run(
        as_postgres(root_user, &dir, "timeout")
            .arg("300")
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
            .arg("--no-sync"),
        "initdb",
    )?;
    let mut last_error = String::new();
    // A free port is only free until someone takes it: a few tries.
    for _ in 0..3 {
        let port = free_port()?;
        let settings = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        );
        let started = run(
            as_postgres(root_user, &dir, bin.join("pg_ctl").as_os_str())
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("postgres.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(settings)
                .arg("start"),
            "pg_ctl start",
        );
        match started {
            Ok(()) => {
                spawn_watchdog(root_user, &bin, &data, &dir);
                let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                let deadline = Instant::now() + READY_TIMEOUT;
                while !answers(&url) {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "the private cluster in {} did not accept connections within {READY_TIMEOUT:?}",
                            dir.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                eprintln!("vexil-testkit: private PostgreSQL ready at {url}");
                return Ok(url);
            }
            Err(e) => {
                let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                last_error = format!("{e}\n{log}");
            }
        }
    }
    Err(last_error)
}

/// Stops the cluster and removes its directory once this process is gone. It runs in its own
/// session (`setsid`) so that a Ctrl-C delivered to the test's process group does not take the
/// watchdog down before the cluster.
fn spawn_watchdog(root_user: bool, bin: &Path, data: &Path, dir: &Path) {
    let script = format!(
        r#"pid="$1"; pg_ctl="$2"; data="$3"; dir="$4"; shift 4
i=0
while kill -0 "$pid" 2>/dev/null && [ "$i" -lt {WATCHDOG_MAX_SECS} ]; do sleep 1; i=$((i + 1)); done
"$@" timeout 60 "$pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1
rm -rf "$dir""#
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
    // Never waited for: it outlives this process by design.
    if let Err(e) = cmd.spawn() {
        eprintln!(
            "vexil-testkit: no watchdog for the private PostgreSQL in {} ({e}); stop it by hand",
            dir.display()
        );
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
    use super::{quote, with_database};

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
