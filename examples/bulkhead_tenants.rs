//! A bulkhead per tenant: a noisy tenant floods a slow search service, and only its own
//! compartment fills up; the quiet tenant is served as usual.
//!
//! ```text
//! cargo run --example bulkhead_tenants
//! ```

use std::time::Duration;

use staunch::bulkhead::{BulkheadFull, PartitionedBulkhead, PartitionedBulkheadLayer};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

/// A search request.
#[derive(Debug, Clone)]
struct Search {
    tenant: &'static str,
}

/// The partition key of a search.
fn tenant_of(search: &Search) -> &'static str {
    search.tenant
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Four searches in flight per tenant, at most 20 in all; a search waits at most 50 ms
    // for a permit, then is refused.
    let tenants = PartitionedBulkhead::builder("search")
        .default_limit(4)
        .global_limit(20)
        .max_wait(Duration::from_millis(50))
        .build()?;
    let search = ServiceBuilder::new()
        .layer(PartitionedBulkheadLayer::new(tenants.clone(), tenant_of))
        .service_fn(|s: Search| async move {
            // The search backend takes 200 ms per query.
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, std::io::Error>(format!("results for {}", s.tenant))
        });

    let start = Instant::now();
    // 30 searches from the noisy tenant and 3 from the quiet one, all at once.
    let calls = [("noisy", 30), ("quiet", 3)]
        .into_iter()
        .flat_map(|(tenant, n)| std::iter::repeat_n(tenant, n))
        .map(|tenant| {
            let svc = search.clone();
            async move {
                let sent = Instant::now();
                let result = svc.oneshot(Search { tenant }).await;
                let refused = matches!(&result, Err(e) if e.is::<BulkheadFull>());
                (tenant, result.is_ok(), refused, sent.elapsed())
            }
        });
    let mut served = [(0, 0, Duration::ZERO); 2];
    for (tenant, ok, refused, took) in futures::future::join_all(calls).await {
        let row = &mut served[usize::from(tenant == "quiet")];
        row.0 += u32::from(ok);
        row.1 += u32::from(refused);
        row.2 = row.2.max(took);
    }
    for (tenant, (ok, refused, slowest)) in ["noisy", "quiet"].iter().zip(served) {
        println!("{tenant:<6} served {ok:>2}, refused {refused:>2}, slowest answer {slowest:?}");
    }
    println!("(all done in {:?})", start.elapsed());
    Ok(())
}
