//! Human-readable rendering of a diff [`Report`] and of a trend table, with comfy-table, for an
//! 80-column terminal. Word-level changes use git's plain word-diff markers (`[-old-]{+new+}`),
//! readable without colour and in logs.
use std::io::{self, Write};

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use serde_json::Value;

use super::engine::{DatasetDiff, WordOp};
use super::report::{EntrySide, Report};
use super::stats::SideStats;
use super::trend::TrendRow;

/// Output width (columns).
pub const WIDTH: u16 = 80;
/// Characters of a value shown in an example row.
const VALUE_CHARS: usize = 240;
/// Characters of unchanged text kept around a word-level change.
const CONTEXT_CHARS: usize = 40;

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(WIDTH);
    t
}

fn right(s: impl ToString) -> Cell {
    Cell::new(s.to_string()).set_alignment(CellAlignment::Right)
}

/// `s` cut to `n` characters, with `…` where it was cut.
fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1000.0 && u + 1 < UNITS.len() {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

fn side_cell(s: &Option<EntrySide>) -> String {
    match s {
        None => "-".into(),
        Some(s) => {
            let rows = s.rows.map(|r| format!(", {r} rows")).unwrap_or_default();
            format!(
                "{}{rows}\n{}",
                human_size(s.size),
                &s.id[..12.min(s.id.len())]
            )
        }
    }
}

/// A value as one line of text (strings unquoted, line breaks shown as `⏎`), so an example
/// row stays a few lines tall.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s
            .replace('\n', " ⏎ ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// The edit script with long unchanged runs shortened to their edges.
pub fn render_words(ops: &[WordOp]) -> String {
    let mut out = String::new();
    for (i, op) in ops.iter().enumerate() {
        match op.op {
            "delete" => out.push_str(&format!("[-{}-]", op.text)),
            "insert" => out.push_str(&format!("{{+{}+}}", op.text)),
            _ => {
                let chars: Vec<char> = op.text.chars().collect();
                let (first, last) = (i == 0, i + 1 == ops.len());
                let keep = CONTEXT_CHARS;
                let s: String = if chars.len() <= 2 * keep {
                    op.text.clone()
                } else if first {
                    format!(
                        "…{}",
                        chars[chars.len() - keep..].iter().collect::<String>()
                    )
                } else if last {
                    format!("{}…", chars[..keep].iter().collect::<String>())
                } else {
                    format!(
                        "{} … {}",
                        chars[..keep].iter().collect::<String>(),
                        chars[chars.len() - keep..].iter().collect::<String>()
                    )
                };
                out.push_str(&s);
            }
        }
    }
    out
}

fn fmt_opt(x: Option<f64>, pct: bool) -> String {
    match x {
        None => "-".into(),
        Some(x) if pct => format!("{:.1}%", 100.0 * x),
        Some(x) => format!("{x:.2}"),
    }
}

fn histogram(s: &SideStats, i: usize) -> String {
    let Some(sc) = s.scores.get(i) else {
        return "-".into();
    };
    if sc.histogram.is_empty() {
        return "-".into();
    }
    sc.histogram
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn stats_table(d: &DatasetDiff) -> Table {
    let (a, b) = (&d.a.stats, &d.b.stats);
    let mut t = table();
    t.set_header(vec![Cell::new("statistic"), right("a"), right("b")]);
    t.add_row(vec![Cell::new("rows"), right(a.rows), right(b.rows)]);
    // Length fields by name, so sides with different kinds still line up.
    let mut fields: Vec<&String> = a
        .lengths
        .iter()
        .chain(&b.lengths)
        .map(|l| &l.field)
        .collect();
    fields.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for f in fields.into_iter().filter(|f| seen.insert(*f)) {
        let cell = |s: &SideStats| {
            s.lengths
                .iter()
                .find(|l| &l.field == f && l.rows > 0)
                .map(|l| format!("{:.0} / {:.0}", l.mean, l.median))
                .unwrap_or_else(|| "-".into())
        };
        t.add_row(vec![
            Cell::new(format!("{f} length mean / median")),
            right(cell(a)),
            right(cell(b)),
        ]);
    }
    let n = a.scores.len().max(b.scores.len());
    let has_scores =
        |s: &SideStats, i: usize| s.scores.get(i).is_some_and(|x| x.parsed + x.unparsed > 0);
    for i in (0..n).filter(|&i| has_scores(a, i) || has_scores(b, i)) {
        let name = a
            .scores
            .get(i)
            .or(b.scores.get(i))
            .map(|s| s.field.clone())
            .unwrap_or_default();
        let mean = |s: &SideStats| fmt_opt(s.scores.get(i).and_then(|x| x.mean), false);
        t.add_row(vec![
            Cell::new(format!("{name} mean")),
            right(mean(a)),
            right(mean(b)),
        ]);
        t.add_row(vec![
            Cell::new(format!("{name} histogram")),
            right(histogram(a, i)),
            right(histogram(b, i)),
        ]);
    }
    type Share = fn(&SideStats) -> Option<f64>;
    let rows: [(&str, Share); 3] = [
        ("tie share", |s| s.tie_share),
        ("chosen == rejected", |s| s.chosen_equals_rejected_share),
        ("unparsed scores", |s| s.unparsed_score_share),
    ];
    for (name, get) in rows {
        if get(a).is_some() || get(b).is_some() {
            t.add_row(vec![
                Cell::new(name),
                right(fmt_opt(get(a), true)),
                right(fmt_opt(get(b), true)),
            ]);
        }
    }
    t
}

fn summary_line(d: &DatasetDiff) -> String {
    let s = &d.summary;
    let mut line = format!(
        "+{} added  -{} removed  ~{} modified  ={} unchanged{}",
        s.added,
        s.removed,
        s.modified,
        s.unchanged,
        if s.reformatted > 0 {
            format!(" ({} reformatted)", s.reformatted) // same content, other bytes (spacing, CRLF)
        } else {
            String::new()
        }
    );
    if d.a.duplicate_keys + d.b.duplicate_keys > 0 {
        line.push_str(&format!(
            "\nduplicate keys: a {} ({} extra rows), b {} ({} extra rows)",
            d.a.duplicate_keys, d.a.duplicate_rows, d.b.duplicate_keys, d.b.duplicate_rows
        ));
    }
    line
}

fn render_dataset(
    w: &mut dyn Write,
    path: &str,
    d: &DatasetDiff,
    stat_only: bool,
) -> io::Result<()> {
    let kind = if d.a.kind == d.b.kind {
        d.a.kind.clone()
    } else {
        format!("{} -> {}", d.a.kind, d.b.kind)
    };
    writeln!(w, "\n== {path} ({kind}; key: {})", d.key)?;
    writeln!(w, "{}", summary_line(d))?;
    if !d.schema_changes.is_empty() {
        let mut t = table();
        t.set_header(vec!["field", "schema change", "a", "b"]);
        for c in &d.schema_changes {
            t.add_row(vec![
                c.field.clone(),
                c.change.clone(),
                c.a_types.join("|"),
                c.b_types.join("|"),
            ]);
        }
        writeln!(w, "{t}")?;
    }
    if let Some(fc) = d.field_changes.as_ref().filter(|fc| !fc.is_empty()) {
        let mut t = table();
        t.set_header(vec![Cell::new("field"), right("modified rows")]);
        for (f, n) in fc {
            t.add_row(vec![Cell::new(f), right(n)]);
        }
        writeln!(w, "{t}")?;
    }
    writeln!(w, "{}", stats_table(d))?;
    if stat_only {
        return Ok(());
    }
    let Some(ex) = &d.examples else { return Ok(()) };
    for (class, rows) in [("added", &ex.added), ("removed", &ex.removed)] {
        for r in rows.iter() {
            let mut t = table();
            t.set_header(vec![format!("{class} (line {})", r.line), String::new()]);
            if let Value::Object(m) = &r.row {
                for (k, v) in m {
                    t.add_row(vec![k.clone(), truncate(&value_text(v), VALUE_CHARS)]);
                }
            }
            writeln!(w, "{t}")?;
        }
    }
    for m in &ex.modified {
        let mut t = table();
        t.set_header(vec![
            format!("modified (line {} -> {})", m.line_a, m.line_b),
            String::new(),
        ]);
        if let Value::Object(k) = &m.key {
            for (f, v) in k {
                t.add_row(vec![
                    format!("key {f}"),
                    truncate(&value_text(v), VALUE_CHARS),
                ]);
            }
        }
        for c in &m.changes {
            let text = match (&c.words, &c.a, &c.b) {
                (Some(ops), _, _) => render_words(ops),
                (None, a, b) => {
                    let show = |v: &Option<Value>| {
                        v.as_ref()
                            .map(|v| truncate(&value_text(v), VALUE_CHARS / 2))
                            .unwrap_or_else(|| "(absent)".into())
                    };
                    format!("[-{}-]{{+{}+}}", show(a), show(b))
                }
            };
            t.add_row(vec![c.field.clone(), text]);
        }
        writeln!(w, "{t}")?;
    }
    Ok(())
}

/// Write `report` for a terminal. `stat_only`: the summary and statistics only.
pub fn render_report(w: &mut dyn Write, report: &Report, stat_only: bool) -> io::Result<()> {
    writeln!(w, "diff {} -> {}", report.a, report.b)?;
    if report.changes.is_empty() {
        writeln!(w, "no changes ({} paths unchanged)", report.unchanged_paths)?;
    } else {
        let mut t = table();
        t.set_header(vec!["path", "change", "kind", "a", "b"]);
        for c in &report.changes {
            t.add_row(vec![
                c.path.clone(),
                c.status.into(),
                c.kind.clone(),
                side_cell(&c.a),
                side_cell(&c.b),
            ]);
        }
        writeln!(w, "{t}")?;
        if report.unchanged_paths > 0 {
            writeln!(w, "{} paths unchanged", report.unchanged_paths)?;
        }
    }
    for c in &report.checkpoints {
        writeln!(
            w,
            "\ncheckpoint {}: {} file(s) changed ({}); {} of {} tensor(s) changed; {} added to the store",
            c.path,
            c.files_changed.len(),
            c.files_changed.join(", "),
            c.tensors.len(),
            c.tensors_compared,
            human_size(c.added_bytes)
        )?;
        // a full fine-tune changes every tensor: the first few say enough, JSON has them all
        const SHOWN: usize = 5;
        for t in c.tensors.iter().take(SHOWN) {
            writeln!(w, "  {t}")?;
        }
        if c.tensors.len() > SHOWN {
            writeln!(
                w,
                "  … {} more (--json lists every tensor)",
                c.tensors.len() - SHOWN
            )?;
        }
    }
    for d in &report.datasets {
        render_dataset(w, &d.path, &d.diff, stat_only)?;
    }
    for e in &report.errors {
        writeln!(w, "\nerror in {}: {}", e.path, e.message)?;
    }
    Ok(())
}

/// Write the trend table across revisions.
pub fn render_trend(w: &mut dyn Write, path: &str, rows: &[TrendRow]) -> io::Result<()> {
    writeln!(w, "trend of {path}")?;
    let mut t = table();
    t.set_header(vec![
        Cell::new("rev"),
        right("rows"),
        right("overlap prev"),
        right("chosen len"),
        right("rejected len"),
        right("score c / r"),
        right("ties"),
    ]);
    for r in rows {
        let overlap = match (r.overlap_prev, r.overlap_prev_share) {
            (Some(n), Some(s)) => format!("{n} ({:.0}%)", 100.0 * s),
            _ => "-".into(),
        };
        let len = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
        let scores = format!(
            "{} / {}",
            fmt_opt(r.chosen_score_mean, false),
            fmt_opt(r.rejected_score_mean, false)
        );
        t.add_row(vec![
            Cell::new(&r.rev),
            right(r.rows),
            right(overlap),
            right(len(r.chosen_len_mean)),
            right(len(r.rejected_len_mean)),
            right(scores),
            right(fmt_opt(r.tie_share, true)),
        ]);
    }
    writeln!(w, "{t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_markers_and_context_trimming() {
        let ops = vec![
            WordOp {
                op: "equal",
                text: "x".repeat(100),
            },
            WordOp {
                op: "delete",
                text: "old".into(),
            },
            WordOp {
                op: "insert",
                text: "new".into(),
            },
            WordOp {
                op: "equal",
                text: " tail".into(),
            },
        ];
        let s = render_words(&ops);
        assert_eq!(
            s,
            format!("…{}[-old-]{{+new+}} tail", "x".repeat(CONTEXT_CHARS))
        );
    }

    #[test]
    fn sizes_and_truncation() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_547_355), "1.5 MB");
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hé", 2), "hé");
    }
}
