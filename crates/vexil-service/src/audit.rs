//! The audit service: querying, exporting and verifying the hash-chained audit log, and the
//! history of one flag.
//!
//! Events are written by the other services, inside the commit of the change they describe;
//! this service only reads. Every read pages through [`AuditStore::list_audit`], so a log of
//! any size is exported or verified in bounded memory, whatever the backend.

use std::sync::Arc;

use serde::Serialize;
use vexil_core::domain::{AuditEvent, ResourceKind};
use vexil_store::{AuditQuery, AuditStore, ChainBreak, ChainVerifier};

use vexil_core::identity::ALL_NAMESPACES;

use crate::ServiceError;
use crate::principal::{Pass, Permission};

/// Events read per store round trip by export and verify (the store's page cap).
const PAGE: usize = 1000;

/// What [`AuditService::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainReport {
    /// True when every event follows from the one before it.
    pub valid: bool,
    /// Events checked and found to follow (all of them when `valid`).
    pub events: u64,
    /// The `seq` of the last event that follows (0 for an empty log).
    pub head_seq: u64,
    /// Its hash: record it elsewhere to detect a log rewritten from some point on.
    pub head_hash: String,
    /// The first event that does not follow, when one does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_break: Option<ChainBreak>,
}

/// An export in progress: pages of events in `seq` order, authorized when it was created.
pub struct AuditExport {
    store: Arc<dyn AuditStore>,
    query: AuditQuery,
    done: bool,
}

impl std::fmt::Debug for AuditExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditExport")
            .field("query", &self.query)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl AuditExport {
    /// The next page (never empty), or `None` after the last.
    ///
    /// # Errors
    /// Store errors; the export can be retried from the same point by calling again.
    pub async fn next_page(&mut self) -> Result<Option<Vec<AuditEvent>>, ServiceError> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.list_audit(&self.query).await?;
        if page.len() < PAGE {
            self.done = true;
        }
        match page.last() {
            Some(last) => {
                self.query.after_seq = Some(last.seq);
                Ok(Some(page))
            }
            None => Ok(None),
        }
    }
}

/// Reads the audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditService {
    store: Arc<dyn AuditStore>,
}

impl std::fmt::Debug for AuditService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditService").finish_non_exhaustive()
    }
}

impl AuditService {
    /// A service over `store`'s audit log.
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        Self { store }
    }

    /// One page of events in `seq` order, filtered by `query`. Requires `AuditRead` on the
    /// queried namespace, or on `*` when the query names none.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(
        &self,
        pass: &Pass<'_>,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, ServiceError> {
        pass.require(Permission::AuditRead, scope(query))?;
        Ok(self.store.list_audit(query).await?)
    }

    /// Every event matching `query` after `query.after_seq` (its `limit` is ignored), read a
    /// page at a time as the caller asks for them. Authorized as [`AuditService::list`]; the
    /// export sees events committed while it runs, up to the moment each page is read.
    ///
    /// # Errors
    /// A pass that does not grant the read.
    pub fn export(
        &self,
        pass: &Pass<'_>,
        mut query: AuditQuery,
    ) -> Result<AuditExport, ServiceError> {
        pass.require(Permission::AuditRead, scope(&query))?;
        query.limit = PAGE;
        Ok(AuditExport {
            store: Arc::clone(&self.store),
            query,
            done: false,
        })
    }

    /// Checks the whole chain from the first event (see [`ChainVerifier`]) and stops at the
    /// first event that does not follow. Requires `AuditRead` on `*`: the chain runs through
    /// every namespace. Reads the log a page at a time; the report covers the events that
    /// existed when each page was read.
    ///
    /// # Errors
    /// Store errors (a broken chain is a report, not an error).
    pub async fn verify(&self, pass: &Pass<'_>) -> Result<ChainReport, ServiceError> {
        let mut export = self.export(pass, AuditQuery::default())?;
        let mut verifier = ChainVerifier::default();
        let mut first_break = None;
        'pages: while let Some(page) = export.next_page().await? {
            for event in &page {
                if let Err(b) = verifier.check(event) {
                    first_break = Some(b);
                    break 'pages;
                }
            }
        }
        let (head_seq, head_hash) = verifier.head();
        Ok(ChainReport {
            valid: first_break.is_none(),
            events: verifier.checked(),
            head_seq,
            head_hash: head_hash.to_owned(),
            first_break,
        })
    }

    /// The audit events of one flag (created, updated, enabled, deleted, imported…) in `seq`
    /// order, after `after_seq`, at most `limit` (0 means 100; capped at 1000). Requires
    /// `FlagRead` on the namespace: a flag's history is part of the flag. A deleted flag keeps
    /// its history.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] when the flag has no event at all (it never existed), and
    /// store errors.
    pub async fn flag_history(
        &self,
        pass: &Pass<'_>,
        namespace: &str,
        key: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, ServiceError> {
        pass.require(Permission::FlagRead, namespace)?;
        let query = AuditQuery {
            namespace: Some(namespace.to_owned()),
            kind: Some(ResourceKind::Flag),
            key: Some(key.to_owned()),
            after_seq,
            limit,
        };
        let events = self.store.list_audit(&query).await?;
        if events.is_empty() && after_seq.is_none() {
            return Err(ServiceError::NotFound {
                kind: ResourceKind::Flag,
                namespace: namespace.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(events)
    }
}

fn scope(query: &AuditQuery) -> &str {
    query.namespace.as_deref().unwrap_or(ALL_NAMESPACES)
}
