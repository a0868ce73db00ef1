//! Synthetic markets in which news events of known types move prices by known rules plus
//! noise: the experiment's embedded default, so the value of fine-grained events is measurable
//! offline.
//!
//! **Stocks** ([`stock_market`]): companies with hourly bars (09:00–17:00, weekdays). News items
//! arrive between 08:00 and 20:00; an event's impact is a log-price jump at the open of the
//! first bar that starts after the news (the label's target), of sign given by the event type
//! and size given by its roles (change rate, amount, quantity). A share `informed` of events
//! leak half their impact as drift over the two bars before the news (so the trade side carries
//! signal too). A share `paraphrase` of events is written with a verb the embedded dictionary
//! does not list (the extractor misses them; MSSPM's tagger may not). Every item also carries distractor sentences with the same polarity words but
//! no trigger ("analysts had expected profit to fall"), and some items carry no event at all.
//!
//! **Forex** ([`forex_market`]): one currency pair with hourly bars around the clock on weekdays
//! and a stream of news in six categories. Only central-bank and macro-economic news move the
//! pair: each item's impact is spread evenly over `absorb_bars` bars that start `lag_bars` bars
//! after its release (so the freshest news is not in the prices yet). The other
//! categories use the same polarity words and move nothing.

use textdata::readers::Bar;
use trainer::Rng;

use crate::time::{self, Minutes};
use crate::trade::PriceSeries;
use crate::{Error, Result};

fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.next_f64().max(1e-12);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

/// Configuration of the synthetic stock market.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StockMarketConfig {
    /// Companies (at most 12).
    pub companies: usize,
    /// Trading days.
    pub days: usize,
    /// News items per day over all companies.
    pub news_per_day: usize,
    /// Probability that an item carries no event.
    pub no_event: f64,
    /// Share of events with pre-announcement drift.
    pub informed: f64,
    /// Share of events written with a verb the dictionary does not list (a held-out trigger).
    pub paraphrase: f64,
    /// Share of the other events written with their role words paraphrased (units and periods
    /// the dictionary's role patterns do not list: `per cent`, `cents per share`, `the three
    /// months to March`, …): the event is found, its arguments partly not.
    #[serde(default = "default_role_paraphrase")]
    pub role_paraphrase: f64,
    /// Share of the items without an event of their own that report a rival's event in the
    /// dictionary's own words: the extractor finds an event that does not move this stock.
    #[serde(default = "default_rival_events")]
    pub rival_events: f64,
    /// Per-bar log-price noise.
    pub noise: f64,
    /// Overnight log-price noise.
    pub overnight_noise: f64,
    /// Seed.
    pub seed: u64,
}

fn default_role_paraphrase() -> f64 {
    0.2
}

fn default_rival_events() -> f64 {
    0.3
}

impl Default for StockMarketConfig {
    fn default() -> Self {
        Self {
            companies: 8,
            days: 250,
            news_per_day: 10,
            no_event: 0.2,
            informed: 0.3,
            paraphrase: 0.2,
            role_paraphrase: default_role_paraphrase(),
            rival_events: default_rival_events(),
            noise: 0.002,
            overnight_noise: 0.003,
            seed: 7,
        }
    }
}

/// One synthetic stock news item.
#[derive(Clone, Debug, PartialEq)]
pub struct StockNews {
    /// Release time.
    pub time: Minutes,
    /// Company index.
    pub company: usize,
    /// The text.
    pub text: String,
    /// The event type written into the text and its log-price impact.
    pub event: Option<(String, f64)>,
    /// The event is written with a verb the dictionary does not list.
    pub paraphrased: bool,
    /// The event's role words are paraphrased (its trigger is the dictionary's).
    pub roles_paraphrased: bool,
    /// The item has no event of its own but reports a rival's.
    pub rival_event: bool,
}

/// A synthetic stock market.
#[derive(Clone, Debug)]
pub struct StockMarket {
    /// Company names.
    pub companies: Vec<String>,
    /// One hourly series per company.
    pub series: Vec<PriceSeries>,
    /// News in time order.
    pub news: Vec<StockNews>,
}

const COMPANIES: [&str; 12] = [
    "Acme Widgets Corp",
    "Borealis Mining Co",
    "Cobalt Energy Inc",
    "Delta Shipping Ltd",
    "Evergreen Foods Corp",
    "Fulcrum Steel Co",
    "Granite Bank Corp",
    "Helios Solar Inc",
    "Ionic Chemicals Ltd",
    "Juniper Telecom Corp",
    "Keystone Motors Inc",
    "Lumen Pharma Co",
];

const PERIODS: [&str; 4] = ["first quarter", "second quarter", "third quarter", "year"];

const DISTRACTORS: [&str; 10] = [
    "Analysts had expected profit to fall sharply.",
    "Analysts had expected profit to rise sharply.",
    "Shares of rival firms fell earlier in the week.",
    "Shares of rival firms rose earlier in the week.",
    "The broader market was weak and several sectors declined.",
    "The broader market was strong and several sectors gained.",
    "A spokesman declined to comment on job cuts at other firms.",
    "Industry sales were expected to grow slowly.",
    "Competitors cited higher costs last month.",
    "The company will hold its annual meeting in May.",
];

/// An event of a known type: its type, text and log-price impact. With `paraphrase` the
/// sentence says the same with a verb the embedded dictionary does not list (so the extractor
/// misses it: the case MSSPM's tagger is meant to generalise to).
fn stock_event(rng: &mut Rng, company: &str, paraphrase: bool) -> (String, String, f64) {
    let r = 1 + rng.below(40); // change rate, pct
    let p = pick(rng, &PERIODS);
    let a = 5 + rng.below(95); // amount
    let q = 1 + rng.below(20); // quantity
    let rate = |sign: f64| sign * (0.002 + r as f64 * 0.0004);
    let amt = |sign: f64| sign * (0.002 + a as f64 * 0.0001);
    let qty = |sign: f64| sign * (0.002 + q as f64 * 0.0006);
    let v = |plain: &'static str, other: &'static str| if paraphrase { other } else { plain };
    let c = company;
    match rng.below(14) {
        0 => (
            "earnings_up".into(),
            format!(
                "{c} said its net profit {} {r} pct in the {p}.",
                v("rose", "advanced")
            ),
            rate(1.0),
        ),
        1 => (
            "earnings_down".into(),
            format!(
                "{c} said its net profit {} {r} pct in the {p}.",
                v("fell", "slipped")
            ),
            rate(-1.0),
        ),
        2 => (
            "revenue_up".into(),
            format!(
                "{c} reported that sales {} {r} pct in the {p}.",
                v("rose", "grew")
            ),
            rate(1.0),
        ),
        3 => (
            "revenue_down".into(),
            format!(
                "{c} reported that sales {} {r} pct in the {p}.",
                v("fell", "shrank")
            ),
            rate(-1.0),
        ),
        4 => (
            "dividend_raise".into(),
            format!(
                "{c} {} its dividend to {a} cts a share.",
                v("raised", "lifted")
            ),
            amt(1.0),
        ),
        5 => (
            "dividend_cut".into(),
            format!(
                "{c} {} its dividend to {a} cts a share.",
                v("cut", "trimmed")
            ),
            amt(-1.0),
        ),
        6 => (
            "guidance_up".into(),
            format!("{c} {} its forecast for the {p}.", v("raised", "lifted")),
            if p == "year" { 0.012 } else { 0.006 },
        ),
        7 => (
            "guidance_down".into(),
            format!("{c} {} its forecast for the {p}.", v("lowered", "trimmed")),
            if p == "year" { -0.012 } else { -0.006 },
        ),
        8 => (
            "layoffs".into(),
            format!("{c} will {} {q} thousand workers.", v("lay off", "shed")),
            qty(-1.0),
        ),
        9 => (
            "contract_win".into(),
            format!(
                "{c} {} worth {a} mln dlrs.",
                v("won a contract", "secured an order")
            ),
            amt(1.0),
        ),
        10 => (
            "buyback".into(),
            format!("{c} will {} {q} mln shares.", v("repurchase", "retire")),
            qty(1.0),
        ),
        11 => (
            "share_offering".into(),
            format!(
                "{c} announced {} of {q} mln shares.",
                v("a public offering", "a sale")
            ),
            qty(-1.0),
        ),
        12 => (
            "lawsuit".into(),
            format!(
                "{c} faces {} seeking {a} mln dlrs.",
                v("a lawsuit", "legal action")
            ),
            amt(-1.0),
        ),
        _ => (
            "executive_change".into(),
            format!("{c} said its chairman {}.", v("resigned", "quit")),
            0.0,
        ),
    }
}

/// Role words the dictionary's patterns list, and paraphrases they do not.
const ROLE_PARAPHRASES: [(&str, &str); 9] = [
    (" pct", " per cent"),
    (" cts a share", " cents per share"),
    (" mln dlrs", " million dollars"),
    (" mln shares", " million shares"),
    (" thousand workers", " thousand staff"),
    ("the first quarter", "the three months to March"),
    ("the second quarter", "the three months to June"),
    ("the third quarter", "the three months to September"),
    ("the year", "the twelve months"),
];

/// `sentence` with every listed role word replaced by its paraphrase.
fn paraphrase_roles(sentence: &str) -> String {
    ROLE_PARAPHRASES
        .iter()
        .fold(sentence.to_string(), |s, (from, to)| s.replace(from, to))
}

fn bar_from(open: f64, close: f64, noise: f64, volume: f64, rng: &mut Rng) -> Bar {
    let hi = open.max(close) * (normal(rng).abs() * noise * 0.5).exp();
    let lo = open.min(close) * (-normal(rng).abs() * noise * 0.5).exp();
    Bar {
        time: String::new(),
        open,
        high: hi,
        low: lo,
        close,
        volume,
    }
}

/// Weekday day numbers from 2020-01-06 (a Monday).
fn weekdays(n: usize) -> Vec<i64> {
    let d0 = time::days_from_civil(2020, 1, 6);
    (0..)
        .map(|k| d0 + k)
        .filter(|&d| time::weekday(d * time::DAY) < 5)
        .take(n)
        .collect()
}

/// Builds the stock market of `cfg`.
pub fn stock_market(cfg: &StockMarketConfig) -> Result<StockMarket> {
    if cfg.companies == 0 || cfg.companies > COMPANIES.len() || cfg.days < 2 {
        return Err(Error::InvalidConfig(format!(
            "synthetic stocks need 1..={} companies and ≥ 2 days",
            COMPANIES.len()
        )));
    }
    let mut rng = Rng::seed_from(cfg.seed);
    let days = weekdays(cfg.days);
    let bars_per_day = 8;
    let stamps: Vec<Minutes> = days
        .iter()
        .flat_map(|&d| (0..bars_per_day).map(move |h| d * time::DAY + (9 + h) * 60))
        .collect();
    // news first, then prices that react to it
    let mut news = Vec::new();
    for &d in &days {
        for _ in 0..cfg.news_per_day {
            let t = d * time::DAY + 8 * 60 + rng.below(12 * 60) as i64;
            let c = rng.below(cfg.companies);
            let name = COMPANIES[c];
            let mut sentences = Vec::new();
            let (mut paraphrased, mut roles_paraphrased, mut rival_event) = (false, false, false);
            let event = if rng.next_f64() < cfg.no_event {
                sentences.push(format!("{name} said it was reviewing its options."));
                if cfg.companies > 1 && rng.next_f64() < cfg.rival_events {
                    // a rival's event, in the dictionary's words, that does not move this stock
                    let r = (c + 1 + rng.below(cfg.companies - 1)) % cfg.companies;
                    let (_, s, _) = stock_event(&mut rng, COMPANIES[r], false);
                    sentences.push(format!("Separately, {s}"));
                    rival_event = true;
                }
                None
            } else {
                paraphrased = rng.next_f64() < cfg.paraphrase;
                let (ty, mut s, impact) = stock_event(&mut rng, name, paraphrased);
                if !paraphrased && rng.next_f64() < cfg.role_paraphrase {
                    let p = paraphrase_roles(&s);
                    roles_paraphrased = p != s;
                    s = p;
                }
                sentences.push(s);
                Some((ty, impact))
            };
            for _ in 0..1 + rng.below(2) {
                let s = pick(&mut rng, &DISTRACTORS).to_string();
                let at = rng.below(sentences.len() + 1);
                sentences.insert(at, s);
            }
            news.push(StockNews {
                time: t,
                company: c,
                text: sentences.join(" "),
                event,
                paraphrased,
                roles_paraphrased,
                rival_event,
            });
        }
    }
    news.sort_by_key(|n| (n.time, n.company));
    let mut series = Vec::with_capacity(cfg.companies);
    for (c, &company) in COMPANIES.iter().enumerate().take(cfg.companies) {
        // jumps at bar opens and pre-news drift per bar
        let mut jump = vec![0f64; stamps.len()];
        let mut drift = vec![0f64; stamps.len()];
        for n in news.iter().filter(|n| n.company == c) {
            let Some((_, impact)) = n.event else { continue };
            let j = stamps.partition_point(|&s| s < n.time);
            if j >= stamps.len() {
                continue;
            }
            if rng.next_f64() < cfg.informed && j >= 2 {
                jump[j] += impact / 2.0;
                // the two bars that finish before the news
                let last = stamps.partition_point(|&s| s + 60 <= n.time);
                if last >= 2 {
                    drift[last - 1] += impact / 4.0;
                    drift[last - 2] += impact / 4.0;
                } else {
                    jump[j] += impact / 2.0;
                }
            } else {
                jump[j] += impact;
            }
        }
        let mut price = 20.0 + 80.0 * rng.next_f64();
        let mut bars = Vec::with_capacity(stamps.len());
        for i in 0..stamps.len() {
            let overnight = i > 0 && stamps[i] - stamps[i - 1] > 60;
            let gap = if overnight {
                cfg.overnight_noise * normal(&mut rng)
            } else {
                0.0
            };
            let open = price * (jump[i] + gap).exp();
            let close = open * (drift[i] + cfg.noise * normal(&mut rng)).exp();
            let volume = 1000.0
                * (0.3 * normal(&mut rng)).exp()
                * (1.0 + 100.0 * (jump[i].abs() + drift[i].abs()));
            bars.push(bar_from(open, close, cfg.noise, volume, &mut rng));
            price = close;
        }
        series.push(PriceSeries::from_stamped(
            company,
            stamps.clone(),
            bars,
            Some(60),
        )?);
    }
    Ok(StockMarket {
        companies: COMPANIES[..cfg.companies]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        series,
        news,
    })
}

/// Configuration of the synthetic forex market.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForexMarketConfig {
    /// Trading days (24 hourly bars each).
    pub days: usize,
    /// News items per day.
    pub news_per_day: usize,
    /// Bars after its release before a relevant item starts to move the pair (news the
    /// market has not priced yet: what trade data cannot show).
    pub lag_bars: usize,
    /// Bars over which a relevant item's impact is spread.
    pub absorb_bars: usize,
    /// Per-bar log-price noise.
    pub noise: f64,
    /// Seed.
    pub seed: u64,
    /// Scheduled announcements per day (at fixed times from 12:30 UTC, 90 minutes apart): data
    /// releases and rate decisions whose text states the outcome against the consensus
    /// ("more than the 120 thousand expected", "unexpectedly raised"). Only the surprise moves
    /// the pair, so nothing in the price path before the release can tell its direction.
    #[serde(default = "default_announcements")]
    pub announcements_per_day: usize,
    /// Log-price impact of a full surprise.
    #[serde(default = "default_surprise_impact")]
    pub surprise_impact: f64,
}

fn default_announcements() -> usize {
    2
}

fn default_surprise_impact() -> f64 {
    0.004
}

impl Default for ForexMarketConfig {
    fn default() -> Self {
        Self {
            days: 150,
            news_per_day: 24,
            lag_bars: 4,
            absorb_bars: 8,
            noise: 0.0006,
            seed: 11,
            announcements_per_day: default_announcements(),
            surprise_impact: default_surprise_impact(),
        }
    }
}

/// Category names of the forex news.
pub const FOREX_CATEGORIES: [&str; 6] = [
    "central bank",
    "economy",
    "politics",
    "commodities",
    "equities",
    "sports",
];

/// One synthetic forex news item.
#[derive(Clone, Debug, PartialEq)]
pub struct ForexNews {
    /// Release time.
    pub time: Minutes,
    /// Index into [`FOREX_CATEGORIES`].
    pub category: usize,
    /// The text.
    pub text: String,
    /// Total log-price impact on the pair.
    pub impact: f64,
}

/// A synthetic forex market.
#[derive(Clone, Debug)]
pub struct ForexMarket {
    /// Hourly bars of the pair.
    pub series: PriceSeries,
    /// News in time order.
    pub news: Vec<ForexNews>,
}

fn forex_item(rng: &mut Rng) -> (usize, String, f64) {
    let x = 1 + rng.below(9);
    let up = rng.below(2) == 0;
    let (moved, dir) = if up { ("rose", 1.0) } else { ("fell", -1.0) };
    let (raised, rdir) = if up { ("raised", 1.0) } else { ("cut", -1.0) };
    let size = 0.001 + 0.0004 * x as f64;
    match rng.below(6) {
        0 => match rng.below(2) {
            // a higher euro rate lifts the pair, a higher dollar rate lowers it
            0 => (
                0,
                format!("The European Central Bank {raised} interest rates by {x}0 basis points."),
                rdir * size * 1.5,
            ),
            _ => (
                0,
                format!("The Federal Reserve {raised} interest rates by {x}0 basis points."),
                -rdir * size * 1.5,
            ),
        },
        1 => match rng.below(3) {
            0 => (
                1,
                format!("Euro zone industrial output {moved} {x} pct last month."),
                dir * size,
            ),
            1 => (
                1,
                format!("US payrolls {moved} by {x}0 thousand last month."),
                -dir * size,
            ),
            _ => (
                1,
                format!("German business confidence {moved} {x} points."),
                dir * size,
            ),
        },
        2 => (
            2,
            format!("Support for the governing party {moved} {x} points in a poll."),
            0.0,
        ),
        3 => (
            3,
            format!("Oil prices {moved} {x} pct as inventories changed."),
            0.0,
        ),
        4 => (
            4,
            format!("European shares {moved} {x} pct led by banks."),
            0.0,
        ),
        _ => (
            5,
            format!(
                "The home team {} {x} games in a row.",
                if up { "won" } else { "lost" }
            ),
            0.0,
        ),
    }
}

/// A scheduled announcement: `(category, text, impact)`. The outcome is stated against the
/// consensus; a data surprise moves the pair by `scale` (its sign by whose economy it is: euro
/// data up lifts EURUSD, US data up lowers it), an unexpected rate move by 1.5 × `scale`, an
/// outcome in line with expectations not at all.
fn announcement(rng: &mut Rng, scale: f64) -> (usize, String, f64) {
    // -1: below consensus, 0: in line, 1: above
    let surprise = rng.below(3) as i64 - 1;
    let sign = surprise as f64;
    if rng.below(3) == 0 {
        let (bank, euro) = if rng.below(2) == 0 {
            ("The European Central Bank", 1.0)
        } else {
            ("The Federal Reserve", -1.0)
        };
        let text = match surprise {
            1 => format!("{bank} unexpectedly raised interest rates by 25 basis points."),
            -1 => format!("{bank} unexpectedly cut interest rates by 25 basis points."),
            _ => format!("{bank} left interest rates unchanged, as expected."),
        };
        return (0, text, euro * sign * scale * 1.5);
    }
    let (what, unit, euro) = match rng.below(3) {
        0 => ("US payrolls rose by", " thousand", -1.0),
        1 => ("Euro zone retail sales rose", " pct", 1.0),
        _ => ("German factory orders rose", " pct", 1.0),
    };
    let expected = 1 + rng.below(20);
    let actual = (expected as i64 + surprise * (1 + rng.below(5) as i64)).max(0);
    let vs = match surprise {
        1 => format!("more than the {expected}{unit} expected"),
        -1 => format!("less than the {expected}{unit} expected"),
        _ => "in line with expectations".to_string(),
    };
    (
        1,
        format!("{what} {actual}{unit} last month, {vs}."),
        euro * sign * scale,
    )
}

/// Builds the forex market of `cfg`.
pub fn forex_market(cfg: &ForexMarketConfig) -> Result<ForexMarket> {
    if cfg.days < 2 || cfg.absorb_bars == 0 {
        return Err(Error::InvalidConfig(
            "synthetic forex needs ≥ 2 days and absorb_bars ≥ 1".into(),
        ));
    }
    let mut rng = Rng::seed_from(cfg.seed);
    let days = weekdays(cfg.days);
    let stamps: Vec<Minutes> = days
        .iter()
        .flat_map(|&d| (0..24).map(move |h| d * time::DAY + h * 60))
        .collect();
    let mut news = Vec::new();
    for &d in &days {
        for _ in 0..cfg.news_per_day {
            let (category, text, impact) = forex_item(&mut rng);
            news.push(ForexNews {
                time: d * time::DAY + rng.below(24 * 60) as i64,
                category,
                text,
                impact,
            });
        }
        for k in 0..cfg.announcements_per_day {
            let (category, text, impact) = announcement(&mut rng, cfg.surprise_impact);
            news.push(ForexNews {
                time: d * time::DAY + (12 * 60 + 30 + 90 * k as i64) % (24 * 60),
                category,
                text,
                impact,
            });
        }
    }
    news.sort_by_key(|n| n.time);
    let mut drift = vec![0f64; stamps.len() + cfg.lag_bars + cfg.absorb_bars];
    for n in &news {
        let j = stamps.partition_point(|&s| s < n.time);
        for k in 0..cfg.absorb_bars {
            drift[j + cfg.lag_bars + k] += n.impact / cfg.absorb_bars as f64;
        }
    }
    let mut price = 1.1;
    let mut bars = Vec::with_capacity(stamps.len());
    for &d in drift.iter().take(stamps.len()) {
        let open = price;
        let close = open * (d + cfg.noise * normal(&mut rng)).exp();
        let volume = 500.0 * (0.3 * normal(&mut rng)).exp();
        bars.push(bar_from(open, close, cfg.noise, volume, &mut rng));
        price = close;
    }
    Ok(ForexMarket {
        series: PriceSeries::from_stamped("EURUSD (synthetic)", stamps, bars, Some(60))?,
        news,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventDictionary;

    #[test]
    fn stock_events_are_found_by_the_dictionary_and_move_prices() {
        let m = stock_market(&StockMarketConfig {
            days: 30,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.series.len(), 8);
        assert!(m.news.windows(2).all(|w| w[0].time <= w[1].time));
        let d = EventDictionary::embedded();
        let mut hits = 0;
        let mut with_event = 0;
        let mut paraphrased = 0;
        let (mut rivals, mut rivals_found, mut roles) = (0, 0, 0);
        for n in &m.news {
            let x = d.extract(&n.text);
            if n.rival_event {
                // no event of its own, but the rival's is in the dictionary's words
                assert!(n.event.is_none());
                rivals += 1;
                rivals_found += usize::from(!x.events.is_empty());
            }
            roles += usize::from(n.roles_paraphrased);
            if let Some((ty, _)) = &n.event {
                let found = x.events.iter().any(|e| d.types[e.type_id].name == *ty);
                if n.paraphrased {
                    // paraphrases are what the dictionary misses
                    assert!(x.events.is_empty(), "{}", n.text);
                    paraphrased += 1;
                } else {
                    with_event += 1;
                    // the planted type is among the extracted ones; distractors add no event
                    hits += usize::from(found);
                }
            }
        }
        assert_eq!(hits, with_event);
        assert!(paraphrased > 0);
        assert!(
            rivals > 0 && rivals_found == rivals,
            "{rivals_found} of {rivals}"
        );
        assert!(roles > 0);
        // deterministic
        let again = stock_market(&StockMarketConfig {
            days: 30,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.news, m.news);
        assert!(
            stock_market(&StockMarketConfig {
                companies: 0,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn paraphrased_roles_keep_the_event_and_lose_arguments() {
        let d = EventDictionary::embedded();
        let plain = "Acme Widgets Corp said its net profit rose 12 pct in the first quarter.";
        let para = paraphrase_roles(plain);
        assert_eq!(
            para,
            "Acme Widgets Corp said its net profit rose 12 per cent in the three months to March."
        );
        let (a, b) = (d.extract(plain), d.extract(&para));
        assert_eq!(a.events.len(), 1);
        assert_eq!(b.events.len(), 1);
        assert_eq!(a.events[0].type_id, b.events[0].type_id);
        assert!(b.events[0].roles.len() < a.events[0].roles.len());
    }

    #[test]
    fn distractors_trigger_no_event() {
        let d = EventDictionary::embedded();
        for s in DISTRACTORS {
            assert!(
                d.extract(&format!("Acme Corp said so. {s}"))
                    .events
                    .is_empty(),
                "{s}"
            );
        }
    }

    #[test]
    fn forex_news_only_moves_through_relevant_categories() {
        let m = forex_market(&ForexMarketConfig {
            days: 10,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.series.len(), 240);
        // only central-bank and economy news move the pair (an announcement in line with
        // expectations does not)
        assert!(m.news.iter().all(|n| n.impact == 0.0 || n.category < 2));
        assert!(m.news.iter().any(|n| n.category == 0));
        // the scheduled announcements: two a day, at 12:30 and 14:00, their impact set by
        // the surprise the text states
        let ann: Vec<&ForexNews> = m
            .news
            .iter()
            .filter(|n| n.text.contains("expect"))
            .collect();
        assert_eq!(ann.len(), 2 * 10);
        for n in &ann {
            let minute = n.time.rem_euclid(time::DAY);
            assert!(minute == 12 * 60 + 30 || minute == 14 * 60, "{minute}");
            let up = n.text.contains("more than") || n.text.contains("unexpectedly raised");
            let down = n.text.contains("less than") || n.text.contains("unexpectedly cut");
            assert_eq!(n.impact == 0.0, !up && !down, "{}", n.text);
            if up || down {
                let euro = n.text.contains("Euro")
                    || n.text.contains("German")
                    || n.text.contains("European");
                let want = if up == euro { 1.0 } else { -1.0 };
                assert_eq!(n.impact.signum(), want, "{}", n.text);
            }
        }
    }
}
