//! Physical lines to logical lines: parser directives, comments, line
//! continuations and here-document bodies.
//!
//! Invariant: every character of a [`LogicalLine`] maps back to the line and
//! column it came from in the file, so later stages can report positions
//! even when an instruction spans several continuation lines.

use super::ast::Directives;
use super::diagnostic::{ErrorKind, Pos};

/// An instruction's text with continuations joined, plus the position map.
#[derive(Debug, Clone)]
pub struct LogicalLine {
    pub text: String,
    /// (byte offset in `text`, file position of that byte), ascending.
    marks: Vec<(usize, Pos)>,
}

impl LogicalLine {
    /// The file position of the character at byte offset `offset` of `text`.
    pub fn pos_at(&self, offset: usize) -> Pos {
        let idx = self.marks.partition_point(|(o, _)| *o <= offset);
        let (start, pos) = self.marks[idx.saturating_sub(1)];
        let end = offset.min(self.text.len());
        let chars = self.text.get(start..end).map_or(0, |s| s.chars().count());
        pos.advance(chars)
    }

    /// The part of this line from byte `offset` on, with its positions.
    pub fn suffix(&self, offset: usize) -> LogicalLine {
        let mut marks = vec![(0, self.pos_at(offset))];
        marks.extend(
            self.marks
                .iter()
                .filter(|(o, _)| *o > offset)
                .map(|(o, p)| (o - offset, *p)),
        );
        LogicalLine {
            text: self.text[offset..].to_string(),
            marks,
        }
    }

    pub fn start(&self) -> Pos {
        self.marks[0].1
    }
}

/// A cursor over the file's physical lines.
pub struct Lines<'a> {
    lines: Vec<&'a str>,
    next: usize,
    escape: char,
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// `# key=value` at the top of the file, per BuildKit's directive grammar.
fn parse_directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.trim().to_string()))
}

impl<'a> Lines<'a> {
    /// Splits `text` into lines and consumes the parser directives at its top.
    pub fn new(text: &'a str) -> Result<(Self, Directives), (ErrorKind, Pos)> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        let mut directives = Directives::default();
        let mut seen: Vec<String> = Vec::new();
        let mut next = 0;
        while let Some((key, value)) = lines.get(next).and_then(|l| parse_directive(l)) {
            let pos = Pos::new(next as u32 + 1, 1);
            if seen.contains(&key) {
                return Err((
                    ErrorKind::BadDirective(format!("only one {key} directive can be used")),
                    pos,
                ));
            }
            match key.as_str() {
                "escape" => {
                    directives.escape = match value.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        other => {
                            return Err((
                                ErrorKind::BadDirective(format!(
                                    "invalid escape token '{other}': it must be ` or \\"
                                )),
                                pos,
                            ))
                        }
                    }
                }
                "syntax" => directives.syntax = Some(value),
                "check" => directives.check = Some(value),
                // An unknown directive is a plain comment and ends the directive block.
                _ => break,
            }
            seen.push(key);
            next += 1;
        }
        let escape = directives.escape;
        Ok((
            Lines {
                lines,
                next,
                escape,
            },
            directives,
        ))
    }

    /// If `line` ends with the escape character (trailing blanks allowed),
    /// the line without it.
    fn continued<'l>(&self, line: &'l str) -> Option<&'l str> {
        line.trim_end_matches([' ', '\t']).strip_suffix(self.escape)
    }

    /// The next instruction line, continuations joined; comment and blank
    /// lines inside a continuation are skipped as BuildKit does.
    pub fn next_logical(&mut self) -> Option<LogicalLine> {
        while let Some(line) = self.lines.get(self.next) {
            if line.trim().is_empty() || is_comment(line) {
                self.next += 1;
            } else {
                break;
            }
        }
        let first = self.lines.get(self.next)?;
        let mut logical = LogicalLine {
            text: String::new(),
            marks: Vec::new(),
        };
        let mut line = *first;
        let mut number = self.next;
        loop {
            self.next += 1;
            let continued = self.continued(line);
            let body = continued.unwrap_or(line);
            let lead = if logical.text.is_empty() {
                body.len() - body.trim_start().len()
            } else {
                0
            };
            let col = body[..lead].chars().count() as u32 + 1;
            logical
                .marks
                .push((logical.text.len(), Pos::new(number as u32 + 1, col)));
            logical.text.push_str(&body[lead..]);
            if continued.is_none() {
                break;
            }
            match self.next_continuation_line() {
                Some((n, l)) => {
                    number = n;
                    line = l;
                }
                None => break,
            }
        }
        Some(logical)
    }

    fn next_continuation_line(&mut self) -> Option<(usize, &'a str)> {
        while let Some(line) = self.lines.get(self.next) {
            if is_comment(line) || line.trim().is_empty() {
                self.next += 1;
                continue;
            }
            return Some((self.next, line));
        }
        None
    }

    /// Reads a here-document body that starts at the current line and ends
    /// with a line equal to `name` (after tab stripping when `strip_tabs`).
    /// Returns the body and the position of its first line.
    pub fn read_heredoc(&mut self, name: &str, strip_tabs: bool) -> Option<(String, Pos)> {
        let start = Pos::new(self.next as u32 + 1, 1);
        let mut body = String::new();
        while let Some(line) = self.lines.get(self.next) {
            self.next += 1;
            let line = if strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if line == name {
                return Some((body, start));
            }
            body.push_str(line);
            body.push('\n');
        }
        None
    }
}
