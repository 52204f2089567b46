//! Header add/remove operations, names and values parsed once at build time.

use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Default)]
pub struct HeaderOps {
    /// (name, value, append): append adds a value, otherwise it replaces.
    pub add: Vec<(HeaderName, HeaderValue, bool)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Removals first, then additions (Envoy's order).
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v, append) in &self.add {
            if *append {
                h.append(n.clone(), v.clone());
            } else {
                h.insert(n.clone(), v.clone());
            }
        }
    }
}
