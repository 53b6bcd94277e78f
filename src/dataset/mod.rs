//! Datasets of the loop: kinds recognised from fields, natural keys, row-level diff,
//! statistics for preference data, trends across iterations.
