//! Server names matched the way Envoy matches a ClientHello's SNI, for
//! certificate selection and for `filter_chain_match.server_names`: an exact
//! name first, then the longest `*.suffix` (`*.example.com` takes
//! `a.b.example.com` when no closer wildcard does); case-insensitive.

use std::collections::HashMap;

#[derive(Debug)]
pub struct ServerNames<T> {
    exact: HashMap<String, T>,
    /// (".suffix", value), longest suffix first.
    wildcard: Vec<(String, T)>,
}

impl<T> Default for ServerNames<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: Vec::new(),
        }
    }
}

impl<T> ServerNames<T> {
    /// Adds `name` (`host` or `*.suffix`); the first value given for a name wins.
    pub fn insert(&mut self, name: &str, value: T) {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix('*') {
            Some(suffix) => {
                if self.wildcard.iter().any(|(s, _)| *s == suffix) {
                    return;
                }
                // Kept sorted as it grows: lists are short and built once.
                let at = self
                    .wildcard
                    .partition_point(|(s, _)| s.len() >= suffix.len());
                self.wildcard.insert(at, (suffix.to_owned(), value));
            }
            None => {
                self.exact.entry(name).or_insert(value);
            }
        }
    }

    pub fn get(&self, sni: &str) -> Option<&T> {
        let sni = sni.to_ascii_lowercase();
        self.exact.get(&sni).or_else(|| {
            self.wildcard
                .iter()
                .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
                .map(|(_, v)| v)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

impl<'a> FromIterator<&'a str> for ServerNames<()> {
    fn from_iter<I: IntoIterator<Item = &'a str>>(names: I) -> Self {
        let mut set = Self::default();
        for name in names {
            set.insert(name, ());
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_longest_wildcard_case_insensitive() {
        let mut names = ServerNames::default();
        names.insert("*.example.com", "wide");
        names.insert("*.api.example.com", "narrow");
        names.insert("WWW.example.com", "exact");
        names.insert("www.example.com", "second exact is ignored");
        assert_eq!(names.get("www.EXAMPLE.com"), Some(&"exact"));
        assert_eq!(names.get("v1.api.example.com"), Some(&"narrow"));
        assert_eq!(names.get("a.b.example.com"), Some(&"wide"));
        assert_eq!(names.get("example.com"), None, "a wildcard needs a label");
        assert_eq!(names.get("example.org"), None);
        assert!(!names.is_empty());
        assert!(ServerNames::<()>::default().is_empty());
    }

    #[test]
    fn set_from_names() {
        let set: ServerNames<()> = ["httpbin.org", "*.googleapis.com"].into_iter().collect();
        assert!(set.get("httpbin.org").is_some());
        assert!(set.get("storage.googleapis.com").is_some());
        assert!(set.get("evil.org").is_none());
    }
}
