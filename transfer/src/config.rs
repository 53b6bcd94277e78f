//! The remotes of a store, kept in `.srlm/remotes` (JSON: name → URL, optional S3 endpoint and
//! region, whether the clone was lazy). Credentials are never part of it: they come from the
//! standard AWS environment variables at each use.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use srlm_store::Store;

use crate::error::{Result, TransferError};

/// One remote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConfig {
    pub url: String,
    /// S3 endpoint (e.g. `http://127.0.0.1:3900`); else `AWS_ENDPOINT_URL`, else AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region; else `AWS_REGION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Cloned lazily: file bytes are fetched when needed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lazy: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    remotes: BTreeMap<String, RemoteConfig>,
}

fn load(store: &Store) -> Result<File> {
    match store.remotes_config()? {
        None => Ok(File::default()),
        Some(b) => serde_json::from_slice(&b).map_err(|e| TransferError::BadConfig(e.to_string())),
    }
}

fn save(store: &Store, f: &File) -> Result<()> {
    let mut b = serde_json::to_vec_pretty(f).expect("config serialises");
    b.push(b'\n');
    Ok(store.set_remotes_config(&b)?)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(TransferError::BadRemoteName(name.into()))
    }
}

/// Every remote, by name.
pub fn list(store: &Store) -> Result<Vec<(String, RemoteConfig)>> {
    Ok(load(store)?.remotes.into_iter().collect())
}

/// The remote called `name`.
pub fn get(store: &Store, name: &str) -> Result<RemoteConfig> {
    load(store)?
        .remotes
        .remove(name)
        .ok_or_else(|| TransferError::NoSuchRemote(name.into()))
}

/// Add a remote (its URL is checked, nothing is contacted).
pub fn add(store: &Store, name: &str, cfg: RemoteConfig) -> Result<()> {
    check_name(name)?;
    crate::location::Location::parse(&cfg.url)?;
    let mut f = load(store)?;
    if f.remotes.contains_key(name) {
        return Err(TransferError::RemoteExists(name.into()));
    }
    f.remotes.insert(name.into(), cfg);
    save(store, &f)
}

/// Remove a remote and its remote-tracking refs.
pub fn remove(store: &mut Store, name: &str) -> Result<()> {
    let mut f = load(store)?;
    if f.remotes.remove(name).is_none() {
        return Err(TransferError::NoSuchRemote(name.into()));
    }
    save(store, &f)?;
    store.delete_remote_refs(name)?;
    Ok(())
}
