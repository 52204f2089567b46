//! Latencies of events measured once each (a pod enrolled, served): their
//! nearest-rank percentiles and how the reports print them.

/// Nearest rank: the smallest value with at least `p`% of them at or below
/// it; `sorted` ascending; 0 for no values.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds as milliseconds: one decimal below 10 ms, none above.
pub fn ms(us: i64) -> String {
    if us.abs() >= 10_000 {
        format!("{:.0} ms", us as f64 / 1e3)
    } else {
        format!("{:.1} ms", us as f64 / 1e3)
    }
}

/// Microseconds as milliseconds with one decimal, comma-separated (a
/// report's list of every value).
pub fn ms_list(us: &[i64]) -> String {
    us.iter()
        .map(|v| format!("{:.1}", *v as f64 / 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn milliseconds() {
        assert_eq!(ms(1_234), "1.2 ms");
        assert_eq!(ms(12_345), "12 ms");
        assert_eq!(ms_list(&[1_000, 2_500]), "1.0, 2.5");
    }
}
