//! Fine-grained financial events and leakage-safe movement labels in your own code: extract
//! events and their roles from headlines with the crate's 32-type dictionary, tag them
//! (fine-grained BIO and coarse S/P/O), then build trade windows and next-open labels for the
//! news of a synthetic stock market — every window ends before its news, every label starts
//! after it — and measure the extractor's recall on news written with the dictionary's triggers
//! and on paraphrased news.
//!
//! `cargo run --release -p fin-news --example events_and_labels`

use fin_news::events::{EventDictionary, TagSet, coarse_tags};
use fin_news::synthetic::{StockMarketConfig, stock_market};
use fin_news::trade::{LabelConfig, LabelTarget, WindowConfig, example};

fn main() -> Result<(), fin_news::Error> {
    let dict = EventDictionary::embedded();
    let roles = dict.role_names();
    let (fine, coarse) = (dict.fine_tags(), TagSet::coarse());
    for text in [
        "Acme Widgets Corp agreed to acquire Borealis Mining Co for $2.1 billion.",
        "Granite Bank Corp cut its dividend by 30 percent.",
        "Shares were little changed in quiet trading.",
    ] {
        let x = dict.extract(text);
        println!("{text}");
        for e in &x.events {
            let words = |a: usize, b: usize| {
                x.tokens[a..b]
                    .iter()
                    .map(|t| t.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "  event {} (trigger '{}')",
                dict.types[e.type_id].name,
                words(e.trigger.0, e.trigger.1)
            );
            for &(r, a, b) in &e.roles {
                println!("    {}: {}", roles[r], words(a, b));
            }
        }
        let names = |set: &TagSet, ids: Vec<usize>| -> String {
            ids.iter()
                .map(|&t| set.names[t].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("  fine tags:   {}", names(&fine, dict.tag_ids(&x)));
        println!("  coarse tags: {}", names(&coarse, coarse_tags(&x)));
    }

    // A synthetic market: hourly bars for four companies, news with known event effects.
    let market = stock_market(&StockMarketConfig {
        companies: 4,
        days: 60,
        ..StockMarketConfig::default()
    })?;
    let window = WindowConfig {
        steps: 6,
        bars_per_step: 2,
    };
    let labels = LabelConfig {
        target: LabelTarget::NextOpen,
        neutral_band: 0.0,
    };
    let (mut up, mut down, mut leaks) = (0, 0, 0);
    // (news written with an event, of which the extractor found that type) per wording.
    let mut recall = [(0usize, 0usize); 2];
    for n in &market.news {
        let s = &market.series[n.company];
        if let Some((w, l)) = example(s, n.time, window, labels)? {
            if l.up {
                up += 1;
            } else {
                down += 1;
            }
            leaks += usize::from(w.last_end > n.time || l.start < n.time);
        }
        if let Some((kind, _)) = &n.event {
            let found = dict
                .extract(&n.text)
                .events
                .iter()
                .any(|e| &dict.types[e.type_id].name == kind);
            let r = &mut recall[usize::from(n.paraphrased)];
            r.0 += 1;
            r.1 += usize::from(found);
        }
    }
    println!(
        "\n{} news items: {up} up and {down} down labels, {leaks} windows or labels that cross \
         their news time",
        market.news.len()
    );
    for (name, (n, hit)) in ["dictionary wording", "paraphrased"].iter().zip(recall) {
        println!(
            "extractor recall, {name}: {hit}/{n} = {:.2}",
            hit as f64 / n.max(1) as f64
        );
    }
    Ok(())
}
