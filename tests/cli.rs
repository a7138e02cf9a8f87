//! The binary as a user meets it: outputs, file formats, and bad input (one line, exit 2,
//! nothing left behind).

use std::path::Path;
use std::process::{Command, Output};

use ndarray::{Array1, Array2};
use ndarray_npy::{NpzWriter, WriteNpyExt};

fn gradscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2 and exactly one line on stderr that mentions `needle`.
fn assert_bad(args: &[&str], needle: &str) {
    let o = gradscope(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: exit {:?}, stderr {e}", o.status.code());
    assert!(e.contains(needle), "{args:?}: stderr lacks '{needle}': {e}");
    // clap's usage errors add a usage hint; ours are one line.
    if !e.contains("Usage:") {
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: more than one line: {e}");
    }
}

const MATH_FIELDS: &[&str] = &[
    "layer",
    "width",
    "log10_grad_b_mean",
    "log10_grad_b_rms",
    "log10_grad_w_mean",
    "log10_grad_w_rms",
    "log10_weight_norm",
    "log10_max_dsigma",
    "log10_bound",
    "log10_bound_tight",
];

#[test]
fn probe_writes_json_with_the_math_md_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let o = gradscope(&["probe", "--activation", "sigmoid", "--width", "20", "--depth", "7", "--backend", "cpu", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    for k in ["config", "backend", "version", "layers"] {
        assert!(v.get(k).is_some(), "JSON lacks '{k}'");
    }
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["config"]["widths"].as_array().unwrap().len(), 8);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 7);
    for (i, l) in layers.iter().enumerate() {
        for f in MATH_FIELDS {
            assert!(l.get(*f).is_some_and(|x| x.is_number()), "layer {i} lacks numeric '{f}'");
        }
        assert_eq!(l["layer"], i + 1);
        assert_eq!(l["status"], "ok");
    }
    // The printed table shows the same first-layer value as the file.
    let table = String::from_utf8_lossy(&o.stdout);
    let g = layers[0]["log10_grad_b_mean"].as_f64().unwrap();
    assert!(table.contains(&gradscope::stats::sci(g)), "table lacks {}: {table}", gradscope::stats::sci(g));
}

#[test]
fn csv_has_header_and_one_row_per_layer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.csv");
    let o = gradscope(&["probe", "-a", "relu", "--widths", "6,9,9,3", "--init", "he", "--backend", "cpu", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..10], MATH_FIELDS);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[2].starts_with("3,3,"));
}

#[test]
fn saved_weights_reload_to_the_same_statistics_in_float32_and_float64() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w.npz");
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let common = ["--batch", "3", "--seed", "5", "--backend", "cpu", "-a", "tanh"];
    let mut args = vec!["probe", "--widths", "4,6,5", "--sigma-b2", "0.1", "--save-weights", w.to_str().unwrap(), "-o", a.to_str().unwrap()];
    args.extend(common);
    assert!(gradscope(&args).status.success());
    let mut args = vec!["probe", "--weights", w.to_str().unwrap(), "-o", b.to_str().unwrap()];
    args.extend(common);
    let o = gradscope(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let ja: serde_json::Value = serde_json::from_slice(&std::fs::read(&a).unwrap()).unwrap();
    let jb: serde_json::Value = serde_json::from_slice(&std::fs::read(&b).unwrap()).unwrap();
    // The same statistics, but for rounding: a generated layer's ‖W‖₂ is std·‖G‖₂ (G the
    // stream's N(0,1) matrix, normed once per seed), a stored one's is normed directly. The
    // mean-field prediction differs by design (the init's σ_w² against the weights' own).
    let (la, lb) = (ja["layers"].as_array().unwrap(), jb["layers"].as_array().unwrap());
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(lb) {
        for f in MATH_FIELDS {
            let (u, v) = (x[*f].as_f64().unwrap(), y[*f].as_f64().unwrap());
            assert!((u - v).abs() <= 1e-12, "layer {}: {f} {u} vs {v} after reloading the weights", x["layer"]);
        }
    }

    // The same weights as float32, as PyTorch would save them, read back to within f32.
    let p = gradscope::model::files::read_params(&w).unwrap();
    let w32 = dir.path().join("w32.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&w32).unwrap());
    for (l, (wl, bl)) in p.w.iter().zip(&p.b).enumerate() {
        npz.add_array(format!("w{}", l + 1), &wl.mapv(|v| v as f32)).unwrap();
        npz.add_array(format!("b{}", l + 1), &bl.mapv(|v| v as f32)).unwrap();
    }
    npz.finish().unwrap();
    let q = gradscope::model::files::read_params(&w32).unwrap();
    for (x, y) in p.w.iter().zip(&q.w) {
        assert_eq!(x.dim(), y.dim());
        assert!(x.iter().zip(y).all(|(a, b)| (a - b).abs() <= 6e-8 * a.abs()));
    }
}

fn write_npz(path: &Path, arrays: &[(&str, Array2<f64>)], biases: &[(&str, Array1<f64>)]) {
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    for (n, a) in arrays {
        npz.add_array(*n, a).unwrap();
    }
    for (n, b) in biases {
        npz.add_array(*n, b).unwrap();
    }
    npz.finish().unwrap();
}

#[test]
fn bad_weight_files_are_rejected_with_the_array_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let ok_w1 = Array2::<f64>::ones((3, 4));
    write_npz(&p("shape.npz"), &[("w1", ok_w1.clone()), ("w2", Array2::ones((2, 5)))], &[("b1", Array1::zeros(3)), ("b2", Array1::zeros(2))]);
    assert_bad(&["probe", "--weights", p("shape.npz").to_str().unwrap()], "w2");
    write_npz(&p("nobias.npz"), &[("w1", ok_w1.clone())], &[]);
    assert_bad(&["probe", "--weights", p("nobias.npz").to_str().unwrap()], "b1");
    let mut nan = ok_w1.clone();
    nan[(1, 2)] = f64::NAN;
    write_npz(&p("nan.npz"), &[("w1", nan)], &[("b1", Array1::zeros(3))]);
    assert_bad(&["probe", "--weights", p("nan.npz").to_str().unwrap()], "[1, 2]");
    write_npz(&p("gap.npz"), &[("w1", ok_w1.clone()), ("w3", Array2::ones((2, 3)))], &[("b1", Array1::zeros(3)), ("b3", Array1::zeros(2))]);
    assert_bad(&["probe", "--weights", p("gap.npz").to_str().unwrap()], "w3");
    write_npz(&p("bshape.npz"), &[("w1", ok_w1)], &[("b1", Array1::zeros(4))]);
    assert_bad(&["probe", "--weights", p("bshape.npz").to_str().unwrap()], "b1");
    std::fs::write(p("junk.npz"), b"not a zip").unwrap();
    assert_bad(&["probe", "--weights", p("junk.npz").to_str().unwrap()], "junk.npz");
    assert_bad(&["probe", "--weights", p("missing.npz").to_str().unwrap()], "missing.npz");
    // Data files: wrong width, NaN, wrong rank.
    Array2::<f64>::zeros((5, 3)).write_npy(std::fs::File::create(p("x3.npy")).unwrap()).unwrap();
    assert_bad(&["probe", "--width", "4", "--depth", "2", "--inputs", p("x3.npy").to_str().unwrap()], "4");
    let mut xn = Array2::<f64>::zeros((2, 4));
    xn[(1, 0)] = f64::INFINITY;
    xn.write_npy(std::fs::File::create(p("xinf.npy")).unwrap()).unwrap();
    assert_bad(&["probe", "--width", "4", "--depth", "2", "--inputs", p("xinf.npy").to_str().unwrap()], "non-finite");
    Array1::<f64>::zeros(4).write_npy(std::fs::File::create(p("x1d.npy")).unwrap()).unwrap();
    assert_bad(&["probe", "--width", "4", "--depth", "2", "--inputs", p("x1d.npy").to_str().unwrap()], "x1d.npy");
    Array2::<f64>::zeros((3, 4)).write_npy(std::fs::File::create(p("y.npy")).unwrap()).unwrap();
    Array2::<f64>::zeros((2, 4)).write_npy(std::fs::File::create(p("x2.npy")).unwrap()).unwrap();
    assert_bad(&["probe", "--width", "4", "--depth", "2", "--inputs", p("x2.npy").to_str().unwrap(), "--targets", p("y.npy").to_str().unwrap()], "3 targets for 2 inputs");
}

#[test]
fn bad_flags_get_one_line_and_exit_2_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let o = out.to_str().unwrap();
    assert_bad(&["probe", "--width", "10", "--depth", "3", "--activation", "sigmund", "-o", o], "sigmund");
    assert_bad(&["probe", "--width", "10", "--depth", "0", "-o", o], "--depth");
    assert_bad(&["probe", "--width", "0", "--depth", "3", "-o", o], "width");
    assert_bad(&["probe", "--widths", "3,0,2", "-o", o], "n_1");
    assert_bad(&["probe", "--width", "10"], "--depth");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "-a", "tanh", "--cost", "cross-entropy"], "sigmoid");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "--init", "he", "--sigma-w2", "1"], "--sigma-w2");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "--sigma-w2", "-1"], "--sigma-w2");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "--sigma-w", "1", "--sigma-w2", "1"], "not both");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "--batch", "0"], "--batch");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "--inputs", "bogus"], "--inputs");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "-o", "r.txt"], ".json or .csv");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "-o", "/nonexistent-dir/r.json"], "does not exist");
    assert_bad(&["probe", "--width", "2000000000", "--depth", "3", "-o", o], "MiB");
    assert_bad(&["probe", "--width", "10", "--depth", "3", "--batch", "100000000000", "-o", o], "MiB");
    assert!(!out.exists(), "a failed run left {o} behind");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a failed run left a file behind");
}

#[test]
fn forward_overflow_is_reported_not_hidden() {
    // selu is not homogeneous: with σ_w² = 1000 its pre-activations grow ~20× a layer and
    // pass 1.8e308 within a few hundred layers; every gradient field must then say so.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let o = gradscope(&["probe", "-a", "selu", "--width", "64", "--depth", "600", "--sigma-w2", "1000", "--backend", "cpu", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("overflowed"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let ol = v["overflow_layer"].as_u64().expect("overflow_layer set") as usize;
    assert!(ol > 1 && ol < 600);
    for l in v["layers"].as_array().unwrap() {
        assert_eq!(l["status"], "overflow");
        assert!(l["log10_grad_b_rms"].is_null());
        assert!(l["log10_weight_norm"].is_number());
    }
}

#[test]
fn dead_relu_network_reports_a_true_zero() {
    // Biases of −100 and unit-scale weights kill every relu unit: δ is exactly 0.
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("dead.npz");
    write_npz(&w, &[("w1", Array2::from_elem((3, 4), 0.1)), ("w2", Array2::from_elem((2, 3), 0.1))], &[("b1", Array1::from_elem(3, -100.0)), ("b2", Array1::zeros(2))]);
    let out = dir.path().join("r.csv");
    let o = gradscope(&["probe", "--weights", w.to_str().unwrap(), "-a", "relu", "--targets", "gaussian", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[1].contains("-inf") && rows[1].contains(",zero-gradient"), "{}", rows[1]);
}

#[test]
fn anatomy_and_mean_field_are_written_beside_the_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.json");
    let o = gradscope(&["probe", "-a", "sigmoid", "--width", "40", "--depth", "12", "--backend", "cpu", "--anatomy", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("anatomy of the bound"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let rows = v["anatomy"].as_array().expect("anatomy array");
    assert_eq!(rows.len(), 12);
    // γ‖W‖₂ ≈ ¼·2 < 1 everywhere: Pascanu et al.'s condition guarantees vanishing at layer 1.
    assert_eq!(rows[0]["vanishing_guaranteed"], true);
    assert!(rows[0]["log10_slack"].as_f64().unwrap() >= 0.0);
    let mf = &v["mean_field"];
    let (m, p) = (mf["fitted_log10_ratio_measured"].as_f64().unwrap(), mf["fitted_log10_ratio_predicted"].as_f64().unwrap());
    assert!(m < 0.0 && p < 0.0, "sigmoid gradients must shrink towards the input: {m} {p}");
    assert!(v["layers"][0]["log10_grad_b_rms_predicted"].is_number());
}

/// `gradscope --help` lists every environment variable the code reads (each name is looked
/// up in the sources, so a new one the help forgets fails here).
#[test]
fn help_lists_every_environment_variable_read() {
    let o = gradscope(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    let mut read = std::collections::BTreeSet::new();
    let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for part in text.split("env::var(\"").skip(1) {
                    read.insert(part.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    assert!(read.contains("GRADSCOPE_GPU_NORMS"), "the scan found {read:?}");
    for name in &read {
        assert!(help.contains(name.as_str()), "--help does not mention {name}");
    }
}

/// Without XDG_RUNTIME_DIR in the environment (a bare shell or container), a run that looks
/// for GPU adapters prints no driver errors (Mesa's "XDG_RUNTIME_DIR is invalid or not set").
#[test]
fn no_driver_noise_without_xdg_runtime_dir() {
    let o = Command::new(env!("CARGO_BIN_EXE_gradscope")).args(["probe", "--width", "6", "--depth", "3"]).env_remove("XDG_RUNTIME_DIR").output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("XDG_RUNTIME_DIR"), "driver noise on stderr: {err}");
}
