//! How the backends turn what they store into domain values and back: JSON documents, the
//! counters (versions, revisions, `seq`s) that SQL keeps as signed integers, and the rows of the
//! SQL change log. Every failure is [`StoreError::Internal`] with a message that starts with
//! the backend's name (`sqlite: …`, `postgres: …`, `etcd: …`), which is why each backend holds
//! its own [`Codec`].

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vexil_core::domain::{Change, Flag, ResourceKind};

use crate::plan::Versioned;
use crate::{NamespaceState, RawNamespaceState, StoreError};

/// One backend's encoding, named for its errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec {
    backend: &'static str,
}

/// A row of a SQL change log: revision, namespace, kind, key and the state after (JSON).
pub(crate) type ChangeRow = (i64, String, String, String, Option<String>);

impl Codec {
    /// The codec of the backend called `backend` in messages.
    pub(crate) const fn new(backend: &'static str) -> Self {
        Self { backend }
    }

    /// [`StoreError::Internal`] with `detail` after the backend's name.
    pub(crate) fn internal(self, detail: impl Display) -> StoreError {
        StoreError::Internal {
            message: format!("{}: {detail}", self.backend),
        }
    }

    /// Decodes a stored JSON document (a `what`).
    pub(crate) fn decode<T: DeserializeOwned>(
        self,
        doc: &str,
        what: &str,
    ) -> Result<T, StoreError> {
        serde_json::from_str(doc)
            .map_err(|e| self.internal(format!("decoding a stored {what}: {e}")))
    }

    /// As [`Codec::decode`], from bytes.
    pub(crate) fn decode_bytes<T: DeserializeOwned>(
        self,
        doc: &[u8],
        what: &str,
    ) -> Result<T, StoreError> {
        serde_json::from_slice(doc)
            .map_err(|e| self.internal(format!("decoding a stored {what}: {e}")))
    }

    /// As [`Codec::decode`], from an already parsed document.
    pub(crate) fn decode_value<T: DeserializeOwned>(
        self,
        doc: Value,
        what: &str,
    ) -> Result<T, StoreError> {
        serde_json::from_value(doc)
            .map_err(|e| self.internal(format!("decoding a stored {what}: {e}")))
    }

    /// Encodes a `what` as the document to store.
    pub(crate) fn to_value<T: Serialize>(self, value: &T, what: &str) -> Result<Value, StoreError> {
        serde_json::to_value(value).map_err(|e| self.internal(format!("encoding a {what}: {e}")))
    }

    /// As [`Codec::to_value`], with the text to store. The text is the serialisation of the very
    /// `Value` returned, so what callers get back from `commit` and from later reads is the same
    /// JSON.
    pub(crate) fn to_json<T: Serialize>(
        self,
        value: &T,
        what: &str,
    ) -> Result<(Value, String), StoreError> {
        let value = self.to_value(value, what)?;
        let text = value.to_string();
        Ok((value, text))
    }

    /// A stored `(version, document)` row of a versioned resource, decoded.
    pub(crate) fn versioned<T: Versioned>(
        self,
        row: Option<(i64, String)>,
    ) -> Result<Option<(u64, T)>, StoreError> {
        row.map(|(version, doc)| Ok((self.to_u64(version)?, self.decode(&doc, T::KIND.as_str())?)))
            .transpose()
    }

    /// A stored counter: SQL integers are signed; versions, revisions and seqs never negative.
    pub(crate) fn to_u64(self, n: i64) -> Result<u64, StoreError> {
        u64::try_from(n).map_err(|_| self.internal(format!("negative counter {n}")))
    }

    /// A counter to store (see [`Codec::to_u64`]).
    pub(crate) fn to_i64(self, n: u64) -> Result<i64, StoreError> {
        i64::try_from(n).map_err(|_| self.internal(format!("counter {n} out of range")))
    }

    /// The kind column of a change row.
    pub(crate) fn parse_kind(self, kind: &str) -> Result<ResourceKind, StoreError> {
        match kind {
            "namespace" => Ok(ResourceKind::Namespace),
            "flag" => Ok(ResourceKind::Flag),
            "segment" => Ok(ResourceKind::Segment),
            "config" => Ok(ResourceKind::Config),
            other => Err(self.internal(format!("unknown resource kind {other:?}"))),
        }
    }

    /// A change row, decoded.
    pub(crate) fn change(self, row: ChangeRow) -> Result<Change, StoreError> {
        let (revision, namespace, kind, key, after) = row;
        Ok(Change {
            revision: self.to_u64(revision)?,
            namespace,
            kind: self.parse_kind(&kind)?,
            key,
            after: after.map(|a| self.decode(&a, "change")).transpose()?,
        })
    }

    /// A namespace loaded with its flags as text, with the flags decoded.
    pub(crate) fn namespace_state(
        self,
        raw: RawNamespaceState,
    ) -> Result<NamespaceState, StoreError> {
        let flags = raw
            .flags
            .iter()
            .map(|d| self.decode(d, "flag"))
            .collect::<Result<Vec<Flag>, _>>()?;
        Ok(NamespaceState {
            namespace: raw.namespace,
            flags,
            segments: raw.segments,
            revision: raw.revision,
        })
    }
}
