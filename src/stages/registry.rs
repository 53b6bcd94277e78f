//! The replay registry of srlm's own stages: `srlm reproduce` replays a recorded run by calling
//! the very function that produced it, found here by stage name.
use super::reproduce::Registry;
use super::{export, generate, import, judge, pairs, train};

/// Registers every model and data stage srlm runs itself.
pub fn register_builtin(reg: &mut Registry) {
    reg.register(import::SEED.0, import::seed_stage);
    reg.register(import::IMPORT.0, import::stage);
    reg.register(train::SFT.0, train::sft);
    reg.register(train::DPO.0, train::dpo);
    reg.register(generate::GEN_PROMPTS.0, generate::gen_prompts);
    reg.register(generate::GEN_RESPONSES.0, generate::gen_responses);
    reg.register(judge::JUDGE.0, judge::judge);
    reg.register(judge::EVAL_JUDGE.0, judge::eval_judge);
    reg.register(pairs::PAIRS.0, pairs::stage);
    reg.register(export::EXPORT.0, export::export);
}
