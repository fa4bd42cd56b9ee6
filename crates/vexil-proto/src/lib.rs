//! `vexil-proto` holds Vexil's gRPC definitions and the code generated from them: Vexil's own
//! `vexil.v1` API and the flagd protocols (`flagd.evaluation.v1`, `flagd.evaluation.v2`,
//! `flagd.sync.v1`), written to be wire-compatible with flagd's published definitions.
//!
//! Generated code only: no service logic, no dependency on Vexil's other crates.

#![expect(
    missing_docs,
    clippy::allow_attributes,
    reason = "generated code carries no docs and uses #[allow]"
)]

/// flagd's protocols.
pub mod flagd {
    /// Flag evaluation.
    pub mod evaluation {
        /// Version 1 (values always set).
        pub mod v1 {
            tonic::include_proto!("flagd.evaluation.v1");
        }
        /// Version 2 (values optional for code defaults).
        pub mod v2 {
            tonic::include_proto!("flagd.evaluation.v2");
        }
    }
    /// Flag sync for in-process providers.
    pub mod sync {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("flagd.sync.v1");
        }
    }
}

/// Vexil's own API.
pub mod vexil {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("vexil.v1");
    }
}

/// The encoded descriptors of every service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
