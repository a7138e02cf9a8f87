//! Plots: the SVG carries its labels and legend, the PNG is a PNG of the asked size, a sweep
//! directory (a synthetic one, written here) gives all three kinds of figure, and bad input
//! (non-finite values, a wrong extension, a folder that is not a sweep) is handled.

use std::fs;
use std::path::{Path, PathBuf};

use gradscope::Error;
use gradscope::plot::{self, Format};
use gradscope::stats::{LayerStats, LayerStatus, Report};
use ndarray::Array2;

/// A report of `depth` layers whose gradient vanishes by 10^-0.2 per layer towards the input.
fn report(depth: usize) -> Report {
    let layers = (1..=depth)
        .map(|l| {
            let g = -0.2 * (depth - l) as f64 - 1.0;
            LayerStats {
                layer: l,
                width: 32,
                log10_grad_b_mean: g - 0.5,
                log10_grad_b_rms: g,
                log10_grad_w_mean: g - 0.4,
                log10_grad_w_rms: g + 0.1,
                log10_weight_norm: 0.3,
                log10_max_dsigma: -0.1,
                log10_bound: 0.25 * (depth - l) as f64,
                log10_bound_tight: 0.05 * (depth - l) as f64 - 0.5,
                status: LayerStatus::Ok,
            }
        })
        .collect();
    Report {
        layers,
        backend: "cpu".into(),
        device: "test".into(),
        overflow_layer: None,
        log10_cost: -1.0,
        signal: Vec::new(),
        signal_unmeasured: None,
    }
}

/// Where a test writes: a fresh temporary folder, or `$GRADSCOPE_PLOT_TEST_OUT/<name>` when
/// that is set (to look at the figures).
fn out_dir(name: &str) -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("GRADSCOPE_PLOT_TEST_OUT") {
        Some(base) => {
            let d = Path::new(&base).join(name);
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            (None, d)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

/// The width and height a PNG's IHDR chunk declares, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let b = fs::read(path).unwrap();
    assert!(b.len() > 24, "{} is too short for a PNG", path.display());
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} has no PNG signature", path.display());
    assert_eq!(&b[12..16], b"IHDR");
    let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    (be(&b[16..20]), be(&b[20..24]))
}

#[test]
fn profile_svg_has_axis_labels_and_legend() {
    let (_t, dir) = out_dir("profile_svg");
    let path = dir.join("profile.svg");
    let predicted: Vec<f64> = (1..=40).map(|l| -0.19 * (40 - l) as f64 - 1.1).collect();
    plot::plot_profile(&report(40), Some(&predicted), "tanh, depth 40", &path).unwrap();
    let svg = fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG: {}", &svg[..svg.len().min(80)]);
    for text in [
        "tanh, depth 40",
        "layer l",
        "log10 ‖δ^l‖",
        "grad_b_rms (measured)",
        "grad_b_mean (measured)",
        "bound (**)",
        "bound_tight",
        "mean-field prediction",
    ] {
        assert!(svg.contains(text), "the SVG lacks '{text}'");
    }
    // Text is left to the viewer's sans-serif, never rasterised into the SVG.
    assert!(svg.contains("<text"), "no <text> element");
}

#[test]
fn profile_without_prediction_has_no_prediction_entry() {
    let (_t, dir) = out_dir("profile_no_prediction");
    let path = dir.join("p.svg");
    plot::plot_profile(&report(5), None, "t", &path).unwrap();
    let svg = fs::read_to_string(&path).unwrap();
    assert!(svg.contains("bound_tight"));
    assert!(!svg.contains("mean-field"));
}

#[test]
fn profile_png_has_signature_and_requested_size() {
    let (_t, dir) = out_dir("profile_png");
    let path = dir.join("profile.png");
    let predicted: Vec<f64> = (1..=60).map(|l| -0.19 * (60 - l) as f64 - 1.1).collect();
    plot::plot_profile_sized(&report(60), Some(&predicted), "relu, depth 60", &path, (800, 500)).unwrap();
    assert_eq!(png_size(&path), (800, 500));
    let default = dir.join("default.PNG");
    plot::plot_profile(&report(3), None, "depth 3", &default).unwrap();
    assert_eq!(png_size(&default), plot::DEFAULT_SIZE);
}

#[test]
fn png_text_is_drawn_without_system_fonts() {
    // A figure whose only content is text differs from a blank one: the embedded font drew.
    let (_t, dir) = out_dir("png_text");
    let empty = Report { layers: vec![], ..report(1) };
    let a = dir.join("a.png");
    let b = dir.join("b.png");
    plot::plot_profile(&empty, None, "AAAA", &a).unwrap();
    plot::plot_profile(&empty, None, "WWWWWWWWWWWW", &b).unwrap();
    assert_ne!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "the title drew nothing");
}

#[test]
fn non_finite_values_are_skipped() {
    let (_t, dir) = out_dir("non_finite");
    let mut r = report(12);
    r.layers[0].log10_grad_b_rms = f64::NEG_INFINITY;
    r.layers[0].status = LayerStatus::ZeroGradient;
    r.layers[3].log10_grad_b_mean = f64::NAN;
    r.layers[5].log10_bound = f64::INFINITY;
    r.layers[11].log10_bound_tight = f64::NAN;
    let predicted = [f64::NAN, 1.0, f64::INFINITY, -2.0, f64::NEG_INFINITY];
    for ext in ["svg", "png"] {
        let path = dir.join(format!("gaps.{ext}"));
        plot::plot_profile(&r, Some(&predicted), "gaps", &path).unwrap();
        assert!(fs::metadata(&path).unwrap().len() > 100);
    }
    let svg = fs::read_to_string(dir.join("gaps.svg")).unwrap();
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "a non-finite value reached the SVG");

    // Nothing finite at all: still a figure, saying so.
    let mut all = report(4);
    for l in &mut all.layers {
        l.log10_grad_b_rms = f64::NAN;
        l.log10_grad_b_mean = f64::NEG_INFINITY;
        l.log10_bound = f64::INFINITY;
        l.log10_bound_tight = f64::NAN;
        l.status = LayerStatus::Overflow;
    }
    let path = dir.join("nothing.svg");
    plot::plot_profile(&all, None, "overflow", &path).unwrap();
    assert!(fs::read_to_string(&path).unwrap().contains("no finite value"));
}

#[test]
fn bad_extension_and_size_are_refused() {
    let (_t, dir) = out_dir("bad_ext");
    for name in ["p.pdf", "p", "p.svg.txt"] {
        let path = dir.join(name);
        let err = plot::plot_profile(&report(3), None, "t", &path).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{name}: {err}");
        assert!(err.to_string().contains(".svg or .png"), "{err}");
        assert!(!path.exists());
    }
    assert_eq!(Format::from_path(Path::new("x.Svg")).unwrap(), Format::Svg);
    let err = plot::plot_profile_sized(&report(3), None, "t", &dir.join("p.png"), (10, 10)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn unwritable_path_is_a_file_error() {
    let (_t, dir) = out_dir("unwritable");
    let err = plot::plot_profile(&report(3), None, "t", &dir.join("no/such/folder/p.svg")).unwrap_err();
    assert!(matches!(err, Error::File { .. }), "{err}");
}

// ---------- sweep directories ----------

const ACTIVATIONS: [&str; 2] = ["tanh", "relu"];
const SIGMA_W2: [f64; 4] = [1.0, 1.5, 2.0, 2.5];
const DEPTHS: [usize; 7] = [1, 2, 5, 10, 20, 50, 100];
const SEEDS: [u64; 2] = [1, 2];
/// The critical σ_w² the synthetic data is made around, per activation.
fn critical(activation: &str, _sigma_b2: f64) -> Option<f64> {
    match activation {
        "tanh" => Some(1.761),
        "relu" => Some(2.0),
        _ => None,
    }
}

/// A number as the sweep writes it.
fn fmt(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v == f64::INFINITY {
        "inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{v}")
    }
}

/// Writes a synthetic sweep directory in the sweep engine's format: `summary.csv` and the four
/// NaN-padded profile arrays. log10 ‖δ^l‖ falls by ½ log10 χ₁ per layer towards the input,
/// with χ₁ = σ_w² / critical; `poison` puts non-finite values into a few points.
fn write_sweep(dir: &Path, poison: bool) -> usize {
    let header = "activation,init,cost,sigma_w,sigma_w2,sigma_b,sigma_b2,width,batch,seed,depth,\
                  log10_grad_b_rms_first,log10_grad_b_rms_last,log10_grad_w_rms_first,log10_grad_w_rms_last,\
                  log10_grad_b_mean_first,slope_log10_grad_b_rms,log10_bound_first,log10_bound_tight_first,seconds";
    let mut csv = format!("{header}\n");
    let max_depth = *DEPTHS.iter().max().unwrap();
    let mut rows: Vec<[Vec<f64>; 4]> = vec![];
    for act in ACTIVATIONS {
        for &sw2 in &SIGMA_W2 {
            for &seed in &SEEDS {
                for &depth in &DEPTHS {
                    let half_log_chi = 0.5 * (sw2 / critical(act, 0.05).unwrap()).log10();
                    let noise = 0.01 * seed as f64;
                    let prof = |off: f64| -> Vec<f64> {
                        (1..=max_depth)
                            .map(|l| if l <= depth { (depth - l) as f64 * half_log_chi - 1.0 + off + noise } else { f64::NAN })
                            .collect()
                    };
                    let mut p = [prof(0.0), prof(-0.4), prof(3.0), prof(1.0)];
                    for (k, q) in p[2].iter_mut().take(depth).enumerate() {
                        *q += 0.3 * (depth - 1 - k) as f64;
                    }
                    let i = rows.len();
                    if poison && i % 7 == 3 {
                        p[0][0] = f64::NEG_INFINITY;
                        p[1][depth - 1] = f64::NAN;
                        p[2][0] = f64::INFINITY;
                    }
                    let first = p[0][0];
                    let row = [
                        act.to_string(),
                        "gaussian".into(),
                        "quadratic".into(),
                        fmt(sw2.sqrt()),
                        fmt(sw2),
                        fmt(0.05f64.sqrt()),
                        fmt(0.05),
                        "32".into(),
                        "8".into(),
                        seed.to_string(),
                        depth.to_string(),
                        fmt(first),
                        fmt(p[0][depth - 1]),
                        fmt(first + 0.2),
                        fmt(p[0][depth - 1] + 0.2),
                        fmt(p[1][0]),
                        fmt(half_log_chi),
                        fmt(p[2][0]),
                        fmt(p[3][0]),
                        "0.01".into(),
                    ];
                    csv += &row.join(",");
                    csv += "\n";
                    rows.push(p);
                }
            }
        }
    }
    fs::create_dir_all(dir.join("profiles")).unwrap();
    fs::write(dir.join("summary.csv"), csv).unwrap();
    for (k, name) in ["log10_grad_b_rms", "log10_grad_b_mean", "log10_bound", "log10_bound_tight"]
        .into_iter()
        .enumerate()
    {
        let a = Array2::from_shape_fn((rows.len(), max_depth), |(i, l)| rows[i][k][l]);
        ndarray_npy::write_npy(dir.join("profiles").join(format!("{name}.npy")), &a).unwrap();
    }
    rows.len()
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn sweep_dir_gives_the_three_kinds_of_plot() {
    let (_t, dir) = out_dir("sweep");
    write_sweep(&dir, false);
    let written = plot::plot_sweep_dir(&dir, &critical).unwrap();
    let names = names(&written);
    for p in &written {
        assert!(p.starts_with(dir.join("plots")), "{} outside DIR/plots", p.display());
        assert!(p.is_file(), "{} not written", p.display());
    }
    for want in [
        "grad_first_vs_depth.svg",
        "grad_first_vs_depth.png",
        "heatmap_tanh_gaussian.svg",
        "heatmap_relu_gaussian.png",
        "profile_tanh_gaussian_sw2-1.5_sb2-0.05.svg",
        "profile_relu_gaussian_sw2-2.5_sb2-0.05.png",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not among {names:?}");
    }
    // One profile per configuration (2 activations × 4 σ_w²), two formats each.
    assert_eq!(names.iter().filter(|n| n.starts_with("profile_")).count(), 16);

    let depth_plot = fs::read_to_string(dir.join("plots/grad_first_vs_depth.svg")).unwrap();
    for text in ["depth L", "log10 ‖δ^1‖", "σ_w² = 1.5", "σ_w² = 2.5", "tanh, gaussian init", "relu, gaussian init"] {
        assert!(depth_plot.contains(text), "the depth plot lacks '{text}'");
    }
    let heat = fs::read_to_string(dir.join("plots/heatmap_tanh_gaussian.svg")).unwrap();
    for text in ["σ_w²", "depth L", "χ₁ = 1: σ_w² = 1.761", "log10 ‖δ^1‖ (grad_b_rms)", "trainable depth ≈ 6ξ_c"] {
        assert!(heat.contains(text), "the heatmap lacks '{text}'");
    }
    // 4 σ_w² × 7 depths cells, each a filled rect.
    assert!(heat.matches("<rect").count() >= 28, "too few cells");
    let prof = fs::read_to_string(dir.join("plots/profile_tanh_gaussian_sw2-1.5_sb2-0.05.svg")).unwrap();
    assert!(prof.contains("depth 100") && prof.contains("bound_tight"));
    assert!(png_size(&dir.join("plots/heatmap_relu_gaussian.png")) == plot::DEFAULT_SIZE);
}

#[test]
fn sweep_dir_with_non_finite_values_plots() {
    let (_t, dir) = out_dir("sweep_poisoned");
    write_sweep(&dir, true);
    let critical_off_grid = |_: &str, _: f64| Some(7.5);
    let written = plot::plot_sweep_dir_sized(&dir, &critical_off_grid, (700, 450), &[Format::Svg]).unwrap();
    assert!(written.iter().all(|p| p.extension().unwrap() == "svg"));
    let heat = fs::read_to_string(dir.join("plots/heatmap_tanh_gaussian.svg")).unwrap();
    assert!(heat.contains("outside the grid"), "an off-grid critical σ_w² is not mentioned");
    for p in &written {
        let s = fs::read_to_string(p).unwrap();
        assert!(!s.contains("NaN"), "{} has a NaN coordinate", p.display());
    }
}

#[test]
fn sweep_dir_without_profiles_still_plots_summary() {
    let (_t, dir) = out_dir("sweep_no_profiles");
    write_sweep(&dir, false);
    fs::remove_dir_all(dir.join("profiles")).unwrap();
    let names = names(&plot::plot_sweep_dir_sized(&dir, &|_, _| None, (600, 400), &[Format::Svg]).unwrap());
    assert!(names.contains(&"grad_first_vs_depth.svg".to_string()));
    assert!(names.iter().any(|n| n.starts_with("heatmap_")));
    assert!(!names.iter().any(|n| n.starts_with("profile_")));
}

#[test]
fn folder_without_summary_is_refused() {
    let (_t, dir) = out_dir("not_a_sweep");
    let err = plot::plot_sweep_dir(&dir, &critical).unwrap_err();
    assert!(matches!(err, Error::File { .. }), "{err}");
    assert!(err.to_string().contains("summary.csv"), "{err}");
    assert!(!dir.join("plots").exists(), "a refused folder was written to");

    let err = plot::plot_sweep_dir(&dir.join("missing"), &critical).unwrap_err();
    assert!(err.to_string().contains("no such folder"), "{err}");
}

#[test]
fn malformed_sweeps_are_refused() {
    let (_t, dir) = out_dir("malformed");
    // Header only.
    fs::write(dir.join("summary.csv"), "activation,init,sigma_w2,sigma_b2,depth,log10_grad_b_rms_first\n").unwrap();
    let err = plot::plot_sweep_dir(&dir, &critical).unwrap_err();
    assert!(err.to_string().contains("no finished points"), "{err}");
    // A missing column.
    fs::write(dir.join("summary.csv"), "activation,init,sigma_w2,depth,log10_grad_b_rms_first\ntanh,gaussian,1,3,-1\n").unwrap();
    let err = plot::plot_sweep_dir(&dir, &critical).unwrap_err();
    assert!(err.to_string().contains("sigma_b2"), "{err}");
    // A bad depth.
    fs::write(
        dir.join("summary.csv"),
        "activation,init,sigma_w2,sigma_b2,depth,log10_grad_b_rms_first\ntanh,gaussian,1,0,0,-1\n",
    )
    .unwrap();
    let err = plot::plot_sweep_dir(&dir, &critical).unwrap_err();
    assert!(err.to_string().contains("line 2") && err.to_string().contains("depth"), "{err}");
    // Profiles that do not match the summary's rows.
    let (_t2, dir2) = out_dir("malformed_profiles");
    let n = write_sweep(&dir2, false);
    let short = Array2::<f64>::zeros((n - 1, 100));
    ndarray_npy::write_npy(dir2.join("profiles/log10_grad_b_rms.npy"), &short).unwrap();
    let err = plot::plot_sweep_dir(&dir2, &critical).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(!dir2.join("plots").exists(), "plots were written before the profiles were checked");
}

// ---------- the command line ----------

fn gradscope(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).output().unwrap()
}

#[test]
fn cli_plot_writes_into_dir_plots() {
    let (_t, dir) = out_dir("cli_plot");
    write_sweep(&dir, false);
    let d = dir.to_str().unwrap();
    let out = gradscope(&["plot", d, "--format", "svg", "--size", "700x450"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("plots/grad_first_vs_depth.svg").is_file());
    assert!(!dir.join("plots/grad_first_vs_depth.png").exists(), "--format svg wrote a PNG");
    // The χ₁ = 1 line comes from mean-field theory: tanh at σ_b² = 0.05 (docs/MATH.md), relu.
    let heat = fs::read_to_string(dir.join("plots/heatmap_tanh_gaussian.svg")).unwrap();
    assert!(heat.contains("χ₁ = 1: σ_w² = 1.761"), "no χ₁ = 1 line for tanh");
    let heat = fs::read_to_string(dir.join("plots/heatmap_relu_gaussian.svg")).unwrap();
    assert!(heat.contains("χ₁ = 1: σ_w² = 2"), "no χ₁ = 1 line for relu");

    let empty = dir.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = gradscope(&["plot", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("summary.csv"));
    let out = gradscope(&["plot", d, "--size", "big"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}

#[test]
fn cli_probe_plot_writes_a_profile_and_checks_the_extension_first() {
    let (_t, dir) = out_dir("cli_probe_plot");
    let png = dir.join("p.png");
    let args = ["probe", "--activation", "tanh", "--width", "8", "--depth", "6", "--backend", "cpu", "--plot"];
    let out = gradscope(&[&args[..], &[png.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(png_size(&png), plot::DEFAULT_SIZE);
    let svg = dir.join("p.svg");
    let out = gradscope(&[&args[..], &[svg.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = fs::read_to_string(&svg).unwrap();
    assert!(text.contains("tanh") && text.contains("bound_tight"), "the probe's SVG lacks its title or legend");
    assert!(text.contains("mean-field prediction"), "probe --plot drew no mean-field prediction");
    let pdf = dir.join("p.pdf");
    let out = gradscope(&[&args[..], &[pdf.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--plot") && err.contains(".svg or .png"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "probe ran before refusing --plot");
}
