//! Source positions and the error type every spec failure is reported with.
//!
//! Invariant: every [`SpecError`] carries the file name and a 1-based
//! line/column that points into the original text, so the rendered message
//! can show the offending line with a caret under the column.

use std::fmt;
use std::sync::Arc;

/// A 1-based position in a source file (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub fn new(line: u32, column: u32) -> Self {
        Pos { line, column }
    }

    /// The position `chars` characters to the right on the same line.
    pub fn advance(self, chars: usize) -> Self {
        Pos {
            line: self.line,
            column: self.column + chars as u32,
        }
    }
}

/// A named spec text, shared by every error that points into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    name: Arc<str>,
    text: Arc<str>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: Arc::from(name.into()),
            text: Arc::from(text.into()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text of a 1-based line, without its line terminator.
    pub fn line_text(&self, line: u32) -> Option<&str> {
        self.text
            .split('\n')
            .nth(line.checked_sub(1)? as usize)
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
    }
}

/// What went wrong, without the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("the Dockerfile is empty: it has no instructions")]
    EmptyFile,
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    #[error("{0} must come after a FROM instruction (only ARG may precede the first FROM)")]
    InstructionBeforeFrom(String),
    #[error("unterminated heredoc: no line \"{0}\" closes it before the end of the file")]
    UnterminatedHeredoc(String),
    #[error("unterminated {0} quote")]
    UnterminatedQuote(&'static str),
    #[error("unterminated variable reference: missing '}}'")]
    UnterminatedVariable,
    #[error("invalid JSON array: {0}")]
    BadJson(String),
    #[error("{0}")]
    BadFlag(String),
    #[error("{0}")]
    BadArguments(String),
    #[error("invalid parser directive: {0}")]
    BadDirective(String),
    #[error("{0}")]
    BadVariable(String),
    #[error("{0}")]
    UndefinedStage(String),
    /// The stage the cycle was found on, and the cycle.
    #[error("circular dependency detected on stage: {0} ({1})")]
    StageCycle(String, String),
    #[error("{0}")]
    ForwardReference(String),
    #[error("Duplicate stage name \"{0}\", stage names should be unique")]
    DuplicateStage(String),
    #[error("invalid stage name \"{0}\": it must start with a letter and use only letters, digits, '-', '_' and '.'")]
    BadStageName(String),
    #[error("{0}")]
    Unsupported(String),
}

/// A spec error with its location; `Display` renders the caret snippet.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub kind: ErrorKind,
    pub pos: Pos,
    source: Source,
}

impl SpecError {
    pub fn new(kind: ErrorKind, pos: Pos, source: &Source) -> Self {
        SpecError {
            kind,
            pos,
            source: source.clone(),
        }
    }

    pub fn file(&self) -> &str {
        self.source.name()
    }
}

impl std::error::Error for SpecError {}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Pos { line, column } = self.pos;
        writeln!(f, "{}", self.kind)?;
        write!(f, "  --> {}:{}:{}", self.source.name(), line, column)?;
        if let Some(text) = self.source.line_text(line) {
            let gutter = line.to_string();
            let pad = " ".repeat(gutter.len());
            // Tabs keep their width so the caret lines up in any terminal.
            let lead: String = text
                .chars()
                .take(column.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n{pad} |\n{gutter} | {text}\n{pad} | {lead}^")?;
        }
        Ok(())
    }
}
