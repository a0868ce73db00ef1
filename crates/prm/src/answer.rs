//! Final-answer extraction and comparison.
//!
//! GSM8K writes the final answer after `####`; Math-Shepherd solutions end with
//! `The answer is: X`; model outputs vary (`The answer is $1,200.`, `answer: 12 apples`). The
//! extractor looks, in order, for the last `####`, the last `answer is` / `answer:` (any case),
//! and otherwise the last number of the text. Two answers are equal when both hold a number and
//! the numbers agree (commas, currency signs, units and trailing periods ignored; `3/4` and
//! `0.75` agree), else when their trimmed lowercase texts agree.

/// The final answer written in `text`, cleaned (`None` when there is none).
pub fn extract_answer(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let tail = if let Some(i) = text.rfind("####") {
        &text[i + 4..]
    } else if let Some(i) = rfind_marker(&lower) {
        &text[i..]
    } else {
        return last_number(text).map(|(s, _)| s);
    };
    let tail = tail.trim_start_matches([':', ' ', '\t']);
    // Only the first line of what follows the marker.
    let line = tail.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return None;
    }
    match first_number(line) {
        Some((s, _)) => Some(s),
        None => Some(line.trim_end_matches(['.', ' ']).to_string()),
    }
}

/// Byte index just after the last "answer is" / "answer:" marker of a lowercased text.
fn rfind_marker(lower: &str) -> Option<usize> {
    let a = lower.rfind("answer is").map(|i| i + "answer is".len());
    let b = lower.rfind("answer:").map(|i| i + "answer:".len());
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// The numeric value of an answer string (`"1,200"`, `"$5."`, `"3/4"`, `"-2.50 dollars"`).
pub fn numeric_value(answer: &str) -> Option<f64> {
    first_number(answer).map(|(_, v)| v)
}

/// Whether two extracted answers agree (see the module docs).
pub fn answers_equal(a: &str, b: &str) -> bool {
    match (numeric_value(a), numeric_value(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
        _ => {
            let n = |s: &str| s.trim().trim_end_matches('.').trim().to_lowercase();
            !n(a).is_empty() && n(a) == n(b)
        }
    }
}

/// A key under which equal answers group together (self-consistency voting).
pub fn answer_key(answer: &str) -> String {
    match numeric_value(answer) {
        // Rounded so that 0.75 and 3/4 vote together.
        Some(v) => format!("{:.6}", v),
        None => answer.trim().trim_end_matches('.').to_lowercase(),
    }
}

fn scan_numbers(text: &str) -> Vec<(String, f64)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let neg = chars[i] == '-' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
        if !(chars[i].is_ascii_digit() || neg) {
            i += 1;
            continue;
        }
        if neg {
            i += 1;
        }
        let mut digits = String::new();
        if neg {
            digits.push('-');
        }
        // Integer part with thousands commas (a comma must be followed by 3 digits).
        while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_digit() {
                digits.push(c);
                i += 1;
            } else if c == ','
                && chars.len() >= i + 4
                && chars[i + 1..i + 4].iter().all(|d| d.is_ascii_digit())
            {
                i += 1;
            } else {
                break;
            }
        }
        if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
            digits.push('.');
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                digits.push(chars[i]);
                i += 1;
            }
        }
        let mut value = digits.parse::<f64>().ok();
        // A fraction a/b.
        if i + 1 < chars.len() && chars[i] == '/' && chars[i + 1].is_ascii_digit() {
            let mut den = String::new();
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_ascii_digit() {
                den.push(chars[j]);
                j += 1;
            }
            if let (Some(n), Ok(d)) = (value, den.parse::<f64>())
                && d != 0.0
            {
                value = Some(n / d);
                digits = format!("{digits}/{den}");
                i = j;
            }
        }
        if let Some(v) = value {
            out.push((digits, v));
        }
    }
    out
}

fn first_number(text: &str) -> Option<(String, f64)> {
    scan_numbers(text).into_iter().next()
}

fn last_number(text: &str) -> Option<(String, f64)> {
    scan_numbers(text).pop()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extracts_the_common_forms() {
        let cases = [
            ("blah\n#### 1,200", "1200"),
            ("Step 2: 3*4=12 ки\nThe answer is: 12 ки", "12"),
            ("So the answer is $1,250.50.", "1250.50"),
            ("The Answer Is 7 apples.", "7"),
            ("answer: -3", "-3"),
            ("she has 5 then 9 left", "9"),
            ("The answer is: 3/4", "3/4"),
        ];
        for (text, want) in cases {
            assert_eq!(extract_answer(text).as_deref(), Some(want), "{text}");
        }
        assert_eq!(extract_answer("no numbers here"), None);
        assert_eq!(extract_answer("The answer is:"), None);
    }

    #[test]
    fn equality_ignores_formatting() {
        assert!(answers_equal("1,200", "1200"));
        assert!(answers_equal("$5.", "5"));
        assert!(answers_equal("3/4", "0.75"));
        assert!(answers_equal("12 apples", "12.0"));
        assert!(!answers_equal("12", "13"));
        assert!(!answers_equal("", ""));
        assert!(answers_equal("Yes.", "yes"));
        assert_eq!(answer_key("3/4"), answer_key("0.75"));
    }

    proptest! {
        #[test]
        fn integers_round_trip_through_any_wrapper(n in -1_000_000i64..1_000_000, wrap in 0usize..4) {
            let body = match wrap {
                0 => format!("#### {n}"),
                1 => format!("The answer is: {n}"),
                2 => format!("so the answer is {n}."),
                _ => format!("Thus she pays {n} dollars"),
            };
            let got = extract_answer(&body);
            prop_assert!(got.is_some());
            prop_assert!(answers_equal(got.as_deref().unwrap_or(""), &n.to_string()));
        }
    }
}
