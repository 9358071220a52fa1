//! Rate limiting over HTTP: the `RateLimit-*` headers (draft-ietf-httpapi-ratelimit-headers
//! -07 §3–4: limit, remaining, seconds until reset), 429 with `Retry-After` (RFC 6585 §4,
//! RFC 9110 §10.2.3) and a layer that counts every request of a router.
use crate::http::ApiError;
use crate::identity::Identity;
use crate::identity::rate_limit::{self, Decision, Family, RateKey, Subjects};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const PROBLEM_TYPE: &str = "urn:lintel:problem:rate-limited";

fn num(n: impl Into<u64>) -> HeaderValue {
    HeaderValue::from(n.into())
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds) and
/// `RateLimit-Policy` (`LIMIT;w=WINDOW`, draft §5); on a denial also `Retry-After`.
pub fn headers(d: &Decision) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(5);
    h.insert(RATELIMIT_LIMIT, num(d.limit));
    h.insert(RATELIMIT_REMAINING, num(d.remaining));
    h.insert(RATELIMIT_RESET, num(d.reset_after_secs));
    if let Ok(v) = HeaderValue::from_str(&format!("{};w={}", d.limit, d.window_secs)) {
        h.insert(RATELIMIT_POLICY, v);
    }
    if let Some(retry) = d.retry_after_secs {
        h.insert(header::RETRY_AFTER, num(retry));
    }
    h
}

/// The 429 problem+json answer (RFC 9457) for a denial, with its headers.
pub fn too_many_requests(d: &Decision) -> Response {
    let retry = d.retry_after_secs.unwrap_or(d.reset_after_secs);
    let body = serde_json::json!({
        "type": PROBLEM_TYPE,
        "title": "Too Many Requests",
        "status": 429,
        "detail": format!(
            "rate limit of {} requests per {} s exceeded; retry after {retry} s",
            d.limit, d.window_secs
        ),
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    resp.headers_mut().extend(headers(d));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

/// Tells the layer who sent a request (from headers, or extensions an authentication
/// layer put there); `None` lets the request through uncounted.
pub type KeyFn = dyn Fn(&Request<Body>) -> Option<Subjects> + Send + Sync;

/// Counts every request of the wrapped routes under `family`'s policies (see
/// [`rate_limit::check`]): under the limit the response gets the `RateLimit-*` headers,
/// over it the request is answered 429 without reaching the handler. A failing check
/// answers as the store error would (503 when the database is unreachable): it fails
/// closed.
///
/// ```text
/// let api = Router::new().route(…).layer(layer_for(state.identity.clone(), Family::Management,
///     |req| req.extensions().get::<Principal>().map(|p| Subjects { api_key_id: …, .. })));
/// ```
pub fn layer_for<F>(identity: Identity, family: Family, key_fn: F) -> RateLimitLayer
where
    F: Fn(&Request<Body>) -> Option<Subjects> + Send + Sync + 'static,
{
    RateLimitLayer {
        identity,
        family,
        key_fn: Arc::new(key_fn),
    }
}

#[derive(Clone)]
pub struct RateLimitLayer {
    identity: Identity,
    family: Family,
    key_fn: Arc<KeyFn>,
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> BoxFuture {
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let key = (self.layer.key_fn)(&req).map(|subjects| RateKey {
            family: self.layer.family,
            subjects,
        });
        let identity = self.layer.identity.clone();
        Box::pin(async move {
            let Some(key) = key else {
                return inner.call(req).await;
            };
            match rate_limit::check(&identity, &key).await {
                Ok(d) if d.allowed => {
                    let mut resp = inner.call(req).await?;
                    resp.headers_mut().extend(headers(&d));
                    Ok(resp)
                }
                Ok(d) => Ok(too_many_requests(&d)),
                Err(e) => Ok(ApiError::from(e).into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool) -> Decision {
        Decision {
            allowed,
            limit: 50,
            remaining: if allowed { 7 } else { 0 },
            reset_after_secs: 42,
            retry_after_secs: (!allowed).then_some(42),
            policy_id: 1,
            window_secs: 60,
        }
    }

    #[test]
    fn headers_under_the_limit() {
        let h = headers(&decision(true));
        assert_eq!(h["ratelimit-limit"], "50");
        assert_eq!(h["ratelimit-remaining"], "7");
        assert_eq!(h["ratelimit-reset"], "42");
        assert_eq!(h["ratelimit-policy"], "50;w=60");
        assert!(h.get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn denial_is_a_429_problem_with_retry_after() {
        let resp = too_many_requests(&decision(false));
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(h[header::RETRY_AFTER], "42");
        assert_eq!(h["ratelimit-remaining"], "0");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], PROBLEM_TYPE);
        assert_eq!(v["status"], 429);
    }
}
