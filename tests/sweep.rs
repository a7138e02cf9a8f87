//! `gradscope sweep` and `merge`: resume after a kill, shards, prefix sharing against
//! probes, and refusals that leave existing results alone.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn gradscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).output().unwrap()
}

fn ok(args: &[&str]) {
    let o = gradscope(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const GRID: &[&str] = &["--widths", "48", "--activations", "tanh,relu,sigmoid", "--sigma-w2", "0.5,1,1.5,2", "--depths", "log:1..400:12", "--batch", "4", "-q"];

fn sweep(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["sweep", "-o", out.to_str().unwrap()];
    args.extend(GRID);
    args.extend(extra);
    gradscope(&args)
}

fn groups_done(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("points")).map(|d| d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json")).count()).unwrap_or(0)
}

#[test]
fn a_killed_sweep_resumes_without_losing_or_duplicating_points() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    assert!(sweep(&clean, &[]).status.success());
    let want = read(&clean.join("summary.csv"));
    assert_eq!(want.lines().count(), 1 + 12 * 12, "12 configurations × 12 depths");

    let killed = tmp.path().join("killed");
    let mut args = vec!["sweep".to_string(), "-o".into(), killed.to_str().unwrap().into()];
    args.extend(GRID.iter().map(|s| s.to_string()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradscope")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while groups_done(&killed) < 2 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = groups_done(&killed);
    assert!(before >= 2, "the sweep never finished a configuration");
    let o = sweep(&killed, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let msg = String::from_utf8_lossy(&o.stdout);
    if before < 12 {
        assert!(msg.contains(&format!("{before} already done")), "resume did not skip the finished work: {msg}");
    }
    assert_eq!(read(&killed.join("summary.csv")), want, "resumed sweep differs from an uninterrupted one");
    let left: Vec<_> = std::fs::read_dir(killed.join("points")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.starts_with('.')).collect();
    assert!(left.is_empty() || before < 12, "temporary files left: {left:?}");
}

#[test]
fn shards_merged_equal_a_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    assert!(sweep(&whole, &[]).status.success());
    let mut shard_dirs = Vec::new();
    for k in 1..=3 {
        let d = tmp.path().join(format!("s{k}"));
        assert!(sweep(&d, &["--shard", &format!("{k}/3")]).status.success());
        shard_dirs.push(d);
    }
    let merged = tmp.path().join("merged");
    let mut args = vec!["merge", "-o", merged.to_str().unwrap()];
    args.extend(shard_dirs.iter().map(|d| d.to_str().unwrap()));
    ok(&args);
    assert_eq!(read(&merged.join("summary.csv")), read(&whole.join("summary.csv")));
    for f in ["summary.npy", "profiles/log10_grad_b_rms.npy", "profiles/log10_bound.npy"] {
        assert_eq!(std::fs::read(merged.join(f)).unwrap(), std::fs::read(whole.join(f)).unwrap(), "{f} differs");
    }
    // A shard of another sweep is refused.
    let other = tmp.path().join("other");
    assert!(gradscope(&["sweep", "-o", other.to_str().unwrap(), "--widths", "8", "--depths", "1,2", "-q"]).status.success());
    let o = gradscope(&["merge", "-o", tmp.path().join("m2").to_str().unwrap(), shard_dirs[0].to_str().unwrap(), other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("another configuration"));
}

#[test]
fn sweep_points_equal_independent_probes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("s");
    ok(&["sweep", "-o", d.to_str().unwrap(), "--widths", "24", "--activations", "tanh", "--sigma-w2", "1.7", "--sigma-b2", "0.05", "--depths", "3,17,40", "--batch", "5", "--seeds", "9", "-q"]);
    let csv = read(&d.join("summary.csv"));
    let rows: Vec<Vec<String>> = csv.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    for row in rows {
        let depth = &row[col("depth")];
        let out = tmp.path().join(format!("p{depth}.json"));
        ok(&["probe", "--backend", "cpu", "-a", "tanh", "--width", "24", "--depth", depth, "--sigma-w2", "1.7", "--sigma-b2", "0.05", "--batch", "5", "--seed", "9", "-o", out.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(&read(&out)).unwrap();
        let layers = v["layers"].as_array().unwrap();
        for (field, layer) in [("log10_grad_b_rms_first", 0), ("log10_grad_b_rms_last", layers.len() - 1), ("log10_bound_first", 0), ("log10_bound_tight_first", 0), ("log10_grad_b_mean_first", 0)] {
            let key = field.trim_end_matches("_first").trim_end_matches("_last");
            let probe = layers[layer][key].as_f64().unwrap();
            let swept: f64 = row[col(field)].parse().unwrap();
            assert!((probe - swept).abs() <= 1e-12, "depth {depth} {field}: sweep {swept} vs probe {probe}");
        }
    }
}

#[test]
fn bad_sweeps_are_refused_without_touching_results() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("s");
    ok(&["sweep", "-o", d.to_str().unwrap(), "--widths", "8", "--depths", "1..4", "-q"]);
    let before = read(&d.join("summary.csv"));
    let meta = read(&d.join("meta.json"));
    let bad = |extra: &[&str], needle: &str| {
        let mut args = vec!["sweep", "-o", d.to_str().unwrap(), "-q"];
        args.extend(extra);
        let o = gradscope(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {e}");
        assert!(e.contains(needle), "{extra:?}: '{needle}' not in {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{extra:?}: {e}");
    };
    bad(&["--widths", "9", "--depths", "1..4"], "another configuration");
    bad(&["--widths", "8", "--depths", "0,1"], "depth 0");
    bad(&["--widths", "8", "--depths", ""], "--depths");
    bad(&["--widths", "8", "--depths", "1..4", "--shard", "4/3"], "--shard");
    bad(&["--widths", "8", "--depths", "1..4", "--shard", "1/2"], "shard");
    bad(&["--widths", "8", "--depths", "1..4", "--activations", "nope"], "nope");
    bad(&["--widths", "8", "--depths", "1..4", "--sigma-w2", "-1"], "--sigma-w2");
    bad(&["--widths", "8", "--depths", "1..4", "--backend", "gpu", "--adapter", "no-such-gpu-xyz"], "adapter");
    let toml = tmp.path().join("s.toml");
    std::fs::write(&toml, "widths = [8]\ndepths = \"1..4\"\ncolour = \"blue\"\n").unwrap();
    bad(&["--config", toml.to_str().unwrap()], "colour");
    assert_eq!(read(&d.join("summary.csv")), before);
    assert_eq!(read(&d.join("meta.json")), meta);
    // A TOML file with the flags' names works, and flags override it.
    std::fs::write(&toml, "widths = [8]\ndepths = \"1..4\"\nactivations = [\"relu\"]\nsigma-w2 = [2.0]\n").unwrap();
    // The folder is made with its parents (the README's `-o runs/depth` in a fresh clone).
    let d2 = tmp.path().join("runs").join("t");
    ok(&["sweep", "--config", toml.to_str().unwrap(), "-o", d2.to_str().unwrap(), "--activations", "tanh", "-q"]);
    let s = read(&d2.join("summary.csv"));
    assert!(s.lines().skip(1).all(|l| l.starts_with("tanh,gaussian,quadratic,1.41") && l.contains(",2.0,")), "{s}");
    // A non-empty folder that is not a sweep is refused.
    let junk = tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("thesis.tex"), "precious").unwrap();
    let o = gradscope(&["sweep", "-o", junk.to_str().unwrap(), "--widths", "8", "--depths", "1,2", "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(&junk).unwrap().count(), 1);
}

/// A full disk, simulated by a file-size limit (RLIMIT_FSIZE through bash's `ulimit -f`, with
/// SIGXFSZ ignored so writes fail with EFBIG as they would with ENOSPC): the per-configuration
/// files fit and the assembled outputs do not. The sweep stops with one line naming the file
/// and exit code 2, every finished configuration stays on disk, no partial output or temporary
/// file is left, and a rerun with room resumes and equals an uninterrupted run byte for byte.
#[test]
fn a_full_disk_names_the_file_and_loses_no_finished_work() {
    // Many small configurations: each one's files are small, the assembled ones large.
    const SMALL: &[&str] = &["--widths", "8", "--activations", "tanh,relu,sigmoid", "--sigma-w2", "0.5,1,1.5,2,3,4", "--depths", "1..12", "--batch", "2", "-q"];
    let run = |out: &Path| {
        let mut args = vec!["sweep", "-o", out.to_str().unwrap()];
        args.extend(SMALL);
        gradscope(&args)
    };
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    assert!(run(&clean).status.success());
    let sizes = |dir: &Path| -> Vec<u64> { std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).collect() };
    let biggest_point = *sizes(&clean.join("points")).iter().max().unwrap();
    let smallest_output = sizes(&clean.join("profiles")).into_iter().chain([std::fs::metadata(clean.join("summary.csv")).unwrap().len()]).min().unwrap();
    let limit_kib = biggest_point / 1024 + 1;
    assert!(limit_kib * 1024 < smallest_output, "test precondition: points ≤ {biggest_point} B must fit under a limit that the outputs ({smallest_output} B) exceed");

    let full = tmp.path().join("full");
    let mut cmd = format!("ulimit -f {limit_kib}; trap '' XFSZ; exec '{}' sweep -o '{}'", env!("CARGO_BIN_EXE_gradscope"), full.display());
    for a in SMALL {
        cmd.push_str(&format!(" '{a}'"));
    }
    let o = Command::new("bash").args(["-c", &cmd]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(full.to_str().unwrap()) && err.contains("too large"), "names the file and the cause: {err}");
    assert_eq!(groups_done(&full), 18, "every configuration finished before the outputs were assembled");
    assert!(!full.join("summary.csv").exists(), "no partial summary");
    let hidden: Vec<String> = ["", "points", "profiles"]
        .iter()
        .filter_map(|d| std::fs::read_dir(full.join(d)).ok())
        .flatten()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");

    let o = run(&full);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("18 already done"), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(read(&full.join("summary.csv")), read(&clean.join("summary.csv")));
    assert_eq!(std::fs::read(full.join("summary.npy")).unwrap(), std::fs::read(clean.join("summary.npy")).unwrap());
}

#[test]
fn seed_statistics_are_the_mean_and_sd_of_the_summary_rows_and_survive_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = ["--widths", "12", "--activations", "relu,tanh", "--inits", "he", "--depths", "2,5,9", "--batch", "1", "--seeds", "1,2,3,4,5,6,7", "-q"];
    let whole = tmp.path().join("whole");
    let mut args = vec!["sweep", "-o", whole.to_str().unwrap()];
    args.extend(grid);
    ok(&args);
    // By hand from summary.csv: per (activation, depth), mean and sd over the seven seeds.
    let summary = read(&whole.join("summary.csv"));
    let mut lines = summary.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let (ca, cd, cg) = (col("activation"), col("depth"), col("log10_grad_b_rms_first"));
    let mut by: std::collections::BTreeMap<(String, usize), Vec<f64>> = Default::default();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        by.entry((f[ca].to_string(), f[cd].parse().unwrap())).or_default().push(f[cg].parse().unwrap());
    }
    let seeds = read(&whole.join("summary_seeds.csv"));
    let mut lines = seeds.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows.len(), 6, "2 activations × 3 depths");
    for r in &rows {
        let v = &by[&(r[col("activation")].clone(), r[col("depth")].parse().unwrap())];
        assert_eq!(v.len(), 7);
        assert_eq!(r[col("seeds")], "7");
        let m = v.iter().sum::<f64>() / 7.0;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 6.0).sqrt();
        let got_m: f64 = r[col("log10_grad_b_rms_first_mean")].parse().unwrap();
        let got_sd: f64 = r[col("log10_grad_b_rms_first_sd")].parse().unwrap();
        assert!((got_m - m).abs() < 1e-12 && (got_sd - sd).abs() < 1e-12, "{r:?}: {m} ± {sd}");
        assert!(sd > 0.0, "seeds differ");
        // Hanin's predictions are given for relu at σ_w² = 2, σ_b² = 0 only.
        let depth: i32 = r[col("depth")].parse().unwrap();
        let pred: f64 = r[col("moment_ratio_predicted")].parse().unwrap_or(f64::NAN);
        if r[col("activation")] == "relu" {
            assert!((pred - (1.0 + 5.0 / 12.0f64).powi(depth)).abs() < 1e-12 * pred, "{pred}");
            assert!(r[col("log10_grad_b_rms_first_sd_predicted")].parse::<f64>().unwrap() > 0.0);
        } else {
            assert!(pred.is_nan() && r[col("log10_grad_b_rms_first_sd_predicted")] == "nan", "{r:?}");
        }
    }
    // A structured .npy beside it, with the same number of rows.
    let npy = std::fs::read(whole.join("summary_seeds.npy")).unwrap();
    let header = String::from_utf8_lossy(&npy[10..npy.len().min(2000)]).to_string();
    assert!(header.contains("'log10_grad_b_rms_first_sd'") && header.contains("'shape': (6,)"), "{header}");
    // Shards merged give the same file.
    let mut dirs = Vec::new();
    for k in 1..=2 {
        let d = tmp.path().join(format!("s{k}"));
        let shard = format!("{k}/2");
        let mut args = vec!["sweep", "-o", d.to_str().unwrap(), "--shard", &shard];
        args.extend(grid);
        ok(&args);
        dirs.push(d);
    }
    let merged = tmp.path().join("merged");
    ok(&["merge", "-o", merged.to_str().unwrap(), dirs[0].to_str().unwrap(), dirs[1].to_str().unwrap()]);
    assert_eq!(read(&merged.join("summary_seeds.csv")), seeds);
    assert_eq!(std::fs::read(merged.join("summary_seeds.npy")).unwrap(), npy);
}

#[test]
fn stored_predictions_are_the_theory_functions_at_every_depth() {
    // The sweep computes a group's predictions on their own threads beside the engine
    // (and the two signal profiles from one iteration): what it stores must be, bit for
    // bit, the theory functions called apart on the group's problem. relu at σ_w² = 1e300
    // overflows q: its predicted profiles are NaN (not the measured ones).
    use gradscope::sweep::SweepFile;
    use gradscope::theory::{self, predict::predict_depths};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    ok(&["sweep", "-o", out.to_str().unwrap(), "--widths", "12", "--activations", "tanh,relu", "--sigma-w2", "1,1e300", "--depths", "1,3,7", "--batch", "5", "-q"]);
    let plan = SweepFile { widths: Some(vec![12]), activations: Some(vec!["tanh".into(), "relu".into()]), sigma_w2: Some(vec![1.0, 1e300]), depths: Some("1,3,7".into()), batch: Some(5), ..Default::default() }.plan().unwrap();
    let load = |f: &str| -> ndarray::Array2<f64> { ndarray_npy::read_npy(out.join("profiles").join(format!("{f}.npy"))).unwrap() };
    let (q_st, c_st, g_st, q_meas) = (load("log10_q_predicted"), load("c_predicted"), load("log10_grad_b_rms_predicted"), load("log10_q"));
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let groups = plan.groups();
    assert_eq!(q_st.nrows(), groups.len() * 3);
    let mut overflowed = 0;
    for (gi, g) in groups.iter().enumerate() {
        let p = plan.problem(g).unwrap();
        let q = theory::log10_q_predicted(&p).ok();
        let c = theory::c_predicted(&p).ok();
        overflowed += usize::from(q.is_none());
        for (k, &d) in plan.depths.iter().enumerate() {
            let row = gi * 3 + k;
            for l in 0..7 {
                let want = |v: &Option<Vec<f64>>| if l < d { v.as_ref().map_or(f64::NAN, |v| v[l]) } else { f64::NAN };
                assert!(same(q_st[(row, l)], want(&q)), "{g:?} depth {d} layer {}: log10_q_predicted", l + 1);
                assert!(same(c_st[(row, l)], want(&c)), "{g:?} depth {d} layer {}: c_predicted", l + 1);
                // The gradient's theory holds to some depth: each depth has it or not.
                let gw = predict_depths(&p, &plan.depths[..=k]).ok().map(|v| v[k].log10_grad_b_rms.clone());
                assert!(same(g_st[(row, l)], want(&gw)), "{g:?} depth {d} layer {}: log10_grad_b_rms_predicted", l + 1);
                if q.is_none() && l < d {
                    assert!(q_meas[(row, l)].is_finite(), "the measured log10_q is there");
                }
            }
        }
    }
    assert_eq!(overflowed, 1, "relu at σ_w² = 1e300 is the one configuration whose q overflows");
}
