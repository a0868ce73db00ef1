//! Readers for the real data sets of `shared/assets.md` and `shared/data`.
//!
//! Every reader takes a path (nothing is hard-coded), reads deterministically, and answers
//! malformed input with [`Error::Parse`] naming the file and line — never a panic.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

fn parse_err(path: &Path, line: usize, reason: impl Into<String>) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Reads a text file, transparently gunzipping `*.gz` (feature `gzip`; without it a `*.gz` file is
/// a parse error that names the feature); invalid UTF-8 is an error with a line.
pub fn read_text(path: &Path) -> Result<String> {
    let mut bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        bytes = gunzip(path, &bytes)?;
    }
    String::from_utf8(bytes).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        parse_err(path, line, "invalid UTF-8")
    })
}

#[cfg(feature = "gzip")]
fn gunzip(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| parse_err(path, 0, format!("gzip: {e}")))?;
    Ok(out)
}

#[cfg(not(feature = "gzip"))]
fn gunzip(path: &Path, _bytes: &[u8]) -> Result<Vec<u8>> {
    Err(parse_err(
        path,
        0,
        "reading *.gz needs textdata's `gzip` feature",
    ))
}

/// A text with a class label.
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledText {
    /// The text.
    pub text: String,
    /// Class index.
    pub label: usize,
}

/// The SST-2 stand-in: `movieReviewSnippets_GroundTruth.txt` (id, mean rating −4..4, sentence;
/// tab-separated). Label 1 for a positive mean rating, 0 for a negative one; zero ratings are
/// dropped, as binary SST drops neutral sentences.
pub fn read_movie_snippets(path: &Path) -> Result<Vec<LabeledText>> {
    Ok(read_movie_snippets_rated(path)?
        .into_iter()
        .map(|(t, _)| t)
        .collect())
}

/// [`read_movie_snippets`] with each sentence's mean rating (−4…4, never 0).
pub fn read_movie_snippets_rated(path: &Path) -> Result<Vec<(LabeledText, f64)>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (_id, rating, sentence) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => {
                return Err(parse_err(
                    path,
                    i + 1,
                    "expected id<TAB>rating<TAB>sentence",
                ));
            }
        };
        let r: f64 = rating
            .trim()
            .parse()
            .map_err(|_| parse_err(path, i + 1, format!("rating '{rating}' is not a number")))?;
        if r != 0.0 {
            out.push((
                LabeledText {
                    text: sentence.trim().to_string(),
                    label: usize::from(r > 0.0),
                },
                r,
            ));
        }
    }
    Ok(out)
}

/// One BBC News article.
#[derive(Clone, Debug, PartialEq)]
pub struct NewsArticle {
    /// Topic (the folder name).
    pub topic: String,
    /// Index of the topic among the sorted topic names.
    pub label: usize,
    /// First line.
    pub title: String,
    /// The rest.
    pub body: String,
}

/// BBC News (`bbcnews/data/<topic>/NNN.txt`, first line the headline). Returns the articles in
/// sorted path order and the sorted topic names (the label order).
pub fn read_bbc(dir: &Path) -> Result<(Vec<NewsArticle>, Vec<String>)> {
    let mut topics: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    topics.sort();
    if topics.is_empty() {
        return Err(Error::EmptyCorpus {
            dir: dir.to_path_buf(),
            ext: "txt (in topic folders)".into(),
        });
    }
    let mut out = Vec::new();
    for (label, topic) in topics.iter().enumerate() {
        for doc in crate::read_text_dir(&dir.join(topic), "txt")? {
            let text = doc.text.replace('\r', "");
            let (title, body) = text.split_once('\n').unwrap_or((&text, ""));
            out.push(NewsArticle {
                topic: topic.clone(),
                label,
                title: title.trim().to_string(),
                body: body.trim().to_string(),
            });
        }
    }
    Ok((out, topics))
}

/// One GSM8K problem.
#[derive(Clone, Debug, PartialEq)]
pub struct MathProblem {
    /// The question.
    pub question: String,
    /// The reference solution's steps (lines before `#### answer`), calculator annotations
    /// `<<…>>` removed.
    pub steps: Vec<String>,
    /// The final answer after `####`, commas removed.
    pub answer: String,
}

#[derive(Deserialize)]
struct Gsm8kLine {
    question: String,
    answer: String,
}

/// Drops GSM8K's `<<expr=value>>` calculator annotations from a reasoning line.
pub fn strip_calculator(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<<") {
        out.push_str(&rest[..i]);
        match rest[i..].find(">>") {
            Some(j) => rest = &rest[i + j + 2..],
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// GSM8K JSONL (`{"question": …, "answer": "… #### 18"}` per line).
pub fn read_gsm8k(path: &Path) -> Result<Vec<MathProblem>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Gsm8kLine =
            serde_json::from_str(line).map_err(|e| parse_err(path, i + 1, e.to_string()))?;
        let (sol, ans) = l
            .answer
            .rsplit_once("####")
            .ok_or_else(|| parse_err(path, i + 1, "answer has no '#### <final answer>'"))?;
        out.push(MathProblem {
            question: l.question.trim().to_string(),
            steps: sol
                .lines()
                .map(|s| strip_calculator(s).trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            answer: ans.trim().replace(',', ""),
        });
    }
    Ok(out)
}

/// One Reuters-21578 article.
#[derive(Clone, Debug, PartialEq)]
pub struct ReutersArticle {
    /// The file it came from.
    pub path: PathBuf,
    /// `<DATE>` as written (`26-FEB-1987 17:00:56.04`).
    pub date: String,
    /// The date as `(year, month, day)`.
    pub ymd: (i32, u32, u32),
    /// `<TOPICS>` entries.
    pub topics: Vec<String>,
    /// `<TITLE>`.
    pub title: String,
    /// `<BODY>` (entities `&lt;` `&gt;` `&amp;` decoded).
    pub body: String,
}

fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let i = s.find(&open)? + open.len();
    let j = s[i..].find(&close)? + i;
    Some(&s[i..j])
}

fn decode_entities(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#3;", "")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn month(m: &str) -> Option<u32> {
    const M: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    M.iter()
        .position(|x| x.eq_ignore_ascii_case(m))
        .map(|i| i as u32 + 1)
}

/// A Reuters-21578 article in the XML form of the `r-cran-tm` package (one `<REUTERS>` per file).
pub fn read_reuters_xml(path: &Path) -> Result<ReutersArticle> {
    let s = read_text(path)?;
    let date = tag(&s, "DATE")
        .ok_or_else(|| parse_err(path, 0, "no <DATE>"))?
        .trim()
        .to_string();
    let day_part = date.split_whitespace().next().unwrap_or("");
    let mut dmy = day_part.split('-');
    let ymd = match (dmy.next(), dmy.next(), dmy.next()) {
        (Some(d), Some(m), Some(y)) => match (d.parse(), month(m), y.parse()) {
            (Ok(d), Some(m), Ok(y)) => (y, m, d),
            _ => return Err(parse_err(path, 0, format!("bad date '{date}'"))),
        },
        _ => return Err(parse_err(path, 0, format!("bad date '{date}'"))),
    };
    let topics = tag(&s, "TOPICS")
        .map(|t| {
            t.split("<D>")
                .skip(1)
                .filter_map(|x| x.split("</D>").next())
                .map(|x| x.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    Ok(ReutersArticle {
        path: path.to_path_buf(),
        date,
        ymd,
        topics,
        title: tag(&s, "TITLE")
            .map(decode_entities)
            .unwrap_or_default()
            .trim()
            .to_string(),
        body: tag(&s, "BODY")
            .map(decode_entities)
            .unwrap_or_default()
            .trim()
            .to_string(),
    })
}

/// Every `*.xml` article under `dir`, in path order.
pub fn read_reuters_dir(dir: &Path) -> Result<Vec<ReutersArticle>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    files.iter().map(|p| read_reuters_xml(p)).collect()
}

/// One price bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The time stamp as written.
    pub time: String,
    /// Open.
    pub open: f64,
    /// High.
    pub high: f64,
    /// Low.
    pub low: f64,
    /// Close.
    pub close: f64,
    /// Volume (0 when the file has none).
    pub volume: f64,
}

/// OHLCV CSV with a header naming `Open, High, Low, Close` (and optionally `Volume`); the first
/// column is the time. Single-series files (`Date,DCOILWTICO`) give bars whose four prices are
/// that value. `*.csv.gz` is gunzipped. Empty values (`.` or blank, as FRED writes holidays)
/// are skipped.
pub fn read_ohlcv(path: &Path) -> Result<Vec<Bar>> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate();
    let (_, header) = lines
        .next()
        .ok_or_else(|| parse_err(path, 1, "empty file"))?;
    let cols: Vec<String> = header
        .trim_end_matches('\r')
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let find = |n: &str| cols.iter().position(|c| c == n);
    let ohlc = match (find("open"), find("high"), find("low"), find("close")) {
        (Some(o), Some(h), Some(l), Some(c)) => Some([o, h, l, c]),
        _ if cols.len() == 2 => None,
        _ => {
            return Err(parse_err(
                path,
                1,
                format!("header {header:?} names no Open/High/Low/Close"),
            ));
        }
    };
    let v = find("volume");
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != cols.len() {
            return Err(parse_err(
                path,
                i + 1,
                format!("{} fields, the header has {}", f.len(), cols.len()),
            ));
        }
        let num = |j: usize| -> Result<Option<f64>> {
            let s = f[j].trim();
            if s.is_empty() || s == "." {
                return Ok(None);
            }
            s.parse::<f64>()
                .map(Some)
                .map_err(|_| parse_err(path, i + 1, format!("'{s}' is not a number")))
        };
        let bar = match ohlc {
            None => num(1)?.map(|x| Bar {
                time: f[0].to_string(),
                open: x,
                high: x,
                low: x,
                close: x,
                volume: 0.0,
            }),
            Some([o, h, l, c]) => match (num(o)?, num(h)?, num(l)?, num(c)?) {
                (Some(o), Some(h), Some(l), Some(c)) => Some(Bar {
                    time: f[0].to_string(),
                    open: o,
                    high: h,
                    low: l,
                    close: c,
                    volume: match v {
                        Some(j) => num(j)?.unwrap_or(0.0),
                        None => 0.0,
                    },
                }),
                _ => None,
            },
        };
        out.extend(bar);
    }
    Ok(out)
}

/// One line of the Cilin thesaurus: a code such as `Aa01A01`, its relation marker (`=`
/// synonyms, `#` related, `@` a single word) and its words.
#[derive(Clone, Debug, PartialEq)]
pub struct CilinEntry {
    /// Eight-character code without the marker, e.g. `Aa01A01`.
    pub code: String,
    /// `=`, `#` or `@`.
    pub marker: char,
    /// Words.
    pub words: Vec<String>,
}

/// HIT Tongyici Cilin (extended), `cilin_ex.txt`.
pub fn read_cilin(path: &Path) -> Result<Vec<CilinEntry>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r').trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let head = it.next().unwrap_or("");
        let marker = head.chars().last().filter(|c| matches!(c, '=' | '#' | '@'));
        match (marker, head.len()) {
            (Some(m), 8) => out.push(CilinEntry {
                code: head[..7].to_string(),
                marker: m,
                words: it.map(str::to_string).collect(),
            }),
            _ => return Err(parse_err(path, i + 1, format!("bad code '{head}'"))),
        }
    }
    Ok(out)
}

/// The passages of a `fortune` file (`%` lines separate them), ANSI colour escapes removed.
pub fn read_fortunes(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let clean = strip_ansi(&text);
    Ok(clean
        .split("\n%\n")
        .map(|p| {
            p.trim_matches(|c: char| c == '%' || c.is_whitespace())
                .to_string()
        })
        .filter(|p| !p.is_empty())
        .collect())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, s: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, s).unwrap();
        p
    }

    #[test]
    fn movie_snippets_binarise_by_sign_and_drop_zeros() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "m.txt",
            "1\t2.5\tgood film\r\n2\t-1\tbad\r\n3\t0\tmeh\r\n",
        );
        let v = read_movie_snippets(&p).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].label, v[1].label), (1, 0));
        let p = write(d.path(), "b.txt", "1\tx\tgood\n");
        match read_movie_snippets(&p) {
            Err(Error::Parse { line, .. }) => assert_eq!(line, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gsm8k_splits_steps_and_final_answer() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "g.jsonl",
            r#"{"question": "Q?", "answer": "She has 2+3=<<2+3=5>>5.\nThen 5*2=<<5*2=10>>10.\n#### 1,010"}
{"question": "bad", "answer": "no marker"}
"#,
        );
        match read_gsm8k(&p) {
            Err(Error::Parse { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let p = write(d.path(), "ok.jsonl", text.lines().next().unwrap());
        let v = read_gsm8k(&p).unwrap();
        assert_eq!(v[0].steps, vec!["She has 2+3=5.", "Then 5*2=10."]);
        assert_eq!(v[0].answer, "1010");
    }

    #[test]
    fn ohlcv_reads_both_layouts_and_reports_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "a.csv",
            ",Open,High,Low,Close,Volume\n2004-08-19,100,104,95,100.3,22\n",
        );
        let v = read_ohlcv(&p).unwrap();
        assert_eq!(v[0].close, 100.3);
        let p = write(
            d.path(),
            "w.csv",
            "Date,DCOILWTICO\n1/2/1986,25.56\n1/3/1986,.\n",
        );
        assert_eq!(read_ohlcv(&p).unwrap().len(), 1);
        let p = write(d.path(), "bad.csv", ",Open,High,Low,Close\nx,1,2,3\n");
        match read_ohlcv(&p) {
            Err(Error::Parse { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cilin_and_fortunes_parse() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "c.txt",
            "Aa01A01= 人 士 人物\r\nAa01A02# 人类\r\n",
        );
        let v = read_cilin(&p).unwrap();
        assert_eq!(v[0].code, "Aa01A01");
        assert_eq!(v[0].words, vec!["人", "士", "人物"]);
        assert_eq!(v[1].marker, '#');
        let p = write(d.path(), "f", "\u{1b}[31m红\u{1b}[0m色\n%\n第二\n%\n");
        assert_eq!(read_fortunes(&p).unwrap(), vec!["红色", "第二"]);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.txt");
        std::fs::write(&p, b"ok\nbad \xff\n").unwrap();
        match read_text(&p) {
            Err(Error::Parse { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
    }
}
