//! Checkpoints as people keep them: `.safetensors` (memory-mapped) and PyTorch `state_dict`
//! layouts in `.safetensors` or `.npz`, turned into the linear layers of a network.
//!
//! A linear layer is a 2-D `P.weight` (n_l × n_{l-1}, `nn.Linear`'s layout) with an optional
//! 1-D `P.bias`; a missing bias is a zero bias. Layers are taken in the natural order of
//! their key paths (`layers.2` before `layers.10`), and only where numbers in the keys decide
//! that order: `input` against `output` is refused as ambiguous rather than guessed.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use ndarray::{Array1, Array2, ShapeBuilder};
use ndarray_npy::npy::header::Header;
use regex::Regex;
use serde::Serialize;

use super::StoredParams;
use super::files::{check_finite, read_params};
use crate::error::{Error, Result};

/// What was read from a `--weights` file: printed in the probe's header and recorded in the
/// JSON `config` as `weights_read`.
#[derive(Debug, Clone, Serialize)]
pub struct WeightsRead {
    /// `safetensors` or `npz`.
    pub format: String,
    /// `state_dict` (`P.weight`, `P.bias`) or `w1..wL` (`w1..wL`, `b1..bL`).
    pub layout: String,
    /// The element types of the tensors used (f64, f32, f16, bf16), each once.
    pub dtypes: Vec<String>,
    /// The `--layers` selection, as given.
    pub select: Option<String>,
    /// Layer by layer (l = 1..L): the keys used; `bias` is null for a zero bias.
    pub layers: Vec<LayerKeys>,
    /// Every other tensor in the file, as `key [shape]`, ignored.
    pub ignored: Vec<String>,
}

/// The keys of one linear layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerKeys {
    pub weight: String,
    pub bias: Option<String>,
}

impl WeightsRead {
    /// One line for the probe's header: file, format, dtype, layers, zero biases, ignored
    /// tensors (the widths are on the line above).
    pub fn line(&self, path: &Path) -> String {
        let name = |k: &LayerKeys| path_of(&k.weight).map_or(k.weight.clone(), |p| if p.is_empty() { k.weight.clone() } else { p.to_string() });
        let l = self.layers.len();
        let layers = if l <= 4 {
            self.layers.iter().map(name).collect::<Vec<_>>().join(", ")
        } else {
            format!("{}, {}, …, {}", name(&self.layers[0]), name(&self.layers[1]), name(&self.layers[l - 1]))
        };
        let mut s = format!(
            "weights {} ({}, {}, {}): {l} layer{} {layers}",
            path.display(),
            self.format,
            self.layout,
            self.dtypes.join("+"),
            if l == 1 { "" } else { "s" }
        );
        let zero: Vec<String> = self.layers.iter().filter(|k| k.bias.is_none()).map(name).collect();
        if !zero.is_empty() {
            s += &format!("; zero bias (no .bias in the file): {}", zero.join(", "));
        }
        if !self.ignored.is_empty() {
            const SHOWN: usize = 12;
            let more = self.ignored.len().saturating_sub(SHOWN);
            s += &format!("; ignored {}: {}", self.ignored.len(), self.ignored[..self.ignored.len().min(SHOWN)].join(", "));
            if more > 0 {
                s += &format!(", and {more} more (all in the JSON config)");
            }
        }
        s
    }
}

/// Element types a weight may have; each widens to f64 exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Float {
    F64,
    F32,
    F16,
    BF16,
}

impl Float {
    fn size(self) -> usize {
        match self {
            Float::F64 => 8,
            Float::F32 => 4,
            Float::F16 | Float::BF16 => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Float::F64 => "f64",
            Float::F32 => "f32",
            Float::F16 => "f16",
            Float::BF16 => "bf16",
        }
    }
}

/// One tensor of the file, before its data is read.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    shape: Vec<usize>,
    /// The file's own name for the element type (`F32`, `<f4`), for messages.
    dtype: String,
    float: Option<Float>,
    big_endian: bool,
    fortran: bool,
    /// Byte range in the memory map (safetensors) or the zip entry's name (npz).
    loc: Loc,
}

#[derive(Debug, Clone)]
enum Loc {
    Bytes(usize, usize),
    Zip(String),
}

impl Entry {
    fn describe(&self) -> String {
        format!("{} {:?}", self.key, self.shape)
    }
}

enum Source {
    Safetensors(memmap2::Mmap),
    Npz(zip::ZipArchive<BufReader<File>>),
}

/// Reads the linear layers of `path` (`.safetensors` or `.npz`); `select` is `--layers`.
///
/// # Errors
/// An unreadable or malformed file, a key layout with no linear layers, other tensors without
/// `select`, a selection that matches nothing or is ambiguous, widths that do not chain, a
/// weight that is not 2-D, a dtype other than f64/f32/f16/bf16, or a non-finite value; each
/// message names the file and the key.
pub fn read_weights(path: &Path, select: Option<&str>) -> Result<(StoredParams, WeightsRead)> {
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::file(path, "is a directory, not a .safetensors or .npz file"));
    }
    let (mut source, entries) = if is_safetensors(path, &file) { open_safetensors(path, &file)? } else { open_npz(path, file)? };
    let format = match source {
        Source::Safetensors(_) => "safetensors",
        Source::Npz(_) => "npz",
    };
    let legacy = format == "npz" && entries.iter().any(|e| e.key == "w1") && !entries.iter().any(|e| e.key.contains('.'));
    if legacy {
        if select.is_some() {
            return Err(Error::arg("--layers", format!("{} uses the w1..wL layout, all of whose layers are used; --layers selects among state_dict keys (P.weight)", path.display())));
        }
        let p = read_params(path)?;
        let layers: Vec<LayerKeys> = (1..=p.w.len()).map(|l| LayerKeys { weight: format!("w{l}"), bias: Some(format!("b{l}")) }).collect();
        return Ok((p, WeightsRead::new(format, "w1..wL", None, &entries, layers)));
    }
    let layers = plan(path, &entries, select)?;
    let find = |k: &str| entries.iter().find(|e| e.key == k).expect("planned keys exist");
    let used: Vec<&Entry> = layers.iter().flat_map(|l| std::iter::once(find(&l.weight)).chain(l.bias.as_deref().map(find))).collect();
    if let Some(e) = used.iter().find(|e| e.float.is_none()) {
        return Err(Error::file(path, format!("tensor '{}' has dtype {}; weights and biases must be f64, f32, f16 or bf16", e.key, e.dtype)));
    }
    let elements: u128 = used.iter().map(|e| e.shape.iter().map(|&n| n as u128).product::<u128>()).sum();
    crate::backend::cpu::check_memory((elements * 8).min(u64::MAX as u128) as u64, "the weights as f64", "probe a smaller network")?;
    let mut w = Vec::with_capacity(layers.len());
    let mut b = Vec::with_capacity(layers.len());
    for l in &layers {
        let we = find(&l.weight);
        let data = read_entry(path, &mut source, we)?;
        let shape = (we.shape[0], we.shape[1]);
        let bad = |e: ndarray::ShapeError| Error::Internal(format!("{}: {e}", we.key));
        // numpy writes a transposed array column-major (fortran_order); one copy makes it row-major.
        let wl = if we.fortran { Array2::from_shape_vec(shape.f(), data).map_err(bad)?.as_standard_layout().into_owned() } else { Array2::from_shape_vec(shape, data).map_err(bad)? };
        check_finite(&wl, path, &we.key)?;
        let bl = match &l.bias {
            Some(k) => {
                let bl = Array1::from_vec(read_entry(path, &mut source, find(k))?);
                check_finite(&bl, path, k)?;
                bl
            }
            None => Array1::zeros(wl.nrows()),
        };
        w.push(wl);
        b.push(bl);
    }
    let read = WeightsRead::new(format, "state_dict", select, &entries, layers);
    Ok((StoredParams { w, b, source: path.display().to_string() }, read))
}

impl WeightsRead {
    /// The record of `layers` read from a file holding `entries`: dtypes used, the rest ignored.
    fn new(format: &str, layout: &str, select: Option<&str>, entries: &[Entry], layers: Vec<LayerKeys>) -> WeightsRead {
        let used = |e: &Entry| layers.iter().any(|l| l.weight == e.key || l.bias.as_ref() == Some(&e.key));
        let mut dtypes: Vec<String> = Vec::new();
        for e in entries.iter().filter(|e| used(e)) {
            let d = e.float.map_or(e.dtype.clone(), |f| f.name().to_string());
            if !dtypes.contains(&d) {
                dtypes.push(d);
            }
        }
        WeightsRead {
            format: format.into(),
            layout: layout.into(),
            dtypes,
            select: select.map(str::to_string),
            ignored: entries.iter().filter(|e| !used(e)).map(Entry::describe).collect(),
            layers,
        }
    }
}

/// By extension, else by content: a zip archive is an `.npz`, anything else is tried as
/// safetensors (whose header then says whether it is one).
fn is_safetensors(path: &Path, file: &File) -> bool {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("safetensors") => true,
        Some("npz") => false,
        _ => {
            let mut magic = [0u8; 4];
            let zip = (&*file).read_exact(&mut magic).is_ok() && &magic == b"PK\x03\x04";
            !zip
        }
    }
}

fn open_safetensors(path: &Path, file: &File) -> Result<(Source, Vec<Entry>)> {
    // SAFETY: the map is read-only and lives only while the tensors are copied out; as with
    // every memory-mapped reader (safetensors' own docs), another process shrinking the file
    // meanwhile would fault, which is accepted for not reading a multi-GB file into memory.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::file(path, format!("cannot memory-map: {e}")))?;
    let (n, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| safetensors_error(path, &map, e))?;
    let base = 8 + n;
    let mut entries: Vec<Entry> = meta
        .tensors()
        .into_iter()
        .map(|(key, info)| {
            use safetensors::Dtype;
            let float = match info.dtype {
                Dtype::F64 => Some(Float::F64),
                Dtype::F32 => Some(Float::F32),
                Dtype::F16 => Some(Float::F16),
                Dtype::BF16 => Some(Float::BF16),
                _ => None,
            };
            let (s, e) = info.data_offsets;
            Entry { key, shape: info.shape.clone(), dtype: format!("{:?}", info.dtype), float, big_endian: false, fortran: false, loc: Loc::Bytes(base + s, base + e) }
        })
        .collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((Source::Safetensors(map), entries))
}

/// The crate's error in the user's terms, naming the tensor where the header allows.
fn safetensors_error(path: &Path, buf: &[u8], e: safetensors::SafeTensorError) -> Error {
    use safetensors::SafeTensorError as E;
    let header = || -> Option<(usize, serde_json::Map<String, serde_json::Value>)> {
        let n = u64::from_le_bytes(buf.get(..8)?.try_into().ok()?) as usize;
        let text = std::str::from_utf8(buf.get(8..8usize.checked_add(n)?)?).ok()?;
        Some((n, serde_json::from_str(text).ok()?))
    };
    let tensors = |h: &serde_json::Map<String, serde_json::Value>| -> Vec<(String, u64, u64, Option<u64>)> {
        h.iter()
            .filter(|(k, _)| k.as_str() != "__metadata__")
            .filter_map(|(k, v)| {
                let o = v.get("data_offsets")?.as_array()?;
                let (s, e) = (o.first()?.as_u64()?, o.get(1)?.as_u64()?);
                let elements = v.get("shape")?.as_array()?.iter().try_fold(1u64, |a, n| a.checked_mul(n.as_u64()?));
                let bytes = match v.get("dtype")?.as_str()? {
                    "F64" | "I64" | "U64" | "C64" => 8,
                    "F32" | "I32" | "U32" => 4,
                    "F16" | "BF16" | "I16" | "U16" => 2,
                    "BOOL" | "U8" | "I8" => 1,
                    _ => return Some((k.clone(), s, e, None)),
                };
                Some((k.clone(), s, e, elements.and_then(|n| n.checked_mul(bytes))))
            })
            .collect()
    };
    let message = match e {
        E::HeaderTooSmall => format!("not a safetensors file: {} bytes, fewer than the 8 that give the header's length", buf.len()),
        E::InvalidHeaderLength => format!(
            "not a safetensors file, or truncated: its first 8 bytes announce a {}-byte header, the file holds {} bytes",
            u64::from_le_bytes(buf[..8].try_into().unwrap()),
            buf.len()
        ),
        E::HeaderTooLarge => "not a safetensors file: its first 8 bytes announce a header over 100 MB".into(),
        E::InvalidHeader(_) | E::InvalidHeaderDeserialization(_) | E::JsonError(_) => {
            format!("not a safetensors file: the header is not the JSON table of tensors ({})", one_line(&e.to_string()))
        }
        E::MetadataIncompleteBuffer => match header() {
            Some((n, h)) => {
                let end = tensors(&h).iter().map(|t| t.2).max().unwrap_or(0);
                let have = buf.len() - 8 - n;
                let what = if (have as u64) < end { "truncated" } else { "longer than its header says" };
                format!("{what}: the header's offsets need {end} bytes of tensor data, the file holds {have}")
            }
            None => "truncated or padded: the header's offsets do not cover the file".into(),
        },
        E::InvalidOffset(k) => format!("tensor '{k}': the header's data_offsets do not start where the previous tensor ends (the offsets are inconsistent)"),
        E::TensorInvalidInfo => match header().map(|(_, h)| tensors(&h)).and_then(|t| t.into_iter().find(|t| t.3.is_some_and(|need| t.2.checked_sub(t.1) != Some(need)))) {
            Some((k, s, e, need)) => format!("tensor '{k}': the header's data_offsets [{s}, {e}] hold {} bytes, its shape and dtype need {}", e.saturating_sub(s), need.unwrap_or(0)),
            None => "a tensor's data_offsets do not match its shape and dtype".into(),
        },
        other => format!("not a readable safetensors file ({})", one_line(&other.to_string())),
    };
    Error::file(path, message)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn open_npz(path: &Path, file: File) -> Result<(Source, Vec<Entry>)> {
    let mut z = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| Error::file(path, format!("not a readable .npz file ({e})")))?;
    let mut entries = Vec::with_capacity(z.len());
    for i in 0..z.len() {
        let mut f = z.by_index(i).map_err(|e| Error::file(path, format!("not a readable .npz file ({e})")))?;
        let name = f.name().to_string();
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let h = Header::from_reader(&mut f).map_err(|e| Error::file(path, format!("array '{key}' is not a readable .npy entry ({})", one_line(&e.to_string()))))?;
        let descr = h.type_descriptor.to_string();
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        // numpy's descr: byte order ('<', '>', '|', '='), kind and size, e.g. '<f4'.
        let (order, kind) = descr.split_at(descr.chars().next().filter(|c| "<>|=".contains(*c)).map_or(0, |_| 1));
        let float = match kind {
            "f8" => Some(Float::F64),
            "f4" => Some(Float::F32),
            "f2" => Some(Float::F16),
            _ => None,
        };
        let big_endian = order == ">" || (order == "=" && cfg!(target_endian = "big"));
        entries.push(Entry { key, shape: h.shape.clone(), dtype: descr.to_string(), float, big_endian, fortran: h.layout.is_fortran(), loc: Loc::Zip(name) });
    }
    Ok((Source::Npz(z), entries))
}

/// The tensor's values, widened exactly to f64, in the file's element order.
fn read_entry(path: &Path, source: &mut Source, e: &Entry) -> Result<Vec<f64>> {
    let float = e.float.expect("dtype checked before reading");
    let len: usize = e.shape.iter().product();
    let decode = |bytes: &[u8]| -> Vec<f64> {
        let be = e.big_endian;
        match float {
            Float::F64 => bytes.chunks_exact(8).map(|c| { let a = c.try_into().unwrap(); if be { f64::from_be_bytes(a) } else { f64::from_le_bytes(a) } }).collect(),
            Float::F32 => bytes.chunks_exact(4).map(|c| { let a = c.try_into().unwrap(); f64::from(if be { f32::from_be_bytes(a) } else { f32::from_le_bytes(a) }) }).collect(),
            Float::F16 => bytes.chunks_exact(2).map(|c| { let a = c.try_into().unwrap(); (if be { half::f16::from_be_bytes(a) } else { half::f16::from_le_bytes(a) }).to_f64() }).collect(),
            Float::BF16 => bytes.chunks_exact(2).map(|c| { let a = c.try_into().unwrap(); (if be { half::bf16::from_be_bytes(a) } else { half::bf16::from_le_bytes(a) }).to_f64() }).collect(),
        }
    };
    let need = len * float.size();
    match (source, &e.loc) {
        (Source::Safetensors(map), Loc::Bytes(s, t)) => Ok(decode(&map[*s..*t])),
        (Source::Npz(z), Loc::Zip(name)) => {
            let bad = |m: String| Error::file(path, format!("array '{}': {m}", e.key));
            let mut f = z.by_name(name).map_err(|x| bad(x.to_string()))?;
            Header::from_reader(&mut f).map_err(|x| bad(one_line(&x.to_string())))?;
            let mut bytes = Vec::with_capacity(need);
            f.read_to_end(&mut bytes).map_err(|x| bad(format!("cannot read ({x})")))?;
            if bytes.len() != need {
                return Err(bad(format!("holds {} bytes of data, its shape {:?} and dtype {} need {need} (truncated?)", bytes.len(), e.shape, e.dtype)));
            }
            Ok(decode(&bytes))
        }
        _ => Err(Error::Internal("tensor location does not match its file".into())),
    }
}

/// `P` for a key `P.weight` (`""` for a bare `weight`), else None.
fn path_of(key: &str) -> Option<&str> {
    if key == "weight" { Some("") } else { key.strip_suffix(".weight") }
}

fn weight_key(p: &str) -> String {
    if p.is_empty() { "weight".into() } else { format!("{p}.weight") }
}

fn bias_key(p: &str) -> String {
    if p.is_empty() { "bias".into() } else { format!("{p}.bias") }
}

/// The linear layers, in order, with their bias keys; checks shapes, not data.
fn plan(path: &Path, entries: &[Entry], select: Option<&str>) -> Result<Vec<LayerKeys>> {
    let shape_of = |k: &str| entries.iter().find(|e| e.key == k).map(|e| e.shape.clone());
    let weights: Vec<&Entry> = entries.iter().filter(|e| path_of(&e.key).is_some()).collect();
    if weights.is_empty() {
        let keys: Vec<&str> = entries.iter().take(8).map(|e| e.key.as_str()).collect();
        return Err(Error::file(
            path,
            format!(
                "no linear layers: no key ends in '.weight' (keys: {}{}); expected a state_dict (P.weight, P.bias){}",
                keys.join(", "),
                if entries.len() > 8 { ", …" } else { "" },
                if path.extension().is_some_and(|e| e == "npz") { " or w1..wL with b1..bL" } else { "" }
            ),
        ));
    }
    // Groups of layer paths: one per --layers item, in the user's order; else one of every 2-D weight.
    let groups: Vec<Vec<&str>> = match select {
        None => {
            let linear: Vec<&str> = weights.iter().filter(|e| e.shape.len() == 2).map(|e| path_of(&e.key).unwrap()).collect();
            let others: Vec<String> = entries
                .iter()
                .filter(|e| !linear.iter().any(|p| e.key == weight_key(p) || e.key == bias_key(p)))
                .map(Entry::describe)
                .collect();
            if !others.is_empty() {
                return Err(Error::file(
                    path,
                    format!(
                        "holds {} tensor{} that {} not a linear layer's 2-D weight or its bias: {}; choose the linear layers with --layers (the rest is then ignored)",
                        others.len(),
                        if others.len() == 1 { "" } else { "s" },
                        if others.len() == 1 { "is" } else { "are" },
                        others.join(", ")
                    ),
                ));
            }
            if linear.is_empty() {
                return Err(Error::file(path, "no linear layers: no 2-D '.weight' tensor"));
            }
            vec![linear]
        }
        Some(s) => {
            let mut groups: Vec<Vec<&str>> = Vec::new();
            let mut owner: Vec<(&str, String)> = Vec::new();
            for item in split_items(s) {
                let re = Regex::new(&format!("^(?:{item})(?:\\.|$)")).map_err(|e| Error::arg("--layers", format!("'{item}' is not a regular expression ({})", one_line(&e.to_string()))))?;
                let hit: Vec<&Entry> = weights.iter().copied().filter(|e| re.is_match(&e.key)).collect();
                if hit.is_empty() {
                    let all: Vec<&str> = weights.iter().take(12).map(|e| path_of(&e.key).unwrap()).collect();
                    return Err(Error::arg(
                        "--layers",
                        format!("'{item}' matches no layer of {} (layers: {}{})", path.display(), all.join(", "), if weights.len() > 12 { ", …" } else { "" }),
                    ));
                }
                for e in &hit {
                    if let Some((k, other)) = owner.iter().find(|(k, _)| *k == e.key) {
                        return Err(Error::arg("--layers", format!("'{other}' and '{item}' both select '{k}'")));
                    }
                    owner.push((&e.key, item.to_string()));
                    if e.shape.len() != 2 {
                        return Err(Error::file(path, format!("tensor '{}' is a {}-D weight (shape {:?}); a linear layer's weight is 2-D (n_l × n_(l-1))", e.key, e.shape.len(), e.shape)));
                    }
                }
                groups.push(hit.iter().map(|e| path_of(&e.key).unwrap()).collect());
            }
            groups
        }
    };
    let mut layers = Vec::new();
    for mut g in groups {
        g.sort_by(|a, b| natural(a, b).0.then_with(|| a.cmp(b)));
        if let Some(i) = (1..g.len()).find(|&i| !natural(g[i - 1], g[i]).1) {
            return Err(Error::file(
                path,
                format!(
                    "the order of layers '{}' and '{}' is not given by numbers in their keys; list the layers in the network's order, e.g. --layers '{}'",
                    g[i - 1],
                    g[i],
                    suggestion(&g)
                ),
            ));
        }
        for p in g {
            let weight = weight_key(p);
            let bias = Some(bias_key(p)).filter(|k| shape_of(k).is_some());
            layers.push(LayerKeys { weight, bias });
        }
    }
    // Widths chain, and each bias has its weight's rows, before any data is read.
    let mut prev: Option<(&str, usize)> = None;
    for l in &layers {
        let s = shape_of(&l.weight).unwrap();
        let shape_err = |array: &str, expected: String, found: Vec<usize>| Error::Shape { path: path.to_path_buf(), array: array.into(), expected, found };
        if s.iter().any(|&n| n == 0) {
            return Err(shape_err(&l.weight, "a non-empty n_l × n_(l-1) matrix".into(), s));
        }
        if let Some((pk, rows)) = prev
            && s[1] != rows
        {
            return Err(shape_err(&l.weight, format!("(n, {rows}): the widths do not chain, '{pk}' before it has {rows} rows"), s));
        }
        if let Some(bk) = &l.bias {
            let bs = shape_of(bk).unwrap();
            if bs != [s[0]] {
                return Err(shape_err(bk, format!("({},) to match '{}'", s[0], l.weight), bs));
            }
        }
        prev = Some((&l.weight, s[0]));
    }
    Ok(layers)
}

/// `--layers` items: split at commas outside `{…}`, so `\d{1,3}` stays one regex.
fn split_items(s: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth <= 0 => {
                items.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(s[start..].trim());
    items.into_iter().filter(|i| !i.is_empty()).collect()
}

/// A key path as segments of text and digit runs: `encoder.layers.10` →
/// [[encoder], [layers], [10]]; `fc2` → [[fc, 2]].
fn tokens(p: &str) -> Vec<Vec<&str>> {
    p.split('.')
        .map(|seg| {
            let mut runs = Vec::new();
            let mut start = 0;
            let b = seg.as_bytes();
            for i in 1..=b.len() {
                if i == b.len() || b[i].is_ascii_digit() != b[i - 1].is_ascii_digit() {
                    runs.push(&seg[start..i]);
                    start = i;
                }
            }
            runs
        })
        .collect()
}

/// Natural order of two key paths, and whether a number decided it (digit runs compare by
/// value; a difference in text, or one path a prefix of the other, decides nothing).
fn natural(a: &str, b: &str) -> (Ordering, bool) {
    let (ta, tb) = (tokens(a), tokens(b));
    for (sa, sb) in ta.iter().zip(&tb) {
        for (ra, rb) in sa.iter().zip(sb) {
            let digits = |r: &str| r.bytes().all(|c| c.is_ascii_digit()) && !r.is_empty();
            if digits(ra) && digits(rb) {
                let (na, nb) = (ra.trim_start_matches('0'), rb.trim_start_matches('0'));
                let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if o != Ordering::Equal {
                    return (o, true);
                }
            } else if ra != rb {
                return (ra.cmp(rb), false);
            }
        }
        if sa.len() != sb.len() || sa != sb {
            return (sa.len().cmp(&sb.len()).then_with(|| sa.concat().cmp(&sb.concat())), false);
        }
    }
    (ta.len().cmp(&tb.len()), false)
}

/// A `--layers` value that lists `paths` (naturally sorted) as groups the user can reorder:
/// each run of numerically ordered paths by its common prefix.
fn suggestion(paths: &[&str]) -> String {
    let mut runs: Vec<Vec<&str>> = vec![vec![paths[0]]];
    for w in paths.windows(2) {
        if natural(w[0], w[1]).1 {
            runs.last_mut().unwrap().push(w[1]);
        } else {
            runs.push(vec![w[1]]);
        }
    }
    let prefix = |run: &[&str]| -> String {
        if run.len() == 1 {
            return run[0].to_string();
        }
        let segs: Vec<Vec<&str>> = run.iter().map(|p| p.split('.').collect()).collect();
        let common: Vec<&str> = (0..segs[0].len()).map_while(|i| segs.iter().all(|s| s.get(i) == segs[0].get(i)).then(|| segs[0][i])).collect();
        if common.is_empty() { run.join(",") } else { common.join(".") }
    };
    runs.iter().map(|r| prefix(r)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, shape: &[usize]) -> Entry {
        Entry { key: key.into(), shape: shape.to_vec(), dtype: "F32".into(), float: Some(Float::F32), big_endian: false, fortran: false, loc: Loc::Bytes(0, 0) }
    }

    fn order(keys: &[(&str, &[usize])], select: Option<&str>) -> Result<Vec<String>> {
        let es: Vec<Entry> = keys.iter().map(|(k, s)| entry(k, s)).collect();
        Ok(plan(Path::new("m.safetensors"), &es, select)?.into_iter().map(|l| l.weight).collect())
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        assert_eq!(natural("layers.2", "layers.10"), (Ordering::Less, true));
        assert_eq!(natural("fc10", "fc9"), (Ordering::Greater, true));
        assert_eq!(natural("block.1.fc.0", "block.1.fc.1"), (Ordering::Less, true));
        assert!(!natural("input", "output").1);
        assert!(!natural("net.0", "net.0.proj").1);
        assert!(!natural("layers.3", "out").1);
    }

    #[test]
    fn layers_are_found_ordered_and_selected() {
        let mut keys: Vec<(String, Vec<usize>)> = Vec::new();
        for l in (0..12).rev() {
            keys.push((format!("encoder.layers.{l}.weight"), vec![4, 4]));
            keys.push((format!("encoder.layers.{l}.bias"), vec![4]));
        }
        keys.push(("encoder.norm.weight".into(), vec![4]));
        keys.push(("embed.weight".into(), vec![10, 4]));
        let ks: Vec<(&str, &[usize])> = keys.iter().map(|(k, s)| (k.as_str(), s.as_slice())).collect();
        let all: Vec<String> = (0..12).map(|l| format!("encoder.layers.{l}.weight")).collect();
        assert_eq!(order(&ks, Some("encoder.layers")).unwrap(), all);
        assert_eq!(order(&ks, Some(r"encoder\.layers\.\d{1,2}")).unwrap(), all);
        assert_eq!(order(&ks, Some("encoder.layers.1,encoder.layers.0")).unwrap(), ["encoder.layers.1.weight", "encoder.layers.0.weight"]);
        // Without --layers, the LayerNorm weight is refused by name; a selection of nothing too.
        assert!(order(&ks, None).unwrap_err().to_string().contains("encoder.norm.weight [4]"));
        assert!(order(&ks, Some("decoder")).unwrap_err().to_string().contains("'decoder' matches no layer"));
        assert!(order(&ks, Some("encoder")).unwrap_err().to_string().contains("1-D weight"));
    }

    #[test]
    fn an_order_decided_by_text_is_refused_with_a_fix() {
        let ks: &[(&str, &[usize])] = &[("input.weight", &[3, 2]), ("hidden.0.weight", &[3, 3]), ("hidden.1.weight", &[3, 3]), ("output.weight", &[1, 3])];
        let e = order(ks, None).unwrap_err().to_string();
        assert!(e.contains("'hidden.1' and 'input'") && e.contains("--layers 'hidden,input,output'"), "{e}");
        assert_eq!(order(ks, Some("input,hidden,output")).unwrap(), ["input.weight", "hidden.0.weight", "hidden.1.weight", "output.weight"]);
    }

    #[test]
    fn items_split_outside_braces() {
        assert_eq!(split_items(r"a\.\d{1,3}, b ,c"), [r"a\.\d{1,3}", "b", "c"]);
    }
}
