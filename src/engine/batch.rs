//! Continuous batching: up to `max_batch` sequences decode together across prompts, one ragged
//! pass per step ([`Model::forward_ragged`]), and when a sequence finishes the next waiting
//! candidate takes its slot. Each prompt is prefilled once (several prompts per pass) and its
//! candidates fork that prefill. A candidate's tokens depend only on its logits rows (computed
//! independently of the rest of the batch) and its own random stream (from seed, prompt text
//! and index), so the output is the same bytes whatever `max_batch` and the mix of prompts.
use std::collections::VecDeque;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::generate::{
    candidate_seed, sample, Finish, Generation, Prefix, Progress, SamplingParams,
};
use super::model::{KvCache, Model, ModelError, Step};

/// Sequences decoded together by default: on 2 cores a batch of 16 reads the weights once for
/// 16 tokens; larger batches gain little more and hold more KV caches (see the README's bench).
pub const DEFAULT_MAX_BATCH: usize = 16;

/// Prompt tokens prefilled in one pass beyond its first prompt, bounding the pass's memory.
pub(super) const PREFILL_TOKENS: usize = 4096;

/// One prompt to continue: `n` candidates of the already-formatted `text` (no chat template
/// applied); when `prefix` is given and `text`'s tokens start with its ids, its KV state is
/// reused and only the rest is prefilled.
pub struct Job<'a> {
    pub text: String,
    pub n: usize,
    pub params: &'a SamplingParams,
    pub prefix: Option<&'a Prefix>,
}

/// Receives each job's candidates as the job completes: (job index, result).
pub type Done<'a> = dyn FnMut(usize, Result<Vec<Generation>, ModelError>) + 'a;

/// A prefilled prompt whose candidates are starting or running.
struct Prompt {
    /// The prompt's tokens (the repeat penalty's context).
    ids: Vec<u32>,
    /// Logits of its last position: each candidate's first token is drawn from them.
    logits: Vec<f32>,
    /// The prefill's KV state; candidates fork it, the last one takes it.
    cache: Option<KvCache>,
    /// Next candidate to start, and candidates not finished.
    next: usize,
    left: usize,
    out: Vec<Option<Generation>>,
}

/// One candidate in a slot.
struct Seq {
    job: usize,
    index: usize,
    rng: ChaCha8Rng,
    ids: Vec<u32>,
    cache: KvCache,
    /// The token sampled last, to run next.
    next: u32,
}

struct Scheduler<'a, 'j> {
    model: &'a Model,
    jobs: &'a [Job<'j>],
    prompts: Vec<Option<Prompt>>,
    /// Prefilled jobs with candidates still to start, in order.
    ready: VecDeque<usize>,
    live: Vec<Seq>,
    next_job: usize,
    /// After a job failed no new job starts; those in flight finish.
    stopping: bool,
    progress: Progress,
    decode_time: f64,
}

/// Generate every job's candidates, up to `max_batch` sequences at a time; `done` gets each
/// job's result as it completes (in any order). A job that fails (too long, empty prompt) is
/// reported and no later job starts; the ones in flight finish. A failure of a whole pass is
/// reported to the lowest job in it and ends the run.
pub fn generate(
    model: &Model,
    jobs: &[Job],
    max_batch: usize,
    progress: &mut dyn FnMut(Progress),
    done: &mut Done,
) {
    let mut s = Scheduler {
        model,
        jobs,
        prompts: jobs.iter().map(|_| None).collect(),
        ready: VecDeque::new(),
        live: Vec::new(),
        next_job: 0,
        stopping: false,
        progress: Progress {
            prompt: 0,
            prompts: jobs.len(),
            prompt_tokens: 0,
            generated_tokens: 0,
            decode_tokens_per_s: 0.0,
        },
        decode_time: 0.0,
    };
    if let Err((job, e)) = s.run(max_batch.max(1), progress, done) {
        done(job, Err(e));
    }
}

/// Collect [`generate`]'s results in job order; the error of the lowest failed job wins.
pub fn generate_all(
    model: &Model,
    jobs: &[Job],
    max_batch: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Vec<Generation>>, ModelError> {
    let mut out: Vec<Option<Vec<Generation>>> = jobs.iter().map(|_| None).collect();
    let mut err: Option<(usize, ModelError)> = None;
    generate(model, jobs, max_batch, progress, &mut |i, r| match r {
        Ok(g) => out[i] = Some(g),
        Err(e) => {
            if err.as_ref().map_or(true, |(j, _)| i < *j) {
                err = Some((i, e));
            }
        }
    });
    if let Some((_, e)) = err {
        return Err(e);
    }
    Ok(out
        .into_iter()
        .map(|g| g.expect("every job finished"))
        .collect())
}

/// A fatal error and the job it is reported to.
type Fatal = (usize, ModelError);

impl Scheduler<'_, '_> {
    fn run(
        &mut self,
        max_batch: usize,
        progress: &mut dyn FnMut(Progress),
        done: &mut Done,
    ) -> Result<(), Fatal> {
        loop {
            self.fill(max_batch, done);
            if self.live.len() < max_batch && !self.stopping && self.next_job < self.jobs.len() {
                self.prefill(max_batch, progress, done)?;
                continue;
            }
            if self.live.is_empty() {
                if self.ready.is_empty() {
                    return Ok(());
                }
                continue;
            }
            self.step(done)?;
            progress(self.progress);
        }
    }

    /// Start waiting candidates while slots are free.
    fn fill(&mut self, max_batch: usize, done: &mut Done) {
        let jobs = self.jobs;
        while self.live.len() < max_batch {
            let Some(&j) = self.ready.front() else { break };
            let job = &jobs[j];
            let p = self.prompts[j].as_mut().expect("a ready job is prefilled");
            let index = p.next;
            p.next += 1;
            let last = p.next == job.n;
            let cache = if last {
                Ok(p.cache.take().expect("the prefill is taken once"))
            } else {
                let c = p.cache.as_ref().expect("held until the last");
                c.fork(job.params.max_tokens + 1)
            };
            let seed = candidate_seed(job.params.seed, &job.text, index);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let tok = sample(&mut rng, &[], &p.logits, &p.ids, job.params);
            if last {
                self.ready.pop_front();
            }
            let cache = match cache {
                Ok(c) => c,
                Err(e) => {
                    self.fail(j, e, done);
                    continue;
                }
            };
            let seq = Seq {
                job: j,
                index,
                rng,
                ids: Vec::new(),
                cache,
                next: 0,
            };
            if let Some(seq) = self.advance(seq, tok, done) {
                self.live.push(seq);
            }
        }
    }

    /// Take `tok` as `seq`'s next token: finish it (stop token or full), or keep it going.
    fn advance(&mut self, mut seq: Seq, tok: u32, done: &mut Done) -> Option<Seq> {
        let jobs = self.jobs;
        let params = jobs[seq.job].params;
        let stop = self.model.stop_ids.contains(&tok);
        if !stop {
            seq.ids.push(tok);
        }
        if !(stop || seq.ids.len() >= params.max_tokens) {
            seq.next = tok;
            return Some(seq);
        }
        let j = seq.job;
        let text = match self.model.decode(&seq.ids) {
            Ok(t) => t,
            Err(e) => {
                self.fail(j, e, done);
                return None;
            }
        };
        let Some(p) = self.prompts[j].as_mut() else {
            return None; // the job already failed
        };
        p.out[seq.index] = Some(Generation {
            text,
            tokens: seq.ids.len(),
            finish: if stop { Finish::Stop } else { Finish::Length },
        });
        p.left -= 1;
        if p.left == 0 {
            let p = self.prompts[j].take().expect("present");
            done(
                j,
                Ok(p.out.into_iter().map(|g| g.expect("finished")).collect()),
            );
        }
        None
    }

    /// Report job `j` failed, drop its candidates, and start no new job.
    fn fail(&mut self, j: usize, e: ModelError, done: &mut Done) {
        done(j, Err(e));
        self.prompts[j] = None;
        self.ready.retain(|&r| r != j);
        self.live.retain(|s| s.job != j);
        self.stopping = true;
    }

    /// Prefill the next prompts, enough to fill the free slots, in one ragged pass.
    fn prefill(
        &mut self,
        max_batch: usize,
        progress: &mut dyn FnMut(Progress),
        done: &mut Done,
    ) -> Result<(), Fatal> {
        let model = self.model;
        let max = model.config.positions();
        let mut want = max_batch - self.live.len();
        let mut group: Vec<(usize, Vec<u32>, usize, KvCache)> = Vec::new();
        let mut tokens = 0;
        let jobs = self.jobs;
        while want > 0 && !self.stopping && self.next_job < jobs.len() {
            let j = self.next_job;
            let job = &jobs[j];
            if job.n == 0 {
                self.next_job += 1;
                done(j, Ok(Vec::new()));
                continue;
            }
            let ids = match model.encode(&job.text) {
                Ok(ids) => ids,
                Err(e) => {
                    self.next_job += 1;
                    self.fail(j, e, done);
                    break;
                }
            };
            let reuse = job.prefix.filter(|p| {
                !p.ids.is_empty() && ids.starts_with(&p.ids) && p.ids.len() < ids.len()
            });
            let skip = reuse.map_or(0, |p| p.ids.len());
            if !group.is_empty() && tokens + ids.len() - skip > PREFILL_TOKENS {
                break;
            }
            self.next_job += 1;
            let err = if ids.len() == skip {
                Some(ModelError::Config {
                    path: model.path.clone(),
                    message: "cannot generate from an empty prompt".into(),
                })
            } else if ids.len() > max {
                Some(ModelError::TooLong {
                    len: ids.len(),
                    max,
                })
            } else {
                None
            };
            if let Some(e) = err {
                self.fail(j, e, done);
                break;
            }
            let room = ids.len() - skip + job.params.max_tokens + 1;
            let cache = match reuse {
                Some(p) => p.cache.fork(room),
                None => KvCache::new(model).fork(room),
            }
            .map_err(|e| (j, e))?;
            tokens += ids.len() - skip;
            want = want.saturating_sub(job.n);
            group.push((j, ids, skip, cache));
        }
        if group.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<Step> = group
            .iter_mut()
            .map(|(_, ids, skip, cache)| Step {
                cache,
                tokens: &ids[*skip..],
            })
            .collect();
        let logits = model
            .forward_ragged(&mut rows)
            .map_err(|e| (group[0].0, e))?;
        let v = model.config.vocab_size;
        for (r, (j, ids, skip, cache)) in group.into_iter().enumerate() {
            let n = self.jobs[j].n;
            self.progress.prompt = j;
            self.progress.prompt_tokens += ids.len() - skip;
            self.prompts[j] = Some(Prompt {
                ids,
                logits: logits[r * v..(r + 1) * v].to_vec(),
                cache: Some(cache),
                next: 0,
                left: n,
                out: vec![None; n],
            });
            self.ready.push_back(j);
            progress(self.progress);
        }
        Ok(())
    }

    /// One decode step of every live sequence.
    fn step(&mut self, done: &mut Done) -> Result<(), Fatal> {
        let max = self.model.config.positions();
        // A sequence at the end of the context fails its job, as a too-long prompt does.
        while let Some(s) = self.live.iter().find(|s| s.cache.len() + 1 > max) {
            let (j, len) = (s.job, s.cache.len() + 1);
            self.fail(j, ModelError::TooLong { len, max }, done);
        }
        if self.live.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let first = self.live.iter().map(|s| s.job).min().unwrap_or(0);
        let mut rows: Vec<Step> = self
            .live
            .iter_mut()
            .map(|s| Step {
                cache: &mut s.cache,
                tokens: std::slice::from_ref(&s.next),
            })
            .collect();
        let logits = self
            .model
            .forward_ragged(&mut rows)
            .map_err(|e| (first, e))?;
        let v = self.model.config.vocab_size;
        let live = std::mem::take(&mut self.live);
        let n = live.len();
        let mut keep = Vec::with_capacity(n);
        let jobs = self.jobs;
        for (r, mut seq) in live.into_iter().enumerate() {
            let job = &jobs[seq.job];
            let Some(p) = self.prompts[seq.job].as_ref() else {
                continue; // its job failed earlier in this step
            };
            let tok = sample(
                &mut seq.rng,
                &seq.ids,
                &logits[r * v..(r + 1) * v],
                &p.ids,
                job.params,
            );
            if let Some(seq) = self.advance(seq, tok, done) {
                keep.push(seq);
            }
        }
        // A failure inside `advance` dropped its job's sequences from `self.live`, which was
        // empty meanwhile: drop them from `keep` too.
        keep.retain(|s| self.prompts[s.job].is_some());
        self.live = keep;
        self.decode_time += started.elapsed().as_secs_f64();
        self.progress.generated_tokens += n;
        self.progress.decode_tokens_per_s =
            self.progress.generated_tokens as f64 / self.decode_time;
        Ok(())
    }
}

/// Split `lens` (tokens per item, in order) into runs of at most `max_batch` items and
/// [`PREFILL_TOKENS`] tokens (a run holds at least one item), for batched prefills.
pub(super) fn runs(lens: &[usize], max_batch: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut tokens = 0;
    for (i, &l) in lens.iter().enumerate() {
        if i > start && (i - start >= max_batch.max(1) || tokens + l > PREFILL_TOKENS) {
            out.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens += l;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
