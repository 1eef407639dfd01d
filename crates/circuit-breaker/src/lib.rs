//! The staunch circuit breaker: trips on failure rate and slow-call rate over a sliding window, probes in half-open, rejects fast when open.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
