//! The stage graph of a parsed spec for one target: variable stage names
//! resolved, stages unreachable from the target dropped as BuildKit drops
//! them, a build order and the external images needed.
//!
//! Invariants:
//! * `order` lists each stage reachable from the target once, in file
//!   order, as BuildKit dispatches them. That is a valid build order because
//!   every dependency points backwards: a FROM line can only name an earlier
//!   stage (a later name is an image), and a `--from` naming a later stage
//!   is an error (a cycle, or BuildKit's "needs to be defined before").
//! * Unreachable stages are never expanded beyond their FROM line, so an
//!   error inside one of them cannot fail the build, as in BuildKit.
//! * Stage names may use global ARGs (`AS ${TARGETARCH}-upstream`), an
//!   extension BuildKit lacks and Buildah has; names are lowercased.

pub mod scope;

use std::collections::BTreeMap;

use serde::Serialize;

pub use scope::{BuildInputs, StageScope};

use crate::dockerfile::{Dockerfile, ErrorKind, InstructionKind, Pos, SpecError, Word};
use crate::platform::Platform;
use crate::reference::ImageRef;

/// The build argument that dates a build.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// What a plan is asked for.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Target platform; the host's when absent.
    pub platform: Option<Platform>,
    /// `SOURCE_DATE_EPOCH`, offered as an automatic ARG as BuildKit does:
    /// a stage sees it (RUN gets it in its environment) only after it
    /// declares `ARG SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("target stage \"{target}\" could not be found; the stages are: {}", available.join(", "))]
    UnknownTarget {
        target: String,
        available: Vec<String>,
    },
}

/// Where a stage starts from, or where a `--from` reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "ref")]
pub enum Origin {
    Scratch,
    Image(String),
    Stage(usize),
}

/// A stage's FROM line, resolved.
#[derive(Debug, Clone)]
pub struct StageHeader {
    /// The expanded, lowercased `AS` name, or the index as a string.
    pub name: String,
    pub named: bool,
    pub base: Origin,
    pub platform: Option<Platform>,
}

/// What a reachable stage reads, from its instructions.
#[derive(Debug, Clone, Default)]
pub struct StageInputs {
    /// Stages this one needs built first, with where each is referenced.
    pub stage_deps: Vec<(usize, Pos)>,
    /// External images read by `COPY --from` or `RUN --mount=from=`.
    pub images: Vec<String>,
    /// ENV at the end of the stage (inherited by stages FROM this one).
    pub env: BTreeMap<String, String>,
}

/// The resolved plan for one target.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: usize,
    pub headers: Vec<StageHeader>,
    /// Stage indexes in build order.
    pub order: Vec<usize>,
    /// Inputs of each stage in `order` (indexed by stage; `None` if unreachable).
    pub inputs: Vec<Option<StageInputs>>,
    /// External image references needed, deduplicated, in first-use order.
    pub images: Vec<String>,
    pub build: BuildInputs,
    pub platform: Platform,
}

/// The JSON contract of `kbuild plan --format json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlanSummary {
    pub target: String,
    pub order: Vec<String>,
    pub images: Vec<String>,
}

impl Plan {
    pub fn summary(&self) -> PlanSummary {
        PlanSummary {
            target: self.headers[self.target].name.clone(),
            order: self
                .order
                .iter()
                .map(|&i| self.headers[i].name.clone())
                .collect(),
            images: self.images.clone(),
        }
    }
}

/// Builds the plan of `file` for `request`.
pub fn plan(file: &Dockerfile, request: &PlanRequest) -> Result<Plan, PlanError> {
    let platform = request.platform.clone().unwrap_or_else(Platform::host);
    let mut automatic: BTreeMap<String, String> =
        platform.automatic_args("TARGET").into_iter().collect();
    automatic.extend(Platform::host().automatic_args("BUILD"));
    if let Some(epoch) = request.source_date_epoch {
        automatic.insert(SOURCE_DATE_EPOCH.to_string(), epoch.to_string());
    }
    let build = BuildInputs::new(
        &file.meta_args,
        request.build_args.clone(),
        automatic,
        file.directives.escape,
        file.source.clone(),
    )?;
    let headers = resolve_headers(file, &build)?;
    let target = match &request.target {
        Some(t) => {
            let wanted = t.to_ascii_lowercase();
            headers
                .iter()
                .position(|h| h.named && h.name == wanted)
                .ok_or_else(|| PlanError::UnknownTarget {
                    target: t.clone(),
                    available: headers
                        .iter()
                        .filter(|h| h.named)
                        .map(|h| h.name.clone())
                        .collect(),
                })?
        }
        None => headers.len() - 1,
    };
    let mut walker = Walker {
        file,
        build: &build,
        headers: &headers,
        inputs: vec![None; headers.len()],
        marks: vec![Mark::New; headers.len()],
        stack: Vec::new(),
        order: Vec::new(),
    };
    walker.visit(target, file.stages[target].pos)?;
    let Walker {
        mut order, inputs, ..
    } = walker;
    order.sort_unstable();
    check_backward_references(file, &headers, &order, &inputs)?;
    let mut images: Vec<String> = Vec::new();
    for &i in &order {
        let base = match &headers[i].base {
            Origin::Image(r) => Some(r),
            _ => None,
        };
        let reads = inputs[i].iter().flat_map(|s| s.images.iter());
        for image in base.into_iter().chain(reads) {
            if !images.contains(image) {
                images.push(image.clone());
            }
        }
    }
    Ok(Plan {
        target,
        headers,
        order,
        inputs,
        images,
        build,
        platform,
    })
}

/// BuildKit builds stages in file order, so `--from` may only name an
/// earlier stage.
fn check_backward_references(
    file: &Dockerfile,
    headers: &[StageHeader],
    order: &[usize],
    inputs: &[Option<StageInputs>],
) -> Result<(), SpecError> {
    for &stage in order {
        let deps = inputs[stage].iter().flat_map(|i| i.stage_deps.iter());
        if let Some(&(dep, pos)) = deps.into_iter().find(|(dep, _)| *dep > stage) {
            let message = format!(
                "cannot copy from stage \"{}\", it needs to be defined before current stage \"{}\"",
                headers[dep].name, headers[stage].name
            );
            return Err(SpecError::new(
                ErrorKind::ForwardReference(message),
                pos,
                &file.source,
            ));
        }
    }
    Ok(())
}

fn stage_name_valid(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn resolve_headers(file: &Dockerfile, build: &BuildInputs) -> Result<Vec<StageHeader>, SpecError> {
    let source = &file.source;
    let mut headers: Vec<StageHeader> = Vec::new();
    for stage in &file.stages {
        let name = match &stage.from.name {
            Some(word) => {
                let name = build.expand_global(word)?.to_ascii_lowercase();
                if !stage_name_valid(&name) {
                    return Err(SpecError::new(
                        ErrorKind::BadStageName(name),
                        word.pos,
                        source,
                    ));
                }
                if headers.iter().any(|h| h.named && h.name == name) {
                    return Err(SpecError::new(
                        ErrorKind::DuplicateStage(name),
                        word.pos,
                        source,
                    ));
                }
                Some(name)
            }
            None => None,
        };
        let image_word = &stage.from.image;
        let base_name = build.expand_global(image_word)?;
        let base = if base_name.is_empty() {
            return Err(SpecError::new(
                ErrorKind::BadArguments(format!(
                    "base name ({}) should not be blank",
                    image_word.raw
                )),
                image_word.pos,
                source,
            ));
        } else if let Some(i) = headers
            .iter()
            .position(|h| h.named && h.name.eq_ignore_ascii_case(&base_name))
        {
            Origin::Stage(i)
        } else if base_name.eq_ignore_ascii_case("scratch") {
            Origin::Scratch
        } else {
            ImageRef::parse(&base_name).map_err(|e| {
                SpecError::new(
                    ErrorKind::BadArguments(e.to_string()),
                    image_word.pos,
                    source,
                )
            })?;
            Origin::Image(base_name)
        };
        let platform = match &stage.from.platform {
            Some(word) => {
                let text = build.expand_global(word)?;
                Some(Platform::parse(&text).map_err(|e| {
                    SpecError::new(ErrorKind::BadFlag(e.to_string()), word.pos, source)
                })?)
            }
            None => None,
        };
        headers.push(StageHeader {
            named: name.is_some(),
            name: name.unwrap_or_else(|| stage.index.to_string()),
            base,
            platform,
        });
    }
    Ok(headers)
}

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    Active,
    Done,
}

struct Walker<'a> {
    file: &'a Dockerfile,
    build: &'a BuildInputs,
    headers: &'a [StageHeader],
    inputs: Vec<Option<StageInputs>>,
    marks: Vec<Mark>,
    stack: Vec<usize>,
    order: Vec<usize>,
}

impl Walker<'_> {
    /// Depth-first post-order visit; `via` is where `stage` was referenced.
    fn visit(&mut self, stage: usize, via: Pos) -> Result<(), SpecError> {
        match self.marks[stage] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                // The stage whose reference closes the cycle is the one on top.
                let current = *self.stack.last().unwrap_or(&stage);
                let start = self.stack.iter().position(|&s| s == stage).unwrap_or(0);
                let cycle: Vec<&str> = std::iter::once(current)
                    .chain(
                        self.stack[start..self.stack.len().saturating_sub(1)]
                            .iter()
                            .copied(),
                    )
                    .chain(std::iter::once(current))
                    .map(|s| self.headers[s].name.as_str())
                    .collect();
                let kind =
                    ErrorKind::StageCycle(self.headers[current].name.clone(), cycle.join(" -> "));
                return Err(SpecError::new(kind, via, &self.file.source));
            }
            Mark::New => {}
        }
        self.marks[stage] = Mark::Active;
        self.stack.push(stage);
        let mut deps = Vec::new();
        if let Origin::Stage(base) = self.headers[stage].base {
            deps.push((base, self.file.stages[stage].from.image.pos));
        }
        let inputs = self.stage_inputs(stage)?;
        deps.extend(inputs.stage_deps.iter().copied());
        for (dep, pos) in deps {
            self.visit(dep, pos)?;
        }
        self.stack.pop();
        self.marks[stage] = Mark::Done;
        self.order.push(stage);
        Ok(())
    }

    /// Walks a stage's instructions with its ARG/ENV scope to find what its
    /// `--from` references name. Memoized.
    fn stage_inputs(&mut self, stage: usize) -> Result<StageInputs, SpecError> {
        if let Some(done) = &self.inputs[stage] {
            return Ok(done.clone());
        }
        let inherited = match self.headers[stage].base {
            Origin::Stage(base) => self.stage_inputs(base)?.env,
            _ => BTreeMap::new(),
        };
        let mut scope = StageScope::new(self.build, inherited);
        let mut found = StageInputs::default();
        for ins in &self.file.stages[stage].instructions {
            match &ins.kind {
                InstructionKind::Arg(decls) => {
                    for decl in decls {
                        scope.declare_arg(decl)?;
                    }
                }
                InstructionKind::Env(pairs) => scope.set_env(pairs)?,
                InstructionKind::Copy(copy) => {
                    if let Some(word) = &copy.from {
                        let flag = if copy.is_add { "ADD" } else { "COPY" };
                        self.add_reference(&scope, word, flag, &mut found)?;
                    }
                }
                InstructionKind::Run(run) => {
                    for mount in &run.mounts {
                        if let Some(from) = &mount.from {
                            let word = Word {
                                raw: from.clone(),
                                pos: mount.pos,
                            };
                            self.add_reference(&scope, &word, "RUN --mount", &mut found)?;
                        }
                    }
                }
                _ => {}
            }
        }
        found.env = scope.env().clone();
        self.inputs[stage] = Some(found.clone());
        Ok(found)
    }

    fn add_reference(
        &self,
        scope: &StageScope,
        word: &Word,
        what: &str,
        found: &mut StageInputs,
    ) -> Result<(), SpecError> {
        let name = scope.expand(word)?;
        let undefined = |msg: String| {
            SpecError::new(ErrorKind::UndefinedStage(msg), word.pos, &self.file.source)
        };
        let stages = self.headers.len();
        if let Ok(index) = name.parse::<usize>() {
            if index >= stages {
                return Err(undefined(format!(
                    "{what} --from={name}: there is no stage {index} (stages are numbered 0 to {})",
                    stages - 1
                )));
            }
            found.stage_deps.push((index, word.pos));
        } else if let Some(index) = self
            .headers
            .iter()
            .position(|h| h.named && h.name.eq_ignore_ascii_case(&name))
        {
            found.stage_deps.push((index, word.pos));
        } else if name.is_empty() || ImageRef::parse(&name).is_err() {
            return Err(undefined(format!(
                "{what} --from={name}: no stage has this name and it is not a valid image reference"
            )));
        } else if !found.images.contains(&name) {
            found.images.push(name);
        }
        Ok(())
    }
}
