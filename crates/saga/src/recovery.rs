//! Recovery: claiming unfinished sagas from the store, resuming or quarantining each, and
//! the background loop that does it continuously.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::admission::Permit;
use crate::config::RETENTION_PERIOD;
use crate::error::{LoadError, SagaError, StoreError, panic_message};
use crate::log::{decode_log, named_definition};
use crate::metrics::Count;
use crate::outcome::Stopped;
use crate::replay::Progress;
use crate::shared::{Replayed, Shared};
use crate::store::{SagaStatus, SagaSummary};

/// What [`SagaEngine::recover`](crate::SagaEngine::recover) did.
///
/// Every id in it is accepted by [`SagaEngine::handle`](crate::SagaEngine::handle) and
/// [`SagaEngine::outcome`](crate::SagaEngine::outcome), which wait for (or return) that
/// saga's outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Sagas resumed.
    pub resumed: Vec<String>,
    /// Sagas that could not be loaded, now quarantined, with why.
    pub quarantined: Vec<(String, LoadError)>,
    /// Sagas skipped because this engine already runs them.
    pub already_running: Vec<String>,
    /// Sagas listed as unfinished whose log had already ended when they were claimed (they
    /// finished in between, or their summary was stale): the summary is corrected and
    /// nothing runs or is counted again.
    pub settled: Vec<String>,
}

/// One recovery pass over at most `limit` claimed sagas (every unfinished one for a store
/// without leases), each resumed once there is room for it under the engine's caps.
pub(crate) async fn recover(
    shared: &Arc<Shared>,
    limit: usize,
) -> Result<RecoveryReport, SagaError> {
    // A leased store: claim only what can run now (a claimed saga waiting for room would
    // hold a lease that another instance with room could use); the next pass takes more.
    // A store without leases lists every unfinished saga; each waits for room below.
    let limit = if shared.store().lease_ttl().is_some() {
        limit.min(shared.admission().available())
    } else {
        usize::MAX
    };
    if limit == 0 {
        return Ok(RecoveryReport::default());
    }
    let mut report = RecoveryReport::default();
    let claimed = shared.store().claim_resumable(limit).await?;
    let nothing_registered = !claimed.is_empty() && !shared.has_definitions();
    // Every claimed saga is resumed (its runner releases it), quarantined, or released: on
    // every path, errors, panics and a cancelled pass included (the guards below).
    let mut pending = Pending {
        shared,
        rest: claimed.into_iter(),
    };
    if nothing_registered {
        // Every claimed saga would be quarantined as unknown: give them back (`pending`).
        return Err(SagaError::NothingRegistered);
    }
    // Up to `RESUME_AHEAD` claimed sagas are loaded and replayed at once (their logs read
    // while earlier ones wait for room), in id order.
    let resumed = futures_util::stream::iter(pending.rest.by_ref())
        .map(|summary| resume_claimed(shared, summary))
        .buffered(RESUME_AHEAD);
    let mut resumed = std::pin::pin!(resumed);
    while let Some(done) = resumed.next().await {
        match done? {
            Claimed::Resumed(id) => report.resumed.push(id),
            Claimed::Settled(id) => report.settled.push(id),
            Claimed::AlreadyRunning(id) => report.already_running.push(id),
            Claimed::Quarantined(id, error) => report.quarantined.push((id, error)),
        }
    }
    Ok(report)
}

/// Claimed sagas a recovery pass works on at once.
const RESUME_AHEAD: usize = 16;

/// What became of one claimed saga.
enum Claimed {
    Resumed(String),
    Settled(String),
    AlreadyRunning(String),
    Quarantined(String, LoadError),
}

/// Resumes one claimed saga once there is room for it under the caps, or quarantines it.
async fn resume_claimed(shared: &Arc<Shared>, summary: SagaSummary) -> Result<Claimed, SagaError> {
    let id: Arc<str> = Arc::from(summary.saga_id.as_str());
    if !shared.claim(&id) {
        // Its runner here holds it (and releases it).
        return Ok(Claimed::AlreadyRunning(summary.saga_id));
    }
    let held = Held {
        shared,
        id: &id,
        armed: true,
    };
    // Paced by the caps: wait for room (cancel safe; `held` gives the claims back).
    let permit = shared.admission().admit(&summary.definition).await;
    let resumed = AssertUnwindSafe(resume(shared, &id, permit))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(ResumeError::Load(LoadError::Inconsistent(format!(
                "loading the saga panicked: {}",
                panic_message(&*panic)
            ))))
        });
    match resumed {
        Ok(Replayed::Resumed) => {
            held.handed_over();
            shared.count(Count::Resumed, &summary.definition);
            Ok(Claimed::Resumed(summary.saga_id))
        }
        Ok(Replayed::Settled) => {
            held.handed_over();
            Ok(Claimed::Settled(summary.saga_id))
        }
        // `held` (and the pass's `pending`) give back this claim and the rest.
        Err(ResumeError::Store(e)) => Err(e.into()),
        Err(ResumeError::Load(error)) => {
            tracing::error!(saga_id = %id, %error, "saga quarantined: cannot be loaded");
            quarantine(shared, &id, &error).await?;
            held.handed_over();
            shared.count(Count::Quarantined, &summary.definition);
            shared.store().release(&id);
            shared.answer(
                &id,
                Some(Err(Stopped::Other(format!("quarantined: {error}")))),
            );
            Ok(Claimed::Quarantined(summary.saga_id, error))
        }
    }
}

/// Marks a saga quarantined; a panicking store is a store error.
async fn quarantine(shared: &Shared, id: &str, error: &LoadError) -> Result<(), StoreError> {
    AssertUnwindSafe(shared.store().quarantine(id, &error.to_string()))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(StoreError::Database(format!(
                "quarantine panicked: {}",
                panic_message(&*panic)
            )))
        })
}

/// Loads, checks and replays a saga's log (claimed here, and in a leased store) and spawns
/// its runner holding `permit`.
pub(crate) async fn resume(
    shared: &Arc<Shared>,
    id: &Arc<str>,
    permit: Permit,
) -> Result<Replayed, ResumeError> {
    let log = shared
        .store()
        .load(id)
        .await
        .map_err(ResumeError::Store)?
        .ok_or_else(|| ResumeError::Load(LoadError::Inconsistent("the saga vanished".into())))?;
    let events = decode_log(&log).map_err(ResumeError::Load)?;
    let (name, version) = named_definition(&events).map_err(ResumeError::Load)?;
    if log.summary.definition != name || log.summary.version != version {
        return Err(ResumeError::Load(LoadError::Inconsistent(format!(
            "its summary names definition `{}` version {} but its log was started by `{name}` \
             version {version}",
            log.summary.definition, log.summary.version
        ))));
    }
    let def = shared.definition(name, version).ok_or_else(|| {
        ResumeError::Load(LoadError::UnknownDefinition {
            name: name.to_owned(),
            version,
        })
    })?;
    let progress = Progress::replay(&events, def.step_count()).map_err(ResumeError::Load)?;
    def.resume(shared, Arc::clone(id), progress, permit)
        .map_err(ResumeError::Load)
}

pub(crate) enum ResumeError {
    Store(StoreError),
    Load(LoadError),
}

/// A saga claimed here and in the store while the pass works on it: unless handed over (to
/// a runner, or quarantined), dropping it gives both claims back.
struct Held<'a> {
    shared: &'a Shared,
    id: &'a Arc<str>,
    armed: bool,
}

impl Held<'_> {
    fn handed_over(mut self) {
        self.armed = false;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.unclaim(self.id);
            self.shared.store().release(self.id);
        }
    }
}

/// The claimed sagas a pass has not reached yet: dropping it releases every one left (after
/// an error, or when the pass is cancelled), so the next pass can claim them.
struct Pending<'a> {
    shared: &'a Shared,
    rest: std::vec::IntoIter<SagaSummary>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        for s in self.rest.by_ref() {
            self.shared.store().release(&s.saga_id);
        }
    }
}

/// The background recovery of one engine, from
/// [`SagaEngine::spawn_recovery`](crate::SagaEngine::spawn_recovery).
///
/// [`stop`](Self::stop) ends it gracefully and waits; dropping it ends it at once. Either
/// way sagas it resumed keep running.
#[derive(Debug)]
pub struct RecoveryLoop {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RecoveryLoop {
    /// Stops the loop and waits until it has ended: a pass under way finishes first (every
    /// saga it claimed resumed, quarantined or released) and no pass starts afterwards.
    ///
    /// Dropping the loop (or this future) instead stops it without waiting: a pass under way
    /// is cancelled at its next await point and gives back every claim it holds.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        // A pass that panicked is caught inside the task; nothing to report here.
        let _ = (&mut self.task).await;
    }
}

impl Drop for RecoveryLoop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shortest pause between two recovery passes: one tick of tokio's timer.
const MIN_PAUSE: Duration = Duration::from_millis(1);

/// Sagas claimed per recovery pass of the background loop.
const CLAIM_BATCH: usize = 256;

/// Sagas a purge deletes per store call (each call one transaction).
const PURGE_BATCH: usize = 1000;

/// Deletes sagas in `statuses` (checked by the caller) that ended before `before`, a batch at
/// a time, and counts them.
pub(crate) async fn purge(
    shared: &Shared,
    before: SystemTime,
    statuses: &[SagaStatus],
) -> Result<u64, SagaError> {
    let mut purged = 0;
    loop {
        let gone = shared
            .store()
            .purge(before, statuses, PURGE_BATCH)
            .await?
            .len();
        let n = u64::try_from(gone).unwrap_or(u64::MAX);
        shared.purged(n);
        purged += n;
        if gone < PURGE_BATCH {
            break;
        }
    }
    if purged > 0 {
        tracing::info!(purged, statuses = ?statuses, "purged ended sagas");
    }
    Ok(purged)
}

/// Runs the engine's retention policy, if any; never fails the loop (errors and panics
/// are logged).
async fn retain(shared: &Shared) {
    let Some(retention) = shared.retention() else {
        return;
    };
    // A `keep` reaching before the epoch keeps everything.
    let Some(before) = SystemTime::now().checked_sub(retention.keep) else {
        return;
    };
    let done = AssertUnwindSafe(purge(shared, before, &retention.statuses))
        .catch_unwind()
        .await;
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "saga retention purge failed"),
        Err(panic) => tracing::warn!(
            panic = %panic_message(&*panic),
            "saga retention purge panicked"
        ),
    }
}

/// Runs recovery now and then `interval` after each pass on a background task, and the
/// retention policy at the first pass and then at most every [`RETENTION_PERIOD`].
pub(crate) fn spawn_loop(shared: Arc<Shared>, interval: Duration) -> RecoveryLoop {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut first = true;
        let mut retained: Option<tokio::time::Instant> = None;
        loop {
            // A sleep, not an interval: any duration works (a huge one saturates instead of
            // overflowing the next tick's instant; one below the timer's 1 ms resolution
            // waits one tick, so the loop never spins without yielding).
            if !std::mem::take(&mut first) {
                tokio::select! {
                    () = tokio::time::sleep(interval.max(MIN_PAUSE)) => {}
                    // Stopped (or the loop's handle is gone).
                    _ = stopped.wait_for(|&stop| stop) => return,
                }
            }
            loop {
                if *stopped.borrow() {
                    return;
                }
                // A panic in a pass (a store, say) must not end the loop for good.
                let pass = AssertUnwindSafe(recover(&shared, CLAIM_BATCH))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        Err(SagaError::Store(StoreError::Database(format!(
                            "recovery pass panicked: {}",
                            panic_message(&*panic)
                        ))))
                    });
                match pass {
                    Ok(report) => {
                        let n =
                            report.resumed.len() + report.quarantined.len() + report.settled.len();
                        if n > 0 {
                            tracing::debug!(
                                resumed = report.resumed.len(),
                                quarantined = report.quarantined.len(),
                                settled = report.settled.len(),
                                "recovery pass"
                            );
                        }
                        // A full batch of new work: there may be more right away. (Sagas
                        // this engine already runs do not count: a store without leases
                        // lists them every time.)
                        if n < CLAIM_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "saga recovery pass failed");
                        break;
                    }
                }
            }
            if retained.is_none_or(|at| at.elapsed() >= RETENTION_PERIOD) {
                retained = Some(tokio::time::Instant::now());
                retain(&shared).await;
            }
        }
    });
    RecoveryLoop { stop, task }
}
