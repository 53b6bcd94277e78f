//! The stages of the self-rewarding loop. A stage is a function from inputs (by object id) and
//! parameters to outputs plus metrics; provenance is recorded and committed around every stage
//! by one wrapper ([`record`]), not inside each, and [`reproduce`] replays the same functions.

pub mod code;
pub mod compare;
pub mod decl;
pub mod demo;
pub mod eval_judge;
pub mod export;
pub mod external;
pub mod gen_prompts;
pub mod generate;
pub mod head2head;
pub mod import;
pub mod import_stage;
pub mod inputs;
pub mod iterate;
pub mod journal;
pub mod jsonl;
pub mod judge;
pub mod model_io;
pub mod oasst2;
pub mod pairs;
pub mod record;
pub mod registry;
pub mod reproduce;
pub mod stats;
pub mod train;
