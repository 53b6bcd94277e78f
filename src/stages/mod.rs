//! The stages of the self-rewarding loop. A stage is a function from inputs (by object id) and
//! parameters to outputs plus metrics; provenance is recorded and committed around every stage
//! by one wrapper, not inside each.
pub mod external;
pub mod record;
pub mod reproduce;
