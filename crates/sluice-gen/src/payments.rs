//! `payments`: card payments at merchants, with rare anomalous amounts.
//!
//! `{"payment_id":"p000000000001","card_id":"c004217","merchant_id":"m0042","amount":37.85,
//! "currency":"EUR","country":"DE","ts":"2026-01-05T14:30:00.123Z"}`
//!
//! - 500 merchants m0000..m0499, Zipf(1.0) (m0000 the busiest). Each has a typical amount
//!   drawn once from U[5, 200), a country (and its currency) drawn once, uniformly.
//! - 20,000 cards c000000..c019999, Zipf(0.8).
//! - An amount is the merchant's typical amount times LogNormal(0, 0.5), 2 decimals; with
//!   p = 0.002 it is an anomaly: U[10, 50) times the typical amount (what a fraud detector flags).
//! - `payment_id` counts payments from 1.

use std::io::Write;

use rand::Rng;
use rand_distr::{Distribution, LogNormal, Zipf};

use crate::text::push_decimal;
use crate::time::EventClock;
use crate::zipf::{rank, zipf};

const MERCHANTS: u32 = 500;
const CARDS: u32 = 20_000;
const TYPICAL_AMOUNTS: std::ops::Range<f64> = 5.0..200.0;
/// Where merchants are, with the currency they charge in.
const COUNTRIES: [(&str, &str); 8] = [
    ("US", "USD"),
    ("GB", "GBP"),
    ("DE", "EUR"),
    ("FR", "EUR"),
    ("NL", "EUR"),
    ("JP", "JPY"),
    ("CA", "CAD"),
    ("AU", "AUD"),
];
/// Probability that an amount is anomalous, and by how many typical amounts it is.
const ANOMALY_P: f64 = 0.002;
const ANOMALY_FACTORS: std::ops::Range<f64> = 10.0..50.0;

struct Merchant {
    typical: f64,
    country: usize,
}

pub(crate) struct Payments {
    merchants: Vec<Merchant>,
    merchant_ranks: Zipf<f64>,
    card_ranks: Zipf<f64>,
    spread: LogNormal<f64>,
    payments: u64,
}

impl Payments {
    pub(crate) fn new<R: Rng>(rng: &mut R) -> Self {
        let merchants = (0..MERCHANTS)
            .map(|_| Merchant {
                typical: rng.random_range(TYPICAL_AMOUNTS),
                country: rng.random_range(0..COUNTRIES.len()),
            })
            .collect();
        Payments {
            merchants,
            merchant_ranks: zipf(MERCHANTS, 1.0),
            card_ranks: zipf(CARDS, 0.8),
            spread: LogNormal::new(0.0, 0.5).expect("valid log-normal parameters"),
            payments: 0,
        }
    }

    /// Appends the next event, one line.
    pub(crate) fn write_event<R: Rng>(
        &mut self,
        rng: &mut R,
        clock: &mut EventClock,
        out: &mut Vec<u8>,
    ) {
        self.payments += 1;
        let merchant = rank(&self.merchant_ranks, MERCHANTS, rng) - 1;
        let card = rank(&self.card_ranks, CARDS, rng) - 1;
        let Merchant { typical, country } = self.merchants[merchant as usize];
        let factor = if rng.random_bool(ANOMALY_P) {
            rng.random_range(ANOMALY_FACTORS)
        } else {
            self.spread.sample(rng)
        };
        let amount = (typical * factor).max(0.01);
        let (country, currency) = COUNTRIES[country];
        let ts = clock.next_event_ms(rng);
        out.extend_from_slice(b"{\"payment_id\":\"p");
        push_decimal(out, self.payments, 12);
        out.extend_from_slice(b"\",\"card_id\":\"c");
        push_decimal(out, u64::from(card), 6);
        out.extend_from_slice(b"\",\"merchant_id\":\"m");
        push_decimal(out, u64::from(merchant), 4);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "\",\"amount\":{amount:.2}");
        out.extend_from_slice(b",\"currency\":\"");
        out.extend_from_slice(currency.as_bytes());
        out.extend_from_slice(b"\",\"country\":\"");
        out.extend_from_slice(country.as_bytes());
        out.extend_from_slice(b"\",\"ts\":\"");
        clock.push_timestamp(out, ts);
        out.extend_from_slice(b"\"}\n");
    }
}
