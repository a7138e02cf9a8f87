//! Depth grids: `1,2,5,10`, `1..100`, `1..100:5`, `log:1..10000:200`.

use crate::error::{Error, Result};

/// Parses a depth grid into sorted, distinct depths ≥ 1.
///
/// - a list `1,2,5,10`;
/// - a linear range `A..B` (inclusive) or `A..B:STEP`;
/// - a log grid `log:A..B:N`: N distinct integers from A to B (both included), as close to
///   geometric spacing as integers allow.
///
/// ```
/// use gradscope::sweep::grid::parse_depths;
/// assert_eq!(parse_depths("1..10:3").unwrap(), vec![1, 4, 7, 10]);
/// assert_eq!(parse_depths("log:1..1000:4").unwrap(), vec![1, 10, 100, 1000]);
/// ```
///
/// # Errors
/// Malformed text, a depth of 0, an empty grid, or more log points than integers in range.
pub fn parse_depths(spec: &str) -> Result<Vec<usize>> {
    let bad = |m: String| Error::arg("--depths", m);
    let num = |s: &str| -> Result<usize> { s.trim().parse::<usize>().map_err(|_| bad(format!("'{s}' is not a whole number (in '{spec}')"))) };
    let spec_t = spec.trim();
    let mut v: Vec<usize> = if let Some(rest) = spec_t.strip_prefix("log:") {
        let (range, n) = rest.split_once(':').ok_or_else(|| bad(format!("'{spec}': a log grid is log:A..B:N")))?;
        let (a, b) = range.split_once("..").ok_or_else(|| bad(format!("'{spec}': a log grid is log:A..B:N")))?;
        let (a, b, n) = (num(a)?, num(b)?, num(n)?);
        if a == 0 || b < a {
            return Err(bad(format!("'{spec}': need 1 ≤ A ≤ B")));
        }
        if n == 0 || n > b - a + 1 {
            return Err(bad(format!("'{spec}': {n} distinct depths do not fit in {a}..{b}")));
        }
        log_grid(a, b, n)
    } else if let Some((a, rest)) = spec_t.split_once("..") {
        let (b, step) = match rest.split_once(':') {
            Some((b, s)) => (num(b)?, num(s)?),
            None => (num(rest)?, 1),
        };
        let a = num(a)?;
        if step == 0 {
            return Err(bad(format!("'{spec}': the step must be ≥ 1")));
        }
        if b < a {
            return Err(bad(format!("'{spec}': the range is empty")));
        }
        (a..=b).step_by(step).collect()
    } else {
        spec_t.split(',').filter(|s| !s.trim().is_empty()).map(num).collect::<Result<_>>()?
    };
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return Err(bad(format!("'{spec}' holds no depth")));
    }
    if v[0] == 0 {
        return Err(bad("depth 0 has no weight layer; depths start at 1".into()));
    }
    Ok(v)
}

/// n distinct integers in [a, b], each the rounded geometric point or pushed just enough to
/// stay distinct (and to leave room for the rest).
fn log_grid(a: usize, b: usize, n: usize) -> Vec<usize> {
    if n == 1 {
        return vec![b];
    }
    let (la, lb) = ((a as f64).ln(), (b as f64).ln());
    let mut out: Vec<usize> = Vec::with_capacity(n);
    for i in 0..n {
        let t = (la + (lb - la) * i as f64 / (n - 1) as f64).exp().round() as usize;
        let lo = out.last().map_or(a, |&p| p + 1);
        let hi = b - (n - 1 - i);
        out.push(t.clamp(lo, hi));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids() {
        assert_eq!(parse_depths("5,1,2,2").unwrap(), vec![1, 2, 5]);
        assert_eq!(parse_depths("3..6").unwrap(), vec![3, 4, 5, 6]);
        let g = parse_depths("log:1..10000:200").unwrap();
        assert_eq!(g.len(), 200);
        assert_eq!((g[0], g[199]), (1, 10000));
        assert!(g.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(parse_depths("log:1..5:5").unwrap(), vec![1, 2, 3, 4, 5]);
        for bad in ["", "0,1", "0..3", "log:1..5:6", "3..1", "1..5:0", "a,b", "log:0..5:2", "log:1..5"] {
            assert!(parse_depths(bad).is_err(), "{bad} accepted");
        }
    }
}
