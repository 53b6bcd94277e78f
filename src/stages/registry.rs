//! The declarations of srlm's own stages ([`StageDecl`]: name, version, roles, default
//! parameters, function), read by the CLI verbs, `iterate` and the replay registry:
//! `srlm reproduce` replays a recorded run by calling the very function that produced it,
//! found here by the declaration's name.
use super::decl::{defaults_of, no_params, Role, StageDecl};
use super::reproduce::Registry;
use super::{export, generate, import, judge, pairs, train};

pub static SEED: StageDecl = StageDecl {
    name: "seed",
    version: "1",
    inputs: &[],
    outputs: &[Role::file("ift"), Role::file("eft")],
    defaults: no_params,
    run: import::seed_stage,
    open_roles: false,
};

pub static IMPORT: StageDecl = StageDecl {
    name: "import-oasst2",
    version: "2",
    inputs: &[
        Role::file("ift"),
        Role::file("eft").optional(),
        Role::model("model").optional(),
    ],
    outputs: &[Role::file("ift"), Role::file("eft"), Role::file("eval")],
    defaults: no_params,
    run: import::stage,
    open_roles: false,
};

pub static SFT: StageDecl = StageDecl {
    name: "sft",
    version: "3",
    inputs: &[
        Role::model("base"),
        Role::file("ift"),
        Role::file("eft").optional(),
    ],
    outputs: &[Role::model("model")],
    defaults: defaults_of::<train::SftStageParams>,
    run: train::sft,
    open_roles: false,
};

pub static DPO: StageDecl = StageDecl {
    name: "dpo",
    version: "3",
    inputs: &[
        Role::model("policy"),
        Role::file("pairs"),
        Role::model("reference").optional(),
    ],
    outputs: &[Role::model("model")],
    defaults: defaults_of::<crate::engine::train::DpoParams>,
    run: train::dpo,
    open_roles: false,
};

/// The model of a generation or judging stage is optional: the stage may run on a server.
pub static GEN_PROMPTS: StageDecl = StageDecl {
    name: "gen-prompts",
    version: "2",
    inputs: &[Role::model("model").optional(), Role::file("seeds")],
    outputs: &[Role::file("prompts")],
    defaults: defaults_of::<super::gen_prompts::GenPromptsParams>,
    run: generate::gen_prompts,
    open_roles: false,
};

pub static GEN_RESPONSES: StageDecl = StageDecl {
    name: "gen-responses",
    version: "2",
    inputs: &[Role::model("model").optional(), Role::file("prompts")],
    outputs: &[Role::file("responses")],
    defaults: defaults_of::<generate::GenResponsesParams>,
    run: generate::gen_responses,
    open_roles: false,
};

pub static JUDGE: StageDecl = StageDecl {
    name: "judge",
    version: "2",
    inputs: &[Role::model("model").optional(), Role::file("responses")],
    outputs: &[Role::file("judgements")],
    defaults: defaults_of::<judge::JudgeStageParams>,
    run: judge::judge,
    open_roles: false,
};

pub static EVAL_JUDGE: StageDecl = StageDecl {
    name: "eval-judge",
    version: "3",
    inputs: &[Role::model("model").optional(), Role::file("eval")],
    outputs: &[Role::file("scores")],
    defaults: defaults_of::<judge::JudgeStageParams>,
    run: judge::eval_judge,
    open_roles: false,
};

/// The judge may run on a server; the two models compared run in process.
pub static HEAD2HEAD: StageDecl = StageDecl {
    name: "head2head",
    version: "1",
    inputs: &[
        Role::model("a"),
        Role::model("b"),
        Role::model("judge").optional(),
        Role::file("prompts"),
    ],
    outputs: &[Role::file("verdicts")],
    defaults: defaults_of::<super::head2head::Head2HeadParams>,
    run: super::head2head::stage,
    open_roles: false,
};

pub static PAIRS: StageDecl = StageDecl {
    name: "pairs",
    version: "2",
    inputs: &[Role::file("judgements")],
    outputs: &[Role::file("pairs")],
    defaults: no_params,
    run: pairs::stage,
    open_roles: false,
};

/// A GGUF file (`gguf`) or a Hugging Face folder (`model/NAME`).
pub static EXPORT: StageDecl = StageDecl {
    name: "export",
    version: "1",
    inputs: &[Role::model("model")],
    outputs: &[
        Role::file("gguf").optional(),
        Role::model("model").optional(),
    ],
    defaults: no_params,
    run: export::export,
    open_roles: false,
};

/// Every stage srlm runs itself.
pub static BUILTIN: [&StageDecl; 11] = [
    &SEED,
    &IMPORT,
    &SFT,
    &DPO,
    &GEN_PROMPTS,
    &GEN_RESPONSES,
    &JUDGE,
    &EVAL_JUDGE,
    &HEAD2HEAD,
    &PAIRS,
    &EXPORT,
];

/// Registers every model and data stage srlm runs itself.
pub fn register_builtin(reg: &mut Registry) {
    for d in BUILTIN {
        reg.register(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_replayed_by_its_own_declaration() {
        let reg = super::super::reproduce::default_registry();
        let mut names = std::collections::BTreeSet::new();
        for d in BUILTIN {
            assert!(names.insert(d.name), "{} is declared twice", d.name);
            // the registry hands back the declaration itself: its name and function together
            assert!(std::ptr::eq(reg.decl(d.name).unwrap(), d), "{}", d.name);
            assert!((d.defaults)().is_object(), "{}", d.name);
        }
        assert!(reg.decl(super::super::external::REPLAY).is_some());
    }

    #[test]
    fn a_name_registered_twice_is_refused() {
        let mut reg = Registry::new();
        assert!(reg.register(&SFT));
        assert!(
            !reg.register(&SFT),
            "a second stage of one name would be ambiguous"
        );
    }
}
