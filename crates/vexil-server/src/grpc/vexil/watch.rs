//! `vexil.v1.WatchService`: a namespace's changes as a stream, in revision order.
//!
//! With `from_revision` 0 the stream opens with a snapshot (one `snapshot` event per flag and
//! segment, all at the revision they were read at), then follows the change feed from that
//! revision; with a revision it replays what was committed after it, then follows. The store's
//! change log is the source of the events, and the snapshot cache's applied-revision watch is
//! the wake-up, so commits made through any transport or replica are seen.
//!
//! Memory is bounded: the store is read in batches of [`BATCH`] changes, and events go through a
//! channel of [`BUFFER`] slots. A consumer that takes nothing for [`PATIENCE`] while the stream
//! has something to send is too slow: its stream ends with RESOURCE_EXHAUSTED (it resumes from
//! the last revision it processed) instead of the server buffering for it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vexil_core::domain::{Change, ConfigEntry, ResourceKind, Revision};
use vexil_proto::vexil::v1 as pb;
use vexil_service::{ChangeBatch, Permission, Principal};
use vexil_store::NamespaceState;

use super::{VexilApi, namespace};
use crate::AppState;
use crate::grpc::convert::{from_json, status};
use crate::grpc::flagd::caller;

/// Events queued per stream before the producer waits for the consumer.
pub const BUFFER: usize = 64;

/// Changes read from the store at a time.
pub const BATCH: usize = 256;

/// How long the producer waits for room in the queue before it declares the consumer too slow.
pub const PATIENCE: Duration = Duration::from_secs(10);

type Item = Result<pb::WatchEvent, Status>;

/// The stream has ended: the consumer went away, or was told why it ends.
#[derive(Debug)]
struct Ended;

/// The sending half of one stream: a bounded queue with one slot held back for the status that
/// ends the stream, so that status can always be queued, even when the queue is full.
#[derive(Debug)]
struct Sink<T> {
    tx: mpsc::Sender<Result<T, Status>>,
    last: Option<mpsc::OwnedPermit<Result<T, Status>>>,
    patience: Duration,
}

impl<T: Send + 'static> Sink<T> {
    /// A sink with room for `capacity` items, and its receiving half.
    async fn new(capacity: usize, patience: Duration) -> (Self, mpsc::Receiver<Result<T, Status>>) {
        let (tx, rx) = mpsc::channel(capacity + 1);
        // The channel is empty and its receiver alive: this resolves at once.
        let last = tx.clone().reserve_owned().await.ok();
        (Self { tx, last, patience }, rx)
    }

    /// Queues `item`, waiting at most `patience` for room; a consumer that makes no room in that
    /// time gets RESOURCE_EXHAUSTED after what it was already sent.
    async fn send(&mut self, item: T) -> Result<(), Ended> {
        match tokio::time::timeout(self.patience, self.tx.send(Ok(item))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended),
            Err(_) => {
                self.end(Status::resource_exhausted(format!(
                    "the watch consumer fell behind (nothing read for {} s); resume from the last revision received",
                    self.patience.as_secs()
                )));
                Err(Ended)
            }
        }
    }

    /// Ends the stream with `s`, after the items already queued.
    fn end(&mut self, s: Status) {
        if let Some(permit) = self.last.take() {
            permit.send(Err(s));
        }
    }

    /// Resolves when the consumer has gone away.
    async fn closed(&self) {
        self.tx.closed().await;
    }
}

fn event(c: Change, snapshot: bool) -> pb::WatchEvent {
    pb::WatchEvent {
        revision: c.revision,
        namespace: c.namespace,
        kind: c.kind.as_str().to_owned(),
        key: c.key,
        deleted: c.after.is_none(),
        after: c.after.as_ref().map(from_json),
        snapshot,
    }
}

/// A stored resource as JSON, as the change log records it.
fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The snapshot of a namespace as events: flags, then segments, then the configuration
/// entries the watcher may see (see [`vexil_service::FlagService::watch_snapshot`]), each in
/// key order, all at the revision the state was read at.
fn snapshot_events(
    state: NamespaceState,
    configs: Vec<ConfigEntry>,
) -> impl Iterator<Item = pb::WatchEvent> {
    let revision = state.revision;
    let namespace = state.namespace.key;
    let flags = state
        .flags
        .into_iter()
        .map(|f| (ResourceKind::Flag, json(&f), f.key));
    let segments = state
        .segments
        .into_iter()
        .map(|s| (ResourceKind::Segment, json(&s), s.key));
    let configs = configs
        .into_iter()
        .map(|c| (ResourceKind::Config, json(&c), c.key));
    flags
        .chain(segments)
        .chain(configs)
        .map(move |(kind, after, key)| {
            event(
                Change {
                    revision,
                    namespace: namespace.clone(),
                    kind,
                    key,
                    after: Some(after),
                },
                true,
            )
        })
}

/// Sends the snapshot (if any), then every change after it, until the consumer leaves.
async fn follow(
    app: Arc<AppState>,
    ns: String,
    principal: Principal,
    from: Revision,
    snapshot: Option<(NamespaceState, Option<Vec<ConfigEntry>>)>,
    mut applied: watch::Receiver<Revision>,
    mut sink: Sink<pb::WatchEvent>,
) {
    let mut seen = from;
    if let Some((state, configs)) = snapshot {
        seen = state.revision;
        for ev in snapshot_events(state, configs.unwrap_or_default()) {
            if sink.send(ev).await.is_err() {
                return;
            }
        }
    }
    let revoked = app
        .identity
        .revoked(principal.clone(), Permission::FlagRead, ns.clone());
    tokio::pin!(revoked);
    loop {
        // Catch up with the store, one bounded batch at a time.
        loop {
            let pass = match principal.authorize(Permission::FlagRead, &ns) {
                Ok(pass) => pass,
                Err(e) => return sink.end(status(e)),
            };
            match app.flags.changes_since(&pass, &ns, seen, BATCH).await {
                Ok(ChangeBatch::Resync) => {
                    // The store's log no longer reaches `seen`; deletions in the gap cannot be
                    // replayed, so the client starts again from a snapshot.
                    return sink.end(Status::out_of_range(format!(
                        "the change log no longer reaches revision {seen}; watch again without from_revision for a snapshot"
                    )));
                }
                Ok(ChangeBatch::Changes { changes, last }) => {
                    for c in changes {
                        if sink.send(event(c, false)).await.is_err() {
                            return;
                        }
                    }
                    if last <= seen {
                        break;
                    }
                    seen = last;
                }
                Err(e) => return sink.end(status(e)),
            }
        }
        tokio::select! {
            () = sink.closed() => return,
            () = &mut revoked => {
                return sink.end(Status::unauthenticated(crate::grpc::flagd::REVOKED));
            }
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl pb::watch_service_server::WatchService for VexilApi {
    type WatchStream = Pin<Box<dyn Stream<Item = Item> + Send + 'static>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let from = r.from_revision;
        let p = caller(&self.0, &req)?;
        // Subscribe before reading, so a commit after the read always wakes the follower.
        let applied = self.0.flags.cache().subscribe();
        // An unknown namespace fails the call itself, not the stream.
        let snapshot = {
            let pass = p.authorize(Permission::FlagRead, &ns).map_err(status)?;
            if from == 0 {
                Some(
                    self.0
                        .flags
                        .watch_snapshot(&pass, &ns)
                        .await
                        .map_err(status)?,
                )
            } else {
                self.0
                    .flags
                    .get_namespace(&pass, &ns)
                    .await
                    .map_err(status)?;
                None
            }
        };
        let (sink, rx) = Sink::new(BUFFER, PATIENCE).await;
        tokio::spawn(follow(self.0.clone(), ns, p, from, snapshot, applied, sink));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_consumer_that_reads_nothing_gets_what_was_queued_then_resource_exhausted() {
        let (mut sink, mut rx) = Sink::new(2, Duration::from_millis(50)).await;
        assert!(sink.send(1).await.is_ok());
        assert!(sink.send(2).await.is_ok());
        assert!(sink.send(3).await.is_err(), "the third item finds no room");
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 3, "two items and the status");
        assert!(matches!(got[0], Ok(1)));
        assert!(matches!(got[1], Ok(2)));
        assert!(
            matches!(&got[2], Err(s) if s.code() == tonic::Code::ResourceExhausted),
            "{:?}",
            got[2]
        );
        assert!(rx.try_recv().is_err(), "the stream ends there");
    }

    #[tokio::test]
    async fn a_consumer_that_goes_away_ends_the_stream() {
        let (mut sink, rx) = Sink::new(2, Duration::from_secs(5)).await;
        drop(rx);
        assert!(sink.send(1).await.is_err());
        tokio::time::timeout(Duration::from_secs(1), sink.closed())
            .await
            .expect("closed resolves");
    }

    #[test]
    fn a_snapshot_lists_flags_then_segments_at_its_revision() {
        let state: NamespaceState = NamespaceState {
            namespace: serde_json::from_value(serde_json::json!({"key": "n"})).expect("namespace"),
            flags: vec![
                serde_json::from_value(serde_json::json!({
                    "namespace": "n", "key": "f", "state": "ENABLED", "variants": {"a": 1}
                }))
                .expect("flag"),
            ],
            segments: vec![
                serde_json::from_value(serde_json::json!({
                    "namespace": "n", "key": "s", "rule": true
                }))
                .expect("segment"),
            ],
            revision: 7,
        };
        let evs: Vec<_> = snapshot_events(state, Vec::new()).collect();
        let shape: Vec<_> = evs
            .iter()
            .map(|e| {
                (
                    e.kind.as_str(),
                    e.key.as_str(),
                    e.revision,
                    e.snapshot,
                    e.deleted,
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("flag", "f", 7, true, false),
                ("segment", "s", 7, true, false)
            ]
        );
    }
}
