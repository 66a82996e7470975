//! What each stage kind reads: its inputs declared by name, how many upstream results each
//! binds, and — for corpora and splits — which task they are for. The pipeline loader
//! checks every stage against its kind's contract when it binds inputs, so a misspelt,
//! missing or unused input, or a relation head on an NER split, fails `pipe plan` with
//! `file:line:col` instead of failing `pipe run` after every upstream stage has run.

use crate::data::schema::Task;

/// How many upstream results one input binds (after matrix coordinates are matched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly one.
    One,
    /// A family of one or more (the folds of a cross-validation, the cells of a table).
    Many,
}

/// One declared input of a stage kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    /// The name under the stage's `inputs:`.
    pub name: &'static str,
    pub arity: Arity,
    /// Whether a pipeline must bind it.
    pub required: bool,
    /// What it expects, in words (`pipe kinds`, error messages).
    pub expects: &'static str,
}

impl InputSpec {
    /// A required input binding exactly one upstream result.
    pub const fn one(name: &'static str, expects: &'static str) -> InputSpec {
        InputSpec {
            name,
            arity: Arity::One,
            required: true,
            expects,
        }
    }

    /// An input a pipeline may leave out, binding one upstream result when given.
    pub const fn optional_one(name: &'static str, expects: &'static str) -> InputSpec {
        InputSpec {
            name,
            arity: Arity::One,
            required: false,
            expects,
        }
    }

    /// An input a pipeline may leave out, binding a family of upstream results when given.
    pub const fn optional_many(name: &'static str, expects: &'static str) -> InputSpec {
        InputSpec {
            name,
            arity: Arity::Many,
            required: false,
            expects,
        }
    }

    /// A required input binding a family of upstream results.
    pub const fn many(name: &'static str, expects: &'static str) -> InputSpec {
        InputSpec {
            name,
            arity: Arity::Many,
            required: true,
            expects,
        }
    }
}

/// The inputs a stage kind reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputContract {
    /// Any names: the `shell` kind exposes each as `$PIPE_IN_<NAME>`, a report's template
    /// sees each as a family of result rows.
    Open,
    /// Exactly these names.
    Declared(&'static [InputSpec]),
    /// These names, and one input per name the params list under `by_param` (the tasks of
    /// a `multitask` stage). Each named input binds one upstream result; a cell drops the
    /// inputs its params do not name, so they neither enter its key nor make it wait.
    DeclaredAndNamed {
        declared: &'static [InputSpec],
        by_param: &'static str,
        expects: &'static str,
    },
}

impl InputContract {
    /// The declared input called `name` (`None` for an open contract or an unknown name).
    pub fn get(self, name: &str) -> Option<InputSpec> {
        self.declared()
            .and_then(|specs| specs.iter().copied().find(|s| s.name == name))
    }

    /// The inputs declared by name (`None` for an open contract).
    pub fn declared(self) -> Option<&'static [InputSpec]> {
        match self {
            InputContract::Open => None,
            InputContract::Declared(specs) => Some(specs),
            InputContract::DeclaredAndNamed { declared, .. } => Some(declared),
        }
    }

    /// One line per input, for `pipe kinds` and error messages.
    pub fn describe(self) -> String {
        match self {
            InputContract::Open => "any names".to_string(),
            InputContract::Declared([]) => "none".to_string(),
            InputContract::DeclaredAndNamed {
                declared,
                by_param,
                expects,
            } => {
                let named = format!("one per name under param `{by_param}` ({expects})");
                match InputContract::Declared(declared).describe().as_str() {
                    "none" => named,
                    fixed => format!("{fixed}, {named}"),
                }
            }
            InputContract::Declared(specs) => specs
                .iter()
                .map(|s| {
                    let many = match s.arity {
                        Arity::One => "",
                        Arity::Many => ", one or more",
                    };
                    let optional = if s.required { "" } else { ", optional" };
                    format!("`{}` ({}{many}{optional})", s.name, s.expects)
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Why a stage's inputs do not fit its kind's contract. The loader adds the file position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("kind `{kind}` has no input `{name}`{suggestion}; its inputs: {inputs}")]
    Unknown {
        kind: &'static str,
        name: String,
        /// `, did you mean `data`?` or empty.
        suggestion: String,
        inputs: String,
    },
    #[error("kind `{kind}` needs input `{name}` ({expects}), which `inputs:` does not bind")]
    Missing {
        kind: &'static str,
        name: &'static str,
        expects: &'static str,
    },
    #[error("input `{name}` takes one upstream result ({expects}), but binds {count}: {bound}")]
    NotOne {
        name: String,
        expects: &'static str,
        count: usize,
        bound: String,
    },
    #[error("`{param}` names `{name}`, which `inputs:` does not bind (bound: {bound})")]
    NamedUnbound {
        param: &'static str,
        name: String,
        bound: String,
    },
    #[error("`{param}` names `{name}`, which is already an input of another role")]
    NamedClash { param: &'static str, name: String },
    #[error("input `{name}` is named under `{param}` by no cell of this stage")]
    NamedUnused { param: &'static str, name: String },
    #[error("input `{name}`: `{upstream}` is for {found} ({why}), but this stage needs {needed}")]
    WrongTask {
        name: String,
        upstream: String,
        found: TaskName,
        needed: TaskName,
        why: String,
    },
}

/// A [`Task`] in words ("a relation task", "NER").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskName(pub Task);

impl std::fmt::Display for TaskName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Task::Relation => "relation classification",
            Task::Ner => "NER (token tagging)",
            Task::Similarity => "sentence-pair similarity (a score per pair)",
            Task::Multilabel => "multi-label document classification",
        })
    }
}

/// Checks the names bound under a stage's `inputs:` against its kind's contract: every
/// name declared, every required input bound. Arity is checked per instance
/// ([`check_arity`]), once matrix coordinates have picked the upstream cells.
pub fn check_names<'a>(
    kind: &'static str,
    contract: InputContract,
    bound: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<(), ContractError> {
    let (specs, open_names) = match contract {
        InputContract::Open => return Ok(()),
        InputContract::Declared(specs) => (specs, false),
        // the other names are checked per cell against its params
        InputContract::DeclaredAndNamed { declared, .. } => (declared, true),
    };
    for name in bound.clone().into_iter().filter(|_| !open_names) {
        if contract.get(name).is_none() {
            let suggestion = crate::spelling::nearest(name, specs.iter().map(|s| s.name))
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(ContractError::Unknown {
                kind,
                name: name.to_string(),
                suggestion,
                inputs: contract.describe(),
            });
        }
    }
    for spec in specs.iter().filter(|s| s.required) {
        if !bound.clone().into_iter().any(|name| name == spec.name) {
            return Err(ContractError::Missing {
                kind,
                name: spec.name,
                expects: spec.expects,
            });
        }
    }
    Ok(())
}

/// Checks that an input declared [`Arity::One`] binds one upstream result; `bound` names
/// them (instance names).
pub fn check_arity(spec: InputSpec, bound: &[String]) -> Result<(), ContractError> {
    if spec.arity == Arity::One && bound.len() != 1 {
        const SHOWN: usize = 4;
        let mut shown = bound.iter().take(SHOWN).cloned().collect::<Vec<_>>();
        if bound.len() > SHOWN {
            shown.push(format!("… ({} more)", bound.len() - SHOWN));
        }
        return Err(ContractError::NotOne {
            name: spec.name.to_string(),
            expects: spec.expects,
            count: bound.len(),
            bound: shown.join(", "),
        });
    }
    Ok(())
}

/// Checks a cell of a [`InputContract::DeclaredAndNamed`] kind: every name its params list
/// is bound under `inputs:` (`bound`), and no listed name is also a declared input.
pub fn check_named(
    contract: InputContract,
    named: &[String],
    bound: &[&str],
) -> Result<(), ContractError> {
    let InputContract::DeclaredAndNamed {
        declared, by_param, ..
    } = contract
    else {
        return Ok(());
    };
    if let Some(clash) = named.iter().find(|n| declared.iter().any(|s| s.name == *n)) {
        return Err(ContractError::NamedClash {
            param: by_param,
            name: clash.clone(),
        });
    }
    if let Some(missing) = named.iter().find(|n| !bound.contains(&n.as_str())) {
        return Err(ContractError::NamedUnbound {
            param: by_param,
            name: missing.clone(),
            bound: bound.join(", "),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINETUNE: InputContract = InputContract::Declared(&[
        InputSpec::one("data", "a split"),
        InputSpec::one("model", "a BERT checkpoint directory"),
    ]);

    #[test]
    fn a_misspelt_input_is_named_with_a_suggestion() {
        let err = check_names("finetune", FINETUNE, ["dta", "model"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kind `finetune` has no input `dta`, did you mean `data`?; its inputs: `data` (a \
             split), `model` (a BERT checkpoint directory)"
        );
    }

    #[test]
    fn a_missing_input_says_what_it_expects() {
        let err = check_names("finetune", FINETUNE, ["data"]).unwrap_err();
        assert_eq!(
            err,
            ContractError::Missing {
                kind: "finetune",
                name: "model",
                expects: "a BERT checkpoint directory"
            }
        );
        assert!(check_names("finetune", FINETUNE, ["model", "data"]).is_ok());
        assert!(check_names("shell", InputContract::Open, ["anything"]).is_ok());
    }

    #[test]
    fn one_means_one_upstream_result() {
        let spec = InputSpec::one("data", "a split");
        assert!(check_arity(spec, &["split".into()]).is_ok());
        let many: Vec<String> = (0..6).map(|k| format!("split[fold={k}]")).collect();
        let err = check_arity(spec, &many).unwrap_err();
        assert!(
            err.to_string().contains(
                "binds 6: split[fold=0], split[fold=1], split[fold=2], split[fold=3], … (2 more)"
            ),
            "{err}"
        );
        assert!(check_arity(InputSpec::many("folds", "results"), &many).is_ok());
    }
}
