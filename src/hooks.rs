//! Hooks: the scripts in `.srlm/hooks/` that srlm runs around commits, the shipped ones, and the
//! dataset checks (`srlm validate`) the shipped `pre-commit` calls.
//!
//! srlm runs `pre-commit` before writing a commit (a non-zero exit aborts the commit and its
//! output is shown) and `post-commit` after. A hook runs only when it is executable (as in git),
//! with the store's working directory as its current directory and this environment:
//!
//! | variable | meaning |
//! |---|---|
//! | `SRLM_HOOK` | `pre-commit` or `post-commit` |
//! | `SRLM_STORE` | the store directory (`…/.srlm`) |
//! | `SRLM_WORKDIR` | the store's working directory |
//! | `SRLM_EXE` | the srlm executable that runs the hook |
//! | `SRLM_CHANGED_PATHS` | paths (relative to the working directory) the commit adds, changes or removes, one per line |
//! | `SRLM_CHANGED_DATASETS` | those of them that are JSONL datasets, one per line |
//! | `SRLM_STAGED_DIR` | (pre-commit) a scratch directory holding the *staged* bytes of each changed dataset at its relative path — validate these, not the working copies, which may have changed since `srlm add` |
//! | `SRLM_COMMIT` | (post-commit) the new commit's id |
//! | `SRLM_RUN` | the commit's run record id, when it has one |
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use srlm_store::{CommitId, CommitOptions, EntryKind, Store, Tree, TreeEntry};

/// The hook scripts srlm ships (`hooks/` in the err tree), installed by `srlm init`.
pub const SHIPPED: &[(&str, &str)] = &[
    ("pre-commit", include_str!("../hooks/pre-commit")),
    ("post-commit", include_str!("../hooks/post-commit")),
];

/// Errors from installing or running hooks, or validating a dataset.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("hook {hook} ({path}) could not start: {err}")]
    Spawn {
        hook: String,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("the {hook} hook rejected the commit (exit status {status}):\n{output}")]
    Rejected {
        hook: String,
        status: String,
        output: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HookError + '_ {
    move |err| HookError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Install the shipped hooks into a store's hooks folder (`Store::hooks_dir`), executable. A
/// hook that is already there is left alone: it may be the user's own. Returns the paths
/// written.
pub fn install(hooks_dir: &Path) -> Result<Vec<PathBuf>, HookError> {
    let dir = hooks_dir.to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut written = Vec::new();
    for (name, text) in SHIPPED {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        // temp file in the same directory, then rename: a half-written hook never runs
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err(&dir))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io_err(&path))?;
        set_executable(tmp.path())?;
        tmp.persist(&path).map_err(|e| HookError::Io {
            path: path.clone(),
            err: e.error,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<(), HookError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> Result<(), HookError> {
    Ok(())
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// What a hook gets to know (see the module docs for the variables).
#[derive(Debug, Clone, Default)]
pub struct HookEnv {
    pub store_dir: PathBuf,
    pub workdir: PathBuf,
    pub changed_paths: Vec<String>,
    pub changed_datasets: Vec<String>,
    pub staged_dir: Option<PathBuf>,
    pub commit: Option<String>,
    pub run: Option<String>,
}

/// A hook that ran: its combined output (empty when there is no such hook).
#[derive(Debug, Clone, Default)]
pub struct HookRun {
    pub ran: bool,
    pub output: String,
}

/// Run hook `name` if `.srlm/hooks/<name>` exists and is executable. A non-zero exit is
/// [`HookError::Rejected`] with the hook's output.
pub fn run_hook(name: &str, env: &HookEnv) -> Result<HookRun, HookError> {
    let path = env.store_dir.join("hooks").join(name);
    if !is_executable(&path) {
        return Ok(HookRun::default());
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("srlm"));
    let mut cmd = Command::new(&path);
    cmd.current_dir(&env.workdir)
        .env("SRLM_HOOK", name)
        .env("SRLM_STORE", &env.store_dir)
        .env("SRLM_WORKDIR", &env.workdir)
        .env("SRLM_EXE", exe)
        .env("SRLM_CHANGED_PATHS", env.changed_paths.join("\n"))
        .env("SRLM_CHANGED_DATASETS", env.changed_datasets.join("\n"))
        .stdin(std::process::Stdio::null());
    for (k, v) in [
        (
            "SRLM_STAGED_DIR",
            env.staged_dir.as_ref().map(|p| p.display().to_string()),
        ),
        ("SRLM_COMMIT", env.commit.clone()),
        ("SRLM_RUN", env.run.clone()),
    ] {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().map_err(|err| HookError::Spawn {
        hook: name.to_string(),
        path: path.clone(),
        err,
    })?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let status = out
            .status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "killed by a signal".into());
        return Err(HookError::Rejected {
            hook: name.to_string(),
            status,
            output,
        });
    }
    Ok(HookRun { ran: true, output })
}

/// A commit made through [`commit_with_hooks`].
#[derive(Debug, Clone)]
pub struct Committed {
    pub id: CommitId,
    /// The branch it was made on (`None`: detached HEAD).
    pub branch: Option<String>,
    /// Output of the post-commit hook, and whether it failed (the commit stands either way).
    pub post_commit: Option<Result<String, String>>,
}

/// Errors of [`commit_with_hooks`].
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
    #[error(
        "the staging area changed while the pre-commit hook ran (another process staged files); \
         nothing was committed: commit again, or stage and commit your own paths in one step"
    )]
    StagingChanged,
}

/// Commit what is staged in the store containing `dir`, running the hooks: `pre-commit` first
/// (with the staged bytes of every changed dataset written under `SRLM_STAGED_DIR`; a non-zero
/// exit aborts and nothing is written), then the commit, then `post-commit`. The store is
/// closed while a hook runs, so hooks may call srlm themselves.
pub fn commit_with_hooks(dir: &Path, opts: &CommitOptions) -> Result<Committed, CommitError> {
    commit_with_hooks_verify(dir, opts, true)
}

/// [`commit_with_hooks`], skipping the `pre-commit` hook when `verify` is false
/// (`srlm commit --no-verify`: e.g. to keep a third-party dataset exactly as published).
pub fn commit_with_hooks_verify(
    dir: &Path,
    opts: &CommitOptions,
    verify: bool,
) -> Result<Committed, CommitError> {
    commit_hooked(dir, opts, verify, None)
}

/// Stage `paths` (relative to `dir`) and commit exactly them on top of HEAD, in one step under
/// the store lock, running the hooks as [`commit_with_hooks`] does. Concurrent committers of
/// their own paths each get a commit holding what they staged: if HEAD moved while the hook
/// ran, the same entries are committed on top of the new HEAD.
pub fn commit_paths_with_hooks(
    dir: &Path,
    paths: &[PathBuf],
    opts: &CommitOptions,
    verify: bool,
) -> Result<Committed, CommitError> {
    commit_hooked(dir, opts, verify, Some(paths))
}

/// Staged copies of changed datasets for the pre-commit hook (a folder under `.srlm/tmp`,
/// removed when dropped; a killed commit's is removed by the next writer).
fn commit_hooked(
    dir: &Path,
    opts: &CommitOptions,
    verify: bool,
    only: Option<&[PathBuf]>,
) -> Result<Committed, CommitError> {
    // checkpoint folders are committed as one unit each
    let mut opts = opts.clone();
    if opts.units.is_empty() {
        opts.units = crate::unit::rules();
    }
    let opts = &opts;
    let mut store = Store::discover(dir)?;
    let staged = store.scratch_dir("hook")?;
    let mut env = HookEnv {
        store_dir: store.store_dir().to_path_buf(),
        workdir: store.workdir().to_path_buf(),
        staged_dir: Some(staged.path().to_path_buf()),
        run: opts.run.map(|r| r.to_string()),
        ..Default::default()
    };
    let head_tree = match store.head()?.commit() {
        Some(c) => store.commit_tree(&c)?,
        None => Tree::default(),
    };
    // The changes this commit makes: everything staged (plain commit), or exactly the paths
    // given, staged now.
    let changes: BTreeMap<String, Option<TreeEntry>> = match only {
        None => {
            let stage = store.staged()?;
            let mut c: BTreeMap<String, Option<TreeEntry>> = stage
                .entries
                .iter()
                .filter(|(p, e)| head_tree.entries.get(*p) != Some(*e))
                .map(|(p, e)| (p.clone(), Some(e.clone())))
                .collect();
            for p in head_tree.entries.keys() {
                if !stage.entries.contains_key(p) {
                    c.insert(p.clone(), None);
                }
            }
            c
        }
        Some(paths) => {
            let rep = store.add(dir, paths)?;
            let mut c: BTreeMap<String, Option<TreeEntry>> = rep
                .added
                .into_iter()
                .filter(|f| head_tree.entries.get(&f.path) != Some(&f.entry))
                .map(|f| (f.path, Some(f.entry)))
                .collect();
            for r in rep.removed {
                if head_tree.entries.contains_key(&r) {
                    c.insert(r, None);
                }
            }
            c
        }
    };
    let wants_data = verify && is_executable(&env.store_dir.join("hooks/pre-commit"));
    for (path, entry) in &changes {
        env.changed_paths.push(path.clone());
        let Some(entry) = entry else { continue };
        if entry.kind == EntryKind::Dataset && wants_data {
            let dest = staged.path().join(path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let mut r = store.open_entry(entry)?;
            let mut f = std::fs::File::create(&dest).map_err(io_err(&dest))?;
            std::io::copy(&mut r, &mut f).map_err(io_err(&dest))?;
            env.changed_datasets.push(path.clone());
        }
    }
    let stage_before = store.staged()?;
    let workdir = env.workdir.clone();
    drop(store);
    if verify {
        run_hook("pre-commit", &env)?;
    }
    let mut store = Store::open(&workdir)?;
    let id = match only {
        None => {
            if store.staged()? != stage_before {
                return Err(CommitError::StagingChanged);
            }
            store.commit(opts)?
        }
        Some(_) => {
            if changes.is_empty() && !opts.allow_empty {
                return Err(srlm_store::StoreError::NothingToCommit.into());
            }
            store.commit_entries(&changes, opts)?
        }
    };
    let parent_tree = match store.read_commit(&id)?.parents.first() {
        Some(p) => store.commit_tree(p)?,
        None => Tree::default(),
    };
    // Build the diff record cache of the datasets this commit changed, so the next `srlm diff`
    // against the parent parses no row. The commit is already durable: a cache failure only
    // costs that diff its head start, so it is not an error.
    if let Ok(tree) = store.commit_tree(&id) {
        let _ = crate::dataset::committed::warm_cache(&store, &tree, Some(&parent_tree));
    }
    // A run left pending by a stage's no-commit mode is attached now: forget it.
    if let Some(run) = opts.run {
        if store.pin(crate::stages::record::PENDING_PIN)? == Some(run.0) {
            store.set_pin(crate::stages::record::PENDING_PIN, None)?;
        }
    }
    let branch = match store.head()? {
        srlm_store::Head::Branch { name, .. } => Some(name),
        srlm_store::Head::Detached { .. } => None,
    };
    drop(store);
    drop(staged);
    env.staged_dir = None;
    env.commit = Some(id.to_string());
    let post_commit = match run_hook("post-commit", &env) {
        Ok(r) if r.ran => Some(Ok(r.output)),
        Ok(_) => None,
        Err(e) => Some(Err(e.to_string())),
    };
    Ok(Committed {
        id,
        branch,
        post_commit,
    })
}

/// One problem found in a dataset: file, 1-based line, the field concerned (if any), message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}:{}: field `{}`: {}",
                self.file, self.line, field, self.message
            ),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.message),
        }
    }
}

/// The fields of a preference pair (TRL's preference format).
const PAIR_FIELDS: [&str; 3] = ["prompt", "chosen", "rejected"];

/// Validate a JSONL dataset read from `r` (`file` names it in problems): every line parses as a
/// JSON object; in a preference-pair dataset (first row has `chosen` or `rejected`) every row has
/// non-empty `prompt`, `chosen`, `rejected` (strings, or TRL conversational message lists) and
/// `chosen != rejected`. Returns every problem found, in line order.
pub fn validate_jsonl(r: impl Read, file: &str) -> Result<Vec<Problem>, HookError> {
    let mut problems = Vec::new();
    let mut pairs: Option<bool> = None;
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_err(Path::new(file)))?;
        if n == 0 {
            break;
        }
        line += 1;
        let mut problem = |field: Option<&str>, message: String| {
            problems.push(Problem {
                file: file.to_string(),
                line,
                field: field.map(str::to_string),
                message,
            })
        };
        let row: Value = match serde_json::from_slice(&buf) {
            Ok(v) => v,
            Err(e) if buf.iter().all(u8::is_ascii_whitespace) => {
                let _ = e;
                problem(
                    None,
                    "empty line (every line of a JSONL dataset must be a JSON value)".into(),
                );
                continue;
            }
            Err(e) => {
                problem(None, format!("not valid JSON: {e}"));
                continue;
            }
        };
        let Value::Object(obj) = &row else {
            problem(
                None,
                format!("expected a JSON object, found {}", json_type(&row)),
            );
            continue;
        };
        // A pair dataset is one whose first row is a pair; a row with `chosen` or `rejected`
        // is checked as a pair wherever it stands.
        let row_is_pair = obj.contains_key("chosen") || obj.contains_key("rejected");
        let file_is_pairs = *pairs.get_or_insert(row_is_pair);
        if !file_is_pairs && !row_is_pair {
            continue;
        }
        for field in PAIR_FIELDS {
            match obj.get(field) {
                None => problem(
                    Some(field),
                    "missing (preference pairs need prompt, chosen, rejected)".into(),
                ),
                Some(Value::String(s)) if s.trim().is_empty() => {
                    problem(Some(field), "is empty".into())
                }
                Some(Value::Array(a)) if a.is_empty() => {
                    problem(Some(field), "is an empty list".into())
                }
                Some(Value::Array(a)) => {
                    // TRL conversational form: messages with a role and non-empty content
                    for (i, m) in a.iter().enumerate() {
                        match m.get("content") {
                            Some(Value::String(c)) if !c.trim().is_empty() => {}
                            Some(Value::String(_)) => {
                                problem(Some(field), format!("message {i} has empty `content`"))
                            }
                            Some(Value::Array(parts)) if !parts.is_empty() => {}
                            _ => {
                                problem(Some(field), format!("message {i} has no `content` string"))
                            }
                        }
                    }
                }
                Some(Value::String(_)) => {}
                Some(other) => problem(
                    Some(field),
                    format!(
                        "expected a string or a list of messages, found {}",
                        json_type(other)
                    ),
                ),
            }
        }
        if let (Some(c), Some(r)) = (obj.get("chosen"), obj.get("rejected")) {
            if c == r && !is_blank(c) {
                problem(
                    Some("chosen"),
                    "is identical to `rejected` (a pair must prefer one response over another)"
                        .into(),
                );
            }
        }
    }
    Ok(problems)
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Validate the JSONL file at `path`, naming it `display` in problems.
pub fn validate_file(path: &Path, display: &str) -> Result<Vec<Problem>, HookError> {
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    validate_jsonl(f, display)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        validate_jsonl(text.as_bytes(), "p.jsonl")
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn good_pairs_pass() {
        let t = "{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\"}\n{\"prompt\":[{\"role\":\"user\",\"content\":\"x\"}],\"chosen\":[{\"role\":\"assistant\",\"content\":\"y\"}],\"rejected\":[{\"role\":\"assistant\",\"content\":\"z\"}]}\n";
        assert_eq!(check(t), Vec::<String>::new());
    }

    #[test]
    fn bad_pairs_name_line_and_field() {
        let t = "{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\"}\n\
                 {\"prompt\":\"a\",\"chosen\":\"\",\"rejected\":\"c\"}\n\
                 {\"prompt\":\"a\",\"chosen\":\"same\",\"rejected\":\"same\"}\n\
                 {\"prompt\":\"a\",\"chosen\":\"b\"}\n\
                 not json\n";
        let p = check(t);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(
            p[0].starts_with("p.jsonl:2: field `chosen`: is empty"),
            "{}",
            p[0]
        );
        assert!(
            p[1].starts_with("p.jsonl:3: field `chosen`: is identical"),
            "{}",
            p[1]
        );
        assert!(
            p[2].starts_with("p.jsonl:4: field `rejected`: missing"),
            "{}",
            p[2]
        );
        assert!(p[3].starts_with("p.jsonl:5: not valid JSON"), "{}", p[3]);
    }

    #[test]
    fn non_pair_datasets_only_need_json_objects() {
        assert_eq!(
            check("{\"prompt\":\"a\",\"response\":\"b\"}\n{\"prompt\":\"c\"}\n"),
            Vec::<String>::new()
        );
        let p = check("{\"prompt\":\"a\"}\n\n[1]\n");
        assert_eq!(p.len(), 2);
        assert!(p[0].starts_with("p.jsonl:2: empty line"));
        assert!(p[1].starts_with("p.jsonl:3: expected a JSON object"));
    }

    #[test]
    fn install_writes_executable_hooks_and_keeps_existing_ones() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("hooks")).unwrap();
        std::fs::write(d.path().join("hooks/post-commit"), "#!/bin/sh\necho mine\n").unwrap();
        let written = install(&d.path().join("hooks")).unwrap();
        assert_eq!(written, vec![d.path().join("hooks/pre-commit")]);
        assert!(is_executable(&d.path().join("hooks/pre-commit")));
        assert_eq!(
            std::fs::read_to_string(d.path().join("hooks/post-commit")).unwrap(),
            "#!/bin/sh\necho mine\n"
        );
    }

    #[test]
    fn failing_hook_rejects_with_its_output() {
        let d = tempfile::tempdir().unwrap();
        let hooks = d.path().join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        std::fs::write(
            hooks.join("pre-commit"),
            "#!/bin/sh\necho \"no: $SRLM_CHANGED_PATHS\"\nexit 4\n",
        )
        .unwrap();
        set_executable(&hooks.join("pre-commit")).unwrap();
        let env = HookEnv {
            store_dir: d.path().to_path_buf(),
            workdir: d.path().to_path_buf(),
            changed_paths: vec!["a.jsonl".into()],
            ..Default::default()
        };
        match run_hook("pre-commit", &env) {
            Err(HookError::Rejected { status, output, .. }) => {
                assert_eq!(status, "4");
                assert_eq!(output, "no: a.jsonl\n");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        // a hook that does not exist is no hook
        assert!(!run_hook("post-commit", &env).unwrap().ran);
    }
}
