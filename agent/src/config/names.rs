//! Kubernetes names, checked as Kubernetes checks them: they end up in
//! SPIFFE IDs and metric labels, so anything else is refused where it is
//! written, by name.

/// A namespace: a DNS-1123 label (lowercase letters, digits and `-`,
/// starting and ending with a letter or digit, at most 63).
pub fn check_namespace(name: &str) -> Result<(), String> {
    check(name, 63, false)
        .map_err(|rules| format!("namespace {name:?} is not a Kubernetes name ({rules})"))
}

/// A service account: a DNS-1123 subdomain (as a label, `.` allowed too,
/// at most 253).
pub fn check_service_account(name: &str) -> Result<(), String> {
    check(name, 253, true)
        .map_err(|rules| format!("service_account {name:?} is not a Kubernetes name ({rules})"))
}

fn check(name: &str, max: usize, dots: bool) -> Result<(), &'static str> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'));
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let fits = !name.is_empty() && name.len() <= max;
    if fits && valid_chars && alnum(name.as_bytes().first()) && alnum(name.as_bytes().last()) {
        return Ok(());
    }
    Err(if dots {
        "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253"
    } else {
        "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        assert!(check_namespace("shop-1").is_ok());
        assert!(check_service_account("orders.db").is_ok());
        for bad in ["", "Shop", "shop.", "-shop", "shop_1", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
        assert!(check_namespace("a.b").is_err());
        assert!(check_service_account(&"a".repeat(254)).is_err());
        assert!(check_service_account(&"a".repeat(253)).is_ok());
    }
}
