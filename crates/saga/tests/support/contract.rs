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
