//! srlm-store: a local content-addressed store for datasets and checkpoints, with commits, refs
//! and a lineage index. It knows nothing about language models.
//!
//! # Model
//! - Ids are BLAKE3 digests ([`ObjectId`]) wrapped per kind: [`BlobId`] (a chunk or a row),
//!   [`ManifestId`] (a file's content), [`TreeId`], [`CommitId`], [`RunId`]. Hex only at the edges.
//! - A file is stored as a manifest: a binary file (checkpoint or other) as FastCDC chunks
//!   ([`ChunkManifest`]), a `.jsonl` dataset as its rows ([`RowManifest`]: ordered row ids plus
//!   whether the file ends with `\n`), rebuilt byte for byte by [`Store::open_entry`]. Chunks and
//!   rows live in packs (one per `add`); manifests, trees, commits and run records are loose
//!   objects. Identical pieces are stored once.
//! - A [`Tree`] maps normalised relative paths to [`TreeEntry`] (kind, manifest id, size, rows).
//!   A [`Commit`] has a tree, parents, author, time, message and an optional [`RunId`].
//!
//! # API (a [`Store`] holds the store lock while it lives: open it, work, drop it)
//! - open: [`Store::init`], [`Store::discover`], [`Store::open`]; [`Store::workdir`].
//! - stage and commit: [`Store::add`] / [`Store::add_with`], [`Store::staged`],
//!   [`Store::status`], [`Store::commit`] ([`CommitOptions`]).
//! - read: [`Store::resolve`] (`HEAD`, `HEAD~N`, `REV^`, branch, tag such as `M1` or
//!   `AIFT(M1)`, unique hex prefix), [`Store::resolve_path`] (`REV:path`),
//!   [`Store::read_commit`], [`Store::read_tree`], [`Store::commit_tree`],
//!   [`Store::read_manifest`], [`Store::open_entry`] (stream a file's bytes, verified),
//!   [`Store::hash_external`] / [`Store::store_external`] (a file outside the working
//!   directory, through the stat cache),
//!   [`Store::dataset_rows`] + [`Store::read_blob`] / [`Store::read_rows`] (rows by id, for
//!   diffs without reparsing unchanged rows), [`Store::log`], [`Store::hash_file`].
//! - small objects: [`Store::put_object`] / [`Store::get_object`] (opaque bytes, e.g. canonical
//!   JSON from [`canonical_json`]).
//! - lineage: [`Store::put_run`] (opaque JSON record + input/output ids), [`Store::get_run`],
//!   [`Store::runs_producing`], [`Store::runs_consuming`].
//! - refs: [`Store::head`], [`Store::set_tag`], [`Store::delete_tag`], [`Store::tags`],
//!   [`Store::set_branch`], [`Store::delete_branch`], [`Store::branches`].
//! - working tree: [`Store::checkout`]; maintenance: [`Store::fsck`], [`Store::gc`],
//!   [`Store::oplog`], [`Store::disk_usage`].
//! - transfer (for remotes): [`Store::closure`], [`Store::pack_names`], [`Store::import_pack`],
//!   [`Store::remote_refs`], [`Store::set_remote_ref`], [`Store::remotes_config`].
//!
//! # Safety
//! Every write is atomic (temp file in `.srlm/tmp`, fsync, rename, fsync of the directory);
//! packs are durable before the manifests that name them, objects before the refs that name
//! them, and the sled index is flushed before a command returns. A process killed at any
//! instant leaves a store `fsck` finds clean. Reads verify every piece's hash, so corrupt data is
//! reported, never returned.
mod checkout;
mod error;
mod external;
mod fsck;
mod fsutil;
mod gc;
mod id;
mod index;
mod ingest;
mod lineage;
mod lock;
mod loose;
mod objects;
mod odb;
mod open;
mod oplog;
mod pack;
mod paths;
mod pins;
mod reader;
mod refs;
mod remote;
mod revision;
mod stage;
mod store;
mod units;
mod worktree;
mod wtfs;

pub use error::{Result, StoreError};
pub use external::ExternalFile;
pub use fsck::FsckReport;
pub use gc::GcReport;
pub use id::{BlobId, CommitId, ManifestId, ObjectId, RunId, TreeId};
pub use lock::LockMode;
pub use objects::{
    canonical_json, ChunkManifest, Commit, EntryKind, FolderManifest, Manifest, RowManifest,
    RunObject, Tree, TreeEntry,
};
pub use odb::{LocalOdb, ObjectDb};
pub use oplog::RepairReport;
pub use paths::check_tree_path;
pub use refs::{FileRefs, MemRefs, RefStore};
pub use remote::{dependency_order, object_links, parse_pack_index, Closure};
pub use store::{
    AddProgress, AddReport, AddedFile, Change, ChangeKind, CheckoutReport, CommitOptions,
    EntryReader, Head, Status, Store, FORMAT_VERSION,
};
pub use units::{folder_files, UnitRule};
