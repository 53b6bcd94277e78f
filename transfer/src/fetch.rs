//! Fetch: bring what a remote's refs reach that this store lacks, verified, then set the
//! remote-tracking refs (`refs/remotes/NAME/BRANCH`) and new tags.
//!
//! Nothing received is written before it is verified (bundles and objects against their names,
//! packs piece by piece), and it is written dependencies first: packs, then small objects in an
//! order where each comes after everything it names, then refs. A fetch killed at any instant
//! leaves a store that `fsck` finds clean, and its re-run fetches only what is still missing.
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use srlm_store::{object_links, CommitId, ObjectId, Store};

use crate::error::{Result, TransferError};
use crate::layout::{decode_bundle, State};
use crate::remote::Remote;
use crate::{Progress, TransferReport};

/// Fetch everything `remote`'s refs reach; with `lazy`, leave out the pieces (file bytes).
pub fn fetch(
    store: &mut Store,
    remote: &Remote,
    lazy: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<TransferReport> {
    let t0 = Instant::now();
    let mut rep = TransferReport::default();
    if !remote.check_format()? {
        return Err(TransferError::EmptyRemote {
            url: remote.url().into(),
        });
    }
    let st = remote.state(store)?;
    let tips: Vec<(String, ObjectId)> = st
        .refs
        .iter()
        .filter_map(|(n, v)| Some((n.clone(), v.parse().ok()?)))
        .collect();
    // 1. the small objects we lack, from their bundles (each verified)
    let mut received: HashMap<ObjectId, Vec<u8>> = HashMap::new();
    let mut bundles_read: HashSet<String> = HashSet::new();
    let mut pieces: HashSet<ObjectId> = HashSet::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    // (id, who names it, must exist): ids a run record's JSON mentions need not be objects
    let mut stack: Vec<(ObjectId, String, bool)> =
        tips.iter().map(|(n, id)| (*id, n.clone(), true)).collect();
    while let Some((id, from, strict)) = stack.pop() {
        if !seen.insert(id) || store.has_small_object(&id)? {
            continue;
        }
        if !received.contains_key(&id) {
            match st.bundles.get(&id) {
                Some(b) if !bundles_read.contains(b) => {
                    let key = format!("bundles/{b}.bundle");
                    let bytes =
                        remote
                            .bucket
                            .get(&key)?
                            .ok_or_else(|| TransferError::RemoteMissing {
                                url: remote.url().into(),
                                name: key.clone(),
                                id: id.to_hex(),
                            })?;
                    rep.bytes_received += bytes.len() as u64;
                    progress(Progress::Received {
                        key: &key,
                        bytes: bytes.len() as u64,
                    });
                    for (oid, ob) in decode_bundle(remote.url(), b, &bytes)? {
                        if !store.has_small_object(&oid)? {
                            received.insert(oid, ob);
                        }
                    }
                    bundles_read.insert(b.clone());
                }
                _ => {}
            }
        }
        let Some(raw) = received.get(&id) else {
            if strict {
                return Err(TransferError::RemoteMissing {
                    url: remote.url().into(),
                    name: from,
                    id: id.to_hex(),
                });
            }
            continue;
        };
        let (objs, ps) = object_links(&id, raw)?;
        pieces.extend(ps);
        let is_run = raw.starts_with(b"srlm-run/");
        let who = id.to_hex();
        stack.extend(objs.into_iter().map(|o| (o, who.clone(), !is_run)));
    }
    // 2. the packs holding pieces we lack
    if !lazy {
        let want: Vec<ObjectId> = pieces
            .into_iter()
            .filter(|p| !store.has_piece(p).unwrap_or(false))
            .collect();
        receive_pieces(store, remote, &want, &mut rep, progress)?;
    }
    // 3. the objects, dependencies first, then the refs
    let order = srlm_store::dependency_order(
        &tips.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        &HashSet::new(),
        |id| match received.get(id) {
            Some(raw) => Ok(Some(object_links(id, raw)?)),
            None => Ok(None),
        },
    )?;
    for id in &order.objects {
        store.put_object_expecting(id, &received[id])?;
        rep.objects_received += 1;
    }
    rep.objects_skipped = seen.len() as u64 - rep.objects_received;
    update_tracking(store, remote, &st, &mut rep)?;
    rep.seconds = t0.elapsed().as_secs_f64();
    Ok(rep)
}

/// Download and import the remote packs that hold `want` (whole packs: they are the unit).
pub fn receive_pieces(
    store: &Store,
    remote: &Remote,
    want: &[ObjectId],
    rep: &mut TransferReport,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    if want.is_empty() {
        return Ok(());
    }
    let where_ = remote.pieces(store)?;
    let mut packs: Vec<&String> = Vec::new();
    for p in want {
        match where_.get(p) {
            Some(n) => packs.push(n),
            None => {
                return Err(TransferError::RemoteMissing {
                    url: remote.url().into(),
                    name: "a manifest".into(),
                    id: p.to_hex(),
                })
            }
        }
    }
    packs.sort();
    packs.dedup();
    // downloads run in parallel, a batch at a time (bounding the temporary disk they take);
    // each pack is verified and imported before anything uses it
    for batch in packs.chunks(2 * crate::bucket::PARALLEL) {
        let mut items = Vec::with_capacity(batch.len());
        for name in batch {
            items.push((format!("packs/{name}.pack"), store.temp_file()?));
        }
        let got = remote.bucket.get_many(items)?;
        for (name, (tmp, n)) in batch.iter().zip(got) {
            let key = format!("packs/{name}.pack");
            let n = n.ok_or_else(|| TransferError::RemoteMissing {
                url: remote.url().into(),
                name: key.clone(),
                id: (*name).clone(),
            })?;
            let idx = remote.fetch_idx(name)?;
            rep.bytes_received += n + idx.len() as u64;
            store
                .import_pack(name, tmp, &idx)
                .map_err(|e| TransferError::Corrupt {
                    url: remote.url().into(),
                    path: key.clone(),
                    detail: e.to_string(),
                })?;
            rep.packs_received += 1;
            progress(Progress::Received {
                key: &key,
                bytes: n,
            });
        }
    }
    Ok(())
}

/// Set `refs/remotes/NAME/*` to the remote's branches (those whose commits are here), drop the
/// ones the remote no longer has, create tags this store lacks, and note what diverged.
pub fn update_tracking(
    store: &mut Store,
    remote: &Remote,
    st: &State,
    rep: &mut TransferReport,
) -> Result<()> {
    let mut branches = HashSet::new();
    let local_tags: HashMap<String, CommitId> = store.tags()?.into_iter().collect();
    for (r, v) in &st.refs {
        let Ok(c) = v.parse::<CommitId>() else {
            continue;
        };
        if !store.has_small_object(&c.0)? {
            continue;
        }
        if let Some(b) = r.strip_prefix("refs/heads/") {
            branches.insert(b.to_string());
            store.set_remote_ref(&remote.name, b, Some(&c))?;
        } else if let Some(t) = r.strip_prefix("refs/tags/") {
            match local_tags.get(t) {
                None => store.set_tag(t, &c, false)?,
                Some(l) if *l == c => {}
                Some(l) => rep.notes.push(format!(
                    "tag {t} is {} here but {} on {}; kept this store's",
                    l.short(),
                    c.short(),
                    remote.name
                )),
            }
        }
    }
    for (b, _) in store.remote_refs(&remote.name)? {
        if !branches.contains(&b) {
            store.set_remote_ref(&remote.name, &b, None)?;
        }
    }
    for d in &st.diverged {
        let short = |v: &Option<String>| {
            v.as_deref()
                .map(|s| s.chars().take(12).collect::<String>())
                .unwrap_or_else(|| "(deleted)".into())
        };
        rep.notes.push(format!(
            "{} diverged on {}: it is {}; a concurrent push of {} (op {}) came second and is kept \
             on the remote but not named by it",
            d.name,
            remote.name,
            short(&d.kept),
            short(&d.wanted),
            &d.op[..12.min(d.op.len())]
        ));
    }
    Ok(())
}
