//! W1 `ticks`: market data.
//!
//! `{"ticker":"T0042","price":123.4567,"volume":300,"ts":"2026-01-05T14:30:00.123Z"}`

use rand::Rng;

use crate::text::{fill_decimal, push_decimal};
use crate::time::EventClock;

/// Tickers T0000..T0499, chosen uniformly.
const TICKERS: usize = 500;
/// Start prices are drawn from U[10, 500).
const START_PRICES: std::ops::Range<f64> = 10.0..500.0;
/// Each tick multiplies its ticker's price by 1 + U(-MAX_MOVE, MAX_MOVE).
const MAX_MOVE: f64 = 0.001;
/// Prices are printed with 4 decimals.
const PRICE_SCALE: f64 = 10_000.0;

pub(crate) struct Ticks {
    /// The current price of each ticker: a multiplicative random walk.
    prices: Vec<f64>,
}

impl Ticks {
    pub(crate) fn new<R: Rng>(rng: &mut R) -> Self {
        let prices = (0..TICKERS)
            .map(|_| rng.random_range(START_PRICES))
            .collect();
        Ticks { prices }
    }

    /// Appends the next event, one line.
    pub(crate) fn write_event<R: Rng>(
        &mut self,
        rng: &mut R,
        clock: &mut EventClock,
        out: &mut Vec<u8>,
    ) {
        let ticker = rng.random_range(0..TICKERS);
        let price = &mut self.prices[ticker];
        *price *= 1.0 + rng.random_range(-MAX_MOVE..MAX_MOVE);
        let price = *price;
        let volume = 100 * rng.random_range(1..=100u64);
        let ts = clock.next_event_ms(rng);

        let mut name = *b"T0000";
        fill_decimal(&mut name[1..], ticker as u64);
        out.extend_from_slice(b"{\"ticker\":\"");
        out.extend_from_slice(&name);
        out.extend_from_slice(b"\",\"price\":");
        push_price(out, price);
        out.extend_from_slice(b",\"volume\":");
        push_decimal(out, volume, 1);
        out.extend_from_slice(b",\"ts\":\"");
        clock.push_timestamp(out, ts);
        out.extend_from_slice(b"\"}\n");
    }
}

/// Appends `price` with exactly 4 decimals, as integer math on round(price * 10^4): the same
/// text as `%.4f` except, rarely, in the last digit of an exact tie.
fn push_price(out: &mut Vec<u8>, price: f64) {
    // Prices stay positive (every factor is positive) and far below u64::MAX / 10^4; the cast
    // saturates rather than wraps in any case.
    let scaled = (price * PRICE_SCALE).round() as u64;
    push_decimal(out, scaled / 10_000, 1);
    let mut decimals = *b".0000";
    fill_decimal(&mut decimals[1..], scaled % 10_000);
    out.extend_from_slice(&decimals);
}
