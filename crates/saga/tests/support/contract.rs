//! The `SagaStore` contract, one function per rule, generic over the store. Every store
//! implementation is instantiated against all of them in `tests/store_contract.rs`.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use staunch_saga::{Append, Created, ListFilter, NewSaga, SagaStatus, SagaStore, StoreError};

fn new(id: &str, def: &str, events: &[&str]) -> NewSaga {
    NewSaga::new(
        Arc::from(id),
        Arc::from(def),
        3,
        SagaStatus::Running,
        events.iter().map(|e| (*e).to_owned()).collect(),
    )
}

fn append(id: &str, first_seq: u64, events: &[&str], status: SagaStatus) -> Append {
    Append::new(
        Arc::from(id),
        first_seq,
        events.iter().map(|e| (*e).to_owned()).collect(),
        status,
    )
}

fn payloads(log: &staunch_saga::SagaLog) -> Vec<(u64, String)> {
    log.events
        .iter()
        .map(|e| (e.seq, e.payload.clone()))
        .collect()
}

pub async fn create_is_atomic_and_idempotent<S: SagaStore>(store: &S) {
    assert_eq!(
        store
            .create(new("a", "order", &["e0", "e1"]))
            .await
            .unwrap(),
        Created::New
    );
    assert_eq!(
        store.create(new("a", "other", &["x"])).await.unwrap(),
        Created::Exists
    );
    let log = store.load("a").await.unwrap().unwrap();
    assert_eq!(payloads(&log), [(0, "e0".into()), (1, "e1".into())]);
    assert_eq!(log.summary.definition, "order");
    assert_eq!(log.summary.version, 3);
    assert_eq!(log.summary.status, SagaStatus::Running);
}

pub async fn load_of_an_unknown_saga_is_none<S: SagaStore>(store: &S) {
    assert!(store.load("nope").await.unwrap().is_none());
}

pub async fn append_must_start_at_the_next_sequence<S: SagaStore>(store: &S) {
    store.create(new("b", "order", &["e0"])).await.unwrap();
    let err = store
        .append(append("b", 0, &["dup"], SagaStatus::Running))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 0,
                actual: Some(1),
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .append(append("b", 5, &["gap"], SagaStatus::Running))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                actual: Some(1),
                ..
            }
        ),
        "{err}"
    );
    store
        .append(append("b", 1, &["e1", "e2"], SagaStatus::Running))
        .await
        .unwrap();
    store
        .append(append("b", 3, &["e3"], SagaStatus::Running))
        .await
        .unwrap();
    let log = store.load("b").await.unwrap().unwrap();
    assert_eq!(
        payloads(&log),
        [
            (0, "e0".into()),
            (1, "e1".into()),
            (2, "e2".into()),
            (3, "e3".into())
        ]
    );
    let err = store
        .append(append("ghost", 0, &["x"], SagaStatus::Running))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: None, .. }),
        "{err}"
    );
}

pub async fn rows_come_back_exactly_as_written<S: SagaStore>(store: &S) {
    let tricky = r#"{"v":1,"e":{"note":"quote \" backslash \\ newline \n unicode é ✓ 💸"}}"#;
    let big = "y".repeat(64 * 1024);
    store.create(new("c", "order", &[tricky])).await.unwrap();
    store
        .append(append("c", 1, &[&big, ""], SagaStatus::Running))
        .await
        .unwrap();
    let log = store.load("c").await.unwrap().unwrap();
    assert_eq!(
        payloads(&log),
        [(0, tricky.into()), (1, big), (2, String::new())]
    );
}

pub async fn append_updates_status_and_note<S: SagaStore>(store: &S) {
    store.create(new("d", "order", &["e0"])).await.unwrap();
    store
        .append(append("d", 1, &["e1"], SagaStatus::Stuck).with_note(Some("refund failed".into())))
        .await
        .unwrap();
    let s = store.load("d").await.unwrap().unwrap().summary;
    assert_eq!(
        (s.status, s.note.as_deref()),
        (SagaStatus::Stuck, Some("refund failed"))
    );
    store
        .append(append("d", 2, &["e2"], SagaStatus::Compensated))
        .await
        .unwrap();
    let s = store.load("d").await.unwrap().unwrap().summary;
    assert_eq!((s.status, s.note), (SagaStatus::Compensated, None));
    // The definition and version are never changed by appends.
    assert_eq!((s.definition.as_str(), s.version), ("order", 3));
}

pub async fn list_filters_by_status_and_definition_in_id_order<S: SagaStore>(store: &S) {
    for (id, def, status) in [
        ("l3", "order", SagaStatus::Completed),
        ("l1", "order", SagaStatus::Running),
        ("l2", "refund", SagaStatus::Running),
        ("l4", "order", SagaStatus::Stuck),
    ] {
        store.create(new(id, def, &["e0"])).await.unwrap();
        store.append(append(id, 1, &["e1"], status)).await.unwrap();
    }
    let ids =
        |v: Vec<staunch_saga::SagaSummary>| v.into_iter().map(|s| s.saga_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list(&ListFilter::all()).await.unwrap()),
        ["l1", "l2", "l3", "l4"]
    );
    assert_eq!(
        ids(store
            .list(&ListFilter::status(SagaStatus::Running))
            .await
            .unwrap()),
        ["l1", "l2"]
    );
    assert_eq!(
        ids(store
            .list(&ListFilter::status(SagaStatus::Running).definition("order"))
            .await
            .unwrap()),
        ["l1"]
    );
    let filter = ListFilter {
        statuses: vec![SagaStatus::Stuck, SagaStatus::Completed],
        ..ListFilter::default()
    };
    assert_eq!(ids(store.list(&filter).await.unwrap()), ["l3", "l4"]);
    assert_eq!(
        ids(store.list(&ListFilter::all().limit(3)).await.unwrap()),
        ["l1", "l2", "l3"]
    );
}

pub async fn quarantine_sets_status_and_keeps_every_row<S: SagaStore>(store: &S) {
    store
        .create(new("q", "order", &["e0", "garbage"]))
        .await
        .unwrap();
    store
        .quarantine("q", "row 1 does not decode")
        .await
        .unwrap();
    let log = store.load("q").await.unwrap().unwrap();
    assert_eq!(log.summary.status, SagaStatus::Quarantined);
    assert_eq!(log.summary.note.as_deref(), Some("row 1 does not decode"));
    assert_eq!(payloads(&log), [(0, "e0".into()), (1, "garbage".into())]);
    assert_eq!(
        store
            .list(&ListFilter::status(SagaStatus::Quarantined))
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn concurrent_appends_to_many_sagas_all_land_in_order<S: SagaStore + Clone>(store: &S) {
    let mut tasks = Vec::new();
    for t in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("m{t:03}");
            store.create(new(&id, "order", &["0"])).await.unwrap();
            for seq in 1..20u64 {
                let payload = seq.to_string();
                store
                    .append(append(&id, seq, &[&payload], SagaStatus::Running))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for t in 0..64 {
        let log = store.load(&format!("m{t:03}")).await.unwrap().unwrap();
        let got: Vec<_> = log
            .events
            .iter()
            .map(|e| e.payload.parse::<u64>().unwrap())
            .collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    }
}

pub async fn racing_appends_at_one_sequence_let_exactly_one_win<S: SagaStore + Clone>(store: &S) {
    store.create(new("race", "order", &["e0"])).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(append("race", 1, &[&format!("w{i}")], SagaStatus::Running))
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.load("race").await.unwrap().unwrap().events.len(), 2);
}

/// `created_at` and `updated_at` are within a second of `[before, after]` (stores keep
/// milliseconds).
fn near(
    time: Option<std::time::SystemTime>,
    before: std::time::SystemTime,
    after: std::time::SystemTime,
) -> bool {
    let slack = std::time::Duration::from_secs(1);
    time.is_some_and(|t| t + slack >= before && t <= after + slack)
}

pub async fn summaries_carry_creation_change_and_stuck_times<S: SagaStore>(store: &S) {
    let before = std::time::SystemTime::now();
    store.create(new("t", "order", &["e0"])).await.unwrap();
    let s = store.load("t").await.unwrap().unwrap().summary;
    let after = std::time::SystemTime::now();
    assert!(near(s.created_at, before, after), "{s:?}");
    assert!(near(s.updated_at, before, after), "{s:?}");
    assert_eq!(s.stuck_since, None);
    store
        .append(append("t", 1, &["e1"], SagaStatus::Stuck).with_note(Some("refund failed".into())))
        .await
        .unwrap();
    let stuck = store.load("t").await.unwrap().unwrap().summary;
    assert!(stuck.stuck_since.is_some(), "{stuck:?}");
    assert!(stuck.stuck_since >= s.created_at);
    assert_eq!(stuck.created_at, s.created_at);
    // Still stuck, another note: stuck since the first time.
    store
        .append(append("t", 2, &["e2"], SagaStatus::Stuck).with_note(Some("again".into())))
        .await
        .unwrap();
    let again = store.load("t").await.unwrap().unwrap().summary;
    assert_eq!(again.stuck_since, stuck.stuck_since);
    // Listing gives the same times as loading.
    let listed = store.list(&ListFilter::all()).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&again));
    store
        .append(append("t", 3, &["e3"], SagaStatus::Resolved))
        .await
        .unwrap();
    let ended = store.load("t").await.unwrap().unwrap().summary;
    assert_eq!(ended.stuck_since, None);
    assert!(ended.updated_at >= again.updated_at);
    assert_eq!(ended.created_at, s.created_at);
}

/// Creates `id` and appends one row leaving it in `status`.
async fn saga_in<S: SagaStore>(store: &S, id: &str, status: SagaStatus) {
    store.create(new(id, "order", &["e0"])).await.unwrap();
    if status == SagaStatus::Quarantined {
        store.quarantine(id, "damaged").await.unwrap();
    } else {
        store.append(append(id, 1, &["e1"], status)).await.unwrap();
    }
}

pub async fn purge_deletes_ended_sagas_whole_and_keeps_the_rest<S: SagaStore>(store: &S) {
    for (id, status) in [
        ("p-completed-1", SagaStatus::Completed),
        ("p-completed-2", SagaStatus::Completed),
        ("p-compensated", SagaStatus::Compensated),
        ("p-cancelled", SagaStatus::Cancelled),
        ("p-resolved", SagaStatus::Resolved),
        ("p-stuck", SagaStatus::Stuck),
        ("p-running", SagaStatus::Running),
        ("p-compensating", SagaStatus::Compensating),
        ("p-paused", SagaStatus::Paused),
        ("p-quarantined", SagaStatus::Quarantined),
    ] {
        saga_in(store, id, status).await;
    }
    // A start repeated for an ended saga finds it (and a store may keep what it read).
    assert_eq!(
        store
            .create(new("p-completed-1", "order", &["again"]))
            .await
            .unwrap(),
        Created::Exists
    );
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    let earlier = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1);
    // Nothing ended before the cutoff; an empty status list or a zero limit deletes nothing.
    assert!(
        store
            .purge(earlier, &SagaStatus::ALL, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.purge(later, &[], 100).await.unwrap().is_empty());
    assert!(
        store
            .purge(later, &SagaStatus::ALL, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let mut gone = store
        .purge(
            later,
            &[SagaStatus::Completed, SagaStatus::Compensated],
            100,
        )
        .await
        .unwrap();
    gone.sort();
    assert_eq!(gone, ["p-compensated", "p-completed-1", "p-completed-2"]);
    for id in &gone {
        assert!(store.load(id).await.unwrap().is_none(), "{id} still there");
    }
    let left: Vec<String> = store
        .list(&ListFilter::all())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.saga_id)
        .collect();
    assert_eq!(
        left,
        [
            "p-cancelled",
            "p-compensating",
            "p-paused",
            "p-quarantined",
            "p-resolved",
            "p-running",
            "p-stuck"
        ]
    );
    // The log rows went with the summary: the id starts afresh.
    assert_eq!(
        store
            .create(new("p-completed-1", "order", &["fresh"]))
            .await
            .unwrap(),
        Created::New
    );
    let log = store.load("p-completed-1").await.unwrap().unwrap();
    assert_eq!(payloads(&log), [(0, "fresh".into())]);
    store
        .append(append("p-completed-1", 1, &["e1"], SagaStatus::Completed))
        .await
        .unwrap();
    // Quarantined ones go when asked for.
    assert_eq!(
        store
            .purge(later, &[SagaStatus::Quarantined], 100)
            .await
            .unwrap(),
        ["p-quarantined"]
    );
}

pub async fn purge_takes_at_most_its_limit_per_call<S: SagaStore>(store: &S) {
    for i in 0..5 {
        saga_in(store, &format!("lim-{i}"), SagaStatus::Completed).await;
    }
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    let mut total = Vec::new();
    for expected in [2, 2, 1, 0] {
        let gone = store
            .purge(later, &[SagaStatus::Completed], 2)
            .await
            .unwrap();
        assert_eq!(gone.len(), expected, "{gone:?}");
        total.extend(gone);
    }
    total.sort();
    assert_eq!(total, ["lim-0", "lim-1", "lim-2", "lim-3", "lim-4"]);
}
