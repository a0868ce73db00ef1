//! Small generated data sets: the offline stand-ins that let experiments run without assets.

use crate::readers::LabeledText;

/// `n` short movie-review sentences built from templates, label 1 positive and 0 negative (the
/// offline stand-in for the SST snippets). `below(k)` draws uniformly from `0..k` (pass the
/// trainer's RNG, so the set follows the run's seed).
pub fn templated_reviews(n: usize, mut below: impl FnMut(usize) -> usize) -> Vec<LabeledText> {
    const SUBJECTS: [&str; 8] = [
        "the film",
        "the plot",
        "the acting",
        "this movie",
        "the script",
        "the ending",
        "the music",
        "the cast",
    ];
    const POSITIVE: [&str; 8] = [
        "wonderful",
        "moving",
        "brilliant",
        "funny",
        "charming",
        "gripping",
        "beautiful",
        "clever",
    ];
    const NEGATIVE: [&str; 8] = [
        "boring",
        "dull",
        "clumsy",
        "tedious",
        "awful",
        "predictable",
        "messy",
        "lifeless",
    ];
    (0..n)
        .map(|_| {
            let label = below(2);
            let words = if label == 1 { &POSITIVE } else { &NEGATIVE };
            let s = SUBJECTS[below(SUBJECTS.len())];
            let (a, b) = (words[below(words.len())], words[below(words.len())]);
            let text = match below(4) {
                0 => format!("{s} is {a}"),
                1 => format!("{s} was {a} and {b}"),
                2 => format!("i found {s} {a}"),
                _ => format!("honestly, {s} felt {a}"),
            };
            LabeledText { text, label }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_labels_appear_and_words_match_them() {
        let mut x = 7usize;
        let v = templated_reviews(200, |k| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % k
        });
        assert_eq!(v.len(), 200);
        let pos = v.iter().filter(|r| r.label == 1).count();
        assert!(pos > 50 && pos < 150);
        assert!(
            v.iter()
                .filter(|r| r.label == 0)
                .all(|r| !r.text.contains("wonderful"))
        );
    }
}
