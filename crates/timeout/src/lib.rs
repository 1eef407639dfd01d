//! The staunch timeout: per-call limits and deadlines propagated over HTTP and gRPC.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod error;

pub use crate::error::Elapsed;
