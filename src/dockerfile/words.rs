//! Shell-like words: splitting an argument string into words, and the
//! variable expansion BuildKit performs on instruction arguments.
//!
//! Invariant: errors carry a byte offset into the text they were given, so
//! callers can translate them into file positions.

use super::diagnostic::ErrorKind;

/// A word as written (quotes kept) with the byte offset where it starts.
pub type RawWord = (String, usize);

/// Splits `text` into whitespace-separated words, honoring quotes and the
/// escape character. Quotes and escapes are kept: they are removed when the
/// word is expanded.
pub fn split_words(text: &str, escape: char) -> Result<Vec<RawWord>, (ErrorKind, usize)> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut start = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push((std::mem::take(&mut current), s));
            }
            continue;
        }
        start.get_or_insert(i);
        current.push(c);
        if c == escape {
            if let Some((_, next)) = chars.next() {
                current.push(next);
            }
        } else if c == '\'' || c == '"' {
            let mut closed = false;
            while let Some((_, q)) = chars.next() {
                current.push(q);
                if q == escape && c == '"' {
                    if let Some((_, next)) = chars.next() {
                        current.push(next);
                    }
                } else if q == c {
                    closed = true;
                    break;
                }
            }
            if !closed {
                let which = if c == '"' { "double" } else { "single" };
                return Err((ErrorKind::UnterminatedQuote(which), i));
            }
        }
    }
    if let Some(s) = start {
        words.push((current, s));
    }
    Ok(words)
}

/// Looks a variable up: `None` when it is not set at all.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Expands `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`,
/// `${V:?msg}` and `${V?msg}`, removes quotes and escapes. Single-quoted
/// text is literal. Undefined variables expand to the empty string.
pub fn expand(word: &str, escape: char, vars: &dyn Lookup) -> Result<String, (ErrorKind, usize)> {
    Expander::new(word, escape, Some(vars)).sequence(None)
}

/// Removes quotes and escapes without expanding anything: `$` stays
/// literal (quoted heredoc delimiters).
pub fn unquote(word: &str, escape: char) -> Result<String, (ErrorKind, usize)> {
    Expander::new(word, escape, None).sequence(None)
}

struct Expander<'a> {
    chars: Vec<(usize, char)>,
    i: usize,
    escape: char,
    /// `None`: quote removal only, `$` is literal.
    vars: Option<&'a dyn Lookup>,
    end: usize,
}

impl<'a> Expander<'a> {
    fn new(word: &str, escape: char, vars: Option<&'a dyn Lookup>) -> Self {
        Expander {
            chars: word.char_indices().collect(),
            i: 0,
            escape,
            vars,
            end: word.len(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).map(|(_, c)| *c)
    }

    fn offset(&self) -> usize {
        self.chars.get(self.i).map_or(self.end, |(o, _)| *o)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// Expands until the end of input or an unnested `stop` (not consumed).
    fn sequence(&mut self, stop: Option<char>) -> Result<String, (ErrorKind, usize)> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                break;
            }
            let at = self.offset();
            self.i += 1;
            match c {
                '\'' => loop {
                    match self.bump() {
                        Some('\'') => break,
                        Some(q) => out.push(q),
                        None => return Err((ErrorKind::UnterminatedQuote("single"), at)),
                    }
                },
                '"' => self.double_quoted(&mut out, at)?,
                '$' if self.vars.is_some() => self.dollar(&mut out)?,
                c if c == self.escape => match self.bump() {
                    Some(next) => out.push(next),
                    None => out.push(c),
                },
                c => out.push(c),
            }
        }
        Ok(out)
    }

    fn double_quoted(&mut self, out: &mut String, at: usize) -> Result<(), (ErrorKind, usize)> {
        loop {
            match self.bump() {
                Some('"') => return Ok(()),
                Some('$') if self.vars.is_some() => self.dollar(out)?,
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.i += 1;
                        out.push(n);
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
                None => return Err((ErrorKind::UnterminatedQuote("double"), at)),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.i += 1;
            } else {
                break;
            }
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars.and_then(|v| v.get(name))
    }

    fn dollar(&mut self, out: &mut String) -> Result<(), (ErrorKind, usize)> {
        let dollar_at = self.offset().saturating_sub(1);
        if self.peek() == Some('{') {
            self.i += 1;
            return self.braced(out, dollar_at);
        }
        let name = self.name();
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&self.lookup(&name).unwrap_or_default());
        }
        Ok(())
    }

    fn braced(&mut self, out: &mut String, at: usize) -> Result<(), (ErrorKind, usize)> {
        let name = self.name();
        if name.is_empty() {
            return Err((
                ErrorKind::BadVariable("bad substitution: missing variable name after '${'".into()),
                at,
            ));
        }
        let value = self.lookup(&name);
        let colon = self.peek() == Some(':');
        if colon {
            self.i += 1;
        }
        let op = match self.bump() {
            Some('}') if !colon => {
                out.push_str(&value.unwrap_or_default());
                return Ok(());
            }
            Some(op @ ('-' | '+' | '?')) => op,
            None => return Err((ErrorKind::UnterminatedVariable, at)),
            Some(other) => {
                let m = if colon {
                    format!(":{other}")
                } else {
                    other.to_string()
                };
                return Err((
                    ErrorKind::BadVariable(format!(
                        "unsupported modifier '{m}' in ${{{name}...}}: use :-, -, :+, +, :? or ?"
                    )),
                    at,
                ));
            }
        };
        let word = self.sequence(Some('}'))?;
        if self.bump() != Some('}') {
            return Err((ErrorKind::UnterminatedVariable, at));
        }
        // With ':' an empty value counts as unset, as in POSIX shells.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match op {
            '-' => out.push_str(&if set { value.unwrap_or_default() } else { word }),
            '+' => {
                if set {
                    out.push_str(&word)
                }
            }
            _ => {
                if !set {
                    let msg = if word.is_empty() {
                        "is not set".to_string()
                    } else {
                        word
                    };
                    return Err((ErrorKind::BadVariable(format!("{name}: {msg}")), at));
                }
                out.push_str(&value.unwrap_or_default());
            }
        }
        Ok(())
    }
}
