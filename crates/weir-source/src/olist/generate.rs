//! The deterministic Olist generator: the nine tables as CSV bytes, streamed
//! table by table to a [`CsvSink`] (a PostgreSQL `COPY` or a folder of files).

use chrono::DateTime;

use super::data::*;
use super::{OlistTable, TABLES};

/// Where generated CSV goes. `data` receives whole rows only.
pub trait CsvSink {
    type Error;
    fn begin(&mut self, table: &'static OlistTable) -> Result<(), Self::Error>;
    fn data(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    fn end(&mut self, rows: u64) -> Result<(), Self::Error>;
}

#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    /// 1.0 gives the reference row counts; other factors scale them.
    pub scale: f64,
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            scale: 1.0,
            seed: 42,
        }
    }
}

/// SplitMix64: small, fast and fully deterministic across platforms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((self.next() as u128 * n as u128) >> 64) as u64
        }
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.f().max(1e-12);
        let u2 = self.f();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
    fn id(&mut self) -> String {
        format!("{:016x}{:016x}", self.next(), self.next())
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

fn scaled(n: u64, scale: f64) -> u64 {
    (n as f64 * scale).round() as u64
}

/// Adjust `counts` so they sum to `total`, changing the largest entry.
fn fit(mut counts: Vec<u64>, total: u64) -> Vec<u64> {
    let sum: u64 = counts.iter().sum();
    if let Some(i) = (0..counts.len()).max_by_key(|&i| counts[i]) {
        counts[i] = (counts[i] + total).saturating_sub(sum);
    }
    counts
}

/// Split `total` by `weights` with the largest-remainder method (exact sum).
fn apportion(weights: &[f64], total: u64) -> Vec<u64> {
    let wsum: f64 = weights.iter().sum();
    let raw: Vec<f64> = weights.iter().map(|w| w / wsum * total as f64).collect();
    let mut counts: Vec<u64> = raw.iter().map(|r| r.floor() as u64).collect();
    let mut left = total - counts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&a, &b| {
        (raw[b] - raw[b].floor())
            .total_cmp(&(raw[a] - raw[a].floor()))
            .then(a.cmp(&b))
    });
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

/// A list holding `counts[i]` copies of `i`, shuffled.
fn multiset(rng: &mut Rng, counts: &[u64]) -> Vec<u32> {
    let mut v = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
    for (i, &c) in counts.iter().enumerate() {
        v.extend(std::iter::repeat_n(i as u32, c as usize));
    }
    rng.shuffle(&mut v);
    v
}

/// CSV encoding as the public dataset ships it: identifiers always quoted,
/// other values quoted only when needed, NULL as an empty unquoted field.
struct Csv<'s, S: CsvSink> {
    sink: &'s mut S,
    buf: Vec<u8>,
    first: bool,
    rows: u64,
}

const FLUSH_AT: usize = 1 << 20;

impl<'s, S: CsvSink> Csv<'s, S> {
    fn start(sink: &'s mut S, table: &'static OlistTable) -> Result<Self, S::Error> {
        sink.begin(table)?;
        Ok(Csv {
            sink,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            first: true,
            rows: 0,
        })
    }
    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }
    fn quoted(&mut self, v: &str) {
        self.sep();
        self.buf.push(b'"');
        for b in v.bytes() {
            if b == b'"' {
                self.buf.push(b'"');
            }
            self.buf.push(b);
        }
        self.buf.push(b'"');
    }
    fn text(&mut self, v: &str) {
        if v.is_empty() || v.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
            self.quoted(v);
        } else {
            self.sep();
            self.buf.extend_from_slice(v.as_bytes());
        }
    }
    fn opt(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.text(v),
            None => self.sep(),
        }
    }
    fn num(&mut self, v: impl std::fmt::Display) {
        use std::io::Write;
        self.sep();
        let _ = write!(self.buf, "{v}");
    }
    fn money(&mut self, cents: i64) {
        self.num(format_args!("{}.{:02}", cents / 100, cents % 100));
    }
    fn ts(&mut self, secs: Option<i64>) {
        match secs.and_then(|s| DateTime::from_timestamp(s, 0)) {
            Some(t) => self.num(t.format("%Y-%m-%d %H:%M:%S")),
            None => self.sep(),
        }
    }
    fn row(&mut self) -> Result<(), S::Error> {
        self.buf.push(b'\n');
        self.first = true;
        self.rows += 1;
        if self.buf.len() >= FLUSH_AT {
            self.sink.data(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
    fn finish(self) -> Result<(), S::Error> {
        if !self.buf.is_empty() {
            self.sink.data(&self.buf)?;
        }
        self.sink.end(self.rows)
    }
}

const DAY: i64 = 86_400;
/// 2016-09-04 21:15:19 and 2018-10-17 17:30:18 UTC: the real data's purchase range.
const FIRST_PURCHASE: i64 = 1_473_023_719;
const LAST_PURCHASE: i64 = 1_539_797_418;

struct Prefix {
    zip: u32,
    state: usize,
    city: usize,
    lat: f64,
    lng: f64,
}

struct Product {
    id: String,
    seller: usize,
    price_cents: i64,
}

struct Order {
    id: String,
    purchase: i64,
    approved: Option<i64>,
    delivered: Option<i64>,
    estimated: i64,
    total_cents: i64,
}

/// Generate all nine tables into `sink`, in dependency order.
pub fn generate<S: CsvSink>(opts: GenerateOptions, sink: &mut S) -> Result<(), S::Error> {
    let scale = opts.scale;
    let mut rng = Rng(opts.seed ^ 0x5EED_0115);
    let table = |name: &str| {
        TABLES
            .iter()
            .find(|t| t.name == name)
            .expect("known Olist table")
    };

    // Category translation.
    let mut csv = Csv::start(sink, table("product_category_name_translation"))?;
    for (pt, en, ..) in CATEGORIES.iter().filter(|c| !c.1.is_empty()) {
        csv.text(pt);
        csv.text(en);
        csv.row()?;
    }
    csv.finish()?;

    // Zip prefixes per state: weighted towards populous states, never more than a range holds.
    let n_prefixes = scaled(19_015, scale).max(STATES.len() as u64);
    let weights: Vec<f64> = STATES
        .iter()
        .map(|s| {
            ORDERS_PER_STATE
                .iter()
                .find(|o| o.0 == s.code)
                .map_or(1.0, |o| (o.1 as f64).powf(0.8))
        })
        .collect();
    let mut per_state = apportion(&weights, n_prefixes);
    let mut spare = 0;
    for (i, s) in STATES.iter().enumerate() {
        let cap = (s.zip.1 - s.zip.0 + 1) as u64;
        per_state[i] = per_state[i].max(1);
        if per_state[i] > cap {
            spare += per_state[i] - cap;
            per_state[i] = cap;
        }
    }
    per_state[0] += spare; // SP's range is the largest
    let mut prefixes: Vec<Prefix> = Vec::new();
    let mut state_prefixes: Vec<Vec<usize>> = vec![Vec::new(); STATES.len()];
    for (si, s) in STATES.iter().enumerate() {
        let range = (s.zip.1 - s.zip.0 + 1) as f64;
        let k = per_state[si] as usize;
        for j in 0..k {
            let zip = s.zip.0 + ((j as f64 + rng.f()) * range / k as f64) as u32;
            state_prefixes[si].push(prefixes.len());
            prefixes.push(Prefix {
                zip,
                state: si,
                city: (j * s.cities.len()) / k,
                lat: s.lat + rng.normal() * 0.6,
                lng: s.lng + rng.normal() * 0.6,
            });
        }
    }
    let state_index = |code: &str| {
        STATES
            .iter()
            .position(|s| s.code == code)
            .expect("known state")
    };

    // Geolocation: every prefix once, then skewed repeats.
    let n_geo = scaled(1_000_163, scale).max(prefixes.len() as u64);
    let mut order: Vec<usize> = (0..prefixes.len()).collect();
    rng.shuffle(&mut order);
    let mut csv = Csv::start(sink, table("olist_geolocation"))?;
    for i in 0..n_geo as usize {
        let p = if i < prefixes.len() {
            &prefixes[order[i]]
        } else {
            &prefixes[order[(rng.f().powf(2.0) * prefixes.len() as f64) as usize]]
        };
        let s = &STATES[p.state];
        let (plain, accented) = s.cities[p.city];
        csv.num(format_args!("{:05}", p.zip));
        csv.num(p.lat + rng.normal() * 0.01);
        csv.num(p.lng + rng.normal() * 0.01);
        csv.text(if !accented.is_empty() && rng.below(10) < 3 {
            accented
        } else {
            plain
        });
        csv.text(s.code);
        csv.row()?;
    }
    csv.finish()?;

    // Sellers.
    let seller_counts: Vec<u64> = SELLERS_PER_STATE
        .iter()
        .map(|s| scaled(s.1, scale).max(1))
        .collect();
    let mut sellers: Vec<String> = Vec::new();
    let mut csv = Csv::start(sink, table("olist_sellers"))?;
    for (k, (code, _)) in SELLERS_PER_STATE.iter().enumerate() {
        let si = state_index(code);
        for _ in 0..seller_counts[k] {
            let id = rng.id();
            let p =
                &prefixes[state_prefixes[si][rng.below(state_prefixes[si].len() as u64) as usize]];
            csv.quoted(&id);
            csv.num(format_args!("{:05}", p.zip));
            csv.text(STATES[si].cities[p.city].0);
            csv.text(code);
            csv.row()?;
            sellers.push(id);
        }
    }
    csv.finish()?;

    // Products: 610 without a category (and without the fields that depend on it).
    let n_products = scaled(32_951, scale).max(CATEGORIES.len() as u64 + 1);
    let n_uncategorised = scaled(610, scale);
    let cat_counts = apportion(
        &CATEGORIES.iter().map(|c| c.2 as f64).collect::<Vec<_>>(),
        n_products - n_uncategorised - CATEGORIES.len() as u64,
    );
    let mut product_cat: Vec<Option<usize>> = vec![None; n_uncategorised as usize];
    for (ci, c) in cat_counts.iter().enumerate() {
        // every category has at least one product, as in the real data
        product_cat.extend(std::iter::repeat_n(Some(ci), *c as usize + 1));
    }
    rng.shuffle(&mut product_cat);
    let mut products: Vec<Product> = Vec::with_capacity(product_cat.len());
    let mut csv = Csv::start(sink, table("olist_products"))?;
    for cat in &product_cat {
        let id = rng.id();
        let mean = cat.map_or(110.0, |c| CATEGORIES[c].3);
        // A lognormal whose mean is `mean`: median = mean / e^(σ²/2).
        let price = rng
            .lognormal(mean / (0.8f64 * 0.8 / 2.0).exp(), 0.8)
            .clamp(0.85, 6735.0);
        csv.quoted(&id);
        match cat {
            Some(c) => {
                csv.text(CATEGORIES[*c].0);
                csv.num(5 + rng.below(72));
                csv.num(4 + (rng.lognormal(600.0, 0.8) as u64).min(3988));
                csv.num(1 + (rng.f().powf(3.0) * 20.0) as u64);
            }
            None => {
                csv.sep();
                csv.sep();
                csv.sep();
                csv.sep();
            }
        }
        csv.num((rng.lognormal(700.0, 1.1) as u64).min(40_425));
        csv.num(7 + rng.below(99));
        csv.num(2 + rng.below(104));
        csv.num(6 + rng.below(113));
        csv.row()?;
        products.push(Product {
            id,
            seller: rng.below(sellers.len() as u64) as usize,
            price_cents: (price * 100.0).round() as i64,
        });
    }
    csv.finish()?;

    // Customers: one row per order, states exact.
    let state_counts: Vec<u64> = ORDERS_PER_STATE
        .iter()
        .map(|s| scaled(s.1, scale))
        .collect();
    let n_orders: u64 = state_counts.iter().sum();
    let customer_states = multiset(&mut rng, &state_counts);
    let n_unique = scaled(96_096, scale).min(n_orders);
    let mut unique_ids: Vec<String> = Vec::with_capacity(n_unique as usize);
    let mut customer_ids: Vec<String> = Vec::with_capacity(n_orders as usize);
    let mut csv = Csv::start(sink, table("olist_customers"))?;
    for (i, &st) in customer_states.iter().enumerate() {
        let code = ORDERS_PER_STATE[st as usize].0;
        let si = state_index(code);
        let unique = if (i as u64) < n_unique {
            unique_ids.push(rng.id());
            unique_ids[i].clone()
        } else {
            unique_ids[rng.below(n_unique) as usize].clone()
        };
        let id = rng.id();
        let p = &prefixes[state_prefixes[si][rng.below(state_prefixes[si].len() as u64) as usize]];
        csv.quoted(&id);
        csv.quoted(&unique);
        csv.num(format_args!("{:05}", p.zip));
        csv.text(STATES[si].cities[p.city].0);
        csv.text(code);
        csv.row()?;
        customer_ids.push(id);
    }
    csv.finish()?;
    drop(unique_ids);

    // Orders: status and NULL timestamps exact.
    let profile_counts = fit(
        ORDER_PROFILES.iter().map(|p| scaled(p.4, scale)).collect(),
        n_orders,
    );
    let profiles = multiset(&mut rng, &profile_counts);
    let mut orders: Vec<Order> = Vec::with_capacity(n_orders as usize);
    let mut csv = Csv::start(sink, table("olist_orders"))?;
    for (i, &pi) in profiles.iter().enumerate() {
        let (status, has_approved, has_carrier, has_delivered, _) = ORDER_PROFILES[pi as usize];
        let span = (LAST_PURCHASE - FIRST_PURCHASE) as f64;
        let purchase = FIRST_PURCHASE + (span * rng.f().sqrt()) as i64;
        let approval = purchase + (rng.lognormal(0.4, 1.2) * 3600.0) as i64 + 60;
        let delivery = (rng.lognormal(10.0, 0.6) * DAY as f64) as i64 + 3600;
        let delivered = purchase + delivery;
        let carrier = (approval + (rng.lognormal(2.0, 0.7) * DAY as f64) as i64)
            .min(delivered - 1800)
            .max(approval);
        let estimated = (purchase + (23 + rng.below(20) as i64 - 5) * DAY) / DAY * DAY;
        let o = Order {
            id: rng.id(),
            purchase,
            approved: has_approved.then_some(approval),
            delivered: has_delivered.then_some(delivered),
            estimated,
            total_cents: 0,
        };
        csv.quoted(&o.id);
        csv.quoted(&customer_ids[i]);
        csv.text(status);
        csv.ts(Some(purchase));
        csv.ts(o.approved);
        csv.ts(has_carrier.then_some(carrier));
        csv.ts(o.delivered);
        csv.ts(Some(estimated));
        csv.row()?;
        orders.push(o);
    }
    csv.finish()?;
    drop(customer_ids);

    // Order items: unavailable, created and 161 canceled orders have none.
    let mut no_items_left_canceled = scaled(161, scale);
    let with_items: Vec<usize> = (0..orders.len())
        .filter(|&i| match ORDER_PROFILES[profiles[i] as usize].0 {
            "unavailable" | "created" => false,
            "canceled" if no_items_left_canceled > 0 => {
                no_items_left_canceled -= 1;
                false
            }
            _ => true,
        })
        .collect();
    let item_counts = fit(
        ITEMS_PER_ORDER.iter().map(|c| scaled(c.1, scale)).collect(),
        with_items.len() as u64,
    );
    let per_order = multiset(&mut rng, &item_counts);
    let mut csv = Csv::start(sink, table("olist_order_items"))?;
    for (k, &oi) in with_items.iter().enumerate() {
        let n_items = ITEMS_PER_ORDER[per_order[k] as usize].0;
        // Orders with several items often repeat one product.
        let first = rng.below(products.len() as u64) as usize;
        let limit = orders[oi].approved.unwrap_or(orders[oi].purchase) + 6 * DAY;
        for item in 1..=n_items {
            let pi = if item == 1 || rng.below(2) == 0 {
                first
            } else {
                rng.below(products.len() as u64) as usize
            };
            let p = &products[pi];
            let freight = ((rng.lognormal(17.0, 0.6) * 100.0) as i64).min(40_968);
            csv.quoted(&orders[oi].id);
            csv.num(item);
            csv.quoted(&p.id);
            csv.quoted(&sellers[p.seller]);
            csv.ts(Some(limit));
            csv.money(p.price_cents);
            csv.money(freight);
            csv.row()?;
            orders[oi].total_cents += p.price_cents + freight;
        }
    }
    csv.finish()?;

    // Payments: exact types; every order but one has at least one row.
    let n_payments = scaled(103_886, scale);
    let paid_orders = n_orders.saturating_sub(scaled(1, scale)) as usize;
    let type_counts = fit(
        PAYMENT_TYPES.iter().map(|p| scaled(p.1, scale)).collect(),
        n_payments,
    );
    let types = multiset(&mut rng, &type_counts);
    let extra = (n_payments as usize)
        .saturating_sub(paid_orders)
        .min(paid_orders);
    let mut t = 0;
    let mut csv = Csv::start(sink, table("olist_order_payments"))?;
    for (oi, o) in orders.iter().enumerate().take(paid_orders) {
        let rows = if oi < extra { 2 } else { 1 };
        let total = if o.total_cents > 0 {
            o.total_cents
        } else {
            (rng.lognormal(120.0, 0.8) * 100.0) as i64
        };
        let mut left = total;
        for seq in 1..=rows {
            let ty = PAYMENT_TYPES[types[t] as usize].0;
            t += 1;
            let value = if seq == rows { left } else { total * 7 / 10 };
            left -= value;
            csv.quoted(&o.id);
            csv.num(seq);
            csv.text(ty);
            csv.num(if ty == "credit_card" {
                1 + (rng.f().powf(2.0) * 10.0) as u64
            } else {
                1
            });
            csv.money(value);
            csv.row()?;
        }
    }
    csv.finish()?;

    // Reviews: exact scores, on a random subset of orders.
    let score_counts: Vec<u64> = REVIEW_SCORES.iter().map(|s| scaled(s.1, scale)).collect();
    let n_reviews: u64 = score_counts.iter().sum::<u64>().min(n_orders);
    let scores = multiset(&mut rng, &fit(score_counts, n_reviews));
    let mut reviewed: Vec<usize> = (0..orders.len()).collect();
    rng.shuffle(&mut reviewed);
    let mut csv = Csv::start(sink, table("olist_order_reviews"))?;
    for (k, &oi) in reviewed.iter().take(n_reviews as usize).enumerate() {
        let o = &orders[oi];
        let created = (o.delivered.unwrap_or(o.estimated) / DAY + 1) * DAY;
        let answered = created + (rng.lognormal(1.5, 1.0) * DAY as f64) as i64;
        csv.quoted(&rng.id());
        csv.quoted(&o.id);
        csv.num(REVIEW_SCORES[scores[k] as usize].0);
        let title = (rng.below(100) < 12)
            .then(|| REVIEW_TITLES[rng.below(REVIEW_TITLES.len() as u64) as usize]);
        csv.opt(title);
        let message = (rng.below(1000) < 413)
            .then(|| REVIEW_MESSAGES[rng.below(REVIEW_MESSAGES.len() as u64) as usize]);
        csv.opt(message);
        csv.ts(Some(created));
        csv.ts(Some(answered));
        csv.row()?;
    }
    csv.finish()?;
    Ok(())
}
