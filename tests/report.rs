//! Seeing the loop: `srlm runs` and `srlm report` on a loop run by the tiny random-weight model
//! (two iterations and two `eval-judge` runs), and the report rendered by headless Chromium.
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

/// One loop for every test of this file (made once, read only after).
fn store() -> &'static Path {
    static STORE: OnceLock<tempfile::TempDir> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            tiny_loop(tmp.path());
            tmp
        })
        .path()
}

fn tiny_loop(dir: &Path) {
    let ok = |args: &[&str]| common::ok(dir, args);
    ok(&["init"]);
    srlm::engine::fixture::write_tiny_model(&dir.join("base/tiny"), 11).expect("tiny model");
    ok(&["add", "base/tiny"]);
    ok(&["commit", "-m", "M0: tiny base"]);
    ok(&["tag", "M0"]);
    ok(&["import", "builtin"]);
    ok(&[
        "sft",
        "--base",
        "M0:base/tiny",
        "--ift",
        "seed/ift.jsonl",
        "--eft",
        "seed/eft.jsonl",
        "--max-tokens",
        "48",
        "--grad-accum",
        "8",
        "--lr",
        "1e-3",
        "--tag",
        "M1",
    ]);
    ok(&[
        "iterate",
        "--from",
        "M1",
        "--iterations",
        "2",
        "--prompts",
        "2",
        "--shots",
        "2",
        "--n",
        "3",
        "--max-tokens",
        "6",
        "--method",
        "digits",
        "--samples",
        "1",
        "--lr",
        "1e-3",
        "--seed",
        "5",
    ]);
    let rows = [
        ("a", "r1", "Paris is the capital of France.", 0.9),
        ("a", "r2", "I like cheese.", 0.1),
        ("a", "r3", "France's capital is Paris.", 0.7),
        ("b", "r4", "Two.", 0.2),
        ("b", "r5", "Four.", 0.8),
    ];
    let text: String = rows
        .iter()
        .map(|(p, id, r, q)| {
            format!(
                "{}\n",
                serde_json::json!({"prompt_id": p, "prompt": format!("question {p}"),
                    "response_id": id, "response": r, "quality_score": q})
            )
        })
        .collect();
    std::fs::write(dir.join("eval.jsonl"), text).unwrap();
    for model in ["M1:model", "M3:model"] {
        ok(&[
            "eval-judge",
            "--model",
            model,
            "--eval",
            "eval.jsonl",
            "--method",
            "digits",
            "--samples",
            "1",
        ]);
    }
}

/// Ids, times and durations vary from run to run; column widths follow them.
macro_rules! stable {
    ($($body:tt)*) => {
        insta::with_settings!({filters => vec![
            (r"\b[0-9a-f]{12}\b", "[id]"),
            (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "[time]"),
            (r"\b\d+m\d\ds\b|\b\d+\.\ds\b", "[dur]"),
            (r"[─═┄╌]+", "─"),
            (r" {2,}", " "),
        ]}, { $($body)* });
    };
}

#[test]
fn runs_lists_every_stage_of_the_loop() {
    let dir = store();
    let text = common::ok(dir, &["runs"]);
    stable!(insta::assert_snapshot!("runs_table", text));

    let rows: Value = serde_json::from_str(&common::ok(dir, &["runs", "--json"])).unwrap();
    let rows = rows.as_array().unwrap();
    let stages: Vec<&str> = rows.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    for s in [
        "seed",
        "sft",
        "gen-prompts",
        "gen-responses",
        "judge",
        "pairs",
        "dpo",
        "eval-judge",
    ] {
        assert!(stages.contains(&s), "{s} missing: {stages:?}");
    }
    // 1 seed, 1 sft, 2 × 5 loop stages, 2 eval-judge
    assert_eq!(rows.len(), 14, "{stages:?}");
    let dpo: Vec<&Value> = rows.iter().filter(|r| r["stage"] == "dpo").collect();
    let inputs = |r: &Value| -> Vec<String> {
        r["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}={}",
                    i["role"].as_str().unwrap(),
                    i["label"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(inputs(dpo[1]), ["pairs=AIFT(M2)", "policy=M2"]);
    assert_eq!(dpo[1]["tags"], serde_json::json!(["M3"]));
    // each iteration offsets the seed; nothing else about DPO differs
    assert_eq!(dpo[0]["params"], serde_json::json!({"seed": 1005}));
    assert_eq!(dpo[1]["params"], serde_json::json!({"seed": 2005}));
    assert!(dpo[0]["metrics"]["step_log"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));

    // exactly the runs asked for, filtered by stage
    let two: Value =
        serde_json::from_str(&common::ok(dir, &["runs", "M2", "M3", "--json"])).unwrap();
    assert_eq!(two.as_array().unwrap().len(), 2);
    let only: Value =
        serde_json::from_str(&common::ok(dir, &["runs", "--stage", "judge", "--json"])).unwrap();
    assert_eq!(only.as_array().unwrap().len(), 2);
    let err = common::fails(dir, &["runs", "M0"], 1);
    assert!(err.contains("M0") && err.contains("no run record"), "{err}");
}

/// The page's text: what is outside `<style>` and `<svg>` (an svg is `[svg]`), a table row
/// per line with its cells between `|`.
fn text_of(html: &str) -> String {
    let mut s = html.to_string();
    for (open, close, with) in [("<style", "</style>", ""), ("<svg", "</svg>", "\n[svg]\n")] {
        while let Some(a) = s.find(open) {
            let b = s[a..]
                .find(close)
                .map(|b| a + b + close.len())
                .unwrap_or(s.len());
            s.replace_range(a..b, with);
        }
    }
    let s = s
        .replace("<code>", "`")
        .replace("</code>", "`")
        .replace("</td>", " |")
        .replace("</th>", " |");
    let mut out = String::new();
    let mut tag = None::<String>;
    for c in s.chars() {
        match (&mut tag, c) {
            (None, '<') => tag = Some(String::new()),
            (Some(t), '>') => {
                // a cell opens inline; any other element on its own line
                if !(t.starts_with("td") || t.starts_with("th")) {
                    out.push('\n');
                }
                tag = None;
            }
            (Some(t), c) => t.push(c),
            (None, c) => out.push(c),
        }
    }
    let out = out
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&amp;", "&");
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `srlm report -o NAME` (each test its own file: they run at once on one store).
fn report(dir: &Path, name: &str) -> (PathBuf, String) {
    let out = common::ok(dir, &["report", "-o", name]);
    assert!(
        out.starts_with(&format!("wrote {name} (2 iterations, 14 runs")),
        "{out}"
    );
    let path = dir.join(name);
    let html = std::fs::read_to_string(&path).unwrap();
    (path, html)
}

#[test]
fn report_is_one_self_contained_page_of_the_loop() {
    let (_, html) = report(store(), "report-text.html");
    // no script, no fetched resource: the SVG namespace is the only URL
    for banned in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(banned), "{banned} in the page");
    }
    let urls = html.matches("http://").count() + html.matches("https://").count();
    assert_eq!(
        urls,
        html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    // counts, 2 histograms, lengths, loss/margin/accuracy, judge accuracy, lineage
    assert_eq!(html.matches("<svg").count(), 1 + 2 + 1 + 3 + 1 + 1);
    stable!(insta::assert_snapshot!("report_text", text_of(&html)));
    // the lineage graph names every stage back to the base model and the seed data
    let lineage = &html[html.find("Lineage of M3").unwrap()..];
    let lineage = &lineage[..lineage.find("</svg>").unwrap()];
    for label in [
        "dpo",
        "M3",
        "AIFT(M2)",
        "pairs",
        "judge",
        "gen-responses",
        "gen-prompts",
        "sft",
        "M1",
        "M0",
        "seed",
    ] {
        assert!(
            lineage.contains(&format!(">{label}<")) || lineage.contains(&format!(">\n{label}\n<")),
            "{label} not in the lineage graph"
        );
    }
}

/// The screenshot's pixels: the variance of their brightness and the number of colours.
fn pixels(png_path: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bpp = info.color_type.samples();
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(bpp).collect();
    let lum: Vec<f64> = px
        .iter()
        .map(|p| p[..3.min(bpp)].iter().map(|&c| c as f64).sum::<f64>() / 3.0)
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let var = lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64;
    let colours: std::collections::HashSet<&[u8]> = px.into_iter().collect();
    (var, colours.len())
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for d in std::env::split_paths(&path) {
            if d.join(name).is_file() {
                return Some(d.join(name));
            }
        }
    }
    None
}

/// Renders `page` headless; returns the screenshot's path and the console messages logged.
fn render(browser: &Path, page: &Path, out: &Path) -> (PathBuf, Vec<String>) {
    let shot = out.join("shot.png");
    let profile = out.join("profile");
    let o = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(shot.is_file(), "no screenshot ({:?}):\n{stderr}", o.status);
    let console = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_owned)
        .collect();
    (shot, console)
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        common::absent(
            "SRLM_REQUIRE_CHROMIUM",
            "chromium is not on PATH (apt-get install chromium)",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // the checks can fail: a blank page that logs an error is told apart
    let blank = tmp.path().join("blank.html");
    std::fs::write(
        &blank,
        "<!DOCTYPE html><html><body><script>console.error('broken')</script></body></html>",
    )
    .unwrap();
    let (shot, console) = render(&browser, &blank, tmp.path());
    assert!(console.iter().any(|l| l.contains("broken")), "{console:?}");
    let (var, colours) = pixels(&shot);
    assert!(
        var < 1.0 && colours <= 2,
        "a blank page has variance {var}, {colours} colours"
    );

    let (page, _) = report(store(), "report-browser.html");
    let (shot, console) = render(&browser, &page, tmp.path());
    assert!(console.is_empty(), "console messages: {console:#?}");
    let (var, colours) = pixels(&shot);
    assert!(
        var > 100.0 && colours > 50,
        "blank? variance {var}, {colours} colours"
    );
}
