use super::*;

fn ok(text: &str) -> Duration {
    match parse_duration(text) {
        Ok(d) => d,
        Err(e) => panic!("{text}: {e}"),
    }
}

#[test]
fn parses_every_unit_and_decimals() {
    assert_eq!(ok("250ms"), Duration::from_millis(250));
    assert_eq!(ok("0.25s"), Duration::from_millis(250));
    assert_eq!(ok("5s"), Duration::from_secs(5));
    assert_eq!(ok("1m"), Duration::from_secs(60));
    assert_eq!(ok("1h"), Duration::from_secs(3600));
    assert_eq!(ok("1.5h"), Duration::from_secs(5400));
    assert_eq!(ok("0s"), Duration::ZERO);
    assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
    assert_eq!(ok("1.5ms"), Duration::from_micros(1500));
}

#[test]
fn rejects_malformed() {
    for bad in [
        "", "5", "abc", "s", ".5s", "5.s", "1.2.3s", "5 s", "5sec", "-1s", "5S", "1d",
    ] {
        assert_eq!(
            parse_duration(bad),
            Err(format!("invalid duration {bad:?}: {DURATION_HINT}")),
            "{bad}"
        );
    }
    assert_eq!(
        parse_duration("0.0000001ms"),
        Err("invalid duration \"0.0000001ms\": finer than a nanosecond".to_owned())
    );
    assert!(parse_duration("99999999999999999999h").is_err());
}

#[test]
fn formats_shortest_exact_form() {
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(format_duration(Duration::from_secs(5)), "5s");
    assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    assert_eq!(format_duration(Duration::from_micros(1500)), "0.0015s");
    for text in ["250ms", "5s", "2m", "2h", "0.0015s"] {
        assert_eq!(format_duration(ok(text)), text);
    }
}

#[test]
fn yaml_plain_numbers_are_rejected_with_the_accepted_form() {
    let err = serde_yaml::from_str::<ConfigDuration>("5").map(|d| d.0);
    let msg = match err {
        Err(e) => e.to_string(),
        Ok(d) => panic!("accepted {d:?}"),
    };
    assert_eq!(
        msg,
        "invalid duration 5: a plain number has no unit; expected e.g. 250ms, 0.25s, 5s, 1m, 1h"
    );
    let d: Result<ConfigDuration, _> = serde_yaml::from_str("0.25s");
    assert_eq!(d.ok(), Some(ConfigDuration::from_millis(250)));
}

#[test]
fn non_zero_means_enabled() {
    assert_eq!(ConfigDuration::from_secs(0).non_zero(), None);
    assert_eq!(
        ConfigDuration::from_secs(2).non_zero(),
        Some(Duration::from_secs(2))
    );
    assert_eq!(*ConfigDuration::from_millis(7), Duration::from_millis(7));
}
