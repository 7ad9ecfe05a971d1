//! API versions: what the agent advertises, what a request asks for (`/v1.44/...`), and the
//! Engine's refusal of versions outside the range. Handlers that shape a response by version
//! (fields added or changed since an older one) take the request's [`ApiVersion`].

use std::fmt;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// An Engine API version: always `1.N` so far, ordered by `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u16,
    pub minor: u16,
}

impl ApiVersion {
    pub const fn new(major: u16, minor: u16) -> Self {
        ApiVersion { major, minor }
    }

    /// `"1.44"` → 1.44; anything else (`"1.4x"`, `"2"`, `"1.44.1"`) is not a version.
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.split_once('.')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return None;
        }
        Some(ApiVersion::new(major.parse().ok()?, minor.parse().ok()?))
    }

    /// Whether a request at this version sees what version `since` added.
    pub fn at_least(self, since: ApiVersion) -> bool {
        self >= since
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The newest version the agent honours: requests without a version prefix are served as
/// this one, as the Engine serves them at its own. 1.50 (Engine 28.2): everything up to it
/// that touches networks and the container fields the agent keeps is honoured (see README,
/// "Using the docker CLI"): 1.44's endpoint MACs and `DNSNames`, 1.45's `Aliases`, 1.48's
/// `GwPriority`, `EnableIPv4` and interface-name option; 1.49 and 1.50 change only `/info`
/// fields that may be left out. 1.51 and 1.52 reshape container inspect and are not served.
pub const CURRENT: ApiVersion = ApiVersion::new(1, 50);
/// [`CURRENT`] as text, for the `Api-Version` header of every response.
pub const CURRENT_TEXT: &str = "1.50";
/// The oldest version accepted: the Engine's own minimum since 25.0, which keeps Docker
/// 20.10's client (1.41) and older SDKs working.
pub const MINIMUM: ApiVersion = ApiVersion::new(1, 24);

/// Since 1.44: per-endpoint `MacAddress` and `DNSNames` in a container's endpoints.
pub const ENDPOINT_MAC: ApiVersion = ApiVersion::new(1, 44);
/// Since 1.45: `Aliases` shows exactly the aliases asked for, no longer the short id.
pub const ALIASES_AS_ASKED: ApiVersion = ApiVersion::new(1, 45);
/// Since 1.48: endpoints show their `GwPriority` (requests may carry it at any version).
pub const GW_PRIORITY: ApiVersion = ApiVersion::new(1, 48);
/// Since 1.48: networks show `EnableIPv4` (`false`: IPv6-only).
pub const ENABLE_IPV4: ApiVersion = ApiVersion::new(1, 48);

/// The version prefix of a request's path, taken off by `super::strip_version` before
/// routing: `None` when the path had none.
#[derive(Debug, Clone, Copy)]
pub struct Asked(pub Option<Result<ApiVersion, ()>>);

/// Refuse a version outside [`MINIMUM`]..=[`CURRENT`] with the Engine's 400 and words, and
/// hand the handlers the version to shape their answer by (an extension).
pub async fn check(mut req: Request<Body>, next: Next) -> Response {
    let asked = req.extensions().get::<Asked>().and_then(|a| a.0);
    let version = match asked {
        None => CURRENT,
        Some(Err(())) => {
            return ApiError(StatusCode::BAD_REQUEST, "invalid API version".into()).into_response()
        }
        Some(Ok(v)) if v < MINIMUM => {
            return ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "client version {v} is too old. Minimum supported API version is {MINIMUM}, please upgrade your client to a newer version"
                ),
            )
            .into_response()
        }
        Some(Ok(v)) if v > CURRENT => {
            return ApiError(
                StatusCode::BAD_REQUEST,
                format!("client version {v} is too new. Maximum supported API version is {CURRENT}"),
            )
            .into_response()
        }
        Some(Ok(v)) => v,
    };
    req.extensions_mut().insert(version);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order_by_number() {
        assert_eq!(ApiVersion::parse("1.44"), Some(ApiVersion::new(1, 44)));
        assert!(ApiVersion::parse("1.9").unwrap() < ApiVersion::parse("1.10").unwrap());
        for bad in ["", "1", "1.", ".4", "1.4x", "1.44.1", "v1.4", "1.123456"] {
            assert_eq!(ApiVersion::parse(bad), None, "{bad:?}");
        }
        assert_eq!(CURRENT.to_string(), CURRENT_TEXT);
        assert!(MINIMUM < ENDPOINT_MAC && ENDPOINT_MAC < ALIASES_AS_ASKED);
        assert!(ALIASES_AS_ASKED <= CURRENT && GW_PRIORITY <= CURRENT && ENABLE_IPV4 <= CURRENT);
    }
}
