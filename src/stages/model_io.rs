//! Models as stage inputs and outputs. A checkpoint is one role: a GGUF file, or a checkpoint
//! folder recorded as one unit ([`crate::unit`]). A folder that is not a checkpoint (or one in
//! a tree committed before units existed) travels as one role per file (`policy/config.json`,
//! …) and is put back together as a folder for the engine, as older records have it.
use std::path::{Path, PathBuf};

use srlm_store::Store;

use super::record::{StageFailure, StageIo};
use crate::backend::local::Local;
use crate::backend::server::{Server, ServerOptions, ServerTarget};
use crate::backend::Backend;
use crate::engine::checkpoint;

/// The files of a full checkpoint, in the order they are declared as outputs.
/// (`tokenizer_config.json` carries the chat template, so every model srlm trains has one.)
pub const CHECKPOINT_FILES: [&str; 5] = [
    checkpoint::CONFIG_FILE,
    checkpoint::WEIGHTS_FILE,
    checkpoint::TOKENIZER_FILE,
    "tokenizer_config.json",
    checkpoint::META_FILE,
];

#[derive(Debug, thiserror::Error)]
pub enum ModelRefError {
    #[error("model {reference}: {msg}")]
    Bad { reference: String, msg: String },
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
}

/// Expands a model reference into stage inputs `(role, reference)`.
///
/// `reference` is a file (`base/model.gguf`, `M0:base/model.gguf`) or a folder
/// (`model`, `M1:model`), in the working tree or at a revision, or an absolute path outside the
/// working directory (an external input).
pub fn model_inputs(
    store: &Store,
    role: &str,
    reference: &str,
) -> Result<Vec<(String, String)>, ModelRefError> {
    let bad = |msg: String| ModelRefError::Bad {
        reference: reference.to_string(),
        msg,
    };
    let workdir = store.workdir().to_path_buf();
    let local = workdir.join(reference);
    if Path::new(reference).is_absolute() {
        // outside the working directory: an external input (a model in a cache)
        return if local.is_dir() {
            let files = super::inputs::folder_inputs(role, &local, reference)
                .map_err(|e| bad(e.to_string()))?;
            if files.is_empty() {
                return Err(bad("the folder holds no file".into()));
            }
            Ok(files)
        } else if local.is_file() {
            Ok(vec![(role.to_string(), reference.to_string())])
        } else {
            Err(bad("no such file or folder".into()))
        };
    }
    if local.is_file() || crate::unit::is_checkpoint_dir(&local) {
        return Ok(vec![(role.to_string(), reference.to_string())]);
    }
    if local.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(&local)
            .map_err(|e| bad(e.to_string()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(bad("the folder holds no file".into()));
        }
        let dir = reference.trim_end_matches('/');
        return Ok(names
            .into_iter()
            .map(|n| (format!("{role}/{n}"), format!("{dir}/{n}")))
            .collect());
    }
    let Some((rev, path)) = reference.split_once(':') else {
        return Err(bad("no such file or folder in the working tree".into()));
    };
    let commit = store.resolve(rev)?;
    let tree = store.commit_tree(&commit)?;
    let path = path.trim_end_matches('/');
    if tree.entries.contains_key(path) || tree.units.contains_key(path) {
        return Ok(vec![(role.to_string(), reference.to_string())]);
    }
    let prefix = format!("{path}/");
    let files: Vec<(String, String)> = tree
        .entries
        .keys()
        .filter_map(|p| p.strip_prefix(&prefix).map(|n| (n.to_string(), p.clone())))
        .filter(|(n, _)| !n.contains('/'))
        .map(|(n, p)| (format!("{role}/{n}"), format!("{rev}:{p}")))
        .collect();
    if files.is_empty() {
        return Err(bad(format!("no file or folder `{path}` at {rev}")));
    }
    Ok(files)
}

/// A model the stage can load: the path of a GGUF file, or a folder assembled from the
/// per-file roles (the temporary folder lives as long as this value).
pub struct ModelPath {
    pub path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// The model given as input `role` (see [`model_inputs`]).
pub fn model_path(io: &StageIo, role: &str) -> Result<ModelPath, StageFailure> {
    if let Some(p) = io.inputs.get(role) {
        return Ok(ModelPath {
            path: p.clone(),
            _dir: None,
        });
    }
    let prefix = format!("{role}/");
    let files: Vec<(&str, &PathBuf)> = io
        .inputs
        .iter()
        .filter_map(|(r, p)| r.strip_prefix(&prefix).map(|n| (n, p)))
        .collect();
    if files.is_empty() {
        return Err(format!("no model input `{role}`").into());
    }
    let dir = tempfile::Builder::new().prefix("srlm-model-").tempdir()?;
    for (name, src) in files {
        let dst = dir.path().join(name);
        // A hard link costs nothing; across file systems fall back to a symbolic link.
        if std::fs::hard_link(src, &dst).is_err() {
            std::os::unix::fs::symlink(std::path::absolute(src)?, &dst)?;
        }
    }
    Ok(ModelPath {
        path: dir.path().to_path_buf(),
        _dir: Some(dir),
    })
}

/// The output role of a full checkpoint written to folder `dir`: one role, one unit.
pub fn checkpoint_outputs(role: &str, dir: &str) -> Vec<(String, String)> {
    vec![(role.to_string(), dir.trim_end_matches('/').to_string())]
}

/// Writes a checkpoint to the output folder of `role`: `save` writes a fresh folder (the
/// engine refuses to overwrite one), whose files then replace the old ones one rename each,
/// so a reader of the previous checkpoint (memory-mapped weights) is never disturbed.
pub fn write_checkpoint(
    io: &StageIo,
    role: &str,
    save: impl FnOnce(&Path) -> Result<(), StageFailure>,
) -> Result<(), StageFailure> {
    // one role naming the folder; records from before units name one role per file
    let dir = match io.outputs.get(role) {
        Some(d) => d.clone(),
        None => io
            .outputs
            .get(&format!("{role}/{}", CHECKPOINT_FILES[0]))
            .ok_or_else(|| format!("no checkpoint output `{role}`"))?
            .parent()
            .ok_or("checkpoint output has no folder")?
            .to_path_buf(),
    };
    std::fs::create_dir_all(&dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".srlm-new-")
        .tempdir_in(&dir)?;
    let fresh = tmp.path().join("checkpoint");
    save(&fresh)?;
    for name in CHECKPOINT_FILES {
        let src = fresh.join(name);
        if !src.exists() {
            return Err(format!(
                "the checkpoint has no {name} (a base model without a chat template?)"
            )
            .into());
        }
        std::fs::rename(&src, dir.join(name))?;
    }
    Ok(())
}

/// The parameters recorded for a stage, parsed back into its typed form.
pub fn params<T: serde::de::DeserializeOwned>(io: &StageIo) -> Result<T, StageFailure> {
    Ok(serde_json::from_value(io.params.clone()).map_err(|e| format!("stage parameters: {e}"))?)
}

/// The output path of `role`.
pub fn output<'a>(io: &'a StageIo, role: &str) -> Result<&'a Path, StageFailure> {
    Ok(io
        .outputs
        .get(role)
        .ok_or_else(|| format!("no output `{role}`"))?)
}

/// The input path of `role`.
pub fn input<'a>(io: &'a StageIo, role: &str) -> Result<&'a Path, StageFailure> {
    Ok(io
        .inputs
        .get(role)
        .ok_or_else(|| format!("no input `{role}`"))?)
}

/// Metrics from any serialisable summary (its top-level fields).
pub fn metrics_of<T: serde::Serialize>(m: &T) -> super::record::Metrics {
    match serde_json::to_value(m) {
        Ok(serde_json::Value::Object(o)) => o.into_iter().collect(),
        _ => Default::default(),
    }
}

/// The generation backend a stage runs on: the server named in its parameters (`server`:
/// [`ServerTarget`], with the client's options from `io.engine["client"]`), else the
/// in-process engine on the model given as input `role`.
pub fn backend(io: &StageIo, role: &str) -> Result<Box<dyn Backend>, StageFailure> {
    if let Some(t) = io.params.get("server").filter(|v| !v.is_null()) {
        let target: ServerTarget = serde_json::from_value(t.clone())
            .map_err(|e| format!("stage parameters: server: {e}"))?;
        let options = client_options(&io.engine)?;
        return Ok(Box::new(Server::connect(&target, &options)?));
    }
    let mp = model_path(io, role)?;
    Ok(Box::new(Local::open(&mp.path)?))
}

/// The client options recorded in (or asked for by) an engine value.
fn client_options(engine: &serde_json::Value) -> Result<ServerOptions, StageFailure> {
    Ok(match engine.get("client") {
        Some(c) => serde_json::from_value(c.clone()).map_err(|e| format!("engine: client: {e}"))?,
        None => ServerOptions::default(),
    })
}

/// The server a run's parameters name, if any.
pub fn server_of(params: &serde_json::Value) -> Option<ServerTarget> {
    serde_json::from_value(params.get("server")?.clone()).ok()
}

/// Whether the recorded server answers (lists its models and serves the recorded one).
pub fn probe_server(target: &ServerTarget, engine: &serde_json::Value) -> Result<(), StageFailure> {
    let mut options = client_options(engine)?;
    options.retries = options.retries.min(1);
    Server::connect(target, &options)?;
    Ok(())
}

/// The parameters `params` with the server to run on (none: the in-process engine).
pub fn with_server(
    mut params: serde_json::Value,
    server: Option<&ServerTarget>,
) -> serde_json::Value {
    if let (Some(s), Some(o)) = (server, params.as_object_mut()) {
        o.insert(
            "server".into(),
            serde_json::to_value(s).expect("serialises"),
        );
    }
    params
}

/// Records what the stage ran on: the backend's description as the run's engine, and its
/// counters (requests, retries, tokens, wall time) plus the rows a journal gave back, as
/// metrics.
pub fn record_backend(
    io: &mut StageIo,
    backend: &dyn Backend,
    journal: &super::journal::Journal,
    m: &mut super::record::Metrics,
) {
    io.engine = backend.describe();
    if let serde_json::Value::Object(u) = backend.usage() {
        m.extend(u);
    }
    m.insert("journal_reused".into(), journal.reused.into());
    m.insert("requests_sent".into(), journal.sent.into());
}
