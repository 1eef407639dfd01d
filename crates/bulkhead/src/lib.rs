//! The staunch bulkhead: caps concurrent calls to a dependency, with bounded FIFO waiting, per-key partitions and adaptive limits.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
