//! Classifier behaviour: HTTP status sets against a reference model, closures, cancellation.

use std::collections::BTreeSet;

use http::{Response, StatusCode};
use proptest::prelude::*;
use staunch_core::{AnyError, Classify, HttpStatus, Outcome, classify_fn};

fn response(status: u16) -> Result<Response<()>, std::io::Error> {
    Ok(Response::builder().status(status).body(()).unwrap())
}

#[test]
fn default_http_failures_are_5xx_and_429() {
    let c = HttpStatus::new();
    for code in 100u16..=999 {
        let expected = if (500..=599).contains(&code) || code == 429 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        assert_eq!(c.classify(&response(code)), expected, "status {code}");
    }
    let err = Err::<Response<()>, _>(std::io::Error::other("connection refused"));
    assert_eq!(c.classify(&err), Outcome::Failure);
    assert_eq!(
        Classify::<Response<()>, ()>::classify_cancelled(&c),
        Outcome::Ignored
    );
}

#[test]
fn transport_errors_and_cancellation_are_configurable() {
    let c = HttpStatus::new()
        .error_as(Outcome::Ignored)
        .cancelled_as(Outcome::Failure);
    let err = Err::<Response<()>, _>(std::io::Error::other("reset"));
    assert_eq!(c.classify(&err), Outcome::Ignored);
    assert_eq!(
        Classify::<Response<()>, ()>::classify_cancelled(&c),
        Outcome::Failure
    );
}

#[derive(Debug, Clone)]
enum Edit {
    Add(u16),
    Remove(u16),
    AddRange(u16, u16),
}

proptest! {
    /// Any sequence of edits to the status set agrees with a plain set of numbers.
    #[test]
    fn http_status_set_matches_a_reference_set(edits in prop::collection::vec(
        prop_oneof![
            (100u16..=999).prop_map(Edit::Add),
            (100u16..=999).prop_map(Edit::Remove),
            (0u16..=1100, 0u16..=40).prop_map(|(a, len)| Edit::AddRange(a, a.saturating_add(len))),
        ],
        0..40,
    ), probe in prop::collection::vec(100u16..=999, 1..50)) {
        let mut c = HttpStatus::empty();
        let mut model = BTreeSet::new();
        for edit in edits {
            match edit {
                Edit::Add(code) => {
                    c = c.failure(StatusCode::from_u16(code).unwrap());
                    model.insert(code);
                }
                Edit::Remove(code) => {
                    c = c.not_failure(StatusCode::from_u16(code).unwrap());
                    model.remove(&code);
                }
                Edit::AddRange(a, b) => {
                    c = c.failures(a..=b);
                    model.extend((a..=b).filter(|x| (100..=999).contains(x)));
                }
            }
        }
        for code in probe {
            let expected = if model.contains(&code) { Outcome::Failure } else { Outcome::Success };
            prop_assert_eq!(c.classify(&response(code)), expected);
        }
    }
}

#[test]
fn any_error_and_closures() {
    let c = AnyError::new();
    assert_eq!(c.classify(&Ok::<u8, u8>(1)), Outcome::Success);
    assert_eq!(c.classify(&Err::<u8, u8>(1)), Outcome::Failure);

    let c = classify_fn(|r: &Result<u32, u32>| match r {
        Ok(_) => Outcome::Success,
        Err(code) if *code >= 500 => Outcome::Failure,
        Err(_) => Outcome::Ignored,
    })
    .cancelled_as(Outcome::Failure);
    assert_eq!(c.classify(&Err(503)), Outcome::Failure);
    assert_eq!(c.classify(&Err(404)), Outcome::Ignored);
    assert_eq!(c.classify(&Ok(1)), Outcome::Success);
    assert_eq!(c.classify_cancelled(), Outcome::Failure);

    // Shared classifiers classify the same way through references and `Arc`s.
    fn through<C: Classify<Response<()>, std::io::Error>>(c: C, status: u16) -> Outcome {
        c.classify(&response(status))
    }
    let shared = std::sync::Arc::new(HttpStatus::new());
    assert_eq!(through(shared.clone(), 502), Outcome::Failure);
    let by_ref: &HttpStatus = &shared;
    assert_eq!(through(by_ref, 502), Outcome::Failure);
    assert_eq!(through(by_ref, 200), Outcome::Success);
}

#[cfg(feature = "reqwest")]
#[test]
fn reqwest_responses_are_classified_by_status() {
    let res: reqwest::Response = Response::builder()
        .status(503)
        .body(reqwest::Body::from(""))
        .unwrap()
        .into();
    let c = HttpStatus::new();
    assert_eq!(c.classify(&Ok::<_, reqwest::Error>(res)), Outcome::Failure);
}
