//! All four staunch layers stacked (retry, circuit breaker, timeout, bulkhead) on the success
//! path, side by side with the same stack from tower-resilience and from tower's own layers.
#![allow(missing_docs)]

fn main() {}
