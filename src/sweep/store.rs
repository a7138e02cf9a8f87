//! The sweep directory: `meta.json`, one finished group per `points/gNNNNN.{npz,json}`
//! (written atomically, the JSON last, so a group is either complete or absent), and the
//! assembled `summary.csv`, `summary.npy`, `profiles/*.npy` and, over several seeds,
//! `summary_seeds.csv` and `summary_seeds.npy`.

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use ndarray_npy::{NpzReader, NpzWriter, WriteNpyExt};
use serde::{Deserialize, Serialize};

use super::{Group, SummaryRow, SweepPlan};
use crate::error::{Error, Result};
use crate::export::npy::{Column, table_npy};
use crate::export::write_atomic;
use crate::stats::Report;

/// The per-layer fields kept as profiles, one `profiles/<field>.npy` each.
/// `log10_q` and `c` are the measured forward signal (NaN where the backend does not
/// measure it); `log10_q_predicted` and `c_predicted` are their mean-field maps
/// (`theory::signal`), one per configuration, shared by its depths (layer l's value does
/// not depend on the layers above it).
pub const PROFILE_FIELDS: &[&str] = &["log10_grad_b_rms", "log10_grad_b_mean", "log10_grad_w_rms", "log10_bound", "log10_bound_tight", "log10_grad_b_rms_predicted", "log10_q", "c", "log10_q_predicted", "c_predicted"];

/// Profiles a sweep folder written before they existed may lack; they assemble as NaN.
const LATER_PROFILES: &[&str] = &["log10_q", "c", "log10_q_predicted", "c_predicted"];
const PREDICTED_SIGNAL: &[&str] = &["log10_q_predicted", "c_predicted"];

/// A group's mean-field predictions, computed apart from its reports: the predicted
/// log10 grad_b_rms profile per depth (None where the theory does not cover it), and the
/// forward signal's predicted profiles by field.
#[derive(Debug, Clone, Default)]
pub struct Predicted {
    pub gradient: Vec<Option<Vec<f64>>>,
    pub signal: std::collections::HashMap<&'static str, Vec<f64>>,
}

/// serde for f64 that keeps ±inf and NaN (as the strings "inf", "-inf", "nan") in JSON.
pub mod nonfinite {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum F {
            N(f64),
            S(String),
        }
        Ok(match F::deserialize(d)? {
            F::N(v) => v,
            F::S(s) => match s.as_str() {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                _ => f64::NAN,
            },
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub gradscope_version: String,
    pub config: SweepPlan,
    pub shard: Option<String>,
    pub device: String,
    pub groups_total: usize,
    pub groups_done: usize,
    pub points_done: usize,
    /// Sum of the groups' own run times, in seconds (over every run that contributed).
    pub compute_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupFile {
    group: Group,
    seconds: f64,
    device: String,
    rows: Vec<SummaryRow>,
}

/// An open sweep directory.
pub struct SweepDir {
    pub path: PathBuf,
}

fn io(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::file(path, format!("{what}: {e}"))
}

fn differences(a: &SweepPlan, b: &SweepPlan) -> Vec<String> {
    let (va, vb) = (serde_json::to_value(a).unwrap(), serde_json::to_value(b).unwrap());
    let (oa, ob) = (va.as_object().unwrap(), vb.as_object().unwrap());
    let mut d: Vec<String> = oa.iter().filter(|(k, v)| ob.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
    // A key only one side has (an option such as `spectrum` that is left out when unset).
    d.extend(ob.keys().filter(|k| !oa.contains_key(*k)).cloned());
    d
}

fn read_meta(dir: &Path) -> Result<Meta> {
    let p = dir.join("meta.json");
    let text = fs::read_to_string(&p).map_err(|e| io(&p, "cannot read", e))?;
    serde_json::from_str(&text).map_err(|e| io(&p, "not a gradscope sweep's meta.json", e))
}

impl SweepDir {
    /// Opens `path` for this plan: creates it, or checks that it holds the same sweep (and
    /// shard) to resume. Anything else is refused before a file is touched.
    pub fn open(path: &Path, plan: &SweepPlan, shard: Option<(usize, usize)>, device: &str) -> Result<SweepDir> {
        let shard_s = shard.map(|(k, n)| format!("{k}/{n}"));
        if path.exists() {
            if !path.is_dir() {
                return Err(Error::arg("--out", format!("'{}' exists and is not a folder", path.display())));
            }
            if path.join("meta.json").exists() {
                let meta = read_meta(path)?;
                let diff = differences(&meta.config, plan);
                if !diff.is_empty() {
                    return Err(Error::arg("--out", format!("'{}' holds a sweep of another configuration (differs in: {}); choose another folder", path.display(), diff.join(", "))));
                }
                if meta.shard != shard_s {
                    return Err(Error::arg("--shard", format!("'{}' holds shard {}, not {}", path.display(), meta.shard.as_deref().unwrap_or("none"), shard_s.as_deref().unwrap_or("none"))));
                }
            } else if fs::read_dir(path).map_err(|e| io(path, "cannot list", e))?.next().is_some() {
                return Err(Error::arg("--out", format!("'{}' is not empty and holds no gradscope sweep; choose an empty or new folder", path.display())));
            }
        }
        // A new folder is made with its parents, as `train --out` does: the README's
        // `-o runs/depth` must work in a fresh clone, where `runs/` does not exist yet.
        fs::create_dir_all(path.join("points")).map_err(|e| io(path, "cannot create", e))?;
        let dir = SweepDir { path: path.to_path_buf() };
        if !path.join("meta.json").exists() {
            let groups_total = plan.groups().iter().filter(|g| shard.is_none_or(|(k, n)| g.index % n == k - 1)).count();
            let meta = Meta { gradscope_version: env!("CARGO_PKG_VERSION").into(), config: plan.clone(), shard: shard_s, device: device.into(), groups_total, groups_done: 0, points_done: 0, compute_seconds: 0.0 };
            dir.write_meta(&meta)?;
        }
        Ok(dir)
    }

    fn write_meta(&self, meta: &Meta) -> Result<()> {
        let mut v = serde_json::to_vec_pretty(meta).map_err(|e| Error::Internal(e.to_string()))?;
        v.push(b'\n');
        write_atomic(&self.path.join("meta.json"), &v)
    }

    fn group_json(&self, g: &Group) -> PathBuf {
        self.path.join("points").join(format!("g{:05}.json", g.index))
    }

    /// True when the group's files are complete and describe this very group.
    pub fn is_done(&self, g: &Group) -> bool {
        let Ok(text) = fs::read_to_string(self.group_json(g)) else { return false };
        let Ok(gf) = serde_json::from_str::<GroupFile>(&text) else { return false };
        gf.group == *g && self.group_json(g).with_extension("npz").exists()
    }

    /// Writes one finished group, with its predictions (`SweepPlan::all_predictions`,
    /// computed beside the engine): profiles first, then the JSON that marks it done.
    pub fn write_group(&self, plan: &SweepPlan, g: &Group, reports: &[Report], seconds: f64, pr: &Predicted) -> Result<()> {
        let (predicted, signal_predicted) = (&pr.gradient, &pr.signal);
        let mut npz = NpzWriter::new(std::io::Cursor::new(Vec::new()));
        // Ragged, not padded: row i's layers 1..=depth_i, rows concatenated (the padded
        // table is built once, in `assemble`), so a log grid costs Σ depth_i, not n·max.
        for field in PROFILE_FIELDS {
            let mut flat: Vec<f64> = Vec::with_capacity(reports.iter().map(|r| r.layers.len()).sum());
            for (i, r) in reports.iter().enumerate() {
                if *field == "log10_grad_b_rms_predicted" {
                    let p = predicted[i].as_deref();
                    flat.extend((0..r.layers.len()).map(|l| p.and_then(|p| p.get(l).copied()).unwrap_or(f64::NAN)));
                } else if let Some(prof) = signal_predicted.get(*field) {
                    flat.extend((0..r.layers.len()).map(|l| prof.get(l).copied().unwrap_or(f64::NAN)));
                } else if PREDICTED_SIGNAL.contains(field) {
                    // A prediction the theory does not cover (q leaves f64's range): NaN, not
                    // the measured profile of the branch below.
                    flat.extend((0..r.layers.len()).map(|_| f64::NAN));
                } else if LATER_PROFILES.contains(field) {
                    let sig = |l: usize| r.signal.get(l).copied().unwrap_or(crate::stats::Signal::NAN);
                    flat.extend((0..r.layers.len()).map(|l| if *field == "c" { sig(l).c } else { sig(l).log10_q }));
                } else {
                    flat.extend(r.layers.iter().map(|st| st.log_fields().iter().find(|(n, _)| n == field).unwrap().1));
                }
            }
            npz.add_array(*field, &ndarray::Array1::from(flat)).map_err(|e| Error::Internal(e.to_string()))?;
        }
        let mut rows: Vec<SummaryRow> = reports.iter().zip(predicted.iter()).map(|(r, p)| SummaryRow::new(plan, g, r, p.as_deref())).collect();
        let mut seconds = seconds;
        if let Some((spectra, secs)) = plan.spectra(g)? {
            seconds += secs;
            for (row, s) in rows.iter_mut().zip(&spectra) {
                row.set_spectrum(s);
            }
            // Every example's values per depth, ragged like the profiles (depth i's K·m_i
            // values in a row), so summary columns can be recomputed or binned otherwise.
            let flat: Vec<f64> = spectra.iter().flat_map(|s| s.log10_singular_values.iter().flatten().copied()).collect();
            npz.add_array(super::spectrum::SPECTRA_FIELD, &ndarray::Array1::from(flat)).map_err(|e| Error::Internal(e.to_string()))?;
        }
        let bytes = npz.finish().map_err(|e| Error::Internal(e.to_string()))?.into_inner();
        let json_path = self.group_json(g);
        write_atomic(&json_path.with_extension("npz"), &bytes)?;
        let gf = GroupFile { group: g.clone(), seconds, device: reports.first().map(|r| r.device.clone()).unwrap_or_default(), rows };
        let mut v = serde_json::to_vec(&gf).map_err(|e| Error::Internal(e.to_string()))?;
        v.push(b'\n');
        write_atomic(&json_path, &v)
    }

    /// Rebuilds `summary.csv`, `summary.npy`, `profiles/*.npy` and `meta.json` from every
    /// finished group, in group order. Returns the number of points.
    pub fn assemble(&self, plan: &SweepPlan) -> Result<usize> {
        let mut files: BTreeMap<usize, (GroupFile, PathBuf)> = BTreeMap::new();
        let groups = plan.groups();
        let pts = self.path.join("points");
        for e in fs::read_dir(&pts).map_err(|e| io(&pts, "cannot list", e))? {
            let p = e.map_err(|e| io(&pts, "cannot list", e))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !(name.starts_with('g') && name.ends_with(".json")) {
                continue;
            }
            let gf: GroupFile = serde_json::from_str(&fs::read_to_string(&p).map_err(|e| io(&p, "cannot read", e))?).map_err(|e| io(&p, "corrupt group file", e))?;
            let known = groups.get(gf.group.index) == Some(&gf.group);
            if !known {
                return Err(io(&p, "group file", "does not belong to this sweep's configuration"));
            }
            files.insert(gf.group.index, (gf, p.with_extension("npz")));
        }
        let rows: Vec<&SummaryRow> = files.values().flat_map(|(gf, _)| gf.rows.iter()).collect();
        // summary.csv
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &rows {
            w.serialize(r).map_err(|e| Error::Internal(e.to_string()))?;
        }
        if rows.is_empty() {
            w.write_record(["no finished points"]).map_err(|e| Error::Internal(e.to_string()))?;
        }
        write_atomic(&self.path.join("summary.csv"), &w.into_inner().map_err(|e| Error::Internal(e.to_string()))?)?;
        // summary.npy: the same table as a numpy structured array.
        let f = |get: fn(&SummaryRow) -> f64| rows.iter().map(|r| get(r)).collect::<Vec<f64>>();
        let mut cols = config_columns(&rows, |r| (&r.activation, &r.init, &r.cost, [r.sigma_w, r.sigma_w2, r.sigma_b, r.sigma_b2], [r.width, r.batch]));
        cols.extend([
            Column::I64("seed", rows.iter().map(|r| r.seed as i64).collect()),
            Column::I64("depth", rows.iter().map(|r| r.depth as i64).collect()),
            Column::F64("log10_grad_b_rms_first", f(|r| r.log10_grad_b_rms_first)),
            Column::F64("log10_grad_b_rms_last", f(|r| r.log10_grad_b_rms_last)),
            Column::F64("log10_grad_w_rms_first", f(|r| r.log10_grad_w_rms_first)),
            Column::F64("log10_grad_w_rms_last", f(|r| r.log10_grad_w_rms_last)),
            Column::F64("log10_grad_b_mean_first", f(|r| r.log10_grad_b_mean_first)),
            Column::F64("slope_log10_grad_b_rms", f(|r| r.slope_log10_grad_b_rms)),
            Column::F64("log10_bound_first", f(|r| r.log10_bound_first)),
            Column::F64("log10_bound_tight_first", f(|r| r.log10_bound_tight_first)),
            Column::Text("status_first", rows.iter().map(|r| serde_json::to_value(r.status_first).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()).collect()),
            Column::F64("log10_grad_b_rms_first_predicted", f(|r| r.log10_grad_b_rms_first_predicted)),
            Column::F64("slope_log10_grad_b_rms_predicted", f(|r| r.slope_log10_grad_b_rms_predicted)),
        ]);
        if plan.spectrum.is_some() {
            cols.extend(super::spectrum::spectrum_columns(&rows));
        }
        write_atomic(&self.path.join("summary.npy"), &table_npy(&cols)?)?;
        if plan.seeds.len() > 1 {
            write_seed_summary(&self.path, &seed_summary(&rows))?;
        }
        // profiles/<field>.npy: rows = summary rows, NaN-padded to the deepest depth.
        let max_depth = rows.iter().map(|r| r.depth).max().unwrap_or(0);
        let prof = self.path.join("profiles");
        fs::create_dir_all(&prof).map_err(|e| io(&prof, "cannot create", e))?;
        for field in super::store::PROFILE_FIELDS {
            let mut all = Array2::<f64>::from_elem((rows.len(), max_depth), f64::NAN);
            let mut row0 = 0;
            for (gf, npz_path) in files.values() {
                let file = fs::File::open(npz_path).map_err(|e| io(npz_path, "cannot open", e))?;
                let mut z = NpzReader::new(file).map_err(|e| io(npz_path, "corrupt", e))?;
                let depths: usize = gf.rows.iter().map(|r| r.depth).sum();
                let a: ndarray::Array1<f64> = match z.by_name(field) {
                    Err(_) if LATER_PROFILES.contains(field) && !z.names().map_err(|e| io(npz_path, "corrupt", e))?.iter().any(|n| n.trim_end_matches(".npy") == *field) => ndarray::Array1::from_elem(depths, f64::NAN),
                    r => r.map_err(|e| io(npz_path, "corrupt", e))?,
                };
                if a.len() != gf.rows.iter().map(|r| r.depth).sum::<usize>() {
                    return Err(io(npz_path, "corrupt", "profile length differs from its JSON's depths"));
                }
                let mut at = 0;
                for r in &gf.rows {
                    all.slice_mut(ndarray::s![row0, ..r.depth]).assign(&a.slice(ndarray::s![at..at + r.depth]));
                    at += r.depth;
                    row0 += 1;
                }
            }
            let mut buf = Vec::new();
            all.write_npy(&mut buf).map_err(|e| Error::Internal(e.to_string()))?;
            write_atomic(&prof.join(format!("{field}.npy")), &buf)?;
        }
        if let Some(k) = plan.spectrum {
            let gs: Vec<(&Path, &[SummaryRow])> = files.values().map(|(gf, p)| (p.as_path(), gf.rows.as_slice())).collect();
            super::spectrum::write_spectra_npy(&self.path.join("spectra.npy"), &gs, k)?;
        }
        let mut meta = read_meta(&self.path)?;
        meta.groups_done = files.len();
        meta.points_done = rows.len();
        meta.compute_seconds = files.values().map(|(gf, _)| gf.seconds).sum();
        if let Some((gf, _)) = files.values().next() {
            meta.device = gf.device.clone();
        }
        self.write_meta(&meta)?;
        Ok(rows.len())
    }
}

/// Joins shard directories into `out`: every shard must hold the same configuration, and
/// no group may appear twice with different contents.
pub fn merge(out: &Path, shards: &[PathBuf]) -> Result<usize> {
    if shards.is_empty() {
        return Err(Error::arg("merge", "name at least one shard folder"));
    }
    let metas: Vec<Meta> = shards.iter().map(|s| read_meta(s)).collect::<Result<_>>()?;
    let plan = metas[0].config.clone();
    for (m, s) in metas.iter().zip(shards).skip(1) {
        let diff = differences(&m.config, &plan);
        if !diff.is_empty() {
            return Err(Error::arg("merge", format!("'{}' is a sweep of another configuration than '{}' (differs in: {})", s.display(), shards[0].display(), diff.join(", "))));
        }
    }
    let dir = SweepDir::open(out, &plan, None, &metas[0].device)?;
    for s in shards {
        let pts = s.join("points");
        for e in fs::read_dir(&pts).map_err(|e| io(&pts, "cannot list", e))? {
            let p = e.map_err(|e| io(&pts, "cannot list", e))?.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(String::from) else { continue };
            if !(name.starts_with('g') && (name.ends_with(".json") || name.ends_with(".npz"))) {
                continue;
            }
            let bytes = fs::read(&p).map_err(|e| io(&p, "cannot read", e))?;
            let target = dir.path.join("points").join(&name);
            if target.exists() {
                if fs::read(&target).map_err(|e| io(&target, "cannot read", e))? != bytes && name.ends_with(".json") {
                    let a: GroupFile = serde_json::from_slice(&bytes).map_err(|e| io(&p, "corrupt", e))?;
                    let b: GroupFile = serde_json::from_str(&fs::read_to_string(&target).unwrap_or_default()).map_err(|e| io(&target, "corrupt", e))?;
                    if a.rows != b.rows {
                        return Err(io(&p, "conflict", format!("group {} differs from the copy already in '{}'", a.group.index, out.display())));
                    }
                }
                continue;
            }
            write_atomic(&target, &bytes)?;
        }
    }
    let mut meta = read_meta(&dir.path)?;
    meta.groups_total = plan.groups().len();
    dir.write_meta(&meta)?;
    dir.assemble(&plan)
}

/// Progress on stderr: a bar on a terminal, a plain line per group otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    total: usize,
    done: usize,
    t0: Instant,
}

impl Progress {
    pub fn new(enabled: bool, total: usize, skipped: usize) -> Progress {
        let tty = std::io::stderr().is_terminal();
        if enabled && skipped > 0 {
            eprintln!("resuming: {skipped} configuration(s) already finished, {total} to run");
        }
        let bar = (enabled && tty).then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} configurations  {elapsed_precise} elapsed, ETA {eta_precise}  {per_sec}  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress { bar, plain: enabled && !tty, total, done: 0, t0: Instant::now() }
    }

    pub fn tick(&mut self, g: &Group, depths: usize) {
        self.done += 1;
        let what = format!("{} {} σ_w²={} σ_b²={} n={} seed={}", g.activation, g.init, g.sigma_w2, g.sigma_b2, g.width, g.seed);
        if let Some(b) = &self.bar {
            b.set_message(what);
            b.inc(1);
        } else if self.plain {
            let el = self.t0.elapsed().as_secs_f64();
            let eta = el / self.done as f64 * (self.total - self.done) as f64;
            eprintln!("[{}/{}] {what}: {depths} depths; {el:.1} s elapsed, ETA {eta:.0} s, {:.1} points/s", self.done, self.total, (self.done * depths) as f64 / el.max(1e-9));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// One row of `summary_seeds.csv`: a (configuration, depth) over the seeds of the sweep
/// (docs/MATH.md, "Over seeds"), with Hanin's per-input predictions where they apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedSummaryRow {
    pub activation: String,
    pub init: String,
    pub cost: String,
    pub sigma_w: f64,
    pub sigma_w2: f64,
    pub sigma_b: f64,
    pub sigma_b2: f64,
    pub width: usize,
    pub batch: usize,
    pub depth: usize,
    /// Seeds finished for this point.
    pub seeds: usize,
    /// Of those, the seeds whose log10_grad_b_rms_first is finite (the mean and sd are over
    /// these; an exactly zero or overflowing gradient is counted, not averaged).
    pub seeds_finite: usize,
    #[serde(with = "nonfinite")]
    pub log10_grad_b_rms_first_mean: f64,
    /// Sample standard deviation (n − 1); NaN for fewer than two finite seeds.
    #[serde(with = "nonfinite")]
    pub log10_grad_b_rms_first_sd: f64,
    /// Hanin & Nica's sd of log10 ‖δ¹‖ for one input, relu with σ_w² = 2 and σ_b² = 0:
    /// √(¼ Σ_{l=1..L} Var ln((2/n) χ²_K)) / ln 10 (docs/THEORY.md); NaN for other σ, for
    /// which the papers give no constant.
    #[serde(with = "nonfinite")]
    pub log10_grad_b_rms_first_sd_predicted: f64,
    /// E[g⁴]/E[g²]² over the seeds, g = grad_b_rms at layer 1 (zeros included).
    #[serde(with = "nonfinite")]
    pub moment_ratio: f64,
    /// Hanin 2018: Π_{l=1..L} (1 + 5/n_l) for relu with σ_w² = 2 and σ_b² = 0; NaN otherwise.
    #[serde(with = "nonfinite")]
    pub moment_ratio_predicted: f64,
}

/// Groups the summary rows by everything but the seed, in order of first appearance.
pub fn seed_summary(rows: &[&SummaryRow]) -> Vec<SeedSummaryRow> {
    let mut order: Vec<SeedSummaryRow> = Vec::new();
    let mut values: Vec<Vec<f64>> = Vec::new();
    for r in rows {
        let key = |o: &SeedSummaryRow| {
            o.activation == r.activation
                && o.init == r.init
                && o.cost == r.cost
                && o.sigma_w2 == r.sigma_w2
                && o.sigma_b2 == r.sigma_b2
                && o.width == r.width
                && o.batch == r.batch
                && o.depth == r.depth
        };
        let i = match order.iter().position(key) {
            Some(i) => i,
            None => {
                let hanin = r.activation == "relu" && r.sigma_w2 == 2.0 && r.sigma_b2 == 0.0;
                let widths = vec![r.width; r.depth];
                order.push(SeedSummaryRow {
                    activation: r.activation.clone(),
                    init: r.init.clone(),
                    cost: r.cost.clone(),
                    sigma_w: r.sigma_w,
                    sigma_w2: r.sigma_w2,
                    sigma_b: r.sigma_b,
                    sigma_b2: r.sigma_b2,
                    width: r.width,
                    batch: r.batch,
                    depth: r.depth,
                    seeds: 0,
                    seeds_finite: 0,
                    log10_grad_b_rms_first_mean: f64::NAN,
                    log10_grad_b_rms_first_sd: f64::NAN,
                    log10_grad_b_rms_first_sd_predicted: if hanin {
                        crate::theory::hanin::relu_he_var_ln_norm(&widths).sqrt() / std::f64::consts::LN_10
                    } else {
                        f64::NAN
                    },
                    moment_ratio: f64::NAN,
                    moment_ratio_predicted: if hanin { crate::theory::hanin::relu_he_moment_ratio(&widths) } else { f64::NAN },
                });
                values.push(Vec::new());
                order.len() - 1
            }
        };
        values[i].push(r.log10_grad_b_rms_first);
    }
    for (o, v) in order.iter_mut().zip(&values) {
        let fin: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        o.seeds = v.len();
        o.seeds_finite = fin.len();
        if !fin.is_empty() {
            o.log10_grad_b_rms_first_mean = fin.iter().sum::<f64>() / fin.len() as f64;
        }
        if fin.len() >= 2 {
            o.log10_grad_b_rms_first_sd = crate::theory::hanin::sample_variance(&fin).sqrt();
        }
        // An overflowing seed leaves the moments undefined; exact zeros count as zeros.
        if !v.iter().any(|x| x.is_nan() || *x == f64::INFINITY) && !fin.is_empty() {
            let top = fin.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sq: Vec<f64> = v.iter().map(|x| if x.is_finite() { 10f64.powf(2.0 * (x - top)) } else { 0.0 }).collect();
            o.moment_ratio = crate::theory::hanin::moment_ratio(&sq);
        }
    }
    order
}

fn write_seed_summary(dir: &Path, rows: &[SeedSummaryRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| Error::Internal(e.to_string()))?;
    }
    if rows.is_empty() {
        w.write_record(["no finished points"]).map_err(|e| Error::Internal(e.to_string()))?;
    }
    write_atomic(&dir.join("summary_seeds.csv"), &w.into_inner().map_err(|e| Error::Internal(e.to_string()))?)?;
    let f = |get: fn(&SeedSummaryRow) -> f64| rows.iter().map(get).collect::<Vec<f64>>();
    let i = |get: fn(&SeedSummaryRow) -> usize| rows.iter().map(|r| get(r) as i64).collect::<Vec<i64>>();
    let mut cols = config_columns(rows, |r| (&r.activation, &r.init, &r.cost, [r.sigma_w, r.sigma_w2, r.sigma_b, r.sigma_b2], [r.width, r.batch]));
    cols.extend([
        Column::I64("depth", i(|r| r.depth)),
        Column::I64("seeds", i(|r| r.seeds)),
        Column::I64("seeds_finite", i(|r| r.seeds_finite)),
        Column::F64("log10_grad_b_rms_first_mean", f(|r| r.log10_grad_b_rms_first_mean)),
        Column::F64("log10_grad_b_rms_first_sd", f(|r| r.log10_grad_b_rms_first_sd)),
        Column::F64("log10_grad_b_rms_first_sd_predicted", f(|r| r.log10_grad_b_rms_first_sd_predicted)),
        Column::F64("moment_ratio", f(|r| r.moment_ratio)),
        Column::F64("moment_ratio_predicted", f(|r| r.moment_ratio_predicted)),
    ]);
    write_atomic(&dir.join("summary_seeds.npy"), &table_npy(&cols)?)
}

/// The configuration columns every summary table opens with: activation, init, cost,
/// [sigma_w, sigma_w2, sigma_b, sigma_b2], [width, batch].
#[allow(clippy::type_complexity)]
fn config_columns<R>(rows: &[R], get: impl Fn(&R) -> (&String, &String, &String, [f64; 4], [usize; 2])) -> Vec<Column<'static>> {
    let text = |k: usize| rows.iter().map(|r| [get(r).0, get(r).1, get(r).2][k].clone()).collect::<Vec<String>>();
    let num = |k: usize| rows.iter().map(|r| get(r).3[k]).collect::<Vec<f64>>();
    let int = |k: usize| rows.iter().map(|r| get(r).4[k] as i64).collect::<Vec<i64>>();
    vec![
        Column::Text("activation", text(0)),
        Column::Text("init", text(1)),
        Column::Text("cost", text(2)),
        Column::F64("sigma_w", num(0)),
        Column::F64("sigma_w2", num(1)),
        Column::F64("sigma_b", num(2)),
        Column::F64("sigma_b2", num(3)),
        Column::I64("width", int(0)),
        Column::I64("batch", int(1)),
    ]
}
