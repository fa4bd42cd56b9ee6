//! The `vexil` command-line client: every admin operation of a Vexil server (namespaces,
//! flags, segments, import/export, evaluation with explanation, the change stream, audit, users,
//! roles, bindings, API tokens, dynamic configuration, audit export and verification), login
//! profiles, table or JSON output and shell completions.
//!
//! This crate owns the command line and the client side of the REST and WebSocket API, nothing
//! else. It must not depend on `vexil-store`, `vexil-service` or `vexil-server`: it only speaks
//! HTTP, so it works against any server version that serves the documented API, and the rules
//! it could duplicate stay in one place, the server. Errors are one [`Error`] enum whose
//! [`Error::exit_code`] is the process's exit code: 1 for an error the server answered, 2 for
//! a usage error, 3 when the server cannot be reached, 4 when `vexil audit verify` finds the
//! audit chain broken.

pub mod cli;
pub mod client;
mod commands;
pub mod config;
mod error;
mod output;
mod watch;

pub use commands::DEFAULT_URL;
pub use error::{EXIT_API, EXIT_CHAIN_BROKEN, EXIT_UNREACHABLE, EXIT_USAGE, Error, Problem};

/// Runs one invocation to completion.
pub fn run(cli: cli::Cli) -> Result<(), Error> {
    // reqwest and tungstenite are built without a rustls crypto provider of their own (the
    // default one, aws-lc-rs, needs a C toolchain and cmake); both pick up this process-wide
    // one. Installing fails only if one is already installed, which is as good.
    #[cfg(feature = "tls")]
    #[expect(
        deprecated,
        reason = "rustls deprecates its ring provider for lacking post-quantum key exchange; \
                  classical X25519 is what every server we talk to offers, and the PQ-capable \
                  provider (aws-lc-rs) is the C build we avoid"
    )]
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One thread is plenty for a client that does one thing at a time.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the async runtime"))?;
    runtime.block_on(commands::dispatch(cli))
}
