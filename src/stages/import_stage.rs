//! The import stages as stage functions: `import-oasst2` (seed sets from OpenAssistant data,
//! [`super::import`]) and `seed` (the built-in seed set srlm ships for the demo).
use serde::Deserialize;

use super::import::{build, read_threads, EftFrom, EftRow, IftRow, ImportParams};

/// `import-oasst2` as a stage: inputs `ift` and optionally `eft` (OASST2 files; `ift` also
/// serves as the EFT source when `eft` is absent) and, for `--eft-from model`, `model` (the
/// judge); outputs `ift`, `eft`, `eval`.
pub fn stage(
    io: &mut super::record::StageIo,
) -> Result<super::record::Metrics, super::record::StageFailure> {
    use super::model_io::{backend, input, metrics_of, output, params, record_backend};
    let p: ImportParams = params(io)?;
    let (_, ift_threads) = read_threads(input(io, "ift")?, &p.lang)?;
    let eft_threads = match io.inputs.get("eft") {
        Some(path) => read_threads(path, &p.lang)?.1,
        None => ift_threads.clone(),
    };
    let prompt = |i: &str, r: &str| crate::engine::judge::judge_prompt(i, r);
    let (out, backend_metrics) = match p.eft_from {
        EftFrom::Human => (
            build(&ift_threads, &eft_threads, &p, &prompt, None)?,
            super::record::Metrics::new(),
        ),
        EftFrom::Model => {
            let backend = backend(io, "model")?;
            let jp = crate::engine::judge::JudgeParams {
                samples: 1,
                ..Default::default()
            };
            let mut failure = None;
            let mut f = |i: &str, r: &str| {
                let req = crate::backend::JudgeRequest {
                    instruction: i.to_string(),
                    response: r.to_string(),
                };
                let mut got = None;
                backend.judge(&[req], 1, &jp.sampling, &mut |_, r| got = Some(r));
                match got.unwrap_or(Err(crate::backend::BackendError::Cancelled { request: 0 })) {
                    Ok(g) => {
                        let text = g.into_iter().next().map(|g| g.text).unwrap_or_default();
                        let score = crate::engine::judge::parse_score(&text);
                        (text, score)
                    }
                    Err(e) => {
                        failure.get_or_insert(e.to_string());
                        (String::new(), None)
                    }
                }
            };
            let out = build(&ift_threads, &eft_threads, &p, &prompt, Some(&mut f));
            if let Some(e) = failure {
                return Err(e.into());
            }
            let mut m = super::record::Metrics::new();
            record_backend(
                io,
                backend.as_ref(),
                &super::journal::Journal::none(),
                &mut m,
            );
            (out?, m)
        }
    };
    super::jsonl::write(output(io, "ift")?, &out.ift)?;
    super::jsonl::write(output(io, "eft")?, &out.eft)?;
    super::jsonl::write(output(io, "eval")?, &out.eval)?;
    let mut m = metrics_of(&out.metrics);
    m.extend(backend_metrics);
    Ok(m)
}

/// The built-in seed set srlm ships for the demo: a few dozen instructions with answers, and
/// judged examples (instruction, response, justification ending in `Score: N`).
pub const BUILTIN_IFT: &str = include_str!("seed/ift.jsonl");
pub const BUILTIN_EFT: &str = include_str!("seed/eft.jsonl");

#[derive(Deserialize)]
struct BuiltinEft {
    instruction: String,
    response: String,
    judgement: String,
    score: f64,
}

/// `seed` as a stage: no inputs; outputs `ift` and `eft` from the built-in seed set.
pub fn seed_stage(
    io: &mut super::record::StageIo,
) -> Result<super::record::Metrics, super::record::StageFailure> {
    use super::model_io::output;
    let ift: Vec<IftRow> = BUILTIN_IFT
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let eft: Vec<EftRow> = BUILTIN_EFT
        .lines()
        .map(|l| {
            let b: BuiltinEft = serde_json::from_str(l)?;
            Ok(EftRow {
                prompt: crate::engine::judge::judge_prompt(&b.instruction, &b.response),
                response: b.judgement,
                score: b.score,
            })
        })
        .collect::<Result<_, serde_json::Error>>()?;
    super::jsonl::write(output(io, "ift")?, &ift)?;
    super::jsonl::write(output(io, "eft")?, &eft)?;
    let mut m = super::record::Metrics::new();
    m.insert("ift_rows".into(), ift.len().into());
    m.insert("eft_rows".into(), eft.len().into());
    Ok(m)
}
