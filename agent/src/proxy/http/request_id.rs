//! `x-request-id`: kept when the client sent one, otherwise a new UUID v4.

use http::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn ensure(headers: &mut HeaderMap) {
    if headers.contains_key(&X_REQUEST_ID) {
        return;
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    if let Ok(v) = HeaderValue::from_str(s) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_v4_and_keeps_existing() {
        let mut h = HeaderMap::new();
        ensure(&mut h);
        let id = h.get(&X_REQUEST_ID).unwrap().to_str().unwrap().to_string();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        ensure(&mut h);
        assert_eq!(h.get(&X_REQUEST_ID).unwrap(), id.as_str());
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
    }
}
