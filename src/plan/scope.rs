//! Variable scopes with BuildKit's ARG rules.
//!
//! * Global ARGs (before the first FROM) and the automatic platform ARGs are
//!   visible to FROM lines only.
//! * Inside a stage, a variable is visible once declared: `ARG X` takes the
//!   `--build-arg` value, else its own default, else the global ARG's value,
//!   else the automatic platform value. Between ARG and ENV of the same
//!   name the later instruction wins, as in BuildKit. ENV values are
//!   inherited by stages built FROM this one, ARGs are not.

use std::collections::BTreeMap;

use crate::dockerfile::{words, ArgDecl, KeyValue, Source, SpecError, Word};

/// Name -> value; `None` marks a declared ARG that has no value.
pub type Vars = BTreeMap<String, Option<String>>;

/// What every scope of one build sees from outside the file.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    pub build_args: BTreeMap<String, String>,
    /// TARGET* and BUILD* values.
    pub automatic: BTreeMap<String, String>,
    /// The global ARGs after evaluation.
    pub globals: Vars,
    pub escape: char,
    pub source: Source,
}

/// Expands a word against a lookup and turns offsets into file positions.
pub fn expand_word(
    word: &Word,
    escape: char,
    source: &Source,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SpecError> {
    words::expand(&word.raw, escape, &lookup).map_err(|(kind, offset)| {
        let chars = word.raw.get(..offset).map_or(0, |s| s.chars().count());
        SpecError::new(kind, word.pos.advance(chars), source)
    })
}

impl BuildInputs {
    /// Evaluates the global ARGs in order; each default may use the
    /// global ARGs before it and the automatic platform ARGs.
    pub fn new(
        meta_args: &[ArgDecl],
        build_args: BTreeMap<String, String>,
        automatic: BTreeMap<String, String>,
        escape: char,
        source: Source,
    ) -> Result<Self, SpecError> {
        // A --build-arg may override an automatic platform ARG by name.
        let automatic = automatic
            .into_iter()
            .map(|(k, v)| {
                let v = build_args.get(&k).cloned().unwrap_or(v);
                (k, v)
            })
            .collect();
        let mut inputs = BuildInputs {
            build_args,
            automatic,
            globals: Vars::new(),
            escape,
            source,
        };
        for decl in meta_args {
            let value = match (inputs.build_args.get(&decl.name), &decl.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => Some(inputs.expand_global(default)?),
                // Declaring an automatic ARG globally keeps its value.
                (None, None) => inputs.automatic.get(&decl.name).cloned(),
            };
            inputs.globals.insert(decl.name.clone(), value);
        }
        Ok(inputs)
    }

    fn global(&self, name: &str) -> Option<String> {
        match self.globals.get(name) {
            Some(v) => v.clone(),
            None => self.automatic.get(name).cloned(),
        }
    }

    /// Expansion in the global scope (FROM lines).
    pub fn expand_global(&self, word: &Word) -> Result<String, SpecError> {
        expand_word(word, self.escape, &self.source, &|n| self.global(n))
    }

    /// The build args no ARG of the file declares (BuildKit warns about them).
    pub fn unused_build_args<'a>(&'a self, declared: &[&str]) -> Vec<&'a str> {
        self.build_args
            .keys()
            .filter(|k| !declared.contains(&k.as_str()) && !self.automatic.contains_key(*k))
            .map(String::as_str)
            .collect()
    }
}

/// The variables of one stage as its instructions are walked in order.
#[derive(Debug, Clone)]
pub struct StageScope<'a> {
    inputs: &'a BuildInputs,
    args: Vars,
    env: BTreeMap<String, String>,
    /// What expansion sees: ARG and ENV, the later instruction winning.
    visible: Vars,
}

impl<'a> StageScope<'a> {
    /// A fresh stage scope; `env` is what the base image or stage defines.
    pub fn new(inputs: &'a BuildInputs, env: BTreeMap<String, String>) -> Self {
        StageScope {
            inputs,
            args: Vars::new(),
            visible: env
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
            env,
        }
    }

    pub fn lookup(&self, name: &str) -> Option<String> {
        self.visible.get(name).cloned().flatten()
    }

    pub fn expand(&self, word: &Word) -> Result<String, SpecError> {
        expand_word(word, self.inputs.escape, &self.inputs.source, &|n| {
            self.lookup(n)
        })
    }

    pub fn declare_arg(&mut self, decl: &ArgDecl) -> Result<(), SpecError> {
        let inputs = self.inputs;
        let value = match (inputs.build_args.get(&decl.name), &decl.default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(default)) => Some(self.expand(default)?),
            (None, None) => inputs.global(&decl.name),
        };
        self.visible.insert(decl.name.clone(), value.clone());
        self.args.insert(decl.name.clone(), value);
        Ok(())
    }

    /// Applies one ENV instruction. All its values are expanded against the
    /// scope before it (`ENV a=2 b=$a` gives b the old a), as Docker does.
    pub fn set_env(&mut self, pairs: &[KeyValue]) -> Result<(), SpecError> {
        let values = pairs
            .iter()
            .map(|p| Ok((p.key.clone(), self.expand(&p.value)?)))
            .collect::<Result<Vec<_>, SpecError>>()?;
        for (key, value) in values {
            self.visible.insert(key.clone(), Some(value.clone()));
            self.env.insert(key, value);
        }
        Ok(())
    }

    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The declared ARGs with values, as the build environment of RUN sees them.
    pub fn args(&self) -> impl Iterator<Item = (&str, &str)> {
        self.args
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v)))
    }
}
