//! FormBERT in your own code: derive word-formation classes from the parts of speech of a
//! word's characters (a jieba-format lexicon), then train a gloss-matching FormBERT (formation
//! embedding on the pooled output, formation predictor over the embedding layer, joint loss) on a
//! few context–definition pairs and read its match probabilities with gold and with predicted
//! formations. The character BERT here is small and fresh; the `wsd-formbert` experiment
//! pretrains one with masked LM on real Chinese text.
//!
//! `cargo run --release -p wsd-formbert --example formation_wsd`

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use plm::bert::BertConfig;
use wsd_formbert::chartok::CharVocab;
use wsd_formbert::data::PairRow;
use wsd_formbert::formation::{MorphemeLexicon, derive_formation, formation_name};
use wsd_formbert::model::{FormBertConfig, FormationSource, PairBatch};

/// Single-character entries in jieba's `word freq pos` format.
const LEXICON: &str = "开 9000 v\n车 8000 n\n大 9900 a\n门 7000 n\n打 9000 v\n球 6000 n\n\
                       白 8000 a\n菜 7000 n\n";

fn main() -> Result<(), wsd_formbert::Error> {
    let lex = MorphemeLexicon::from_jieba(LEXICON)?;
    let no_cilin = |_: char| None;
    let words = ["开车", "大门", "打球", "白菜"];
    let formations: Vec<usize> = words
        .iter()
        .map(|w| derive_formation(w, &lex, &no_cilin))
        .collect();
    for (w, f) in words.iter().zip(&formations) {
        println!("{w}: formation {} ({f})", formation_name(*f).unwrap_or("?"));
    }

    // Two senses of each word; a context matches the definition of the sense it uses.
    let senses = [
        ("他每天开车上班", "驾驶汽车", "她开车门下来了", "打开车门"),
        (
            "学校的大门很高",
            "建筑物的正门",
            "他是大门派的弟子",
            "大的门派",
        ),
        ("我们下午去打球", "玩球类运动", "他把球打出了界", "击打球体"),
        (
            "妈妈买了一棵白菜",
            "一种蔬菜",
            "桌上只有白菜汤",
            "白菜做的菜",
        ),
    ];
    let mut rows = Vec::new();
    for ((c1, d1, c2, d2), &f) in senses.iter().zip(&formations) {
        for (ctx, right, wrong) in [(c1, d1, d2), (c2, d2, d1)] {
            for (def, label) in [(right, 1), (wrong, 0)] {
                rows.push(PairRow {
                    context: ctx.to_string(),
                    definition: def.to_string(),
                    label,
                    formation: f,
                });
            }
        }
    }
    let texts: Vec<&str> = rows
        .iter()
        .flat_map(|r| [r.context.as_str(), r.definition.as_str()])
        .collect();
    let vocab = CharVocab::build(texts, 1, 1000);

    let device = Device::flex().autodiff();
    device.seed(0);
    let bert = BertConfig::new(vocab.len(), 32, 2, 4, 64)
        .with_max_position_embeddings(64)
        .with_with_pooler(true)
        .init(&device)?;
    let mut model = FormBertConfig::new()
        .with_dropout(0.0)
        .with_max_len(32)
        .init(bert, &device)?;
    let refs: Vec<&PairRow> = rows.iter().collect();
    let batch = PairBatch::new(&refs, &vocab, 32, &device)?;
    let mut optim = AdamWConfig::new().init();
    for step in 0..=150 {
        let (loss, sense, formation) = model.loss(&batch)?;
        if step % 50 == 0 {
            println!("step {step:>3}: sense loss {sense:.3}, formation loss {formation:.3}");
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }

    let (gold, _) = model.predict(&batch, FormationSource::Gold)?;
    let (pred, predicted_formations) = model.predict(&batch, FormationSource::Predicted)?;
    println!("\nthe training pairs (the interface, not generalisation):");
    println!("context | definition | label | P(match) gold formation | predicted formation");
    for (i, r) in rows.iter().enumerate() {
        let f = predicted_formations.as_ref().map_or(-1, |v| v[i]);
        println!(
            "{} | {} | {} | {:.2} | {:.2} ({})",
            r.context,
            r.definition,
            r.label,
            gold[i],
            pred[i],
            formation_name(f as usize).unwrap_or("?")
        );
    }
    Ok(())
}
