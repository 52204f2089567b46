//! Envoy's response flags (`%RESPONSE_FLAGS%`), the ones weir can tell.
//!
//! Set where weir already decides how a request ends: the local replies of
//! `http::local` carry theirs in the response's extensions, and the access
//! log adds what only the body's end shows (`DC`, `UC`, `UT`).

/// A set of Envoy response flags, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    pub const NONE: Self = Self(0);
    /// `UH`: no healthy upstream (503).
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1);
    /// `UT`: upstream request timeout (504, or the body cut short).
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 1);
    /// `LR`: reset locally (the request's source could not connect).
    pub const LOCAL_RESET: Self = Self(1 << 2);
    /// `UR`: the upstream reset the stream (HTTP/2 REFUSED_STREAM).
    pub const UPSTREAM_REMOTE_RESET: Self = Self(1 << 3);
    /// `UF`: upstream connection failure (refused, timed out, TLS).
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(1 << 4);
    /// `UC`: the upstream connection closed before the response ended.
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 5);
    /// `UO`: a circuit breaker's overflow.
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 6);
    /// `NR`: no virtual host or route (404).
    pub const NO_ROUTE_FOUND: Self = Self(1 << 7);
    /// `DC`: the downstream went away before the response ended.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 8);
    /// `URX`: the retries ran out.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 9);
    /// `DF`: a forward proxy cluster could not resolve the host.
    pub const DNS_RESOLUTION_FAILED: Self = Self(1 << 10);

    /// In the order Envoy writes them (its `ResponseFlagUtils` table), so
    /// a combination reads as Envoy's would (`UF,URX`).
    const SHORT: [(Self, &'static str); 11] = [
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::LOCAL_RESET, "LR"),
        (Self::UPSTREAM_REMOTE_RESET, "UR"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::DNS_RESOLUTION_FAILED, "DF"),
    ];

    #[must_use]
    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Envoy's short codes joined by `,`; `-` for none.
    pub fn write_short(self, out: &mut String) {
        if self.is_empty() {
            out.push('-');
            return;
        }
        let mut first = true;
        for (flag, code) in Self::SHORT {
            if self.0 & flag.0 != 0 {
                if !first {
                    out.push(',');
                }
                out.push_str(code);
                first = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ResponseFlags as F;

    fn short(f: F) -> String {
        let mut s = String::new();
        f.write_short(&mut s);
        s
    }

    #[test]
    fn short_codes_in_envoys_order() {
        assert_eq!(short(F::NONE), "-");
        assert_eq!(short(F::NO_ROUTE_FOUND), "NR");
        assert_eq!(
            short(F::UPSTREAM_RETRY_LIMIT_EXCEEDED.with(F::UPSTREAM_CONNECTION_FAILURE)),
            "UF,URX"
        );
    }
}
