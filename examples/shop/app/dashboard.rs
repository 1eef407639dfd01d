//! `GET /dashboard`: one self-contained HTML page (no build step, nothing from a CDN) that
//! shows breaker states, bulkhead occupancy, retry budgets and recent sagas with their step
//! timelines. The current state is embedded in the page, so it is right on first paint (and
//! for `chromium --dump-dom`); the page then polls `/circuit-status` and `/sagas` every 500 ms.

use serde_json::Value;

const PAGE: &str = include_str!("dashboard.html");

/// The page, with `initial` embedded.
pub(crate) fn page(initial: &Value) -> String {
    // `</` would end the script element early.
    let json = initial.to_string().replace("</", "<\\/");
    PAGE.replace("__INITIAL__", &json)
}
