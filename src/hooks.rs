//! Hooks: run the scripts in `.srlm/hooks/` around commits and stages.
