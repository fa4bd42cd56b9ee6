//! The cross-process half of [`ChangeFeed::subscribe`](crate::ChangeFeed::subscribe): two
//! background tasks that keep the store's revision channel at the latest committed revision,
//! whichever process committed it.
//!
//! - The **listener** holds its own connection, `LISTEN`s on [`NOTIFY_CHANNEL`], and on each
//!   notification reads the revision counter and publishes it. It reconnects (bounded by the
//!   pool's acquire timeout, then a pause) whenever the connection fails, and reads the counter
//!   after every reconnect, since notifications sent while it was away are gone.
//! - The **poller** reads the counter every [`POLL_INTERVAL`], so that a lost notification (a
//!   dropped connection, a full notification queue) delays a subscriber by at most that long,
//!   and never loses a change.
//!
//! Both only ever raise the published revision, so a subscriber never sees it go backwards and
//! a refused commit publishes nothing. The counter, not the notification's payload, is the
//! source of truth: a notification only says "look now". Both tasks loop for as long as the
//! store lives; [`Feed`] aborts them when it is dropped.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vexil_core::domain::Revision;

use super::{NOTIFY_CHANNEL, current_revision};

/// How often the poller reads the revision counter.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The pause before the listener tries again after its connection failed.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// How long the listener waits to (re)connect and `LISTEN` before trying again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running feed tasks.
#[derive(Debug)]
pub(super) struct Feed {
    listener: JoinHandle<()>,
    poller: JoinHandle<()>,
}

impl Feed {
    /// Starts both tasks. `listen_options` open the listener's own connection (outside `pool`,
    /// which it would otherwise pin for good).
    pub(super) fn start(
        pool: PgPool,
        listen_options: PgConnectOptions,
        revision_tx: watch::Sender<Revision>,
    ) -> Self {
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(listen_options);
        let listener = tokio::spawn(listen(pool.clone(), listen_pool, revision_tx.clone()));
        let poller = tokio::spawn(poll(pool, revision_tx));
        Self { listener, poller }
    }

    /// Stops both tasks (idempotent).
    pub(super) fn stop(&self) {
        self.listener.abort();
        self.poller.abort();
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Raises the published revision to `revision` if it is higher; returns whether it did.
pub(super) fn publish(tx: &watch::Sender<Revision>, revision: Revision) -> bool {
    tx.send_if_modified(|current| {
        let newer = revision > *current;
        if newer {
            *current = revision;
        }
        newer
    })
}

/// Reads the counter and publishes it. Failures are the poller's to report (it retries every
/// interval); here they only delay the subscriber until then.
async fn refresh(pool: &PgPool, tx: &watch::Sender<Revision>) -> Result<(), String> {
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let revision = current_revision(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    publish(tx, revision);
    Ok(())
}

async fn poll(pool: PgPool, tx: watch::Sender<Revision>) {
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match refresh(&pool, &tx).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("postgres: change feed poll recovered");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "postgres: change feed poll failed; retrying every second");
            }
            Err(e) => tracing::debug!(error = %e, "postgres: change feed poll failed again"),
        }
    }
}

async fn listen(pool: PgPool, listen_pool: PgPool, tx: watch::Sender<Revision>) {
    let mut failing = false;
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut listener = PgListener::connect_with(&listen_pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        })
        .await;
        let mut listener = match connected {
            Ok(Ok(listener)) => listener,
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "postgres: change feed listener cannot connect; retrying");
                }
                failing = true;
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(_) => {
                if !failing {
                    tracing::warn!("postgres: change feed listener timed out connecting; retrying");
                }
                failing = true;
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        if failing {
            tracing::info!("postgres: change feed listener reconnected");
            failing = false;
        }
        // Whatever committed while nobody was listening.
        let _ = refresh(&pool, &tx).await;
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => {
                    // Coalesce a burst into one read of the counter.
                    while listener.next_buffered().is_some() {}
                    let _ = refresh(&pool, &tx).await;
                }
                // The connection dropped and was re-established (notifications in between
                // are lost): catch up from the counter.
                Ok(None) => {
                    tracing::debug!("postgres: change feed listener reconnected after a drop");
                    let _ = refresh(&pool, &tx).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "postgres: change feed listener failed; reconnecting");
                    break;
                }
            }
        }
        drop(listener);
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
