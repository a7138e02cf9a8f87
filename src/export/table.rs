//! The readable per-layer table `probe` prints, values as mantissa × 10^exponent.

use std::fmt::Write;

use crate::stats::{LayerStatus, Report, sci};

/// Which layers to print: all of them up to `max_rows`, otherwise the first and last few
/// and evenly spaced ones between.
pub fn rows_to_show(depth: usize, max_rows: usize) -> Vec<usize> {
    if depth <= max_rows {
        return (1..=depth).collect();
    }
    let ends = 4.min(max_rows / 4);
    let mid = max_rows.saturating_sub(2 * ends).max(1);
    let mut v: Vec<usize> = (1..=ends).collect();
    for i in 0..mid {
        let l = ends + 1 + (i * (depth - 2 * ends)) / mid;
        v.push(l);
    }
    v.extend(depth + 1 - ends..=depth);
    v.dedup();
    v
}

/// Renders the table; `max_rows` = usize::MAX prints every layer.
pub fn render(r: &Report, max_rows: usize) -> String {
    let mut s = String::new();
    let heads = ["layer", "width", "grad_b_mean", "grad_b_rms", "grad_w_mean", "grad_w_rms", "weight_norm", "max_dsigma", "bound", "bound_tight", "q", "c"];
    let _ = writeln!(s, "{:>6} {:>6} {}", heads[0], heads[1], heads[2..].iter().map(|h| format!("{h:>12}")).collect::<String>());
    let depth = r.layers.len();
    let show = rows_to_show(depth, max_rows);
    let mut prev = 0;
    for l in show {
        if l > prev + 1 {
            let _ = writeln!(s, "{:>6}", "⋮");
        }
        prev = l;
        let st = &r.layers[l - 1];
        let mut line = format!("{:>6} {:>6} ", st.layer, st.width);
        for (_, v) in st.log_fields() {
            let _ = write!(line, "{:>12}", sci(v));
        }
        // The measured forward signal: q as 10^log10_q, c as a plain correlation.
        let sig = r.signal.get(l - 1).copied().unwrap_or(crate::stats::Signal::NAN);
        let _ = write!(line, "{:>12}{:>12}", sci(sig.log10_q), if sig.c.is_nan() { "nan".into() } else { format!("{:.4}", sig.c) });
        if st.status != LayerStatus::Ok {
            let _ = write!(line, "  {}", serde_json::to_value(st.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default());
        }
        let _ = writeln!(s, "{line}");
    }
    if prev < depth {
        let _ = writeln!(s, "{:>6}", "⋮");
    }
    s
}

/// The `--check` table: per layer and field, |Δ log10| between the two reports in decades,
/// with `✗` where it exceeds the tolerance.
pub fn render_check(c: &crate::check::Comparison, tol: &crate::check::Tolerance, max_rows: usize) -> String {
    let mut s = String::new();
    let heads = ["grad_b_mean", "grad_b_rms", "grad_w_mean", "grad_w_rms", "weight_norm", "max_dsigma", "bound", "bound_tight"];
    let fields = ["log10_grad_b_mean", "log10_grad_b_rms", "log10_grad_w_mean", "log10_grad_w_rms", "log10_weight_norm", "log10_max_dsigma", "log10_bound", "log10_bound_tight"];
    let _ = writeln!(s, "|Δlog10| (decades) per layer and field; ✗ = beyond tolerance");
    let _ = writeln!(s, "{:>6} {} {:>8}", "layer", heads.iter().map(|h| format!("{h:>12}")).collect::<String>(), "verdict");
    let depth = c.per_layer.len();
    let mut prev = 0;
    for l in rows_to_show(depth, max_rows) {
        if l > prev + 1 {
            let _ = writeln!(s, "{:>6}", "⋮");
        }
        prev = l;
        let mut ok = true;
        let mut line = format!("{l:>6} ");
        for (d, f) in c.per_layer[l - 1].iter().zip(fields) {
            let bad = *d > tol.allowed(f, l, depth);
            ok &= !bad;
            let _ = write!(line, "{:>11.2e}{}", d, if bad { "✗" } else { " " });
        }
        let _ = writeln!(s, "{line} {:>8}", if ok { "pass" } else { "FAIL" });
    }
    if prev < depth {
        let _ = writeln!(s, "{:>6}", "⋮");
    }
    s
}
