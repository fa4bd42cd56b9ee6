//! A spawned server, a private profiles file, and a runner for the `vexil` binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use vexil_testkit::server::{ServerOptions, ServerProcess};

/// The password of the `admin` user every test server is bootstrapped with.
pub(crate) const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// The `vexil` binary under test.
pub(crate) fn vexil_binary() -> &'static str {
    env!("CARGO_BIN_EXE_vexil")
}

/// The `vexil-server` binary, built when it is older than the sources it is built from.
///
/// Cargo builds only this package's binaries for its tests, so under `cargo test -p vexil-cli`
/// the sibling `vexil-server` may be stale or missing; the fixture then runs `cargo build -p
/// vexil-server` into the same target directory (measured: this does not wait on the `cargo
/// test` that started the tests, which has released its build lock by then). It does not build
/// when the binary is newer than every source file of the crates it is made of: under `cargo
/// test --workspace` (CI) the binary is fresh, and a `-p` build there would resolve features
/// differently from the workspace build and relink the server for nothing.
pub(crate) fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let vexil = Path::new(vexil_binary());
        let server = vexil.with_file_name(format!("vexil-server{}", std::env::consts::EXE_SUFFIX));
        if !is_fresh(&server) {
            build_server(vexil);
        }
        assert!(
            server.exists(),
            "{} is missing after building it",
            server.display()
        );
        server
    })
}

/// Whether `binary` is newer than the workspace manifest, the lock file and every file of the
/// crates the server is built from (tests and benches excepted).
fn is_fresh(binary: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pending: Vec<PathBuf> = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    pending.extend(
        [
            "vexil-server",
            "vexil-service",
            "vexil-store",
            "vexil-core",
            "vexil-proto",
        ]
        .iter()
        .map(|c| root.join("crates").join(c)),
    );
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            return false;
        };
        if meta.is_dir() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                return false;
            };
            pending.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                !matches!(
                    p.file_name().and_then(|n| n.to_str()),
                    Some("tests" | "benches" | "fuzz" | "target")
                )
            }));
        } else if meta.modified().map_or(true, |m| m > built) {
            return false;
        }
    }
    true
}

/// `cargo build -p vexil-server` into the target directory and profile of `vexil`.
fn build_server(vexil: &Path) {
    let profile_dir = vexil.parent().expect("the binary has a directory");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory has a parent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "vexil-server",
            "--bin",
            "vexil-server",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
    }
    let out = build
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build vexil-server: {e}"));
    assert!(
        out.status.success(),
        "`cargo build -p vexil-server` failed; the CLI tests need the server binary:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server with its own data directory, and a profiles file of its own for the CLI.
pub(crate) struct Env {
    pub(crate) server: ServerProcess,
    pub(crate) dir: tempfile::TempDir,
}

/// What one `vexil` invocation did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts success and returns itself.
    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, 0, "vexil failed: {self:#?}");
        self
    }

    /// Asserts the exit code and returns itself.
    #[track_caller]
    pub(crate) fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    /// Standard output as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

impl Env {
    /// A fresh server; the CLI is not signed in yet.
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = ServerOptions::new(server_binary(), dir.path().join("vexil.db"))
            .env("VEXIL_ADMIN_PASSWORD", ADMIN_PASSWORD);
        Self {
            server: ServerProcess::spawn(&opts),
            dir,
        }
    }

    /// A fresh server with the CLI's default profile signed in as `admin`.
    pub(crate) fn signed_in() -> Self {
        let env = Self::start();
        env.vexil_stdin(&["login", "--password-stdin"], ADMIN_PASSWORD)
            .ok();
        env
    }

    /// The profiles file of this environment.
    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("cli").join("config.json")
    }

    /// A `vexil` command isolated from the caller's environment: its own profiles file, this
    /// server's URL, and none of the caller's `VEXIL_*` settings.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(vexil_binary());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VEXIL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("VEXIL_CONFIG", self.config())
            .env("VEXIL_URL", &self.server.base)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `vexil args…` to completion.
    pub(crate) fn vexil(&self, args: &[&str]) -> Run {
        run(self.command(args), None)
    }

    /// Runs `vexil args…` with `input` on standard input.
    pub(crate) fn vexil_stdin(&self, args: &[&str], input: &str) -> Run {
        run(self.command(args), Some(input))
    }

    /// Writes a file in the environment's directory and returns its path.
    pub(crate) fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write test file");
        path.to_str().expect("utf-8 temp path").to_owned()
    }
}

/// Runs a prepared command.
pub(crate) fn run(mut cmd: Command, input: Option<&str>) -> Run {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn vexil");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for vexil");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
