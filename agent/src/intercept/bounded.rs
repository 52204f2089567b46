//! Label values that clients or peers choose (an SNI, a certificate's
//! principal or namespace, a passthrough destination) are admitted up to a
//! bound and read [`OTHER`] past it, so that nobody can grow a metric's
//! series without limit. One set per label; the first values seen keep
//! their own series for the agent's lifetime.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The label value of everything past a set's bound.
pub const OTHER: &str = "other";

/// The distinct values one label has been given, at most `max` of them.
#[derive(Debug)]
pub struct BoundedValues {
    seen: Mutex<HashSet<Arc<str>>>,
    max: usize,
}

impl BoundedValues {
    pub fn new(max: usize) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            max,
        }
    }

    /// `value`, shared, when it is already in the set or the set has room
    /// for it; `None` when it would be one value too many.
    pub fn admit(&self, value: &str) -> Option<Arc<str>> {
        let mut seen = self.seen.lock().ok()?;
        if let Some(known) = seen.get(value) {
            return Some(Arc::clone(known));
        }
        if seen.len() >= self.max {
            return None;
        }
        let value: Arc<str> = Arc::from(value);
        seen.insert(Arc::clone(&value));
        Some(value)
    }

    /// `value` as a label: itself, or [`OTHER`] past the bound.
    pub fn label(&self, value: &str) -> Arc<str> {
        self.admit(value).unwrap_or_else(|| Arc::from(OTHER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_values_keep_their_own_label_and_later_ones_read_other() {
        let values = BoundedValues::new(2);
        assert_eq!(&*values.label("a"), "a");
        assert_eq!(&*values.label("b"), "b");
        assert_eq!(&*values.label("c"), OTHER);
        assert_eq!(values.admit("c"), None);
        // Values already admitted stay admitted once the set is full.
        assert_eq!(&*values.label("a"), "a");
        assert_eq!(values.admit("b").as_deref(), Some("b"));
    }
}
