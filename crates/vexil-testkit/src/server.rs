//! Spawning the real `vexil-server` binary for end-to-end tests.
//!
//! The server is started on `127.0.0.1:0`; its JSON log line "HTTP listening" carries the bound
//! address, which the spawner reads, so tests never race for a port. All log lines are kept so a
//! test can inspect them (e.g. that no secret was logged).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A running server process. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the gRPC listener, when the server logged one.
    pub grpc: Option<String>,
    logs: Arc<Mutex<Vec<String>>>,
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Path of the `vexil-server` binary (`env!("CARGO_BIN_EXE_vexil-server")`).
    pub binary: PathBuf,
    /// The SQLite file.
    pub data: PathBuf,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Extra arguments.
    pub args: Vec<String>,
}

impl ServerOptions {
    /// Defaults for `binary` with its database at `data`.
    pub fn new(binary: impl Into<PathBuf>, data: impl AsRef<Path>) -> Self {
        Self {
            binary: binary.into(),
            data: data.as_ref().to_path_buf(),
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Adds an argument.
    #[must_use]
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }
}

impl ServerProcess {
    /// Starts the server and waits (at most 30 s) until it reports its listening address.
    ///
    /// # Panics
    /// If the process cannot start or never reports an address; the panic carries its logs.
    pub fn spawn(opts: &ServerOptions) -> Self {
        let mut cmd = Command::new(&opts.binary);
        cmd.env("VEXIL_HTTP_ADDR", "127.0.0.1:0")
            .env("VEXIL_GRPC_ADDR", "127.0.0.1:0")
            .env("VEXIL_DATA", &opts.data)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("DB_URL")
            .env_remove("ETCD_ENDPOINTS")
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", opts.binary.display()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut l) = logs.lock() {
                        l.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut grpc = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listening_addr(&line, "gRPC listening") {
                        grpc = Some(format!("http://{addr}"));
                    }
                    if let Some(addr) = listening_addr(&line, "HTTP listening") {
                        return Self {
                            child,
                            base: format!("http://{addr}"),
                            grpc,
                            logs,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                    panic!("the server did not report a listening address within 30 s:\n{text}");
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far (stdout and stderr).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit status.
    ///
    /// # Panics
    /// If it does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `addr` of the server's "<what> listening" JSON log line.
fn listening_addr(line: &str, message: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != message {
        return None;
    }
    v.get("addr")?.as_str().map(str::to_owned)
}
