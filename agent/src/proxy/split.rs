//! Weighted traffic split over clusters, built and validated once.

use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("weighted split has no clusters")]
    Empty,
    #[error("weighted split weights sum to zero")]
    ZeroTotal,
}

/// Where a route sends its traffic: one target, or a validated weighted split.
#[derive(Debug)]
pub enum Split<T> {
    Single(Arc<T>),
    /// Entries carry the cumulative upper bound of their weight range.
    Weighted {
        entries: Box<[(u64, Arc<T>)]>,
        total: u64,
    },
}

impl<T> Split<T> {
    /// Build from `(weight, target)` pairs; zero-weight entries are dropped.
    pub fn weighted(items: impl IntoIterator<Item = (u32, Arc<T>)>) -> Result<Self, SplitError> {
        let mut entries = Vec::new();
        let mut total = 0u64;
        let mut any = false;
        for (w, t) in items {
            any = true;
            if w == 0 {
                continue;
            }
            total += u64::from(w);
            entries.push((total, t));
        }
        if !any {
            return Err(SplitError::Empty);
        }
        match entries.len() {
            0 => Err(SplitError::ZeroTotal),
            1 => Ok(Self::Single(
                entries.pop().map(|(_, t)| t).ok_or(SplitError::Empty)?,
            )),
            _ => Ok(Self::Weighted {
                entries: entries.into_boxed_slice(),
                total,
            }),
        }
    }

    /// Pick a target; `roll` must be uniform in `0..u64::MAX`.
    pub fn pick_with(&self, roll: u64) -> &Arc<T> {
        match self {
            Self::Single(t) => t,
            Self::Weighted { entries, total } => {
                let x = roll % total;
                let i = entries.partition_point(|(upper, _)| *upper <= x);
                &entries[i.min(entries.len() - 1)].1
            }
        }
    }

    pub fn pick(&self) -> &Arc<T> {
        match self {
            Self::Single(t) => t,
            Self::Weighted { .. } => self.pick_with(fastrand::u64(..)),
        }
    }

    /// Every target, for admin views.
    pub fn targets(&self) -> Vec<&Arc<T>> {
        match self {
            Self::Single(t) => vec![t],
            Self::Weighted { entries, .. } => entries.iter().map(|(_, t)| t).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert_eq!(Split::<u8>::weighted([]).unwrap_err(), SplitError::Empty);
        assert_eq!(
            Split::weighted([(0, Arc::new(1u8))]).unwrap_err(),
            SplitError::ZeroTotal
        );
        assert!(matches!(
            Split::weighted([(0, Arc::new(1u8)), (5, Arc::new(2u8))]).unwrap(),
            Split::Single(_)
        ));
    }

    #[test]
    fn ranges() {
        let s = Split::weighted([(80, Arc::new('a')), (20, Arc::new('b'))]).unwrap();
        assert_eq!(**s.pick_with(0), 'a');
        assert_eq!(**s.pick_with(79), 'a');
        assert_eq!(**s.pick_with(80), 'b');
        assert_eq!(**s.pick_with(99), 'b');
        assert_eq!(**s.pick_with(100), 'a');
        let b = (0..10_000).filter(|_| **s.pick() == 'b').count();
        assert!((1500..2500).contains(&b), "{b}");
    }
}
