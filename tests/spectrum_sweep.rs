//! `sweep --spectrum K`: every (configuration, depth) row equals `gradscope spectrum` at that
//! depth, `spectra.npy` holds the same values, merged shards equal one run, and bad
//! requests are refused with exit code 2 before a file is written.

use std::path::Path;
use std::process::{Command, Output};

fn gradscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let o = gradscope(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// summary.csv as (header, rows).
fn csv(p: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = read(p);
    let mut lines = text.lines();
    let head = lines.next().unwrap().split(',').map(String::from).collect();
    (head, lines.map(|l| l.split(',').map(String::from).collect()).collect())
}

const SPECTRUM_COLUMNS: [&str; 5] = ["spectrum_log10_top", "spectrum_log10_median", "spectrum_log10_bottom_nonzero", "spectrum_var_over_mean2", "spectrum_var_over_mean2_predicted"];

#[test]
fn each_sweep_row_equals_the_spectrum_command_at_its_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("s");
    // tanh with gaussian and orthogonal weights at the critical point, and relu with He
    // init (dead units: exact zero singular values), 2 examples of a batch of 3.
    ok(&["sweep", "-o", d.to_str().unwrap(), "--widths", "12", "--activations", "tanh,relu", "--inits", "gaussian,orthogonal,he", "--sigma-w2", "1.761", "--sigma-b2", "0.05", "--depths", "2,5,11", "--batch", "3", "--seeds", "4", "--spectrum", "2", "-q"]);
    let (head, rows) = csv(&d.join("summary.csv"));
    let col = |n: &str| head.iter().position(|h| h == n).unwrap_or_else(|| panic!("no column {n}"));
    assert_eq!(rows.len(), 2 * 3 * 3);
    let spectra: ndarray::Array3<f64> = ndarray_npy::read_npy(d.join("spectra.npy")).unwrap();
    assert_eq!(spectra.shape(), &[rows.len(), 2, 12]);
    let mut compared = 0;
    for (i, row) in rows.iter().enumerate() {
        let (act, init, depth) = (&row[col("activation")], &row[col("init")], &row[col("depth")]);
        let out = tmp.path().join(format!("{act}-{init}-{depth}.json"));
        let mut args = vec!["spectrum", "--backend", "cpu", "-a", act, "--init", init, "--width", "12", "--depth", depth, "--sigma-b2", "0.05", "--batch", "3", "--examples", "2", "--seed", "4", "-o", out.to_str().unwrap()];
        if init != "he" {
            args.extend(["--sigma-w2", "1.761"]);
        }
        ok(&args);
        let v: serde_json::Value = serde_json::from_str(&read(&out)).unwrap();
        let ex = v["examples"].as_array().unwrap();
        for (column, key) in [("spectrum_log10_top", "log10_top"), ("spectrum_log10_median", "log10_median"), ("spectrum_log10_bottom_nonzero", "log10_bottom_nonzero"), ("spectrum_var_over_mean2", "var_over_mean2")] {
            // null: relu's median is an exact zero (−∞) where half the units or more are dead.
            let want = ex.iter().map(|e| e["summary"][key].as_f64().unwrap_or(f64::NEG_INFINITY)).sum::<f64>() / ex.len() as f64;
            let got: f64 = row[col(column)].parse().unwrap();
            assert!(got == want || (got - want).abs() <= 1e-12 * want.abs().max(1.0), "{act} {init} depth {depth} {column}: sweep {got} vs spectrum {want}");
            compared += 1;
        }
        // relu with σ_b² > 0 has no fixed point q*: no prediction (NaN in the sweep).
        let got: f64 = row[col("spectrum_var_over_mean2_predicted")].parse().unwrap();
        match v["prediction"]["var_over_mean2"].as_f64() {
            Some(want) => assert!((got - want).abs() <= 1e-12 * want.abs(), "{act} {init} depth {depth}: predicted {got} vs {want}"),
            None => assert!(got.is_nan() && v["prediction_unavailable"].is_string(), "{act} {init} depth {depth}: predicted {got} where spectrum has none"),
        }
        for (k, e) in ex.iter().enumerate() {
            for (j, s) in e["log10_singular_values"].as_array().unwrap().iter().enumerate() {
                let got = spectra[[i, k, j]];
                match s.as_f64() {
                    Some(w) => assert!((got - w).abs() <= 1e-12 * w.abs().max(1.0), "{act} {init} depth {depth} example {k} s_{}: {got} vs {w}", j + 1),
                    None => assert_eq!(got, f64::NEG_INFINITY, "an exact zero is −inf in spectra.npy"),
                }
            }
        }
    }
    assert_eq!(compared, 4 * rows.len());
    // relu's dead units are in the arrays as exact zeros.
    assert!(spectra.iter().any(|&v| v == f64::NEG_INFINITY));
}

#[test]
fn spectrum_sweeps_merge_and_plain_sweeps_keep_their_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = ["--widths", "8,10", "--activations", "tanh", "--sigma-w2", "1,2", "--depths", "1,3,6", "--batch", "2", "--spectrum", "-q"];
    let whole = tmp.path().join("whole");
    let mut args = vec!["sweep", "-o", whole.to_str().unwrap()];
    args.extend(grid);
    ok(&args);
    let shards: Vec<_> = (1..=3).map(|k| tmp.path().join(format!("s{k}"))).collect();
    for (k, s) in shards.iter().enumerate() {
        let shard = format!("{}/3", k + 1);
        let mut args = vec!["sweep", "-o", s.to_str().unwrap(), "--shard", &shard];
        args.extend(grid);
        ok(&args);
    }
    let merged = tmp.path().join("merged");
    let mut args = vec!["merge", "-o", merged.to_str().unwrap()];
    args.extend(shards.iter().map(|s| s.to_str().unwrap()));
    ok(&args);
    for f in ["summary.csv", "summary.npy", "spectra.npy"] {
        assert_eq!(std::fs::read(merged.join(f)).unwrap(), std::fs::read(whole.join(f)).unwrap(), "{f} differs");
    }
    // `--spectrum` alone takes one example; widths 8 and 10 pad the narrower with NaN.
    let a: ndarray::Array3<f64> = ndarray_npy::read_npy(whole.join("spectra.npy")).unwrap();
    assert_eq!(a.shape(), &[12, 1, 10]);
    let (head, rows) = csv(&whole.join("summary.csv"));
    let w = head.iter().position(|h| h == "width").unwrap();
    for (i, r) in rows.iter().enumerate() {
        let n: usize = r[w].parse().unwrap();
        assert!(a.slice(ndarray::s![i, 0, ..n]).iter().all(|v| v.is_finite()));
        assert!(a.slice(ndarray::s![i, 0, n..]).iter().all(|v| v.is_nan()));
    }
    // A sweep without --spectrum writes neither the columns nor the array, and its
    // meta.json does not mention the option.
    let plain = tmp.path().join("plain");
    ok(&["sweep", "-o", plain.to_str().unwrap(), "--widths", "8", "--depths", "1,3", "-q"]);
    let (head, _) = csv(&plain.join("summary.csv"));
    assert!(SPECTRUM_COLUMNS.iter().all(|c| !head.iter().any(|h| h == c)));
    assert!(!plain.join("spectra.npy").exists());
    assert!(!read(&plain.join("meta.json")).contains("spectrum"));
    // Resuming a plain sweep with --spectrum is another configuration.
    let o = gradscope(&["sweep", "-o", plain.to_str().unwrap(), "--widths", "8", "--depths", "1,3", "--spectrum", "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("spectrum"));
}

#[test]
fn bad_spectrum_requests_exit_2_before_any_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (extra, says) in [
        (vec!["--spectrum", "0"], "--spectrum"),
        (vec!["--spectrum", "5"], "1..=4"),
        (vec!["--spectrum", "2", "--backend", "gpu"], "CPU backend"),
    ] {
        let d = tmp.path().join("s");
        let mut args = vec!["sweep", "-o", d.to_str().unwrap(), "--widths", "8", "--depths", "1,2", "--batch", "4", "-q"];
        args.extend(&extra);
        let o = gradscope(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(says) && err.trim().lines().count() == 1, "{extra:?}: {err}");
        assert!(!d.exists(), "{extra:?} created the folder");
    }
}
