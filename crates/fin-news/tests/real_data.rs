//! The pipeline on the real registry data (`cargo xtask assets` fetches it): the Reuters-1987
//! crude articles through the extractor and labelled against WTI, and leakage checks on every
//! bar of the real price series.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use fin_news::events::EventDictionary;
use fin_news::time;
use fin_news::trade::{LabelConfig, LabelTarget, PriceSeries, WindowConfig, example, trade_window};
use textdata::assets::asset_file;
use textdata::readers::{read_ohlcv, read_reuters_dir};

fn a(name: &str, rel: &str) -> PathBuf {
    asset_file(name, rel).unwrap_or_else(|e| panic!("{e}"))
}

fn series(asset: &str, rel: &str, length: i64) -> PriceSeries {
    PriceSeries::from_bars(rel, read_ohlcv(&a(asset, rel)).unwrap(), Some(length)).unwrap()
}

#[test]
fn reuters_crude_articles_get_events_and_leakage_free_wti_labels() {
    let articles =
        read_reuters_dir(&a("reuters", "usr/lib/R/site-library/tm/texts/crude")).unwrap();
    let wti = series("indices", "arch/data/wti/wti.csv.gz", time::DAY)
        .with_session(9 * 60, 14 * 60 + 30)
        .unwrap();
    let dict = EventDictionary::embedded();
    let labels = LabelConfig {
        target: LabelTarget::NextOpen,
        neutral_band: 0.0,
    };
    let window = WindowConfig {
        steps: 5,
        bars_per_step: 1,
    };
    let mut with_events = 0;
    let mut price_cuts = 0;
    for art in &articles {
        let x = dict.extract(&format!("{}. {}", art.title, art.body));
        with_events += usize::from(!x.events.is_empty());
        price_cuts += x
            .events
            .iter()
            .filter(|e| dict.types[e.type_id].name == "price_cut")
            .count();
        let t = time::parse(&art.date).unwrap();
        let (w, l) = example(&wti, t, window, labels)
            .unwrap()
            .expect("every 1987 article has a window and a label");
        assert!(w.last_end <= l.start && wti.start(l.target_index) >= t);
    }
    // The posted-price cuts of 26 Feb - 2 Mar 1987 (Diamond Shamrock, Texaco Canada, Marathon, Unocal)
    assert!(price_cuts >= 4, "{price_cuts}");
    assert!(with_events >= 15, "{with_events} of {}", articles.len());
}

#[test]
fn real_series_windows_never_read_past_the_news() {
    let daily = WindowConfig {
        steps: 10,
        bars_per_step: 1,
    };
    let hourly = WindowConfig {
        steps: 12,
        bars_per_step: 2,
    };
    for (s, w) in [
        (
            series("prices", "backtesting/test/GOOG.csv", time::DAY),
            daily,
        ),
        (series("prices", "backtesting/test/EURUSD.csv", 60), hourly),
        (
            series("indices", "arch/data/sp500/sp500.csv.gz", time::DAY),
            daily,
        ),
    ] {
        // news at the middle of every bar: the bar itself is not finished and must not be read
        let mut n = 0;
        for i in (0..s.len()).step_by(7) {
            let t = s.start(i) + s.length / 2;
            if let Some(win) = trade_window(&s, t, w).unwrap() {
                assert!(win.last_end <= t, "{}: bar {i}", s.name);
                assert!(win.reference_index < i, "{}: bar {i}", s.name);
                n += 1;
            }
        }
        assert!(n > 100, "{}: {n}", s.name);
    }
}
