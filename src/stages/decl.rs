//! One declaration per stage: name, version, input and output roles, default parameters and
//! the function. The CLI verb, the replay registry ([`super::registry`]) and `iterate` all read
//! it, so a stage name cannot be paired with another stage's function (the registry is built
//! from declarations, not from names) and a role a caller gives is checked against it.
use serde_json::Value;

use super::record::{Metrics, Stage, StageFailure, StageIo};

/// A stage function (see [`super::record`]).
pub type StageFn = fn(&mut StageIo) -> Result<Metrics, StageFailure>;

/// What a role holds: one file, or a model (a GGUF file, or a folder given as one role per
/// file, `ROLE/NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    File,
    Model,
}

/// An input or output role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    pub name: &'static str,
    pub kind: RoleKind,
    /// Absent only where the stage can do without it (an optional file, a model on a server).
    pub required: bool,
}

impl Role {
    pub const fn file(name: &'static str) -> Role {
        Role {
            name,
            kind: RoleKind::File,
            required: true,
        }
    }
    pub const fn model(name: &'static str) -> Role {
        Role {
            name,
            kind: RoleKind::Model,
            required: true,
        }
    }
    pub const fn optional(self) -> Role {
        Role {
            required: false,
            ..self
        }
    }
    /// Whether a given role (`base`, or `base/config.json` for a model folder) is this one.
    pub fn matches(&self, given: &str) -> bool {
        given == self.name
            || (self.kind == RoleKind::Model
                && given
                    .strip_prefix(self.name)
                    .is_some_and(|r| r.starts_with('/')))
    }
}

/// A stage's declaration.
#[derive(Debug)]
pub struct StageDecl {
    pub name: &'static str,
    /// Changes when the stage's output for the same inputs and parameters would change.
    pub version: &'static str,
    pub inputs: &'static [Role],
    pub outputs: &'static [Role],
    /// The parameters with their defaults, as recorded.
    pub defaults: fn() -> Value,
    pub run: StageFn,
    /// The roles are the caller's own (an external command's), not checked.
    pub open_roles: bool,
}

/// A caller gave roles the declaration does not have, or left out a required one.
#[derive(Debug, thiserror::Error)]
pub enum DeclError {
    #[error("stage {stage}: no {dir} role `{role}` (it has {known})")]
    Unknown {
        stage: &'static str,
        dir: &'static str,
        role: String,
        known: String,
    },
    #[error("stage {stage}: the {dir} role `{role}` is required")]
    Missing {
        stage: &'static str,
        dir: &'static str,
        role: &'static str,
    },
}

impl StageDecl {
    /// A stage invocation of this declaration (roles, parameters and engine still to set).
    pub fn stage(&self) -> Stage {
        Stage::new(self.name, self.version)
    }

    /// The input role `name` as declared (its name, for building inputs).
    pub fn input(&self, name: &str) -> Option<&Role> {
        self.inputs.iter().find(|r| r.name == name)
    }

    /// Check the roles a caller gives against the declaration.
    pub fn check(
        &self,
        inputs: &[(String, String)],
        outputs: &[(String, String)],
    ) -> Result<(), DeclError> {
        if self.open_roles {
            return Ok(());
        }
        for (dir, declared, given) in [
            ("input", self.inputs, inputs),
            ("output", self.outputs, outputs),
        ] {
            for (role, _) in given {
                if !declared.iter().any(|r| r.matches(role)) {
                    return Err(DeclError::Unknown {
                        stage: self.name,
                        dir,
                        role: role.clone(),
                        known: declared
                            .iter()
                            .map(|r| r.name)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            // a model on a server has no model input: model roles are checked by the stage
            for r in declared.iter().filter(|r| r.required) {
                if !given.iter().any(|(g, _)| r.matches(g)) {
                    return Err(DeclError::Missing {
                        stage: self.name,
                        dir,
                        role: r.name,
                    });
                }
            }
        }
        Ok(())
    }
}

/// No parameters.
pub fn no_params() -> Value {
    Value::Object(Default::default())
}

/// Parameters' defaults as recorded (their type's `Default`).
pub fn defaults_of<T: Default + serde::Serialize>() -> Value {
    serde_json::to_value(T::default()).expect("parameters serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing(_: &mut StageIo) -> Result<Metrics, StageFailure> {
        Ok(Metrics::new())
    }

    static D: StageDecl = StageDecl {
        name: "d",
        version: "1",
        inputs: &[
            Role::model("base"),
            Role::file("data"),
            Role::file("x").optional(),
        ],
        outputs: &[Role::model("model")],
        defaults: no_params,
        run: nothing,
        open_roles: false,
    };

    #[test]
    fn roles_are_checked_against_the_declaration() {
        let v = |xs: &[&str]| -> Vec<(String, String)> {
            xs.iter().map(|r| (r.to_string(), "p".into())).collect()
        };
        D.check(
            &v(&["base/config.json", "data"]),
            &v(&["model/m.safetensors"]),
        )
        .unwrap();
        D.check(&v(&["base", "data", "x"]), &v(&["model"])).unwrap();
        let e = D.check(&v(&["base", "dat"]), &v(&["model"])).unwrap_err();
        assert!(e.to_string().contains("no input role `dat`"), "{e}");
        let e = D.check(&v(&["base"]), &v(&["model"])).unwrap_err();
        assert!(e.to_string().contains("`data` is required"), "{e}");
        // a file role takes no folder
        assert!(D.check(&v(&["base", "data/x"]), &v(&["model"])).is_err());
    }
}
