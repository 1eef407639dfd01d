//! Model-based check of the memory store's state machine (leases, finish, release, TTL,
//! purge) against a tiny reference, on paused tokio time.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use staunch_idempotency::{
    Begin, Claim, Fingerprint, IdempotencyStore, MemoryStore, Outcome, StoreError, StoredResponse,
};

#[derive(Debug, Clone)]
enum Op {
    Begin { key: u8, fp: u8, lease: u64 },
    Finish { claim: usize, ttl: u64 },
    Release { claim: usize },
    Advance { ms: u64 },
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..2, 0u8..2, 1u64..50).prop_map(|(key, fp, lease)| Op::Begin { key, fp, lease }),
        (0usize..16, 1u64..50).prop_map(|(claim, ttl)| Op::Finish { claim, ttl }),
        (0usize..16).prop_map(|claim| Op::Release { claim }),
        (0u64..60).prop_map(|ms| Op::Advance { ms }),
        Just(Op::Purge),
    ]
}

/// The reference: per key, who holds it, until when, and whether it finished.
#[derive(Debug, Clone)]
struct Row {
    fp: u8,
    token: i64,
    expires: u64,
    finished: bool,
}

fn outcome() -> Outcome {
    Outcome::Stored(StoredResponse::new(http::StatusCode::OK, "ok"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn memory_store_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let store = MemoryStore::with_purge_interval(Duration::from_hours(1));
            let mut model: HashMap<u8, Row> = HashMap::new();
            let mut claims: Vec<(u8, u8, Claim)> = Vec::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Begin { key, fp, lease } => {
                        let claim = Claim::new(format!("k{key}"), Fingerprint([fp; 32]), Duration::ZERO);
                        let got = store.begin(&claim, Duration::from_millis(lease)).await.unwrap();
                        let expected = match model.get(&key) {
                            Some(row) if row.expires > now => {
                                let fingerprint = Fingerprint([row.fp; 32]);
                                if row.finished { Begin::Finished { fingerprint, outcome: outcome() } } else { Begin::InFlight { fingerprint } }
                            }
                            _ => {
                                model.insert(key, Row { fp, token: claim.token(), expires: now + lease, finished: false });
                                Begin::Started
                            }
                        };
                        prop_assert_eq!(got, expected);
                        claims.push((key, fp, claim));
                    }
                    Op::Finish { claim, ttl } => {
                        let Some((key, _, claim)) = claims.get(claim) else { continue };
                        let got = store.finish(claim, &outcome(), Duration::from_millis(ttl)).await;
                        let holds = if let Some(row) = model.get_mut(key) && row.token == claim.token() && !row.finished {
                            row.finished = true;
                            row.expires = now + ttl;
                            true
                        } else {
                            false
                        };
                        // A claim that does not hold its key in flight is told so.
                        prop_assert_eq!(got.is_ok(), holds);
                        prop_assert!(holds || matches!(got, Err(StoreError::LeaseLost { .. })), "{:?}", got);
                    }
                    Op::Release { claim } => {
                        let Some((key, _, claim)) = claims.get(claim) else { continue };
                        store.release(claim).await.unwrap();
                        if model.get(key).is_some_and(|r| r.token == claim.token() && !r.finished) {
                            model.remove(key);
                        }
                    }
                    Op::Advance { ms } => {
                        tokio::time::advance(Duration::from_millis(ms)).await;
                        now += ms;
                    }
                    Op::Purge => {
                        let purged = store.purge().await.unwrap();
                        let before = model.len();
                        model.retain(|_, r| r.expires > now);
                        prop_assert_eq!(purged, (before - model.len()) as u64);
                    }
                }
                prop_assert_eq!(store.len(), model.len());
            }
            Ok(())
        })?;
    }
}
