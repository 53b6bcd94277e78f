//! What differs between a recorded output and its reproduction: for datasets, how many rows
//! (by the BLAKE3 of each line's exact bytes, as the store addresses rows); for safetensors
//! checkpoints, which tensors and their largest absolute difference.
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// Errors reading the files being compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a safetensors file: {detail}")]
    Safetensors { path: PathBuf, detail: String },
}

/// Rows on one side only (a row present twice on one side and once on the other counts once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDiff {
    pub rows_recorded: u64,
    pub rows_reproduced: u64,
    pub only_recorded: u64,
    pub only_reproduced: u64,
}

/// Compare two JSONL files row by row (order-insensitive multiset of exact line bytes).
pub fn diff_rows(recorded: &Path, reproduced: &Path) -> Result<RowDiff, CompareError> {
    let mut counts: HashMap<[u8; 32], i64> = HashMap::new();
    let rows_recorded = for_each_row(recorded, |h| *counts.entry(h).or_insert(0) += 1)?;
    let rows_reproduced = for_each_row(reproduced, |h| *counts.entry(h).or_insert(0) -= 1)?;
    let only_recorded = counts.values().filter(|&&c| c > 0).map(|&c| c as u64).sum();
    let only_reproduced = counts
        .values()
        .filter(|&&c| c < 0)
        .map(|&c| (-c) as u64)
        .sum();
    Ok(RowDiff {
        rows_recorded,
        rows_reproduced,
        only_recorded,
        only_reproduced,
    })
}

fn for_each_row(path: &Path, mut f: impl FnMut([u8; 32])) -> Result<u64, CompareError> {
    let io = |err| CompareError::Io {
        path: path.to_path_buf(),
        err,
    };
    let mut r = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            return Ok(n);
        }
        // the final newline's presence is part of the file, not of the row
        let row = buf.strip_suffix(b"\n").unwrap_or(&buf);
        f(*blake3::hash(row).as_bytes());
        n += 1;
    }
}

/// How one tensor differs.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorDiff {
    OnlyRecorded,
    OnlyReproduced,
    /// Shape or dtype changed: `recorded` vs `reproduced`, as text.
    Layout {
        recorded: String,
        reproduced: String,
    },
    /// Same layout, different values; `max_abs` for float and integer dtypes.
    Values {
        max_abs: Option<f64>,
        differing: u64,
        total: u64,
    },
}

/// One line for the tensors that differ: `N tensor(s) differ: NAME: k/n values, max abs diff
/// x; …` (what `reproduce` and `diff` print).
pub fn describe_tensors(d: &BTreeMap<String, TensorDiff>) -> String {
    let parts: Vec<String> = d.iter().map(|(n, t)| describe_tensor(n, t)).collect();
    format!("{} tensor(s) differ: {}", d.len(), parts.join("; "))
}

/// How one tensor differs: `NAME: k/n values, max abs diff x` (or missing, extra, a layout).
pub fn describe_tensor(name: &str, t: &TensorDiff) -> String {
    match t {
        TensorDiff::OnlyRecorded => format!("{name}: missing"),
        TensorDiff::OnlyReproduced => format!("{name}: extra"),
        TensorDiff::Layout {
            recorded,
            reproduced,
        } => format!("{name}: {recorded} -> {reproduced}"),
        TensorDiff::Values {
            max_abs: Some(m),
            differing,
            total,
        } => format!("{name}: {differing}/{total} values, max abs diff {m:.3e}"),
        TensorDiff::Values {
            max_abs: None,
            differing,
            total,
        } => format!("{name}: {differing}/{total} values"),
    }
}

/// Compare two folders file by file (by content): `N file(s) differ: NAME: how; …`, where
/// `describe` says how two files present on both sides differ.
pub fn diff_folders(a: &Path, b: &Path, describe: impl Fn(&str, &Path, &Path) -> String) -> String {
    let (fa, fb) = (files_under(a), files_under(b));
    let mut parts = Vec::new();
    for name in fa.iter().chain(fb.iter().filter(|n| !fa.contains(*n))) {
        let (pa, pb) = (a.join(name), b.join(name));
        match (fa.contains(name), fb.contains(name)) {
            (true, false) => parts.push(format!("{name}: missing")),
            (false, true) => parts.push(format!("{name}: extra")),
            _ => {
                if std::fs::read(&pa).ok() != std::fs::read(&pb).ok() {
                    parts.push(format!("{name}: {}", describe(name, &pa, &pb)));
                }
            }
        }
    }
    if parts.is_empty() {
        return "files equal".into();
    }
    format!("{} file(s) differ: {}", parts.len(), parts.join("; "))
}

/// Regular files under `dir`, relative, sorted (srlm's temporary files left out).
fn files_under(dir: &Path) -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, rel: &str, out: &mut std::collections::BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".srlm") {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path(), &child, out),
                Ok(t) if t.is_file() => {
                    out.insert(child);
                }
                _ => {}
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(dir, "", &mut out);
    out
}

/// The tensors that differ between two safetensors files, by name.
pub fn diff_tensors(
    recorded: &Path,
    reproduced: &Path,
) -> Result<BTreeMap<String, TensorDiff>, CompareError> {
    let a_bytes = read(recorded)?;
    let b_bytes = read(reproduced)?;
    let a = parse(recorded, &a_bytes)?;
    let b = parse(reproduced, &b_bytes)?;
    let mut out = BTreeMap::new();
    for (name, ta) in a.iter() {
        let Ok(tb) = b.tensor(name) else {
            out.insert(name.to_string(), TensorDiff::OnlyRecorded);
            continue;
        };
        if ta.dtype() != tb.dtype() || ta.shape() != tb.shape() {
            out.insert(
                name.to_string(),
                TensorDiff::Layout {
                    recorded: format!("{:?}{:?}", ta.dtype(), ta.shape()),
                    reproduced: format!("{:?}{:?}", tb.dtype(), tb.shape()),
                },
            );
            continue;
        }
        if ta.data() == tb.data() {
            continue;
        }
        let (xa, xb) = (values(ta.dtype(), ta.data()), values(tb.dtype(), tb.data()));
        let d = match (xa, xb) {
            (Some(xa), Some(xb)) => {
                let mut max_abs = 0f64;
                let mut differing = 0;
                for (x, y) in xa.iter().zip(&xb) {
                    if x.to_bits() != y.to_bits() {
                        differing += 1;
                        max_abs = max_abs.max((x - y).abs());
                    }
                }
                TensorDiff::Values {
                    max_abs: Some(max_abs),
                    differing,
                    total: xa.len() as u64,
                }
            }
            _ => {
                let w = ta.dtype().bitsize().div_ceil(8).max(1);
                let differing = ta
                    .data()
                    .chunks(w)
                    .zip(tb.data().chunks(w))
                    .filter(|(x, y)| x != y)
                    .count() as u64;
                TensorDiff::Values {
                    max_abs: None,
                    differing,
                    total: (ta.data().len() / w) as u64,
                }
            }
        };
        out.insert(name.to_string(), d);
    }
    for name in b.names() {
        if a.tensor(name).is_err() {
            out.insert(name.to_string(), TensorDiff::OnlyReproduced);
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, CompareError> {
    std::fs::read(path).map_err(|err| CompareError::Io {
        path: path.to_path_buf(),
        err,
    })
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, CompareError> {
    SafeTensors::deserialize(bytes).map_err(|e| CompareError::Safetensors {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Element values as f64 for the dtypes a checkpoint uses.
fn values(dtype: Dtype, data: &[u8]) -> Option<Vec<f64>> {
    fn conv<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
            .collect()
    }
    Some(match dtype {
        Dtype::F32 => conv(data, |b| f32::from_le_bytes(b) as f64),
        Dtype::F64 => conv(data, f64::from_le_bytes),
        Dtype::F16 => conv(data, |b| half::f16::from_le_bytes(b).to_f64()),
        Dtype::BF16 => conv(data, |b| half::bf16::from_le_bytes(b).to_f64()),
        Dtype::I32 => conv(data, |b| i32::from_le_bytes(b) as f64),
        Dtype::I64 => conv(data, |b| i64::from_le_bytes(b) as f64),
        Dtype::U8 => conv(data, |b: [u8; 1]| b[0] as f64),
        Dtype::I8 => conv(data, |b: [u8; 1]| b[0] as i8 as f64),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_counted_by_content_not_order() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, "{\"x\":1}\n{\"x\":2}\n{\"x\":3}\n").unwrap();
        std::fs::write(&b, "{\"x\":3}\n{\"x\":1}\n{\"x\":4}\n{\"x\":5}").unwrap();
        let r = diff_rows(&a, &b).unwrap();
        assert_eq!(
            r,
            RowDiff {
                rows_recorded: 3,
                rows_reproduced: 4,
                only_recorded: 1,
                only_reproduced: 2
            }
        );
    }

    #[test]
    fn tensors_report_name_and_max_abs() {
        use safetensors::tensor::TensorView;
        let d = tempfile::tempdir().unwrap();
        let write = |p: &Path, w: [f32; 3], extra: bool| {
            let wb: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
            let bb: Vec<u8> = [1f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
            let mut t = vec![
                ("w", TensorView::new(Dtype::F32, vec![3], &wb).unwrap()),
                ("b", TensorView::new(Dtype::F32, vec![2], &bb).unwrap()),
            ];
            if extra {
                t.push(("e", TensorView::new(Dtype::F32, vec![2], &bb).unwrap()));
            }
            safetensors::serialize_to_file(t, None, p).unwrap();
        };
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        write(&a, [1.0, 2.0, 3.0], false);
        write(&b, [1.0, 2.5, 2.0], true);
        let diff = diff_tensors(&a, &b).unwrap();
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert_eq!(
            diff["w"],
            TensorDiff::Values {
                max_abs: Some(1.0),
                differing: 2,
                total: 3
            }
        );
        assert_eq!(diff["e"], TensorDiff::OnlyReproduced);
    }
}
