//! The syntax tree of a parsed spec.
//!
//! Invariant: nothing here is variable-expanded yet. Every [`Word`] keeps the
//! text as written (quotes and escapes included) and the position of its first
//! character, so expansion errors can point into the file. Expansion happens
//! in the planner, where the ARG scope of each stage is known.

use super::diagnostic::{Pos, Source};

/// One whitespace-separated word as written in the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub raw: String,
    pub pos: Pos,
}

/// A `name=value` pair of ENV, LABEL or ARG; the value is unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Word,
}

/// `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<Word>,
    pub pos: Pos,
}

/// The two forms of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run through the stage's SHELL; the text is passed as-is (the shell expands it).
    Shell(String),
    /// `["prog", "arg"]`: run directly, no shell, no expansion.
    Exec(Vec<String>),
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, unquoted (`EOF` for `<<"EOF"`).
    pub name: String,
    /// Body lines, each ending with `\n`; leading tabs already removed for `<<-`.
    pub content: String,
    /// False when the delimiter was quoted: the body is taken literally.
    pub expand: bool,
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// `RUN --mount=...`, validated; string fields are unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    pub target: Option<String>,
    pub source: Option<String>,
    /// A stage name or image reference the mount reads from.
    pub from: Option<String>,
    pub id: Option<String>,
    pub read_only: bool,
    pub sharing: CacheSharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub required: bool,
    pub env: Option<String>,
    pub size: Option<String>,
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub image: Word,
    pub name: Option<Word>,
    pub platform: Option<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: Command,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub insecure: bool,
    pub heredocs: Vec<Heredoc>,
}

/// COPY and ADD share one shape; `is_add` tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub is_add: bool,
    pub sources: Vec<Word>,
    pub dest: Word,
    pub from: Option<Word>,
    pub chown: Option<Word>,
    pub chmod: Option<Word>,
    pub link: bool,
    pub parents: bool,
    pub checksum: Option<Word>,
    pub keep_git_dir: bool,
    pub excludes: Vec<Word>,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    None,
    Check {
        command: Command,
        interval: Option<String>,
        timeout: Option<String>,
        start_period: Option<String>,
        start_interval: Option<String>,
        retries: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    From(From),
    Arg(Vec<ArgDecl>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Run(Run),
    Copy(Copy),
    Workdir(Word),
    User(Word),
    Shell(Vec<String>),
    Entrypoint(Command),
    Cmd(Command),
    Expose(Vec<Word>),
    Volume(Vec<Word>),
    StopSignal(Word),
    Healthcheck(Healthcheck),
    /// The trigger instruction, validated, kept as its source text for the image config.
    Onbuild(String),
    Maintainer(String),
}

/// One instruction with the position of its keyword and its source text
/// (continuations joined), which later serves as the history entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub kind: InstructionKind,
    pub pos: Pos,
    pub text: String,
}

/// A build stage: its FROM and everything up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub from: From,
    pub pos: Pos,
    pub instructions: Vec<Instruction>,
}

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// A whole parsed spec: global ARGs (before the first FROM) and the stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The text it was parsed from, for positioned errors in later stages.
    pub source: Source,
    pub directives: Directives,
    pub meta_args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
}
