//! `srlm report`: one self-contained HTML page of the loop (inline CSS and SVG, no script, no
//! network): per iteration the prompts kept, pairs, ties and unparsed scores; score histograms
//! of chosen vs rejected; response lengths; DPO loss, reward margin and reward accuracy per
//! step; judge accuracy per model (`eval-judge` runs); the AIFT diff between iterations; the
//! lineage as a graph; every run.
//!
//! [`gather`] reads the store into a [`Report`] (plain data); [`html::render`] draws it.
use std::collections::BTreeSet;

use serde::Serialize;
use srlm_store::Store;

pub mod data;
pub mod graph;
pub mod html;
pub mod plots;

pub use data::{AiftDiff, Iteration, JudgeAccuracy, Training};
pub use graph::Graph;

use crate::runs::{history, list_runs, Labels, RunQuery, RunRow};

/// Errors while gathering or drawing the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
    #[error(transparent)]
    Provenance(#[from] crate::provenance::ProvenanceError),
    #[error(transparent)]
    Runs(#[from] crate::runs::RunsError),
    #[error(transparent)]
    Lineage(#[from] crate::lineage::LineageError),
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error("drawing a chart: {0}")]
    Plot(String),
    #[error("rendering the page: {0}")]
    Template(#[from] minijinja::Error),
}

/// A plotters error as a report error (the backends' error types differ; the message is what
/// matters).
pub(crate) fn plot_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot(e.to_string())
}

/// Everything the page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The revisions the report covers (their histories).
    pub revs: Vec<String>,
    pub iterations: Vec<Iteration>,
    pub judges: Vec<JudgeAccuracy>,
    pub diffs: Vec<AiftDiff>,
    /// What the lineage graph starts from: the last model the loop trained (`M3`), or the last
    /// revision given.
    pub lineage_of: String,
    pub lineage: Graph,
    pub runs: Vec<RunRow>,
}

/// The report of the histories of `revs` (empty: HEAD's).
pub fn gather(store: &Store, revs: &[String]) -> Result<Report, ReportError> {
    let given = !revs.is_empty();
    let revs: Vec<String> = match revs {
        [] => vec!["HEAD".to_string()],
        r => r.to_vec(),
    };
    let commits: BTreeSet<_> = history(store, &revs)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let labels = Labels::new(store)?;
    let runs = list_runs(
        store,
        &RunQuery {
            from: revs.clone(),
            ..Default::default()
        },
    )?;
    let iterations = data::iterations(store, &commits)?;
    let diffs = data::aift_diffs(store, &iterations)?;
    // the loop's product (the last model trained) unless a revision was named
    let last = match iterations.iter().rev().find(|i| i.dpo.is_some()) {
        Some(i) if !given => format!("M{}", i.t + 1),
        _ => revs.last().expect("at least one revision").clone(),
    };
    let start = crate::lineage::start_objects(store, store.workdir(), &last)?;
    let walk = crate::lineage::walk(store, start, crate::lineage::Direction::Up, None)?;
    Ok(Report {
        judges: data::judge_accuracy(&runs, &labels),
        lineage: Graph::of(&walk, &labels),
        lineage_of: last,
        revs,
        iterations,
        diffs,
        runs,
    })
}
