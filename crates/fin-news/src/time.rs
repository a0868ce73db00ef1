//! Time stamps as minutes since 1970-01-01 00:00 (no time zones: every series and every news
//! item of one experiment must be written in the same zone).

use crate::{Error, Result};

/// Minutes since 1970-01-01 00:00.
pub type Minutes = i64;

/// Minutes in a day.
pub const DAY: Minutes = 24 * 60;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day of the week, 0 = Monday.
pub fn weekday(t: Minutes) -> u32 {
    ((t.div_euclid(DAY) + 3).rem_euclid(7)) as u32
}

/// `YYYY-MM-DD HH:MM`.
pub fn format(t: Minutes) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(DAY));
    let r = t.rem_euclid(DAY);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", r / 60, r % 60)
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

fn num<T: std::str::FromStr>(s: &str, whole: &str) -> Result<T> {
    s.trim()
        .parse()
        .map_err(|_| Error::BadTime(whole.to_string()))
}

fn check(y: i64, m: u32, d: u32, whole: &str) -> Result<i64> {
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || civil_from_days(days_from_civil(y, m, d)) != (y, m, d)
    {
        return Err(Error::BadTime(whole.to_string()));
    }
    Ok(days_from_civil(y, m, d))
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fff]]` (also with `T`), `M/D/YYYY` and
/// Reuters' `DD-MON-YYYY HH:MM:SS.ff`. Seconds are dropped.
pub fn parse(s: &str) -> Result<Minutes> {
    let t = s.trim();
    let (date, clock) = match t.split_once([' ', 'T']) {
        Some((a, b)) => (a, Some(b.trim())),
        None => (t, None),
    };
    let day = if date.contains('/') {
        let p: Vec<&str> = date.split('/').collect();
        if p.len() != 3 {
            return Err(Error::BadTime(s.into()));
        }
        check(num(p[2], s)?, num(p[0], s)?, num(p[1], s)?, s)?
    } else {
        let p: Vec<&str> = date.split('-').collect();
        if p.len() != 3 {
            return Err(Error::BadTime(s.into()));
        }
        match MONTHS.iter().position(|m| m.eq_ignore_ascii_case(p[1])) {
            Some(mi) => check(num(p[2], s)?, mi as u32 + 1, num(p[0], s)?, s)?,
            None => check(num(p[0], s)?, num(p[1], s)?, num(p[2], s)?, s)?,
        }
    };
    let mins = match clock.filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => {
            let p: Vec<&str> = c.split(':').collect();
            if p.len() < 2 {
                return Err(Error::BadTime(s.into()));
            }
            let h: i64 = num(p[0], s)?;
            let mi: i64 = num(p[1], s)?;
            if !(0..24).contains(&h) || !(0..60).contains(&mi) {
                return Err(Error::BadTime(s.into()));
            }
            h * 60 + mi
        }
    };
    Ok(day * DAY + mins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates_and_formats() {
        let ok = |s: &str| parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("1970-01-01"), 0);
        assert_eq!(ok("1970-01-02 01:30"), DAY + 90);
        // 16 years and 4 leap days after 1970-01-01, plus one day.
        assert_eq!(ok("1986-01-02"), 5_845 * DAY);
        assert_eq!(ok("1/2/1986"), ok("1986-01-02"));
        // 1987-01-01 is day 6,209; February 26 is 56 days later.
        assert_eq!(ok("1987-02-26 17:00"), 6_265 * DAY + 17 * 60);
        assert_eq!(ok("26-FEB-1987 17:00:56.04"), ok("1987-02-26 17:00"));
        assert_eq!(
            parse("2017-04-19 09:00:00").map(format).ok(),
            Some("2017-04-19 09:00".into())
        );
        // 1987-02-26 was a Thursday
        assert_eq!(parse("1987-02-26").map(weekday).ok(), Some(3));
        for bad in [
            "",
            "2017-13-01",
            "2017-02-30",
            "x/y/z",
            "2017-01-01 25:00",
            "1-FOO-1987",
        ] {
            assert!(matches!(parse(bad), Err(Error::BadTime(_))), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn civil_round_trip(z in -100_000i64..100_000) {
            let (y, m, d) = civil_from_days(z);
            prop_assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
