//! The preset for HTTP clients (reqwest, hyper, or any `Service<http::Request<B>>`).

use tower_service::Service;

use staunch_core::{ConfigError, HttpStatus};

use crate::config::StackConfig;
use crate::stack::{Stack, StackHandle};

/// An HTTP client wrapped by [`client`]: errors are [`staunch::Error<E>`](crate::Error).
pub type Client<S, E> = Stack<S, HttpStatus, E>;

/// Wraps an HTTP client in the full stack called `name`, in the order the crate docs explain
/// (retry, circuit breaker, per-attempt timeout, bulkhead), with [`HttpStatus`] deciding what
/// counts as a failure (transport errors, 5xx and 429) and the retry layer's default of only
/// retrying idempotent requests. Returns the wrapped client and the handle to its engines.
///
/// The request body must be cloneable to be retried (`String`, `Bytes`, `Full<Bytes>`, or a
/// [`ReplayBody`](staunch_retry::ReplayBody) for streamed bodies); a
/// [`Deadline`](staunch_timeout::Deadline) in a request's extensions shortens its attempts.
///
/// # Errors
///
/// A [`ConfigError`] naming the bad field, e.g. `payment.breaker.minimum_calls`.
///
/// ```
/// use std::time::Duration;
/// use staunch::{Error, StackConfig};
/// use tower::{Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let inner = service_fn(|req: http::Request<String>| async move {
///     Ok::<_, std::io::Error>(http::Response::new(format!("hello {}", req.uri().path())))
/// });
/// let mut config = StackConfig::default();
/// config.attempt_timeout = Some(Duration::from_millis(300));
/// let (mut client, handle) = staunch::http::client("greeter", inner, &config)?;
///
/// let res = client.ready().await?.call(http::Request::get("/world").body(String::new())?).await?;
/// assert_eq!(res.body(), "hello /world");
///
/// handle.breaker().force_open();
/// let err = client.ready().await?.call(http::Request::get("/").body(String::new())?).await;
/// assert!(matches!(err, Err(Error::BreakerOpen(_))));
/// # Ok(()) }
/// ```
pub fn client<S, B>(
    name: &str,
    inner: S,
    config: &StackConfig,
) -> Result<(Client<S, S::Error>, StackHandle), ConfigError>
where
    S: Service<http::Request<B>>,
{
    let handle = config.build(name)?;
    Ok((handle.wrap(inner, HttpStatus::new()), handle))
}
