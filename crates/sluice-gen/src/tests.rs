use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::time::{MAX_LAG_MS, format_second};

/// What W2 may have in place of a timestamp (WORKLOADS.md).
const BAD_TIMESTAMPS: [&str; 4] = ["unknown", "N/A", "yesterday", "not-a-date"];

fn generate(workload: Workload, options: GenOptions, n: usize) -> Vec<u8> {
    let mut generator = Generator::new(workload, options);
    let mut out = Vec::new();
    generator.write_events(n, &mut out);
    out
}

fn canonical(workload: Workload, n: usize) -> Vec<u8> {
    generate(workload, GenOptions::canonical(workload), n)
}

fn lines(out: &[u8]) -> Vec<&str> {
    let text = std::str::from_utf8(out).expect("the output is ASCII");
    assert!(text.ends_with('\n'), "every line ends in a newline");
    text.lines().collect()
}

fn parse_ts(ts: &str) -> i64 {
    // Exactly `YYYY-MM-DDTHH:MM:SS.mmmZ`, not just any RFC 3339.
    assert_eq!(ts.len(), 24, "{ts}");
    assert_eq!(&ts[19..20], ".", "{ts}");
    assert!(ts.ends_with('Z'), "{ts}");
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|e| panic!("{ts}: {e}"))
        .timestamp_millis()
}

fn share(count: usize, total: usize) -> f64 {
    count as f64 / total as f64
}

fn assert_share(what: &str, count: usize, total: usize, expected: f64, tolerance: f64) {
    let actual = share(count, total);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual:.4} of {total}, expected {expected} ± {tolerance}"
    );
}

#[test]
fn same_seed_gives_the_same_bytes_and_another_seed_other_bytes() {
    for workload in Workload::ALL {
        let options = GenOptions::canonical(workload);
        let first = generate(workload, options.clone(), 2000);
        assert_eq!(
            first,
            generate(workload, options.clone(), 2000),
            "{workload:?}"
        );
        let other = GenOptions {
            seed: 43,
            ..options
        };
        assert_ne!(first, generate(workload, other, 2000), "{workload:?}");
    }
}

#[test]
fn output_does_not_depend_on_how_it_is_chunked() {
    for workload in Workload::ALL {
        let whole = canonical(workload, 1000);
        let mut generator = Generator::new(workload, GenOptions::canonical(workload));
        let mut chunked = b"kept: ".to_vec();
        for n in [0, 1, 7, 992] {
            generator.write_events(n, &mut chunked);
        }
        assert_eq!(generator.generated(), 1000);
        assert_eq!(&chunked[..6], b"kept: ", "write_events appends");
        assert_eq!(chunked[6..], whole[..], "{workload:?}");
        assert_eq!(lines(&whole).len(), 1000);
    }
}

#[test]
fn ticks_are_valid_and_in_range() {
    let out = canonical(Workload::Ticks, 100_000);
    let mut tickers = HashSet::new();
    let mut max_ts = i64::MIN;
    for line in lines(&out) {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let fields = event.as_object().expect("an object");
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 4, "{line}");
        assert!(line.starts_with("{\"ticker\":\"T"), "{line}");

        let ticker = event["ticker"].as_str().expect("a string ticker");
        assert!(
            ticker.len() == 5 && ticker[1..].parse::<u32>().is_ok_and(|k| k < 500),
            "{line}"
        );
        tickers.insert(ticker.to_owned());

        let volume = event["volume"].as_u64().expect("an integer volume");
        assert!(
            volume.is_multiple_of(100) && (100..=10_000).contains(&volume),
            "{line}"
        );

        let price = event["price"].as_f64().expect("a numeric price");
        assert!(price > 0.0, "{line}");
        let price_text = line
            .split("\"price\":")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .expect("a price field");
        let decimals = price_text.split('.').nth(1).expect("a decimal point");
        assert_eq!(decimals.len(), 4, "{line}");

        let ts = parse_ts(event["ts"].as_str().expect("a string ts"));
        assert!(ts >= CANONICAL_START_MS, "{line}");
        assert!(
            ts >= max_ts.saturating_sub(MAX_LAG_MS as i64),
            "{line} is too late"
        );
        max_ts = max_ts.max(ts);
    }
    // 200 expected per ticker: all of them show up.
    assert_eq!(tickers.len(), 500);
}

#[test]
fn prices_walk_in_small_steps() {
    let out = canonical(Workload::Ticks, 20_000);
    let mut last: HashMap<String, f64> = HashMap::new();
    for line in lines(&out) {
        let event: Value = serde_json::from_str(line).expect("valid JSON");
        let ticker = event["ticker"].as_str().expect("a ticker").to_owned();
        let price = event["price"].as_f64().expect("a price");
        if let Some(previous) = last.insert(ticker, price) {
            // 0.1 % per tick, plus rounding to 4 decimals.
            assert!(
                (price / previous - 1.0).abs() <= 0.001 + 1e-4 / previous,
                "{line}"
            );
        } else {
            assert!((10.0..500.5).contains(&price), "{line}");
        }
    }
}

/// A W2 record, borrowing from the generated text (parsing 200k records into `Value`s would
/// make the test slow in debug builds).
#[derive(Deserialize)]
struct Click<'a> {
    event_id: &'a str,
    user_id: Option<&'a str>,
    session_id: &'a str,
    event_type: &'a str,
    page: &'a str,
    device: &'a str,
    country: &'a str,
    ts: &'a str,
}

/// The classes a W2 job sorts records into, in the order it checks them.
#[derive(Default)]
struct ClickCounts<'a> {
    invalid_json: usize,
    bad_ts: usize,
    null_user: usize,
    good: usize,
    event_types: HashMap<&'a str, usize>,
    devices: HashMap<&'a str, usize>,
    users: HashMap<&'a str, usize>,
}

fn count_clicks(out: &[u8]) -> ClickCounts<'_> {
    let mut counts = ClickCounts::default();
    for line in lines(out) {
        let Ok(event) = serde_json::from_str::<Click>(line) else {
            assert!(!line.ends_with('}'), "{line}");
            counts.invalid_json += 1;
            continue;
        };
        if BAD_TIMESTAMPS.contains(&event.ts) {
            assert!(event.user_id.is_some(), "anomalies are exclusive: {line}");
            counts.bad_ts += 1;
            continue;
        }
        *counts.event_types.entry(event.event_type).or_default() += 1;
        *counts.devices.entry(event.device).or_default() += 1;
        let Some(user) = event.user_id else {
            counts.null_user += 1;
            continue;
        };
        *counts.users.entry(user).or_default() += 1;
        counts.good += 1;
    }
    counts
}

#[test]
fn clicks_have_the_specified_anomalies_and_shares() {
    let n = 200_000;
    let out = canonical(Workload::Clicks, n);
    let counts = count_clicks(&out);
    assert_eq!(
        counts.invalid_json + counts.bad_ts + counts.null_user + counts.good,
        n
    );
    assert_share("invalid JSON", counts.invalid_json, n, 0.005, 0.002);
    assert_share("bad ts", counts.bad_ts, n, 0.01, 0.002);
    assert_share("null user", counts.null_user, n, 0.02, 0.002);

    // Shares among the records that carry a usable ts (good and null-user ones).
    let with_ts = counts.good + counts.null_user;
    for (event_type, expected) in [
        ("page_view", 0.70),
        ("click", 0.20),
        ("add_to_cart", 0.07),
        ("purchase", 0.03),
    ] {
        let count = counts.event_types.get(event_type).copied().unwrap_or(0);
        assert_share(event_type, count, with_ts, expected, 0.005);
    }
    assert_eq!(counts.event_types.len(), 4);
    for (device, expected) in [("mobile", 0.60), ("desktop", 0.35), ("tablet", 0.05)] {
        let count = counts.devices.get(device).copied().unwrap_or(0);
        assert_share(device, count, with_ts, expected, 0.005);
    }
    assert_eq!(counts.devices.len(), 3);

    let heaviest = counts
        .users
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(user, _)| *user);
    assert_eq!(heaviest, Some("u000000"));
    // Zipf(1.1) over 100,000: p(rank) = rank^-1.1 / 7.422.
    assert_share(
        "u000000",
        counts.users["u000000"],
        counts.good,
        0.1347,
        0.005,
    );
    assert_share(
        "u000001",
        counts.users["u000001"],
        counts.good,
        0.0629,
        0.004,
    );
}

#[test]
fn clicks_pages_sessions_and_countries_look_right() {
    let out = canonical(Workload::Clicks, 20_000);
    let mut sessions_of_user: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut countries = HashSet::new();
    for line in lines(&out) {
        let Ok(event) = serde_json::from_str::<Click>(line) else {
            continue;
        };
        assert!(
            event.event_id.len() == 32
                && event
                    .event_id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{line}"
        );
        let page = event.page;
        let is_product = page
            .strip_prefix("/product/")
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p < 1000);
        let is_category = page
            .strip_prefix("/category/")
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| c < 50);
        if event.event_type == "page_view" {
            assert!(is_product || is_category || page == "/", "{line}");
        } else {
            assert!(is_product, "{line}");
        }
        if !BAD_TIMESTAMPS.contains(&event.ts) {
            assert!(parse_ts(event.ts) >= CANONICAL_START_MS, "{line}");
        }
        let session = event.session_id;
        assert!(session.len() == 8 && session.starts_with('s'), "{line}");
        if let Some(user) = event.user_id {
            sessions_of_user.entry(user).or_default().insert(session);
        }
        countries.insert(event.country);
    }
    let users = sessions_of_user.len();
    let sessions: usize = sessions_of_user.values().map(HashSet::len).sum();
    // A session never spans two users; its ids are counted from s0000001.
    let distinct: HashSet<&str> = sessions_of_user.values().flatten().copied().collect();
    assert_eq!(distinct.len(), sessions);
    assert!(distinct.contains("s0000001"));
    // Each user's first event starts a session, then 1 in 20 does.
    let expected_renewals = (20_000 - users) as f64 * 0.05;
    let renewals = (sessions - users) as f64;
    assert!(
        (renewals / expected_renewals - 1.0).abs() < 0.15,
        "{renewals} renewals, expected ~{expected_renewals}"
    );
    assert_eq!(countries.len(), 30);
}

#[test]
fn base_time_advances_by_one_over_rate() {
    // With rate 10,000, event 10,000's base time is start + 1 s.
    let mut clock = EventClock::new(CANONICAL_START_MS, 10_000);
    let offsets: Vec<u64> = (0..=10_000).map(|_| clock.next_base_offset()).collect();
    assert_eq!(offsets[0], 0);
    assert_eq!(offsets[9_999], 999);
    assert_eq!(offsets[10_000], 1000);

    // floor(i * 1000 / rate) for rates below, at and above 1000 events/s.
    for rate in [1, 3, 7, 200, 999, 1000, 1001, 10_000, 999_983] {
        let mut clock = EventClock::new(0, rate);
        for i in 0..25_000u64 {
            assert_eq!(
                clock.next_base_offset(),
                i * 1000 / rate,
                "rate {rate}, event {i}"
            );
        }
    }
}

#[test]
fn timestamps_follow_the_event_time_model() {
    let mut generator = Generator::new(Workload::Ticks, GenOptions::canonical(Workload::Ticks));
    let mut out = Vec::new();
    generator.write_events(20_001, &mut out);
    let ts: Vec<i64> = lines(&out)
        .iter()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("valid JSON");
            parse_ts(event["ts"].as_str().expect("a ts"))
        })
        .collect();
    for (i, &ts) in ts.iter().enumerate() {
        let base = CANONICAL_START_MS + (i as i64 * 1000) / 10_000;
        let earliest = (base - MAX_LAG_MS as i64).max(CANONICAL_START_MS);
        assert!(
            (earliest..=base).contains(&ts),
            "event {i}: {ts}, base {base}"
        );
    }
    // ~5 % are up to 2 s late, the rest less than 20 ms.
    let late = ts
        .iter()
        .enumerate()
        .filter(|&(i, &ts)| CANONICAL_START_MS + (i as i64 * 1000) / 10_000 - ts >= 20)
        .count();
    assert_share("lag >= 20 ms", late, ts.len(), 0.05 * 1981.0 / 2001.0, 0.01);
}

#[test]
fn seconds_are_formatted_as_rfc3339() {
    for (second, text) in [
        (0, "1970-01-01T00:00:00"),
        (-1, "1969-12-31T23:59:59"),
        (CANONICAL_START_MS / 1000, "2026-01-05T14:30:00"),
        (951_782_400, "2000-02-29T00:00:00"),
        (253_402_300_799, "9999-12-31T23:59:59"),
    ] {
        assert_eq!(std::str::from_utf8(&format_second(second)), Ok(text));
    }
}

#[test]
fn timestamps_stay_within_what_rfc_3339_can_write() {
    for (start_ms, expected) in [
        (CANONICAL_START_MS + 123, "2026-01-05T14:30:00.123Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (i64::MIN, "0000-01-01T00:00:00.000Z"),
        (i64::MAX, "9999-12-31T23:59:59.999Z"),
    ] {
        let mut clock = EventClock::new(start_ms, 1);
        let mut out = Vec::new();
        clock.push_timestamp(&mut out, start_ms);
        assert_eq!(std::str::from_utf8(&out), Ok(expected));
    }
    let end = GenOptions {
        start_ms: i64::MAX,
        ..GenOptions::canonical(Workload::Ticks)
    };
    for line in lines(&generate(Workload::Ticks, end, 100)) {
        assert!(
            line.ends_with("\"ts\":\"9999-12-31T23:59:59.999Z\"}"),
            "{line}"
        );
    }
}

#[test]
fn canonical_start_is_the_documented_instant() {
    assert_eq!(parse_ts("2026-01-05T14:30:00.000Z"), CANONICAL_START_MS);
}

#[test]
fn workloads_parse_by_name() {
    for workload in Workload::ALL {
        assert_eq!(workload.name().parse(), Ok(workload));
    }
    assert_eq!(Workload::Ticks.key_field(), "ticker");
    assert_eq!(Workload::Clicks.key_field(), "user_id");
    let error = "trades".parse::<Workload>().expect_err("not a workload");
    assert!(
        error.contains("trades") && error.contains("ticks") && error.contains("clicks"),
        "{error}"
    );
}

/// Every line of `out` as a JSON object with exactly `fields`, in that order.
fn objects(out: &[u8], fields: &[&str]) -> Vec<serde_json::Map<String, Value>> {
    lines(out)
        .into_iter()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let event = event.as_object().expect("an object").clone();
            let names: Vec<&str> = event.keys().map(String::as_str).collect();
            let mut sorted = fields.to_vec();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "{line}");
            assert!(line.starts_with(&format!("{{\"{}\"", fields[0])), "{line}");
            parse_ts(event["ts"].as_str().expect("a string ts"));
            event
        })
        .collect()
}

fn number(event: &serde_json::Map<String, Value>, field: &str) -> f64 {
    event[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} of {event:?}"))
}

fn text<'a>(event: &'a serde_json::Map<String, Value>, field: &str) -> &'a str {
    event[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} of {event:?}"))
}

#[test]
fn payments_have_merchants_cards_and_rare_anomalies() {
    let out = canonical(Workload::Payments, 100_000);
    let fields = [
        "payment_id",
        "card_id",
        "merchant_id",
        "amount",
        "currency",
        "country",
        "ts",
    ];
    let payments = objects(&out, &fields);
    let mut by_merchant: HashMap<&str, Vec<f64>> = HashMap::new();
    for (i, payment) in payments.iter().enumerate() {
        assert_eq!(text(payment, "payment_id"), format!("p{:012}", i + 1));
        let card = text(payment, "card_id");
        assert!(card.len() == 7 && card[1..].parse::<u32>().is_ok_and(|c| c < 20_000));
        let merchant = text(payment, "merchant_id");
        assert!(merchant.len() == 5 && merchant[1..].parse::<u32>().is_ok_and(|m| m < 500));
        let amount = number(payment, "amount");
        assert!(amount >= 0.01, "{payment:?}");
        by_merchant.entry(merchant).or_default().push(amount);
    }
    // An anomaly is 10 to 50 typical amounts; a normal amount (log-normal, sigma 0.5) is more
    // than 8 times the merchant's median with p ~ 1e-5.
    let anomalies: usize = by_merchant
        .values()
        .filter(|amounts| amounts.len() >= 50)
        .map(|amounts| {
            let mut sorted = amounts.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            amounts.iter().filter(|&&a| a > 8.0 * median).count()
        })
        .sum();
    assert_share("anomalous amounts", anomalies, payments.len(), 0.002, 0.001);
    assert!(
        by_merchant["m0000"].len() > by_merchant["m0400"].len() * 10,
        "Zipf merchants"
    );
}

#[test]
fn logs_have_levels_and_incidents_with_error_spikes() {
    let out = canonical(Workload::Logs, 200_000);
    let fields = ["service", "level", "status", "latency_ms", "message", "ts"];
    let logs = objects(&out, &fields);
    let mut errors_per_window: HashMap<(&str, i64), (usize, usize)> = HashMap::new();
    let mut levels: HashMap<&str, usize> = HashMap::new();
    for line in &logs {
        let level = text(line, "level");
        let status = number(line, "status") as u16;
        let expected: &[u16] = match level {
            "INFO" => &[200],
            "WARN" => &[404, 429],
            "ERROR" => &[500, 503],
            other => panic!("level {other}"),
        };
        assert!(expected.contains(&status), "{line:?}");
        assert!(number(line, "latency_ms") >= 0.0);
        *levels.entry(level).or_default() += 1;
        let ts = parse_ts(text(line, "ts"));
        let window = errors_per_window
            .entry((text(line, "service"), ts.div_euclid(10_000)))
            .or_default();
        window.0 += usize::from(level == "ERROR");
        window.1 += 1;
    }
    assert_eq!(levels.len(), 3);
    assert_share("warnings", levels["WARN"], logs.len(), 0.08, 0.01);
    // 200 s of event time, 8 services, an incident per service per ~10 minutes: some windows of
    // 10 s have an error rate near 40 %, most near 2 %.
    let spikes = errors_per_window
        .values()
        .filter(|(errors, all)| *errors * 4 > *all)
        .count();
    assert!(spikes >= 3, "{spikes} windows with more than 25 % errors");
    assert!(spikes * 4 < errors_per_window.len(), "{spikes} spikes");
}

#[test]
fn sensors_read_near_their_base_and_sometimes_overheat() {
    let out = canonical(Workload::Sensors, 100_000);
    let fields = ["device_id", "temperature", "humidity", "battery", "ts"];
    let readings = objects(&out, &fields);
    let mut devices = HashSet::new();
    let mut hot = 0;
    for reading in &readings {
        let device = text(reading, "device_id");
        assert!(device.len() == 5 && device[1..].parse::<u32>().is_ok_and(|d| d < 200));
        devices.insert(device.to_owned());
        let temperature = number(reading, "temperature");
        assert!((10.0..=95.0).contains(&temperature), "{reading:?}");
        hot += usize::from(temperature >= 60.0);
        assert!((0.0..=100.0).contains(&number(reading, "humidity")));
        assert!((0.0..=1.0).contains(&number(reading, "battery")));
    }
    assert_eq!(devices.len(), 200);
    // A fault starts with p = 0.001 per healthy reading and lasts 20 readings: ~2 % are hot.
    assert_share("overheating readings", hot, readings.len(), 0.0196, 0.006);
}

/// The kind of Nexmark event number `event`, by the reference's rule (1:3:46 in every 50).
fn nexmark_kind(event: usize) -> NexmarkKind {
    match event % 50 {
        0 => NexmarkKind::Person,
        1..=3 => NexmarkKind::Auction,
        _ => NexmarkKind::Bid,
    }
}

// Exactly the Nexmark tables' fields: unknown ones are refused, none is optional, and the ids,
// prices and categories are JSON integers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Person<'a> {
    id: u64,
    name: &'a str,
    email_address: &'a str,
    credit_card: &'a str,
    city: &'a str,
    state: &'a str,
    date_time: &'a str,
    extra: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Auction<'a> {
    id: u64,
    item_name: &'a str,
    description: &'a str,
    initial_bid: u64,
    reserve: u64,
    date_time: &'a str,
    expires: &'a str,
    seller: u64,
    category: u64,
    extra: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bid<'a> {
    auction: u64,
    bidder: u64,
    price: u64,
    channel: &'a str,
    url: &'a str,
    date_time: &'a str,
    extra: &'a str,
}

enum NexmarkEvent<'a> {
    Person(Person<'a>),
    Auction(Auction<'a>),
    Bid(Bid<'a>),
}

impl NexmarkEvent<'_> {
    fn kind(&self) -> NexmarkKind {
        match self {
            NexmarkEvent::Person(_) => NexmarkKind::Person,
            NexmarkEvent::Auction(_) => NexmarkKind::Auction,
            NexmarkEvent::Bid(_) => NexmarkKind::Bid,
        }
    }

    fn date_time(&self) -> i64 {
        parse_ts(match self {
            NexmarkEvent::Person(person) => person.date_time,
            NexmarkEvent::Auction(auction) => auction.date_time,
            NexmarkEvent::Bid(bid) => bid.date_time,
        })
    }
}

const PERSON_FIELDS: [&str; 8] = [
    "id",
    "name",
    "email_address",
    "credit_card",
    "city",
    "state",
    "date_time",
    "extra",
];
const AUCTION_FIELDS: [&str; 10] = [
    "id",
    "item_name",
    "description",
    "initial_bid",
    "reserve",
    "date_time",
    "expires",
    "seller",
    "category",
    "extra",
];
const BID_FIELDS: [&str; 7] = [
    "auction",
    "bidder",
    "price",
    "channel",
    "url",
    "date_time",
    "extra",
];

fn parse_line<'a, T: Deserialize<'a>>(line: &'a str) -> T {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Each line of `out` as the Nexmark event its shape says, its fields in the documented order.
fn nexmark_events(out: &[u8]) -> Vec<NexmarkEvent<'_>> {
    lines(out)
        .into_iter()
        .map(|line| {
            let (event, fields) = if line.starts_with("{\"auction\":") {
                let bid = parse_line(line);
                (NexmarkEvent::Bid(bid), &BID_FIELDS[..])
            } else if line.contains(",\"item_name\":") {
                let auction = parse_line(line);
                (NexmarkEvent::Auction(auction), &AUCTION_FIELDS[..])
            } else {
                let person = parse_line(line);
                (NexmarkEvent::Person(person), &PERSON_FIELDS[..])
            };
            let mut from = 0;
            for field in fields {
                let at = line[from..]
                    .find(&format!("\"{field}\":"))
                    .unwrap_or_else(|| panic!("{field} out of order: {line}"));
                from += at + 1;
            }
            event
        })
        .collect()
}

#[test]
fn nexmark_kinds_alone_are_the_whole_stream_split() {
    let options = GenOptions::canonical(Workload::Nexmark);
    let whole = generate(Workload::Nexmark, options.clone(), 5000);
    let whole = lines(&whole);
    for (kind, count) in NexmarkKind::ALL.into_iter().zip([100, 300, 4600]) {
        let mut generator = Generator::nexmark(kind, options.clone());
        let mut out = Vec::new();
        for n in [1, 49, 2950, 2000] {
            generator.write_events(n, &mut out);
        }
        assert_eq!(generator.generated(), 5000, "event numbers, all kinds");
        let expected: Vec<&str> = (whole.iter().enumerate())
            .filter(|&(event, _)| nexmark_kind(event) == kind)
            .map(|(_, line)| *line)
            .collect();
        assert_eq!(expected.len(), count, "{kind:?}");
        assert_eq!(lines(&out), expected, "{kind:?}");

        let mut again = Vec::new();
        Generator::nexmark(kind, options.clone()).write_events(5000, &mut again);
        assert_eq!(again, out, "{kind:?}: same seed, same bytes");
        let other = GenOptions {
            seed: 43,
            ..options.clone()
        };
        let mut other_out = Vec::new();
        Generator::nexmark(kind, other).write_events(5000, &mut other_out);
        assert_ne!(other_out, out, "{kind:?}: another seed");
    }
}

#[test]
fn nexmark_has_one_person_three_auctions_and_46_bids_in_every_50() {
    let out = canonical(Workload::Nexmark, 50_000);
    let events = nexmark_events(&out);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.kind(), nexmark_kind(i), "event {i}");
        *counts.entry(event.kind().name()).or_default() += 1;
    }
    assert_eq!(counts["persons"], 1000);
    assert_eq!(counts["auctions"], 3000);
    assert_eq!(counts["bids"], 46_000);
}

#[test]
fn nexmark_refers_only_to_people_and_auctions_generated_earlier() {
    let out = canonical(Workload::Nexmark, 50_000);
    // The last ids generated so far; the first of each kind is 1000.
    let (mut last_person, mut last_auction) = (999, 999);
    let (mut hot_sellers, mut hot_auctions, mut hot_bidders) = (0, 0, 0);
    for event in nexmark_events(&out) {
        match event {
            NexmarkEvent::Person(person) => {
                assert_eq!(person.id, last_person + 1, "ids count up");
                last_person = person.id;
            }
            NexmarkEvent::Auction(auction) => {
                assert_eq!(auction.id, last_auction + 1, "ids count up");
                last_auction = auction.id;
                assert!((1000..=last_person).contains(&auction.seller));
                // The first of the last batch of 100 people.
                hot_sellers +=
                    usize::from(auction.seller == 1000 + (last_person - 1000) / 100 * 100);
            }
            NexmarkEvent::Bid(bid) => {
                assert!((1000..=last_auction).contains(&bid.auction));
                assert!(bid.auction + 101 > last_auction || bid.auction % 100 == 0);
                assert!((1000..=last_person).contains(&bid.bidder));
                assert!(bid.bidder + 1000 > last_person || bid.bidder % 100 == 1);
                hot_auctions +=
                    usize::from(bid.auction == 1000 + (last_auction - 1000) / 100 * 100);
                hot_bidders += usize::from(bid.bidder == 1001 + (last_person - 1000) / 100 * 100);
            }
        }
    }
    assert_eq!((last_person, last_auction), (1999, 3999));
    // Hot with p = 3/4, 1/2 and 3/4, plus the odd uniform draw that lands on the hot one.
    assert_share("hot sellers", hot_sellers, 3000, 0.75, 0.03);
    assert_share("hot auctions", hot_auctions, 46_000, 0.505, 0.01);
    assert_share("hot bidders", hot_bidders, 46_000, 0.75, 0.01);
}

#[test]
fn nexmark_events_are_in_order_and_auctions_expire_later() {
    for rate in [10_000, 7] {
        let options = GenOptions {
            rate,
            ..GenOptions::canonical(Workload::Nexmark)
        };
        let out = generate(Workload::Nexmark, options, 20_000);
        // An auction lasts 1 + U{0..2h-1} ms, h the time of the next 1666 events.
        let max_length = 2 * (1666 * 1000 / rate as i64 + 1);
        let mut lengths = Vec::new();
        for (i, event) in nexmark_events(&out).iter().enumerate() {
            let base = CANONICAL_START_MS + (i as i64 * 1000) / rate as i64;
            assert_eq!(event.date_time(), base, "event {i} at rate {rate}");
            if let NexmarkEvent::Auction(auction) = event {
                let length = parse_ts(auction.expires) - base;
                assert!((1..=max_length).contains(&length), "event {i}: {length} ms");
                lengths.push(length);
            }
        }
        let mean = lengths.iter().sum::<i64>() as f64 / lengths.len() as f64;
        let expected = 1666.0 * 1000.0 / rate as f64;
        assert!(
            (mean / expected - 1.0).abs() < 0.1,
            "mean auction length {mean} ms at rate {rate}"
        );
    }
}

#[test]
fn nexmark_values_follow_the_reference() {
    let out = canonical(Workload::Nexmark, 50_000);
    let letters = |text: &str, also: &str| {
        text.chars()
            .all(|c| c.is_ascii_lowercase() || also.contains(c))
    };
    let mut person_sizes = Vec::new();
    let mut auction_sizes = Vec::new();
    let mut hot_channels = 0;
    let mut urls: HashMap<&str, &str> = HashMap::new();
    for event in nexmark_events(&out) {
        match event {
            NexmarkEvent::Person(person) => {
                let (first, last) = person.name.split_once(' ').expect("first and last name");
                assert!(
                    [
                        "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah",
                        "Deiter", "Walter"
                    ]
                    .contains(&first)
                );
                assert!(
                    [
                        "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith",
                        "Jones", "Noris"
                    ]
                    .contains(&last)
                );
                let (user, domain) = person
                    .email_address
                    .split_once('@')
                    .expect("an email address");
                assert!(user.len() <= 6 && letters(user, " "), "{user}");
                let domain = domain.strip_suffix(".com").expect(".com");
                assert!(domain.len() <= 4 && letters(domain, " "), "{domain}");
                let groups: Vec<&str> = person.credit_card.split(' ').collect();
                assert!(
                    groups.len() == 4
                        && groups
                            .iter()
                            .all(|g| g.len() == 4 && g.parse::<u16>().is_ok())
                );
                assert!(crate::nexmark::US_CITIES.contains(&person.city));
                assert!(crate::nexmark::US_STATES.contains(&person.state));
                assert!(!person.extra.is_empty() && letters(person.extra, ""));
                // The reference's count: 8 for the id, the strings' lengths.
                let strings = [
                    person.name,
                    person.email_address,
                    person.credit_card,
                    person.city,
                    person.state,
                    person.extra,
                ];
                person_sizes.push(8 + strings.iter().map(|s| s.len()).sum::<usize>());
            }
            NexmarkEvent::Auction(auction) => {
                assert!(auction.item_name.len() <= 19 && letters(auction.item_name, " "));
                assert!(auction.description.len() <= 99 && letters(auction.description, " "));
                assert!((100..=100_000_000).contains(&auction.initial_bid));
                assert!(auction.reserve > auction.initial_bid);
                assert!(auction.reserve - auction.initial_bid <= 100_000_000);
                assert!((10..=14).contains(&auction.category));
                assert!(!auction.extra.is_empty() && letters(auction.extra, ""));
                auction_sizes.push(
                    8 + auction.item_name.len()
                        + auction.description.len()
                        + 40
                        + auction.extra.len(),
                );
            }
            NexmarkEvent::Bid(bid) => {
                assert!((100..=100_000_000).contains(&bid.price));
                if ["Google", "Facebook", "Baidu", "Apple"].contains(&bid.channel) {
                    hot_channels += 1;
                } else {
                    let number = bid
                        .channel
                        .strip_prefix("channel-")
                        .and_then(|n| n.parse::<u32>().ok());
                    assert!(number.is_some_and(|n| n < 10_000), "{}", bid.channel);
                }
                let path = bid
                    .url
                    .strip_prefix("https://www.nexmark.com/")
                    .expect("a Nexmark url");
                let (path, query) = path.split_once("/item.htm?query=1").expect("an item");
                assert!(
                    path.split('/').count() == 3 && letters(path, "_/"),
                    "{}",
                    bid.url
                );
                assert!(
                    query.is_empty()
                        || query
                            .strip_prefix("&channel_id=")
                            .is_some_and(|id| id.parse::<u32>().is_ok()),
                    "{}",
                    bid.url
                );
                assert_eq!(
                    *urls.entry(bid.channel).or_insert(bid.url),
                    bid.url,
                    "a channel has one url"
                );
                // 100 bytes on average, the reference counting the bid's numbers and time as 32.
                assert!((54..=81).contains(&bid.extra.len()) && letters(bid.extra, ""));
            }
        }
    }
    assert_share("hot channels", hot_channels, 46_000, 0.5, 0.01);
    let mean = |sizes: &[usize]| sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    assert!(
        (mean(&person_sizes) - 200.0).abs() < 5.0,
        "{}",
        mean(&person_sizes)
    );
    assert!(
        (mean(&auction_sizes) - 500.0).abs() < 10.0,
        "{}",
        mean(&auction_sizes)
    );
}

#[test]
fn nexmark_kinds_parse_by_name() {
    for kind in NexmarkKind::ALL {
        assert_eq!(kind.name().parse(), Ok(kind));
    }
    assert_eq!("bids".parse(), Ok(NexmarkKind::Bid));
    assert_eq!(NexmarkKind::Bid.key_field(), "auction");
    assert_eq!(Workload::Nexmark.key_field(), "id");
    let error = "bid".parse::<NexmarkKind>().expect_err("not a kind");
    assert!(error.contains("persons, auctions or bids"), "{error}");
}
