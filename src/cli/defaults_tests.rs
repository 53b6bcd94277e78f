//! The verbs' flag defaults are the stage declarations' ([`crate::stages::decl`]): a verb run
//! with no optional flag records exactly the parameters its declaration lists as defaults, and
//! `iterate` runs each stage with them.
use clap::Parser;
use serde_json::Value;

use super::{Cli, Command};
use crate::stages::registry::{DPO, GEN_PROMPTS, GEN_RESPONSES, JUDGE, SFT};

fn parse(args: &[&str]) -> Command {
    Cli::try_parse_from(std::iter::once("srlm").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .command
}

fn json(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn verb_defaults_are_the_declared_ones() {
    let Command::GenPrompts(a) = parse(&["gen-prompts", "--model", "m", "--seeds", "s"]) else {
        panic!("gen-prompts")
    };
    assert_eq!(json(a.params()), (GEN_PROMPTS.defaults)());
    let Command::GenResponses(a) = parse(&["gen-responses", "--model", "m", "--prompts", "p"])
    else {
        panic!("gen-responses")
    };
    assert_eq!(json(a.params()), (GEN_RESPONSES.defaults)());
    let Command::Judge(a) = parse(&["judge", "--model", "m", "--responses", "r"]) else {
        panic!("judge")
    };
    assert_eq!(json(a.judge.params()), (JUDGE.defaults)());
    let Command::Dpo(a) = parse(&["dpo", "--policy", "m", "--pairs", "p"]) else {
        panic!("dpo")
    };
    assert_eq!(json(a.params()), (DPO.defaults)());
    let Command::Sft(a) = parse(&["sft", "--base", "m", "--ift", "i"]) else {
        panic!("sft")
    };
    assert_eq!(json(a.params()), (SFT.defaults)());
}

#[test]
fn iterate_runs_each_stage_with_its_declared_defaults() {
    let Command::Iterate(a) = parse(&["iterate"]) else {
        panic!("iterate")
    };
    let p = a.stage_params();
    assert_eq!(json(&p.gen_prompts), (GEN_PROMPTS.defaults)());
    assert_eq!(json(&p.gen_responses), (GEN_RESPONSES.defaults)());
    assert_eq!(json(&p.judge), (JUDGE.defaults)());
    assert_eq!(json(&p.dpo), (DPO.defaults)());
}

#[test]
fn a_flag_given_changes_only_its_parameter() {
    let Command::GenResponses(a) = parse(&[
        "gen-responses",
        "--model",
        "m",
        "--prompts",
        "p",
        "--n",
        "7",
    ]) else {
        panic!("gen-responses")
    };
    let mut want = (GEN_RESPONSES.defaults)();
    want["n"] = 7.into();
    assert_eq!(json(a.params()), want);
}
