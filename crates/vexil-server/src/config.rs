//! Configuration from environment variables and flags (DESIGN.md §7). Flags win over the
//! environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable (the default on a terminal).
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Fractional bucketing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fractional {
    /// flagd's current algorithm (default).
    V2,
    /// CBOR-encoded bucketing input (flagd's accepted ADR).
    V3,
}

/// `vexil-server` settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "vexil-server", version, about = "Vexil feature-flag server")]
pub struct Config {
    /// HTTP listen address (REST, OFREP, operations).
    #[arg(long, env = "VEXIL_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// gRPC listen address (served once the gRPC API lands).
    #[arg(long, env = "VEXIL_GRPC_ADDR", default_value = "127.0.0.1:9090")]
    pub grpc_addr: SocketAddr,
    /// SQLite database file for the embedded store.
    #[arg(long, env = "VEXIL_DATA", default_value = "./vexil.db")]
    pub data: PathBuf,
    /// PostgreSQL URL: selects the postgres mode (every store in PostgreSQL).
    #[arg(long, env = "DB_URL", hide_env_values = true)]
    pub db_url: Option<String>,
    /// etcd endpoints, comma-separated; with DB_URL, selects the distributed mode (flag state
    /// in etcd, audit and identity in PostgreSQL). Its value is hidden from `--help` like
    /// DB_URL's, since URLs may carry credentials.
    #[arg(long, env = "ETCD_ENDPOINTS", hide_env_values = true)]
    pub etcd_endpoints: Option<String>,
    /// The etcd key prefix under which this deployment keeps its flag state (replicas of one
    /// deployment share it; several deployments may share a cluster with different prefixes).
    #[arg(long, env = "ETCD_PREFIX", default_value = "/vexil/")]
    pub etcd_prefix: String,
    /// How many commits the etcd change log keeps; a replica or watcher further behind reloads
    /// from a snapshot. Every replica of a deployment should use the same value.
    #[arg(long, env = "ETCD_CHANGE_RETENTION", default_value_t = vexil_store::etcd::CHANGE_RETENTION)]
    pub etcd_change_retention: u64,
    /// `json` or `pretty`; defaults to pretty on a terminal, JSON otherwise.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// A flagd file (JSON or YAML) imported into the `default` namespace at start-up (merge).
    #[arg(long, env = "VEXIL_IMPORT")]
    pub import: Option<PathBuf>,
    /// Fractional bucketing algorithm for every namespace.
    #[arg(long, env = "VEXIL_FRACTIONAL", value_enum, default_value = "v2")]
    pub fractional: Fractional,
    /// HS256 key for session tokens, at least 32 bytes. Optional in the embedded mode (a random
    /// one is generated and kept beside the SQLite file, mode 0600); required with DB_URL, since
    /// replicas must share it.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Password of the `admin` user created on first start with an empty store; when unset,
    /// one is generated and printed once.
    #[arg(long, env = "VEXIL_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Session lifetime in seconds.
    #[arg(long, env = "VEXIL_SESSION_TTL_SECS", default_value_t = 8 * 3600)]
    pub session_ttl_secs: u64,
    /// Milliseconds between checks for identity changes made by other replicas (revoked
    /// tokens take effect within this interval).
    #[arg(long, env = "VEXIL_IDENTITY_POLL_MS", default_value_t = 250)]
    pub identity_poll_ms: u64,
    /// Serve `/metrics` without credentials (otherwise it needs `flag:read` in `*`).
    #[arg(long, env = "VEXIL_METRICS_PUBLIC", default_value_t = false)]
    pub metrics_public: bool,
    /// Milliseconds a WebSocket watcher may leave one frame unread before the stream is closed
    /// (code 4008): a consumer that falls behind is cut off, not buffered for.
    #[arg(long, env = "VEXIL_WATCH_SEND_TIMEOUT_MS", default_value_t = 10_000)]
    pub watch_send_timeout_ms: u64,
    /// Seconds to drain in-flight requests after SIGINT/SIGTERM.
    #[arg(long, env = "VEXIL_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}
