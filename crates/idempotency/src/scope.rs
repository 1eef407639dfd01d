//! [`KeyScope`]: whose key it is (a tenant, a user), so that two clients' keys never meet.

use http::request::Parts;

/// Scopes a request's key: the stored key is the scope and the key together, so equal keys
/// from two tenants are two records.
///
/// Any `Fn(&Parts) -> Option<String>` is a scope; `None` refuses the request with 400 (e.g. no
/// tenant header).
///
/// ```
/// use staunch_idempotency::KeyScope;
///
/// // Keys are per tenant, named by a header the gateway sets.
/// let by_tenant = |parts: &http::request::Parts| {
///     parts.headers.get("x-tenant")?.to_str().ok().map(str::to_owned)
/// };
/// let request = http::Request::builder().header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(by_tenant.scope(&request.into_parts().0).as_deref(), Some("acme"));
/// ```
pub trait KeyScope: Clone + Send + Sync + 'static {
    /// The request's scope, or `None` to refuse it.
    fn scope(&self, parts: &Parts) -> Option<String>;
}

impl<F> KeyScope for F
where
    F: Fn(&Parts) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn scope(&self, parts: &Parts) -> Option<String> {
        self(parts)
    }
}

/// The default scope: the key alone (one namespace for every client).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unscoped;

impl KeyScope for Unscoped {
    fn scope(&self, _: &Parts) -> Option<String> {
        Some(String::new())
    }
}

/// The stored key: the scope's length, the scope, then the key (`0::key` unscoped), so that
/// no two (scope, key) pairs meet, even from two layers with different scopes on one store.
pub(crate) fn scoped_key(scope: &str, key: &str) -> String {
    format!("{}:{scope}:{key}", scope.len())
}
