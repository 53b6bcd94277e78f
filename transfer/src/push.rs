//! Push: send a remote what it lacks for some refs, then record the ref updates.
//!
//! Order: packs (each `.pack` before its `.idx`), then one bundle of small objects, then the op
//! record naming them: a push killed at any instant leaves no ref on the remote naming anything
//! absent, and its re-run skips the packs that arrived. Afterwards the op records are read again
//! to learn whether a concurrent push of the same ref came first (see [`crate::layout`]).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use srlm_store::{CommitId, ObjectId, Store};

use crate::error::{Result, TransferError};
use crate::layout::{encode_bundle, BundleRef, OpRecord, Update, REMOTE_FORMAT};
use crate::remote::Remote;
use crate::{Progress, RefChange, TransferReport};

/// Ref names a user gives (`main`, `M1`, `refs/heads/x`) as full names.
pub fn full_ref_names(store: &Store, names: &[String]) -> Result<Vec<String>> {
    let branches: HashSet<String> = store.branches()?.into_iter().map(|(n, _)| n).collect();
    let tags: HashSet<String> = store.tags()?.into_iter().map(|(n, _)| n).collect();
    names
        .iter()
        .map(|n| {
            if n.starts_with("refs/heads/") || n.starts_with("refs/tags/") {
                Ok(n.clone())
            } else if branches.contains(n) {
                Ok(format!("refs/heads/{n}"))
            } else if tags.contains(n) {
                Ok(format!("refs/tags/{n}"))
            } else {
                Err(TransferError::NoSuchRef { name: n.clone() })
            }
        })
        .collect()
}

/// The refs a bare push sends: the current branch and every tag.
pub fn default_refs(store: &Store) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if let srlm_store::Head::Branch {
        name,
        commit: Some(_),
    } = store.head()?
    {
        out.push(format!("refs/heads/{name}"));
    }
    out.extend(
        store
            .tags()?
            .into_iter()
            .map(|(n, _)| format!("refs/tags/{n}")),
    );
    Ok(out)
}

fn local_value(store: &Store, full: &str) -> Result<Option<CommitId>> {
    let (list, name) = if let Some(b) = full.strip_prefix("refs/heads/") {
        (store.branches()?, b)
    } else if let Some(t) = full.strip_prefix("refs/tags/") {
        (store.tags()?, t)
    } else {
        return Err(TransferError::NoSuchRef { name: full.into() });
    };
    Ok(list.into_iter().find(|(n, _)| n == name).map(|(_, c)| c))
}

/// Push `refs` (full names) to `remote`. Without `force`, a ref whose remote value is not an
/// ancestor of the local one is refused (nothing is sent).
pub fn push(
    store: &mut Store,
    remote: &Remote,
    refs: &[String],
    force: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<TransferReport> {
    let t0 = Instant::now();
    let mut rep = TransferReport::default();
    if !remote.check_format()? {
        remote.init_format()?;
    }
    let st = remote.state(store)?;
    // 1. plan the updates
    let mut updates: BTreeMap<String, Update> = BTreeMap::new();
    let mut tips = Vec::new();
    for r in refs {
        let ours =
            local_value(store, r)?.ok_or_else(|| TransferError::NoSuchRef { name: r.clone() })?;
        let theirs = st.refs.get(r).cloned();
        let ours_hex = ours.to_hex();
        if theirs.as_deref() == Some(ours_hex.as_str()) {
            rep.up_to_date.push(r.clone());
            continue;
        }
        if let Some(t) = &theirs {
            let tc: CommitId = t.parse().map_err(|_| TransferError::Corrupt {
                url: remote.url().into(),
                path: "ops/".into(),
                detail: format!("{r} holds {t:?}, not a commit id"),
            })?;
            if !force {
                if !store.has_small_object(&tc.0)? {
                    return Err(TransferError::UnknownRemoteCommit {
                        remote: remote.name.clone(),
                        name: r.clone(),
                        theirs: t.clone(),
                    });
                }
                if r.starts_with("refs/tags/") || !store.is_ancestor(&tc, &ours)? {
                    return Err(TransferError::NonFastForward {
                        remote: remote.name.clone(),
                        name: r.clone(),
                        ours: ours_hex,
                        theirs: t.clone(),
                    });
                }
            }
        }
        tips.push(ours.0);
        updates.insert(
            r.clone(),
            Update {
                old: theirs,
                new: Some(ours_hex),
            },
        );
    }
    if updates.is_empty() {
        rep.seconds = t0.elapsed().as_secs_f64();
        return Ok(rep);
    }
    // 2. what the remote has: everything its refs reach (those we hold)
    let have_tips: Vec<ObjectId> = st
        .refs
        .values()
        .filter_map(|v| v.parse::<ObjectId>().ok())
        .filter(|id| store.has_small_object(id).unwrap_or(false))
        .collect();
    let have = store.closure(&have_tips, &HashSet::new())?;
    let have_objects: HashSet<ObjectId> = have.objects.iter().copied().collect();
    let send = store.closure(&tips, &have_objects)?;
    rep.objects_skipped = have_objects.len() as u64;
    // 3. packs holding pieces the remote lacks
    let remote_pieces = remote.pieces(store)?;
    let mut local_pack: HashMap<ObjectId, String> = HashMap::new();
    for name in store.pack_names()? {
        for id in store.pack_pieces(&name)? {
            local_pack.entry(id).or_insert_with(|| name.clone());
        }
    }
    let mut packs: Vec<String> = Vec::new();
    for p in &send.pieces {
        if remote_pieces.contains_key(p) {
            rep.pieces_skipped += 1;
            continue;
        }
        match local_pack.get(p) {
            Some(name) => packs.push(name.clone()),
            None => return Err(TransferError::PieceNotHere { id: p.to_hex() }),
        }
    }
    packs.sort();
    packs.dedup();
    // every .pack before any .idx (uploads run in parallel)
    let files: Vec<_> = packs
        .iter()
        .map(|n| (format!("packs/{n}.pack"), store.pack_files(n).0))
        .collect();
    rep.bytes_sent += remote.bucket.put_files(&files, &mut |k, n| {
        progress(Progress::Sent { key: k, bytes: n })
    })?;
    let idx_files: Vec<_> = packs
        .iter()
        .map(|n| (format!("packs/{n}.idx"), store.pack_files(n).1))
        .collect();
    rep.bytes_sent += remote.bucket.put_files(&idx_files, &mut |k, n| {
        progress(Progress::Sent { key: k, bytes: n })
    })?;
    rep.packs_sent = packs.len() as u64;
    // 4. the small objects, as one bundle
    let mut objs = Vec::with_capacity(send.objects.len());
    for id in &send.objects {
        objs.push((*id, store.get_object(id)?));
    }
    let bundle = if objs.is_empty() {
        None
    } else {
        let (b, name) = encode_bundle(&objs);
        let n = b.len() as u64;
        remote.bucket.put(&format!("bundles/{name}.bundle"), b)?;
        progress(Progress::Sent {
            key: &format!("bundles/{name}.bundle"),
            bytes: n,
        });
        rep.bytes_sent += n;
        Some(BundleRef {
            name,
            ids: objs.iter().map(|(id, _)| id.to_hex()).collect(),
        })
    };
    rep.objects_sent = objs.len() as u64;
    // 5. the op record, then learn whether it won
    record_updates(store, remote, &st, updates, bundle, &mut rep)?;
    rep.seconds = t0.elapsed().as_secs_f64();
    Ok(rep)
}

/// Delete branches or tags (`main`, `M1` or full names) on `remote`: one op record whose
/// updates set them to nothing, written only if each still holds the value seen (a concurrent
/// push that moved one first wins, and the deletion fails as a lost race). Nothing local is
/// deleted but the remote-tracking refs.
pub fn delete_refs(store: &mut Store, remote: &Remote, names: &[String]) -> Result<TransferReport> {
    let t0 = Instant::now();
    let mut rep = TransferReport::default();
    if !remote.check_format()? {
        return Err(TransferError::EmptyRemote {
            url: remote.url().into(),
        });
    }
    let st = remote.state(store)?;
    let mut updates: BTreeMap<String, Update> = BTreeMap::new();
    for n in names {
        let full = if n.starts_with("refs/") {
            n.clone()
        } else if st.refs.contains_key(&format!("refs/heads/{n}")) {
            format!("refs/heads/{n}")
        } else {
            format!("refs/tags/{n}")
        };
        let Some(theirs) = st.refs.get(&full) else {
            return Err(TransferError::NoSuchRemoteRef {
                remote: remote.name.clone(),
                name: n.clone(),
            });
        };
        updates.insert(
            full,
            Update {
                old: Some(theirs.clone()),
                new: None,
            },
        );
    }
    record_updates(store, remote, &st, updates, None, &mut rep)?;
    rep.seconds = t0.elapsed().as_secs_f64();
    Ok(rep)
}

/// Write the op record of `updates` (on the op heads of `st`), wait until its verdict is
/// settled, update the remote-tracking refs, and fail if a concurrent op came first.
fn record_updates(
    store: &mut Store,
    remote: &Remote,
    st: &crate::layout::State,
    updates: BTreeMap<String, Update>,
    bundle: Option<BundleRef>,
    rep: &mut TransferReport,
) -> Result<()> {
    let op = OpRecord {
        format: REMOTE_FORMAT,
        parents: st.heads.clone(),
        updates: updates.clone(),
        bundle,
        time: crate::now(),
    };
    let (b, op_name) = op.encode();
    rep.bytes_sent += b.len() as u64;
    remote.bucket.put(&format!("ops/{op_name}.json"), b)?;
    let after = settled_state(store, remote, &op_name)?;
    crate::fetch::update_tracking(store, remote, &after, rep)?;
    for (r, u) in &updates {
        if let Some(lost) = after
            .rejected
            .iter()
            .find(|x| x.op == op_name && &x.name == r)
        {
            return Err(TransferError::RaceLost {
                remote: remote.name.clone(),
                name: r.clone(),
                ours: u.new.clone().unwrap_or_else(|| "(deleted)".into()),
                winner: lost.kept.clone().unwrap_or_else(|| "(deleted)".into()),
                op: op_name,
            });
        }
        rep.updated.push(RefChange {
            name: r.clone(),
            old: u.old.clone(),
            new: u.new.clone(),
        });
    }
    Ok(())
}

/// The remote's state once no op written before ours can still be unseen: the op records are
/// listed again after the store's clock has passed our op's time by more than its granularity
/// (S3 listings may give whole seconds), so any op ordered before ours is in the listing and any
/// op written later is ordered after it.
fn settled_state(store: &Store, remote: &Remote, op: &str) -> Result<crate::layout::State> {
    let st = remote.state(store)?;
    let Some(&t) = st.written_ns.get(op) else {
        return Err(TransferError::Storage {
            url: remote.url().into(),
            what: format!("reading back ops/{op}.json"),
            detail: "the op record just written is not listed".into(),
        });
    };
    let granularity: i64 = if t % 1_000_000_000 == 0 {
        1_000_000_000
    } else {
        1_000_000
    };
    let until = t.saturating_add(granularity + SETTLE_MARGIN_NS);
    loop {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        if now >= until {
            break;
        }
        std::thread::sleep(std::time::Duration::from_nanos((until - now) as u64));
    }
    remote.state(store)
}

/// Extra wait after an op's time before the verdict: in-flight writes land, clocks may differ a
/// little.
const SETTLE_MARGIN_NS: i64 = 200_000_000;
