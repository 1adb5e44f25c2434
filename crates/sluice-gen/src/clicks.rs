//! W2 `clicks`: a clickstream with a known share of bad records.
//!
//! `{"event_id":"<32 hex>","user_id":"u000123","session_id":"s0004567","event_type":"page_view",
//! "page":"/product/381","device":"mobile","country":"US","ts":"2026-01-05T14:30:00.123Z"}`

use std::num::NonZeroU64;

use rand::Rng;
use rand_distr::Zipf;

use crate::text::{push_decimal, push_hex_u128};
use crate::time::EventClock;
use crate::zipf::{rank, zipf};

/// Users u000000..u099999, Zipf-skewed with exponent 1.1 (u000000 the heaviest).
const USERS: u32 = 100_000;
const USER_SKEW: f64 = 1.1;
/// Products /product/0../product/999, Zipf-skewed with exponent 1.0.
const PRODUCTS: u32 = 1000;
/// Categories /category/0../category/49, uniform.
const CATEGORIES: u32 = 50;
/// Countries, Zipf-skewed with exponent 1.0 in this order.
const COUNTRIES: [&str; 30] = [
    "US", "IN", "GB", "DE", "BR", "FR", "JP", "CA", "MX", "ES", "IT", "AU", "NL", "KR", "ID", "TR",
    "PL", "SE", "AR", "CH", "BE", "NG", "ZA", "EG", "PH", "VN", "TH", "NO", "IE", "NZ",
];
/// Probability that an event of a user who has a session starts a new one (~20 events a session).
const NEW_SESSION_P: f64 = 0.05;
/// What a bad record has in place of its timestamp.
const BAD_TIMESTAMPS: [&str; 4] = ["unknown", "N/A", "yesterday", "not-a-date"];

pub(crate) struct Clicks {
    users: Zipf<f64>,
    products: Zipf<f64>,
    countries: Zipf<f64>,
    /// Each user's current session; `None` until the user's first event.
    sessions: Vec<Option<NonZeroU64>>,
    /// Sessions started so far (ids are 1, 2, ...).
    sessions_started: u64,
}

impl Clicks {
    pub(crate) fn new() -> Self {
        Clicks {
            users: zipf(USERS, USER_SKEW),
            products: zipf(PRODUCTS, 1.0),
            countries: zipf(COUNTRIES.len() as u32, 1.0),
            sessions: vec![None; USERS as usize],
            sessions_started: 0,
        }
    }

    /// Appends the next event, one line.
    pub(crate) fn write_event<R: Rng>(
        &mut self,
        rng: &mut R,
        clock: &mut EventClock,
        out: &mut Vec<u8>,
    ) {
        // Drawn first, as in gen.py, from one uniform so that the classes exclude each other.
        let anomaly = Anomaly::draw(rng);
        let user = rank(&self.users, USERS, rng) - 1;
        let session = self.session_of(user, rng);
        let kind = rng.random::<f64>();
        let event_type: &[u8] = if kind < 0.70 {
            b"page_view"
        } else if kind < 0.90 {
            b"click"
        } else if kind < 0.97 {
            b"add_to_cart"
        } else {
            b"purchase"
        };
        let page = self.draw_page(kind < 0.70, rng);
        let device = rng.random::<f64>();
        let device: &[u8] = if device < 0.60 {
            b"mobile"
        } else if device < 0.95 {
            b"desktop"
        } else {
            b"tablet"
        };
        let country = COUNTRIES[(rank(&self.countries, COUNTRIES.len() as u32, rng) - 1) as usize];
        let ts = clock.next_event_ms(rng);
        let event_id = rng.random::<u128>();

        let line_start = out.len();
        out.extend_from_slice(b"{\"event_id\":\"");
        push_hex_u128(out, event_id);
        if anomaly == Some(Anomaly::NullUser) {
            out.extend_from_slice(b"\",\"user_id\":null,\"session_id\":\"s");
        } else {
            out.extend_from_slice(b"\",\"user_id\":\"u");
            push_decimal(out, u64::from(user), 6);
            out.extend_from_slice(b"\",\"session_id\":\"s");
        }
        push_decimal(out, session.get(), 7);
        out.extend_from_slice(b"\",\"event_type\":\"");
        out.extend_from_slice(event_type);
        out.extend_from_slice(b"\",\"page\":\"");
        match page {
            Page::Product(product) => {
                out.extend_from_slice(b"/product/");
                push_decimal(out, u64::from(product), 1);
            }
            Page::Home => out.push(b'/'),
            Page::Category(category) => {
                out.extend_from_slice(b"/category/");
                push_decimal(out, u64::from(category), 1);
            }
        }
        out.extend_from_slice(b"\",\"device\":\"");
        out.extend_from_slice(device);
        out.extend_from_slice(b"\",\"country\":\"");
        out.extend_from_slice(country.as_bytes());
        out.extend_from_slice(b"\",\"ts\":\"");
        if anomaly == Some(Anomaly::BadTimestamp) {
            let bad = BAD_TIMESTAMPS[rng.random_range(0..BAD_TIMESTAMPS.len())];
            out.extend_from_slice(bad.as_bytes());
        } else {
            clock.push_timestamp(out, ts);
        }
        out.extend_from_slice(b"\"}");
        if anomaly == Some(Anomaly::InvalidJson) {
            // Cut after 1..len-1 bytes: a proper prefix of an object (no closing '}') is never
            // valid JSON. Lines are ASCII, so any cut is at a character boundary.
            let line_len = out.len() - line_start;
            out.truncate(line_start + rng.random_range(1..line_len));
        }
        out.push(b'\n');
    }

    /// The user's current session: a new one at the user's first event, then with p = 0.05.
    fn session_of<R: Rng>(&mut self, user: u32, rng: &mut R) -> NonZeroU64 {
        let current = &mut self.sessions[user as usize];
        match *current {
            Some(session) if !rng.random_bool(NEW_SESSION_P) => session,
            _ => {
                let session = NonZeroU64::MIN.saturating_add(self.sessions_started);
                self.sessions_started += 1;
                *current = Some(session);
                session
            }
        }
    }

    /// page_view: 80 % a product, 10 % the home page, 10 % a category; other events: a product.
    fn draw_page<R: Rng>(&self, is_page_view: bool, rng: &mut R) -> Page {
        let product = |rng: &mut R| Page::Product(rank(&self.products, PRODUCTS, rng) - 1);
        if !is_page_view {
            return product(rng);
        }
        let where_to = rng.random::<f64>();
        if where_to < 0.80 {
            product(rng)
        } else if where_to < 0.90 {
            Page::Home
        } else {
            Page::Category(rng.random_range(0..CATEGORIES))
        }
    }
}

/// A record that a W2 job must send to its error table (invalid JSON, bad `ts`) or drop (null user).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Anomaly {
    /// The line is cut short.
    InvalidJson,
    /// `ts` is not a timestamp.
    BadTimestamp,
    /// `"user_id":null`.
    NullUser,
}

impl Anomaly {
    /// 0.5 % invalid JSON, 1 % non-timestamp `ts`, 2 % null `user_id`, exclusive; `None` for a
    /// good record.
    fn draw<R: Rng>(rng: &mut R) -> Option<Anomaly> {
        let a = rng.random::<f64>();
        if a < 0.005 {
            Some(Anomaly::InvalidJson)
        } else if a < 0.015 {
            Some(Anomaly::BadTimestamp)
        } else if a < 0.035 {
            Some(Anomaly::NullUser)
        } else {
            None
        }
    }
}

/// Where an event happened.
enum Page {
    Product(u32),
    Home,
    Category(u32),
}
