//! Diffing files and directories outside any store (`srlm diff --files A B`): every line is
//! parsed once into a row record; the engine then re-reads only the lines it must show or
//! compare field by field.
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::engine::{self, DatasetDiff, DiffOptions, RowFetch, RowSink, Side};
use super::record::{is_blank, parse_row, RecordBuilder, RowRecord, SideRecords, SideSpec};
use super::report::{DatasetReport, EntryChange, EntrySide, ErrorReport, Report};
use super::DatasetError;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Call `f(line_number, line_bytes)` for each non-blank line (the `\n` stripped, a `\r` kept,
/// exactly as the store splits rows: a CRLF row and an LF row are different bytes, so they
/// have different ids and diff as changed); `f` returns `false` to stop early.
pub fn for_each_line(
    path: &Path,
    mut f: impl FnMut(u32, &[u8]) -> Result<bool, DatasetError>,
) -> Result<(), DatasetError> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err(path))?);
    let mut buf = Vec::new();
    let mut line = 0u32;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).map_err(io_err(path))? == 0 {
            return Ok(());
        }
        line += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if is_blank(bytes) {
            continue;
        }
        if !f(line, bytes)? {
            return Ok(());
        }
    }
}

/// The first row of a JSONL file (`None`: no rows).
pub fn first_row(path: &Path, label: &str) -> Result<Option<Map<String, Value>>, DatasetError> {
    let mut first = None;
    for_each_line(path, |line, bytes| {
        first = Some(parse_row(label, line as u64, bytes)?);
        Ok(false)
    })?;
    Ok(first)
}

/// Parse every line of a JSONL file into records.
pub fn read_records(
    path: &Path,
    label: &str,
    spec: &SideSpec,
) -> Result<SideRecords, DatasetError> {
    let key = spec.key_spec();
    let mut b = RecordBuilder::default();
    for_each_line(path, |line, bytes| {
        let row = parse_row(label, line as u64, bytes)?;
        let id = *blake3::hash(bytes).as_bytes();
        b.push_row(spec, &key, label, line, id, &row)?;
        Ok(true)
    })?;
    Ok(b.finish())
}

/// Rows of a file (or of no file: a side where the dataset does not exist).
pub struct FileRows(pub Option<PathBuf>);

impl RowFetch for FileRows {
    fn fetch(&mut self, wanted: &[RowRecord], f: &mut RowSink) -> Result<(), DatasetError> {
        let Some(path) = &self.0 else { return Ok(()) };
        if wanted.is_empty() {
            return Ok(());
        }
        let mut k = 0;
        for_each_line(path, |line, bytes| {
            while k < wanted.len() && wanted[k].line == line {
                f(k, bytes)?;
                k += 1;
            }
            Ok(k < wanted.len())
        })
    }
}

/// A file and the name it is shown under (as the user typed it).
pub type Named<'a> = (&'a Path, &'a str);

/// Row-level diff of two JSONL files (`None`: the dataset is absent on that side).
pub fn diff_files(
    a: Option<Named>,
    b: Option<Named>,
    opts: &DiffOptions,
) -> Result<DatasetDiff, DatasetError> {
    let label = |f: Option<Named>| {
        f.map(|(_, l)| l.to_owned())
            .unwrap_or_else(|| "(absent)".into())
    };
    let (la, lb) = (label(a), label(b));
    let first = |f: Option<Named>| {
        f.map(|(p, l)| first_row(p, l))
            .transpose()
            .map(Option::flatten)
    };
    let (fa, fb) = (first(a)?, first(b)?);
    let mut specs = engine::plan_many(&[fa, fb], opts.key.as_ref()).into_iter();
    let (sa, sb) = (
        specs.next().expect("two specs"),
        specs.next().expect("two specs"),
    );
    let read = |f: Option<Named>, s: &SideSpec| match f {
        Some((p, l)) => read_records(p, l, s),
        None => Ok(SideRecords::default()),
    };
    // The two files are independent: parse them on two threads.
    let (ra, rb) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| read(a, &sa));
        let rb = read(b, &sb);
        (ta.join().expect("the reader thread does not panic"), rb)
    });
    let (ra, rb) = (ra?, rb?);
    let (mut fa, mut fb) = (
        FileRows(a.map(|(p, _)| p.to_owned())),
        FileRows(b.map(|(p, _)| p.to_owned())),
    );
    engine::diff(
        Side {
            label: la,
            spec: sa,
            data: ra,
            rows: &mut fa,
        },
        Side {
            label: lb,
            spec: sb,
            data: rb,
            rows: &mut fb,
        },
        opts,
    )
}

/// True when the file looks binary (a NUL byte in its first 8000 bytes, git's heuristic).
pub fn looks_binary(path: &Path) -> Result<bool, DatasetError> {
    let mut head = Vec::with_capacity(8000);
    File::open(path)
        .map_err(io_err(path))?
        .take(8000)
        .read_to_end(&mut head)
        .map_err(io_err(path))?;
    Ok(head.contains(&0))
}

/// True for paths diffed row by row.
pub fn is_dataset_path(path: &str) -> bool {
    path.ends_with(".jsonl") || path.ends_with(".ndjson")
}

fn entry_side(path: &Path) -> Result<EntrySide, DatasetError> {
    let mut h = blake3::Hasher::new();
    h.update_reader(File::open(path).map_err(io_err(path))?)
        .map_err(io_err(path))?;
    let size = std::fs::metadata(path).map_err(io_err(path))?.len();
    Ok(EntrySide {
        id: h.finalize().to_hex().to_string(),
        size,
        rows: None,
    })
}

/// Relative paths of the files under `root` (sorted, `/`-separated; `.srlm` and `.git` skipped).
fn walk(root: &Path) -> Result<Vec<String>, DatasetError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name();
            if name == ".srlm" || name == ".git" {
                continue;
            }
            let p = rel.join(&name);
            if e.file_type().map_err(io_err(&e.path()))?.is_dir() {
                stack.push(p);
            } else {
                out.push(p.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Diff two files or two directories (shown as `la` and `lb`): changed paths, and a row-level
/// diff of each changed JSONL dataset. With `keep_going`, a dataset that fails is reported and
/// the others go on.
pub fn diff_paths(
    (a, la): Named,
    (b, lb): Named,
    opts: &DiffOptions,
    keep_going: bool,
) -> Result<Report, DatasetError> {
    type SidePath = Option<(PathBuf, String)>;
    let mut report = Report::new(la, lb);
    let pairs: Vec<(String, SidePath, SidePath)> = match (a.is_dir(), b.is_dir()) {
        (false, false) => vec![(
            lb.to_owned(),
            Some((a.to_owned(), la.to_owned())),
            Some((b.to_owned(), lb.to_owned())),
        )],
        (true, true) => {
            let (wa, wb) = (walk(a)?, walk(b)?);
            let mut all: Vec<&String> = wa.iter().chain(wb.iter()).collect();
            all.sort();
            all.dedup();
            all.into_iter()
                .map(|p| {
                    let side = |root: &Path, label: &str, w: &[String]| {
                        w.binary_search(p)
                            .is_ok()
                            .then(|| (root.join(p), format!("{}/{p}", label.trim_end_matches('/'))))
                    };
                    (p.clone(), side(a, la, &wa), side(b, lb, &wb))
                })
                .collect()
        }
        _ => {
            return Err(DatasetError::Usage(format!(
                "--files needs two files or two directories, got {la} and {lb}"
            )))
        }
    };
    for (path, pa, pb) in pairs {
        let na = pa.as_ref().map(|(p, l)| (p.as_path(), l.as_str()));
        let nb = pb.as_ref().map(|(p, l)| (p.as_path(), l.as_str()));
        let (ea, eb) = (
            na.map(|(p, _)| entry_side(p)).transpose()?,
            nb.map(|(p, _)| entry_side(p)).transpose()?,
        );
        let status = match (&ea, &eb) {
            (Some(x), Some(y)) if x == y => {
                report.unchanged_paths += 1;
                continue;
            }
            (Some(_), Some(_)) => "modified",
            (None, _) => "added",
            (_, None) => "removed",
        };
        let mut binary = false;
        for (p, _) in [na, nb].into_iter().flatten() {
            binary |= looks_binary(p)?;
        }
        // Two files named on the command line are datasets whatever their names.
        let dataset = !binary && (is_dataset_path(&path) || !a.is_dir());
        let kind = if binary {
            "binary"
        } else if dataset {
            "dataset"
        } else {
            "file"
        };
        report.changes.push(EntryChange {
            path: path.clone(),
            status,
            kind: kind.into(),
            a: ea,
            b: eb,
        });
        if !dataset {
            continue;
        }
        match diff_files(na, nb, opts) {
            Ok(diff) => report.datasets.push(DatasetReport { path, diff }),
            Err(e) if keep_going => report.errors.push(ErrorReport::new(&path, &e)),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}
