//! The staunch retry: backoff with jitter, retry budgets, Retry-After and gRPC pushback, hedging.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
