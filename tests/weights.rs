//! `--weights` with checkpoints as people keep them: `.safetensors` (f64, f32, f16, bf16) and
//! PyTorch `state_dict` keys in `.safetensors` and `.npz`, each probed against the same network
//! written as a w1..wL `.npz`; and the bad files, each refused in one line naming key or file.
//! Every fixture is written here, with the safetensors crate or by hand where it must lie.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::{Array1, Array2, ShapeBuilder};
use ndarray_npy::NpzWriter;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn gradscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2 and exactly one line on stderr that mentions every needle.
fn assert_bad(args: &[&str], needles: &[&str]) {
    let o = gradscope(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: exit {:?}, stderr {e}", o.status.code());
    for n in needles {
        assert!(e.contains(n), "{args:?}: stderr lacks '{n}': {e}");
    }
    assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: more than one line: {e}");
}

/// Deterministic values in (−1, 1) (a 64-bit LCG), rounded through `dtype`, as f64.
fn values(n: usize, seed: u64, dtype: Dtype) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let x = ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
            round(x, dtype)
        })
        .collect()
}

fn round(x: f64, dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F64 => x,
        Dtype::F32 => x as f32 as f64,
        Dtype::F16 => half::f16::from_f64(x).to_f64(),
        Dtype::BF16 => half::bf16::from_f64(x).to_f64(),
        d => panic!("{d:?}"),
    }
}

/// Little-endian bytes of values already representable in `dtype`.
fn bytes(v: &[f64], dtype: Dtype) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| match dtype {
            Dtype::F64 => x.to_le_bytes().to_vec(),
            Dtype::F32 => (x as f32).to_le_bytes().to_vec(),
            Dtype::F16 => half::f16::from_f64(x).to_le_bytes().to_vec(),
            Dtype::BF16 => half::bf16::from_f64(x).to_le_bytes().to_vec(),
            d => panic!("{d:?}"),
        })
        .collect()
}

/// One named tensor of a fixture: key, dtype, shape, values.
struct T {
    key: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn t(key: impl Into<String>, dtype: Dtype, shape: &[usize], data: Vec<f64>) -> T {
    T { key: key.into(), dtype, shape: shape.to_vec(), data }
}

/// Written by the safetensors crate.
fn write_safetensors(path: &Path, ts: &[T]) {
    let raw: Vec<Vec<u8>> = ts.iter().map(|t| bytes(&t.data, t.dtype)).collect();
    let views: Vec<(String, TensorView)> = ts.iter().zip(&raw).map(|(t, b)| (t.key.clone(), TensorView::new(t.dtype, t.shape.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Written by hand in the given storage order; `lie` edits the header's JSON.
fn write_raw_safetensors(path: &Path, ts: &[T], lie: impl Fn(String) -> String) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for t in ts {
        let b = bytes(&t.data, t.dtype);
        let dtype = format!("{:?}", t.dtype);
        header.insert(t.key.clone(), serde_json::json!({"dtype": dtype, "shape": t.shape, "data_offsets": [data.len(), data.len() + b.len()]}));
        data.extend(b);
    }
    let h = lie(serde_json::Value::Object(header).to_string());
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h.as_bytes());
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

/// The reference: the same layers as today's w1..wL, b1..bL float64 `.npz`.
fn write_w_npz(path: &Path, layers: &[(Array2<f64>, Array1<f64>)]) {
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    for (l, (w, b)) in layers.iter().enumerate() {
        npz.add_array(format!("w{}", l + 1), w).unwrap();
        npz.add_array(format!("b{}", l + 1), b).unwrap();
    }
    npz.finish().unwrap();
}

/// Random layers of the given widths in `dtype`; `bias[l]` false leaves layer l without one.
fn layers(widths: &[usize], dtype: Dtype, seed: u64) -> Vec<(Array2<f64>, Array1<f64>)> {
    (1..widths.len())
        .map(|l| {
            let (o, i) = (widths[l], widths[l - 1]);
            let scale = round(1.0 / (i as f64).sqrt(), dtype);
            let w = Array2::from_shape_vec((o, i), values(o * i, seed * 100 + l as u64, dtype)).unwrap().mapv(|x| round(x * scale * 1.5, dtype));
            let b = Array1::from_vec(values(o, seed * 100 + 50 + l as u64, dtype)).mapv(|x| round(0.1 * x, dtype));
            (w, b)
        })
        .collect()
}

/// Runs `probe` on a file and returns its JSON and stdout.
fn probe(weights: &Path, extra: &[&str], out: &Path) -> (serde_json::Value, String) {
    let mut args = vec!["probe", "--weights", weights.to_str().unwrap(), "-a", "tanh", "--backend", "cpu", "--batch", "5", "--targets", "gaussian", "-o", out.to_str().unwrap()];
    args.extend(extra);
    let o = gradscope(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    (serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap(), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Probes `file` and the w1..wL `.npz` of `net` and asserts every per-layer value is equal, bit
/// for bit (the JSON writes f64 in shortest round-trip form); returns the file's JSON and stdout.
fn assert_probes_as_w_npz(dir: &Path, file: &Path, extra: &[&str], net: &[(Array2<f64>, Array1<f64>)]) -> (serde_json::Value, String) {
    let reference = dir.join("reference.npz");
    write_w_npz(&reference, net);
    let (want, _) = probe(&reference, &[], &dir.join("want.json"));
    let (got, stdout) = probe(file, extra, &dir.join("got.json"));
    assert_eq!(got["config"]["widths"], want["config"]["widths"]);
    assert!(got["layers"].as_array().is_some_and(|l| l.len() == net.len()));
    assert_eq!(got["layers"], want["layers"], "{} probes differently from its w1..wL .npz", file.display());
    assert_eq!(got["mean_field"], want["mean_field"]);
    (got, stdout)
}

fn name(dir: &Path, f: &str) -> PathBuf {
    dir.join(f)
}

#[test]
fn f64_f32_f16_and_bf16_state_dicts_probe_as_the_same_w_npz() {
    let dir = tempfile::tempdir().unwrap();
    let widths = [5, 7, 6, 6, 3];
    for (k, dtype) in [Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16].into_iter().enumerate() {
        let mut net = layers(&widths, dtype, k as u64 + 1);
        // nn.Sequential(Linear, Tanh, Linear, …): the Linear layers are 0, 2, 4, 6; the last
        // has bias=False, a zero bias.
        let mut ts = Vec::new();
        for (l, (w, b)) in net.iter().enumerate() {
            ts.push(t(format!("{}.weight", 2 * l), dtype, w.shape(), w.iter().copied().collect()));
            if l < 3 {
                ts.push(t(format!("{}.bias", 2 * l), dtype, b.shape(), b.to_vec()));
            }
        }
        net[3].1.fill(0.0);
        let file = name(dir.path(), &format!("mlp-{dtype:?}.safetensors"));
        write_safetensors(&file, &ts);
        let (v, stdout) = assert_probes_as_w_npz(dir.path(), &file, &[], &net);
        let line = stdout.lines().nth(1).unwrap();
        let d = format!("{dtype:?}").to_lowercase();
        assert!(line.contains(&format!("(safetensors, state_dict, {d})")) && line.contains("4 layers 0, 2, 4, 6") && line.contains("zero bias (no .bias in the file): 6"), "{line}");
        let read = &v["config"]["weights_read"];
        assert_eq!(read["layers"][0], serde_json::json!({"weight": "0.weight", "bias": "0.bias"}));
        assert_eq!(read["layers"][3], serde_json::json!({"weight": "6.weight", "bias": null}));
        assert_eq!(read["dtypes"], serde_json::json!([d]));
    }
}

#[test]
fn state_dict_npz_in_float32_probes_as_the_same_w_npz() {
    // np.savez(f, **{k: v.numpy() for k, v in model.state_dict().items()}).
    let dir = tempfile::tempdir().unwrap();
    let net = layers(&[4, 6, 6, 2], Dtype::F32, 9);
    let file = name(dir.path(), "state_dict.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&file).unwrap());
    for (l, k) in ["fc1", "fc2", "fc10"].iter().enumerate() {
        // numpy writes a transposed (column-major) array with fortran_order True.
        let mut w = Array2::<f32>::zeros(net[l].0.raw_dim().f());
        w.assign(&net[l].0.mapv(|x| x as f32));
        if l == 1 {
            npz.add_array(format!("{k}.weight"), &w).unwrap();
        } else {
            npz.add_array(format!("{k}.weight"), &w.as_standard_layout()).unwrap();
        }
        npz.add_array(format!("{k}.bias"), &net[l].1.mapv(|x| x as f32)).unwrap();
    }
    npz.finish().unwrap();
    let (v, stdout) = assert_probes_as_w_npz(dir.path(), &file, &[], &net);
    assert!(stdout.contains("(npz, state_dict, f32): 3 layers fc1, fc2, fc10"), "{stdout}");
    assert_eq!(v["config"]["weights_read"]["layers"][2]["weight"], "fc10.weight");
    // The w1..wL reference itself: read as before, and said so.
    let reference = dir.path().join("reference.npz");
    let (v, stdout) = probe(&reference, &[], &dir.path().join("w.json"));
    assert!(stdout.contains("(npz, w1..wL, f64): 3 layers w1, w2, w3"), "{stdout}");
    assert_eq!(v["config"]["weights_read"]["layers"][0], serde_json::json!({"weight": "w1", "bias": "b1"}));
    assert_bad(&["probe", "--weights", reference.to_str().unwrap(), "--layers", "w1"], &["--layers", "w1..wL"]);
}

/// encoder.layers.{0..11}: stored in a shuffled order (by hand) and in the crate's name order
/// (0, 1, 10, 11, 2, …); both are read in the order 0..11.
fn encoder(dtype: Dtype) -> (Vec<(Array2<f64>, Array1<f64>)>, Vec<T>) {
    let widths = [6, 8, 5, 7, 8, 6, 6, 5, 9, 4, 6, 7, 3];
    let net = layers(&widths, dtype, 3);
    let mut ts = Vec::new();
    for (l, (w, b)) in net.iter().enumerate() {
        ts.push(t(format!("encoder.layers.{l}.weight"), dtype, w.shape(), w.iter().copied().collect()));
        ts.push(t(format!("encoder.layers.{l}.bias"), dtype, b.shape(), b.to_vec()));
    }
    // A fixed permutation of the 24 tensors (7 is prime to 24).
    let shuffled = (0..ts.len()).map(|i| (i * 7 + 5) % ts.len()).map(|i| t(ts[i].key.clone(), ts[i].dtype, &ts[i].shape, ts[i].data.clone())).collect();
    (net, shuffled)
}

#[test]
fn nested_keys_in_shuffled_order_are_read_in_natural_order() {
    let dir = tempfile::tempdir().unwrap();
    let (net, shuffled) = encoder(Dtype::F32);
    let by_hand = name(dir.path(), "shuffled.safetensors");
    write_raw_safetensors(&by_hand, &shuffled, |h| h);
    let (v, stdout) = assert_probes_as_w_npz(dir.path(), &by_hand, &[], &net);
    assert!(stdout.contains("12 layers encoder.layers.0, encoder.layers.1, …, encoder.layers.11"), "{stdout}");
    let keys: Vec<String> = v["config"]["weights_read"]["layers"].as_array().unwrap().iter().map(|l| l["weight"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys, (0..12).map(|l| format!("encoder.layers.{l}.weight")).collect::<Vec<_>>());
    let by_crate = name(dir.path(), "sorted.safetensors");
    write_safetensors(&by_crate, &shuffled);
    assert_probes_as_w_npz(dir.path(), &by_crate, &[], &net);
}

#[test]
fn other_tensors_are_refused_by_name_and_ignored_with_layers() {
    let dir = tempfile::tempdir().unwrap();
    let (net, mut ts) = encoder(Dtype::BF16);
    ts.push(t("embeddings.word_embeddings.weight", Dtype::BF16, &[10, 6], values(60, 7, Dtype::BF16)));
    ts.push(t("encoder.norm.weight", Dtype::F32, &[3], vec![1.0; 3]));
    ts.push(t("encoder.norm.bias", Dtype::F32, &[3], vec![0.0; 3]));
    let file = name(dir.path(), "bert-ish.safetensors");
    write_safetensors(&file, &ts);
    let f = file.to_str().unwrap();
    assert_bad(&["probe", "--weights", f], &["bert-ish.safetensors", "encoder.norm.bias [3]", "encoder.norm.weight [3]", "--layers"]);
    for select in ["encoder.layers", r"encoder\.layers\.\d{1,2}"] {
        let (v, stdout) = assert_probes_as_w_npz(dir.path(), &file, &["--layers", select], &net);
        assert!(stdout.contains("ignored 3: embeddings.word_embeddings.weight [10, 6], encoder.norm.bias [3], encoder.norm.weight [3]"), "{stdout}");
        assert_eq!(v["config"]["weights_read"]["ignored"].as_array().unwrap().len(), 3);
        assert_eq!(v["config"]["weights_read"]["select"], select);
    }
    // The layers listed in another order are probed in that order (here: not chaining).
    assert_bad(&["probe", "--weights", f, "--layers", "encoder.layers.1,encoder.layers.0"], &["encoder.layers.0.weight", "do not chain"]);
    assert_bad(&["probe", "--weights", f, "--layers", "decoder"], &["--layers", "'decoder' matches no layer"]);
    assert_bad(&["probe", "--weights", f, "--layers", "encoder"], &["'encoder.norm.weight' is a 1-D weight"]);
    assert_bad(&["probe", "--weights", f, "--layers", "encoder.layers("], &["--layers", "not a regular expression"]);
    assert_bad(&["probe", "--width", "4", "--depth", "2", "--layers", "encoder"], &["--layers", "--weights"]);
}

#[test]
fn bad_checkpoints_exit_2_with_one_line_naming_the_key_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| name(dir.path(), f);
    let bad = |f: &str, needles: &[&str]| assert_bad(&["probe", "--weights", p(f).to_str().unwrap()], needles);
    let ok = vec![t("0.weight", Dtype::F32, &[3, 2], values(6, 1, Dtype::F32)), t("0.bias", Dtype::F32, &[3], values(3, 2, Dtype::F32)), t("1.weight", Dtype::F32, &[2, 3], values(6, 3, Dtype::F32))];
    write_safetensors(&p("ok.safetensors"), &ok);
    let good = std::fs::read(p("ok.safetensors")).unwrap();
    assert!(gradscope(&["probe", "--weights", p("ok.safetensors").to_str().unwrap(), "--backend", "cpu"]).status.success());

    std::fs::write(p("truncated.safetensors"), &good[..good.len() - 5]).unwrap();
    bad("truncated.safetensors", &["truncated.safetensors", "truncated", "need 60 bytes", "holds 55"]);
    std::fs::write(p("header.safetensors"), &good[..20]).unwrap();
    bad("header.safetensors", &["header.safetensors", "not a safetensors file"]);
    std::fs::write(p("junk.safetensors"), b"\x05\x00\x00\x00\x00\x00\x00\x00hello").unwrap();
    bad("junk.safetensors", &["junk.safetensors", "not the JSON table"]);
    bad("missing.safetensors", &["missing.safetensors", "cannot open"]);
    std::fs::write(p("empty.safetensors"), b"").unwrap();
    bad("empty.safetensors", &["empty.safetensors", "not a safetensors file"]);
    assert_bad(&["probe", "--weights", dir.path().to_str().unwrap()], &["is a directory"]);
    // The header says 0.bias starts at byte 20, where 0.weight ends at 24.
    write_raw_safetensors(&p("offsets.safetensors"), &ok, |h| h.replace("[24,36]", "[20,32]"));
    bad("offsets.safetensors", &["offsets.safetensors", "'0.bias'", "data_offsets"]);
    // The header gives 0.bias 16 bytes for 3 f32.
    write_raw_safetensors(&p("size.safetensors"), &ok, |h| h.replace("[24,36]", "[24,40]").replace("[36,60]", "[40,64]"));
    let mut padded = std::fs::read(p("size.safetensors")).unwrap();
    padded.extend([0; 4]);
    std::fs::write(p("size.safetensors"), padded).unwrap();
    bad("size.safetensors", &["'0.bias'", "16 bytes", "need 12"]);

    write_safetensors(&p("chain.safetensors"), &[t("0.weight", Dtype::F32, &[3, 2], vec![0.5; 6]), t("1.weight", Dtype::F32, &[2, 4], vec![0.5; 8])]);
    bad("chain.safetensors", &["'1.weight'", "[2, 4]", "do not chain", "'0.weight'"]);
    write_safetensors(&p("bias.safetensors"), &[t("0.weight", Dtype::F32, &[3, 2], vec![0.5; 6]), t("0.bias", Dtype::F32, &[2], vec![0.0; 2])]);
    bad("bias.safetensors", &["'0.bias'", "[2]", "(3,)"]);
    let conv = [t("conv.weight", Dtype::F32, &[2, 3, 3], vec![0.5; 18]), t("fc.weight", Dtype::F32, &[2, 3], vec![0.5; 6])];
    write_safetensors(&p("conv.safetensors"), &conv);
    bad("conv.safetensors", &["conv.weight [2, 3, 3]"]);
    assert_bad(&["probe", "--weights", p("conv.safetensors").to_str().unwrap(), "--layers", "conv,fc"], &["'conv.weight' is a 3-D weight"]);
    let mut nan = values(6, 3, Dtype::F16);
    nan[4] = f64::NAN;
    write_safetensors(&p("nan.safetensors"), &[t("0.weight", Dtype::F32, &[3, 2], vec![0.5; 6]), t("1.weight", Dtype::F16, &[2, 3], nan)]);
    bad("nan.safetensors", &["'1.weight'", "NaN", "[1, 1]"]);
    let ambiguous = [t("input.weight", Dtype::F32, &[3, 2], vec![0.5; 6]), t("output.weight", Dtype::F32, &[2, 3], vec![0.5; 6])];
    write_safetensors(&p("ambiguous.safetensors"), &ambiguous);
    bad("ambiguous.safetensors", &["'input' and 'output'", "--layers 'input,output'"]);
    // After the fix the message suggests, it probes.
    assert!(gradscope(&["probe", "--weights", p("ambiguous.safetensors").to_str().unwrap(), "--layers", "input,output", "--backend", "cpu"]).status.success());
    let ints = safetensors::serialize([("0.weight", TensorView::new(Dtype::I64, vec![1, 1], &[1, 0, 0, 0, 0, 0, 0, 0]).unwrap())], None).unwrap();
    std::fs::write(p("ints.safetensors"), ints).unwrap();
    bad("ints.safetensors", &["'0.weight'", "I64", "bf16"]);
    write_safetensors(&p("none.safetensors"), &[t("w1", Dtype::F32, &[2, 2], vec![0.5; 4])]);
    bad("none.safetensors", &["none.safetensors", "no key ends in '.weight'"]);
}
