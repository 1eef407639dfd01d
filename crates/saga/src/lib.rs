//! The staunch saga engine: compensations, a durable log in SQLite or Postgres, crash recovery.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
