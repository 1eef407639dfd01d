//! The store contract suite, instantiated for every store.

mod support;

use support::contract;

/// Instantiates every contract for one store: `$make` is an async expression giving
/// `(store, guard)`, where the guard keeps temporary files alive.
macro_rules! contract_suite {
    ($store:ident, $make:expr) => {
        mod $store {
            use super::*;

            contract_suite!(@tests $make;
                create_is_atomic_and_idempotent,
                load_of_an_unknown_saga_is_none,
                append_must_start_at_the_next_sequence,
                rows_come_back_exactly_as_written,
                append_updates_status_and_note,
                list_filters_by_status_and_definition_in_id_order,
                quarantine_sets_status_and_keeps_every_row,
                concurrent_appends_to_many_sagas_all_land_in_order,
                racing_appends_at_one_sequence_let_exactly_one_win,
                summaries_carry_creation_change_and_stuck_times,
                purge_deletes_ended_sagas_whole_and_keeps_the_rest,
                purge_takes_at_most_its_limit_per_call,
            );
        }
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make;
                contract::$name(&store).await;
            }
        )*
    };
}

contract_suite!(memory, (staunch_saga::MemoryStore::new(), ()));

#[cfg(feature = "sqlite")]
contract_suite!(sqlite, {
    let dir = support::TempDir::new("contract");
    let store = staunch_saga::SqliteStore::open(dir.file("sagas.db"))
        .await
        .unwrap();
    (store, dir)
});

#[cfg(feature = "postgres")]
contract_suite!(postgres, {
    let Some(made) = support::pg::store("contract", std::time::Duration::from_secs(15)).await
    else {
        return;
    };
    made
});
