//! `nexmark`: the Nexmark benchmark's online auctions (people, the auctions they open, the bids
//! on them) by the rules of the reference generator, Beam's and Flink's `NexmarkGenerator` (its
//! distributions, not its bytes).
//!
//! `{"id":1000,"name":"Peter Shultz","email_address":"qhvbz@ktq.com",
//! "credit_card":"0412 3371 9008 2711","city":"Boise","state":"OR",
//! "date_time":"2026-01-05T14:30:00.000Z","extra":"…"}`
//!
//! `{"id":1000,"item_name":"pkx dwqu","description":"…","initial_bid":4311,"reserve":95040,
//! "date_time":"2026-01-05T14:30:00.000Z","expires":"2026-01-05T14:30:00.201Z","seller":1000,
//! "category":12,"extra":"…"}`
//!
//! `{"auction":1000,"bidder":1000,"price":2219,"channel":"Google",
//! "url":"https://www.nexmark.com/abx/xq_z/kfe/item.htm?query=1",
//! "date_time":"2026-01-05T14:30:00.000Z","extra":"…"}`
//!
//! - Event number `i` (from 0) is, by `i % 50`: 0 a person, 1..=3 an auction, 4..=49 a bid
//!   (proportions 1:3:46). Its `date_time` is `start + floor(i * 1000 / rate)` ms, no lag: the
//!   events are in order. Each event draws from a generator of its own, seeded from the seed and
//!   `i`, so that the events of one kind are the same whether or not the others are written.
//! - Ids count from 1000 in event order: person `1000 + i / 50`, auction
//!   `1000 + 3 * (i / 50) + i % 50 - 1`. Prices are integers (cents), categories 10..=14.
//! - Seller of an auction: p = 3/4 the hot seller (the first person of the last 100), otherwise
//!   one of the last 1000 people, uniformly. Bidder: p = 3/4 the hot bidder (the second person
//!   of the last 100), otherwise as a seller. Auction of a bid: p = 1/2 the hot auction (the first
//!   auction of the last 100), otherwise one of the last 101 auctions, uniformly.
//! - `initial_bid`, `reserve - initial_bid` and `price`: `round(10^U[0, 6) * 100)` cents
//!   (1 to 1,000,000 dollars, log-uniform). `category`: uniform.
//! - `expires`: `date_time + 1 + U{0..2h-1}` ms, where `h` is how much later in event time the
//!   100th auction from now comes (1666 events: 166 ms at 10,000 events/s).
//! - `name`: one of 11 first names and one of 9 last names; `email_address`: 3..6 and 3..4
//!   random characters, `x@y.com`; `credit_card`: four groups of 4 digits; `city` and `state`:
//!   one of 10 cities and one of 6 states (not matched). `item_name` and `description`: 3..19
//!   and 3..99 random characters. Random characters are a..z, or a space with p = 1/13 (an '_'
//!   in urls), trimmed of spaces.
//! - `channel`: p = 1/2 one of Google, Facebook, Baidu and Apple, each with its url; otherwise
//!   `channel-N`, N in 0..10,000 uniform, whose url ends with p = 9/10 in
//!   `&channel_id=<N's 32 bits reversed>`. A url is
//!   `https://www.nexmark.com/a/b/c/item.htm?query=1` with three random parts; the 10,004 urls
//!   are drawn once per generator.
//! - `extra`: random letters bringing a line's size as the reference counts it (8 bytes a
//!   number or time, strings their length; a bid 32 bytes) to 200 bytes for a person, 500 for an
//!   auction, 100 for a bid, give or take up to 20 %.
//!
//! Unlike the reference, a bid or an auction names only people and auctions of earlier event
//! numbers (or of its own, for an auction's id): there are no ids ahead of the last generated
//! one (the reference allows 10, PERSON_ID_LEAD and AUCTION_ID_LEAD), and while the last 100
//! people hold only one, the hot bidder is that one (as the hot seller).

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::NexmarkKind;
use crate::text::push_decimal;
use crate::time::EventClock;

/// Events of each kind in every 50 event numbers: first the person, then the auctions, then the
/// bids.
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
/// Ids start here, so that a query finds its matches even on small streams.
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
/// Sellers and bidders other than the hot ones are among the last this many people.
const NUM_ACTIVE_PEOPLE: u64 = 1000;
/// Auctions other than the hot one are among the last this many auctions (plus the last one).
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
/// A hot auction, bidder or seller is chosen with p = 1 - 1/ratio.
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDERS_RATIO: u64 = 4;
const HOT_SELLERS_RATIO: u64 = 4;
/// The hot ones are the first (the second for a bidder) of the last batch of this many.
const HOT_BATCH: u64 = 100;
/// Lines' average sizes as the reference counts them, `extra` included.
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;
/// A channel is one of the hot channels with p = 1 - 1/ratio, otherwise one of the others.
const HOT_CHANNELS_RATIO: u32 = 2;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const CHANNELS_NUMBER: u32 = 10_000;
/// The shortest random string, and its chance of each character being the special one.
const MIN_STRING_LENGTH: usize = 3;
const SPECIAL_CHAR_ODDS: u32 = 13;
/// Extras are cut from this many random letters (the reference's REUSABLE_EXTRA_STRING).
const EXTRA_LETTERS: usize = 1 << 16;

// Few states, so that the queries find results even on small streams.
pub(crate) const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
pub(crate) const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

pub(crate) struct Nexmark {
    /// Mixed with an event's number to seed the event's own generator.
    key: u64,
    /// Events per second of event time, for auctions' lengths.
    rate: u64,
    /// The one kind written, or `None` for all three.
    only: Option<NexmarkKind>,
    next_event: u64,
    /// What extras are cut from.
    letters: Vec<u8>,
    /// The url of each of the hot channels.
    hot_urls: [Box<[u8]>; HOT_CHANNELS.len()],
    /// The url of each of `channel-0..channel-9999`.
    channel_urls: Vec<Box<[u8]>>,
}

impl Nexmark {
    pub(crate) fn new<R: Rng>(rng: &mut R, rate: u64, only: Option<NexmarkKind>) -> Self {
        let key = rng.random();
        let letters = (0..EXTRA_LETTERS)
            .map(|_| rng.random_range(b'a'..=b'z'))
            .collect();
        let hot_urls = std::array::from_fn(|_| base_url(rng).into_boxed_slice());
        let channel_urls = (0..CHANNELS_NUMBER)
            .map(|channel| {
                let mut url = base_url(rng);
                if rng.random_ratio(9, 10) {
                    url.extend_from_slice(b"&channel_id=");
                    // As the reference's Math.abs(Integer.reverse(channel)).
                    let reversed = channel.reverse_bits().cast_signed().unsigned_abs();
                    push_decimal(&mut url, u64::from(reversed), 1);
                }
                url.into_boxed_slice()
            })
            .collect();
        Nexmark {
            key,
            rate,
            only,
            next_event: 0,
            letters,
            hot_urls,
            channel_urls,
        }
    }

    /// Takes the next event number; appends its event, one line, unless another kind is kept.
    pub(crate) fn write_event(&mut self, clock: &mut EventClock, out: &mut Vec<u8>) {
        let event = self.next_event;
        self.next_event += 1;
        let date_time = clock.next_base_ms();
        let kind = kind_of(event);
        if self.only.is_some_and(|only| only != kind) {
            return;
        }
        let rng = &mut Xoshiro256PlusPlus::seed_from_u64(self.key ^ event);
        match kind {
            NexmarkKind::Person => self.write_person(event, date_time, rng, clock, out),
            NexmarkKind::Auction => self.write_auction(event, date_time, rng, clock, out),
            NexmarkKind::Bid => self.write_bid(event, date_time, rng, clock, out),
        }
    }

    fn write_person<R: Rng>(
        &self,
        event: u64,
        date_time: i64,
        rng: &mut R,
        clock: &mut EventClock,
        out: &mut Vec<u8>,
    ) {
        let first_name = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
        let last_name = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
        let city = US_CITIES[rng.random_range(0..US_CITIES.len())];
        let state = US_STATES[rng.random_range(0..US_STATES.len())];
        out.extend_from_slice(b"{\"id\":");
        push_decimal(out, FIRST_PERSON_ID + last_person(event), 1);
        out.extend_from_slice(b",\"name\":\"");
        out.extend_from_slice(first_name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(last_name.as_bytes());
        out.extend_from_slice(b"\",\"email_address\":\"");
        let user = push_string(out, rng, 7, b' ');
        out.push(b'@');
        let domain = push_string(out, rng, 5, b' ');
        out.extend_from_slice(b".com\",\"credit_card\":\"");
        for group in 0..4 {
            if group > 0 {
                out.push(b' ');
            }
            push_decimal(out, rng.random_range(0..10_000), 4);
        }
        out.extend_from_slice(b"\",\"city\":\"");
        out.extend_from_slice(city.as_bytes());
        out.extend_from_slice(b"\",\"state\":\"");
        out.extend_from_slice(state.as_bytes());
        out.extend_from_slice(b"\",\"date_time\":\"");
        clock.push_timestamp(out, date_time);
        out.extend_from_slice(b"\",\"extra\":\"");
        let name = first_name.len() + 1 + last_name.len();
        let email = user + 1 + domain + ".com".len();
        let credit_card = 4 * 4 + 3;
        let size = 8 + name + email + credit_card + city.len() + state.len();
        self.push_extra(out, rng, size, AVG_PERSON_BYTES);
        out.extend_from_slice(b"\"}\n");
    }

    fn write_auction<R: Rng>(
        &self,
        event: u64,
        date_time: i64,
        rng: &mut R,
        clock: &mut EventClock,
        out: &mut Vec<u8>,
    ) {
        let seller = if hot(rng, HOT_SELLERS_RATIO) {
            last_person(event) / HOT_BATCH * HOT_BATCH
        } else {
            next_person(event, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.random_range(0..NUM_CATEGORIES);
        let initial_bid = next_price(rng);
        let reserve = initial_bid + next_price(rng);
        let expires = date_time.saturating_add_unsigned(self.auction_length_ms(event, rng));
        out.extend_from_slice(b"{\"id\":");
        push_decimal(out, FIRST_AUCTION_ID + last_auction(event), 1);
        out.extend_from_slice(b",\"item_name\":\"");
        let item_name = push_string(out, rng, 20, b' ');
        out.extend_from_slice(b"\",\"description\":\"");
        let description = push_string(out, rng, 100, b' ');
        out.extend_from_slice(b"\",\"initial_bid\":");
        push_decimal(out, initial_bid, 1);
        out.extend_from_slice(b",\"reserve\":");
        push_decimal(out, reserve, 1);
        out.extend_from_slice(b",\"date_time\":\"");
        clock.push_timestamp(out, date_time);
        out.extend_from_slice(b"\",\"expires\":\"");
        clock.push_timestamp(out, expires);
        out.extend_from_slice(b"\",\"seller\":");
        push_decimal(out, FIRST_PERSON_ID + seller, 1);
        out.extend_from_slice(b",\"category\":");
        push_decimal(out, category, 1);
        out.extend_from_slice(b",\"extra\":\"");
        // The id, the two times, the two prices and the seller, as the reference counts them.
        let size = 8 + item_name + description + 5 * 8;
        self.push_extra(out, rng, size, AVG_AUCTION_BYTES);
        out.extend_from_slice(b"\"}\n");
    }

    fn write_bid<R: Rng>(
        &self,
        event: u64,
        date_time: i64,
        rng: &mut R,
        clock: &mut EventClock,
        out: &mut Vec<u8>,
    ) {
        let auction = if hot(rng, HOT_AUCTION_RATIO) {
            last_auction(event) / HOT_BATCH * HOT_BATCH
        } else {
            next_auction(event, rng)
        };
        let bidder = if hot(rng, HOT_BIDDERS_RATIO) {
            // The second of the last 100 people, so that hot bidders are not hot sellers; the
            // first while it is the only one.
            let last = last_person(event);
            (last / HOT_BATCH * HOT_BATCH + 1).min(last)
        } else {
            next_person(event, rng)
        };
        let price = next_price(rng);
        out.extend_from_slice(b"{\"auction\":");
        push_decimal(out, FIRST_AUCTION_ID + auction, 1);
        out.extend_from_slice(b",\"bidder\":");
        push_decimal(out, FIRST_PERSON_ID + bidder, 1);
        out.extend_from_slice(b",\"price\":");
        push_decimal(out, price, 1);
        out.extend_from_slice(b",\"channel\":\"");
        let url = if rng.random_range(0..HOT_CHANNELS_RATIO) > 0 {
            let hot = rng.random_range(0..HOT_CHANNELS.len());
            out.extend_from_slice(HOT_CHANNELS[hot].as_bytes());
            &self.hot_urls[hot]
        } else {
            let channel = rng.random_range(0..CHANNELS_NUMBER);
            out.extend_from_slice(b"channel-");
            push_decimal(out, u64::from(channel), 1);
            &self.channel_urls[channel as usize]
        };
        out.extend_from_slice(b"\",\"url\":\"");
        out.extend_from_slice(url);
        out.extend_from_slice(b"\",\"date_time\":\"");
        clock.push_timestamp(out, date_time);
        out.extend_from_slice(b"\",\"extra\":\"");
        // The auction, the bidder, the price and the time, as the reference counts them.
        self.push_extra(out, rng, 4 * 8, AVG_BID_BYTES);
        out.extend_from_slice(b"\"}\n");
    }

    /// How long an auction opened at `event` lasts: 1 + U{0..2h-1} ms (at least 1 ms), `h` being
    /// the event time between `event` and the event of the 100th auction after it.
    fn auction_length_ms<R: Rng>(&self, event: u64, rng: &mut R) -> u64 {
        let events_for_auctions = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        // floor(i * 1000 / rate), in u128 so that no product overflows.
        let offset_ms = |event: u128| event * 1000 / u128::from(self.rate);
        let now = u128::from(event);
        // At most events_for_auctions * 1000 + 1 ms: the cast is exact.
        let horizon_ms = (offset_ms(now + u128::from(events_for_auctions)) - offset_ms(now)) as u64;
        1 + rng.random_range(0..(2 * horizon_ms).max(1))
    }

    /// Appends the reference's `nextExtra`: letters bringing `size` to `average` give or take up
    /// to 20 % (`average - size` minus `delta`, plus U{0..2 delta - 1}); none if `size` is more.
    fn push_extra<R: Rng>(&self, out: &mut Vec<u8>, rng: &mut R, size: usize, average: usize) {
        let Some(wanted) = average.checked_sub(size) else {
            return;
        };
        // Math.round(wanted * 0.2).
        let delta = (wanted * 2 + 5) / 10;
        let spread = if delta == 0 {
            0
        } else {
            rng.random_range(0..2 * delta)
        };
        let len = wanted - delta + spread;
        // len < 1.2 * AVG_AUCTION_BYTES, far less than there are letters.
        let start = rng.random_range(0..=self.letters.len() - len);
        out.extend_from_slice(&self.letters[start..start + len]);
    }
}

/// What event number `event` is: by `event % 50`, 0 a person, 1..=3 an auction, the rest bids.
fn kind_of(event: u64) -> NexmarkKind {
    match event % TOTAL_PROPORTION {
        offset if offset < PERSON_PROPORTION => NexmarkKind::Person,
        offset if offset < PERSON_PROPORTION + AUCTION_PROPORTION => NexmarkKind::Auction,
        _ => NexmarkKind::Bid,
    }
}

/// The base-0 id of the last person at or before `event` (the reference's lastBase0PersonId, for
/// the one person that opens every 50 events).
fn last_person(event: u64) -> u64 {
    event / TOTAL_PROPORTION * PERSON_PROPORTION
}

/// The base-0 id of the last auction at or before `event`, which is an auction or a bid and so
/// has one (the reference's lastBase0AuctionId).
fn last_auction(event: u64) -> u64 {
    let (epoch, offset) = (event / TOTAL_PROPORTION, event % TOTAL_PROPORTION);
    epoch * AUCTION_PROPORTION + offset.min(PERSON_PROPORTION + AUCTION_PROPORTION - 1)
        - PERSON_PROPORTION
}

/// One of the last 1000 people at `event`, uniformly (the reference's nextBase0PersonId, without
/// its lead of 10 people not yet generated).
fn next_person<R: Rng>(event: u64, rng: &mut R) -> u64 {
    let people = last_person(event) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.random_range(0..active)
}

/// One of the last 101 auctions at `event`, uniformly (the reference's nextBase0AuctionId,
/// without its lead of 10 auctions not yet generated).
fn next_auction<R: Rng>(event: u64, rng: &mut R) -> u64 {
    let last = last_auction(event);
    last.saturating_sub(NUM_IN_FLIGHT_AUCTIONS)
        + rng.random_range(0..=last.min(NUM_IN_FLIGHT_AUCTIONS))
}

/// Whether the hot one (seller, bidder, auction) is chosen: p = 1 - 1/`ratio`.
fn hot<R: Rng>(rng: &mut R, ratio: u64) -> bool {
    rng.random_range(0..ratio) > 0
}

/// A price in cents: `round(10^U[0, 6) * 100)`, 1 to 1,000,000 dollars, log-uniform.
fn next_price<R: Rng>(rng: &mut R) -> u64 {
    // In 100..=100,000,000: the cast is exact.
    (10f64.powf(rng.random::<f64>() * 6.0) * 100.0).round() as u64
}

/// `https://www.nexmark.com/a/b/c/item.htm?query=1`, each part random with '_' for spaces.
fn base_url<R: Rng>(rng: &mut R) -> Vec<u8> {
    let mut url = b"https://www.nexmark.com/".to_vec();
    for _ in 0..3 {
        push_string(&mut url, rng, 5, b'_');
        url.push(b'/');
    }
    url.extend_from_slice(b"item.htm?query=1");
    url
}

/// Appends the reference's `nextString`: 3 + U{0..max_len-4} characters, each `special` with
/// p = 1/13 or else a letter a..z, trimmed of spaces. Returns its length.
fn push_string<R: Rng>(out: &mut Vec<u8>, rng: &mut R, max_len: usize, special: u8) -> usize {
    let start = out.len();
    let len = MIN_STRING_LENGTH + rng.random_range(0..max_len - MIN_STRING_LENGTH);
    for _ in 0..len {
        let c = if rng.random_ratio(1, SPECIAL_CHAR_ODDS) {
            special
        } else {
            rng.random_range(b'a'..=b'z')
        };
        out.push(c);
    }
    while out.len() > start && out.last() == Some(&b' ') {
        out.pop();
    }
    let leading = out[start..].iter().take_while(|&&c| c == b' ').count();
    out.drain(start..start + leading);
    out.len() - start
}
