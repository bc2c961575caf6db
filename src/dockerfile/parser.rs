//! Logical lines to instructions, and instructions to stages.
//!
//! Invariant: the parser never panics on any input; every rejection is a
//! [`SpecError`] pointing at the offending character.

use super::ast::*;
use super::diagnostic::{ErrorKind, Pos, Source, SpecError};
use super::flags::{
    parse_mount, Flag, FlagKind, ADD_FLAGS, COPY_FLAGS, FROM_FLAGS, HEALTHCHECK_FLAGS, RUN_FLAGS,
};
use super::lexer::{Lines, LogicalLine};
use super::words::{split_words, unquote, RawWord};
use crate::rootfs::is_plain_name;

/// Parses a whole spec.
pub fn parse(source: &Source) -> Result<Dockerfile, SpecError> {
    let (mut lines, directives) =
        Lines::new(source.text()).map_err(|(kind, pos)| SpecError::new(kind, pos, source))?;
    let mut instructions = Vec::new();
    while let Some(line) = lines.next_logical() {
        let mut parser = LineParser {
            line: &line,
            source,
            escape: directives.escape,
        };
        instructions.push(parser.instruction(Some(&mut lines))?);
    }
    group_stages(source, directives, instructions)
}

fn group_stages(
    source: &Source,
    directives: Directives,
    instructions: Vec<Instruction>,
) -> Result<Dockerfile, SpecError> {
    if instructions.is_empty() {
        return Err(SpecError::new(ErrorKind::EmptyFile, Pos::new(1, 1), source));
    }
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions {
        match (ins.kind, stages.last_mut()) {
            (InstructionKind::From(from), _) => stages.push(Stage {
                index: stages.len(),
                from,
                pos: ins.pos,
                instructions: Vec::new(),
            }),
            (InstructionKind::Arg(args), None) => meta_args.extend(args),
            (kind, Some(stage)) => stage.instructions.push(Instruction {
                kind,
                pos: ins.pos,
                text: ins.text,
            }),
            (_, None) => {
                let keyword = ins
                    .text
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_uppercase();
                return Err(SpecError::new(
                    ErrorKind::InstructionBeforeFrom(keyword),
                    ins.pos,
                    source,
                ));
            }
        }
    }
    if stages.is_empty() {
        return Err(SpecError::new(
            ErrorKind::BadArguments(
                "the Dockerfile has no FROM instruction: nothing to build".into(),
            ),
            Pos::new(1, 1),
            source,
        ));
    }
    Ok(Dockerfile {
        source: source.clone(),
        directives,
        meta_args,
        stages,
    })
}

/// Parses one logical line.
struct LineParser<'a> {
    line: &'a LogicalLine,
    source: &'a Source,
    escape: char,
}

type PResult<T> = Result<T, SpecError>;

impl<'a> LineParser<'a> {
    fn err(&self, kind: ErrorKind, offset: usize) -> SpecError {
        SpecError::new(kind, self.line.pos_at(offset), self.source)
    }

    fn bad(&self, message: impl Into<String>, offset: usize) -> SpecError {
        self.err(ErrorKind::BadArguments(message.into()), offset)
    }

    fn text(&self) -> &'a str {
        &self.line.text
    }

    fn word(&self, (raw, offset): &RawWord) -> Word {
        Word {
            raw: raw.clone(),
            pos: self.line.pos_at(*offset),
        }
    }

    fn words_from(&self, offset: usize, escape: char) -> PResult<Vec<RawWord>> {
        let mut words = split_words(&self.text()[offset..], escape)
            .map_err(|(kind, at)| self.err(kind, offset + at))?;
        for w in &mut words {
            w.1 += offset;
        }
        Ok(words)
    }

    /// Parses the instruction; `lines` is where heredoc bodies are read from
    /// (absent for ONBUILD triggers, which cannot carry heredocs).
    fn instruction(&mut self, lines: Option<&mut Lines>) -> PResult<Instruction> {
        let text = self.text();
        let kw_end = text.find(char::is_whitespace).unwrap_or(text.len());
        let keyword = &text[..kw_end];
        let rest = kw_end + (text[kw_end..].len() - text[kw_end..].trim_start().len());
        let kind = match keyword.to_ascii_uppercase().as_str() {
            "FROM" => self.from(rest)?,
            "ARG" => self.arg(rest)?,
            "ENV" => InstructionKind::Env(self.key_values("ENV", rest)?),
            "LABEL" => InstructionKind::Label(self.key_values("LABEL", rest)?),
            "RUN" => self.run(rest, lines)?,
            "COPY" => self.copy(rest, false, lines)?,
            "ADD" => self.copy(rest, true, lines)?,
            "WORKDIR" => InstructionKind::Workdir(self.rest_word("WORKDIR", rest)?),
            "USER" => InstructionKind::User(self.rest_word("USER", rest)?),
            "STOPSIGNAL" => InstructionKind::StopSignal(self.rest_word("STOPSIGNAL", rest)?),
            "MAINTAINER" => InstructionKind::Maintainer(self.rest_word("MAINTAINER", rest)?.raw),
            "SHELL" => InstructionKind::Shell(self.shell(rest)?),
            "ENTRYPOINT" => InstructionKind::Entrypoint(self.command("ENTRYPOINT", rest)?),
            "CMD" => InstructionKind::Cmd(self.command("CMD", rest)?),
            "EXPOSE" => InstructionKind::Expose(self.list("EXPOSE", rest, false)?),
            "VOLUME" => InstructionKind::Volume(self.list("VOLUME", rest, true)?),
            "HEALTHCHECK" => self.healthcheck(rest)?,
            "ONBUILD" => self.onbuild(rest)?,
            _ => {
                return Err(self.err(ErrorKind::UnknownInstruction(keyword.to_string()), 0));
            }
        };
        Ok(Instruction {
            kind,
            pos: self.line.start(),
            text: text.to_string(),
        })
    }

    /// Splits leading `--flag[=value]` words off `words`.
    fn flags(
        &self,
        words: &mut Vec<RawWord>,
        allowed: &[(&'static str, FlagKind)],
        instruction: &str,
    ) -> PResult<Vec<Flag>> {
        let mut flags: Vec<Flag> = Vec::new();
        while let Some((raw, offset)) = words.first().cloned() {
            let Some(body) = raw.strip_prefix("--") else {
                break;
            };
            words.remove(0);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(&(name, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                return Err(self.err(
                    ErrorKind::BadFlag(format!("unknown flag --{name} for {instruction}")),
                    offset,
                ));
            };
            let value = match (kind, value) {
                (FlagKind::Bool, None) => None,
                (FlagKind::Bool, Some(v)) => match v.as_str() {
                    "true" => None,
                    "false" => continue,
                    _ => {
                        return Err(self.err(
                            ErrorKind::BadFlag(format!(
                                "--{name} takes true or false, not \"{v}\""
                            )),
                            offset,
                        ))
                    }
                },
                (_, None) => {
                    return Err(self.err(
                        ErrorKind::BadFlag(format!("flag --{name} needs a value: --{name}=VALUE")),
                        offset,
                    ))
                }
                (_, value) => value,
            };
            if kind != FlagKind::Repeated && flags.iter().any(|f| f.name == name) {
                return Err(self.err(
                    ErrorKind::BadFlag(format!("flag --{name} is given more than once")),
                    offset,
                ));
            }
            flags.push(Flag {
                name,
                value,
                offset,
            });
        }
        Ok(flags)
    }

    fn flag_word(&self, flags: &[Flag], name: &str) -> Option<Word> {
        flags.iter().find(|f| f.name == name).map(|f| Word {
            raw: f.value.clone().unwrap_or_default(),
            pos: self.line.pos_at(f.offset + name.len() + 3),
        })
    }

    fn has_flag(flags: &[Flag], name: &str) -> bool {
        flags.iter().any(|f| f.name == name)
    }

    fn from(&self, rest: usize) -> PResult<InstructionKind> {
        let mut words = self.words_from(rest, self.escape)?;
        let flags = self.flags(&mut words, FROM_FLAGS, "FROM")?;
        let name = match words.as_slice() {
            [_] => None,
            [_, (as_kw, at), name] => {
                if !as_kw.eq_ignore_ascii_case("as") {
                    return Err(self.bad(
                        format!(
                            "expected AS between the image and the stage name, found \"{as_kw}\""
                        ),
                        *at,
                    ));
                }
                Some(self.word(name))
            }
            [] => return Err(self.bad("FROM needs an image: FROM IMAGE [AS NAME]", rest)),
            [_, (_, at), ..] => {
                return Err(self.bad(
                    "FROM takes one or three arguments: FROM IMAGE [AS NAME]",
                    *at,
                ))
            }
        };
        Ok(InstructionKind::From(From {
            image: self.word(&words[0]),
            name,
            platform: self.flag_word(&flags, "platform"),
        }))
    }

    fn check_name(&self, name: &str, what: &str, offset: usize) -> PResult<()> {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(())
        } else {
            Err(self.bad(
                format!("invalid {what} name \"{name}\": use letters, digits and '_', not starting with a digit"),
                offset,
            ))
        }
    }

    fn arg(&self, rest: usize) -> PResult<InstructionKind> {
        let words = self.words_from(rest, self.escape)?;
        if words.is_empty() {
            return Err(self.bad("ARG needs a name: ARG NAME[=DEFAULT]", rest));
        }
        let mut decls = Vec::new();
        for (raw, offset) in &words {
            let (name, default) = match raw.split_once('=') {
                Some((n, v)) => (
                    n,
                    Some(Word {
                        raw: v.to_string(),
                        pos: self.line.pos_at(offset + n.len() + 1),
                    }),
                ),
                None => (raw.as_str(), None),
            };
            self.check_name(name, "ARG", *offset)?;
            decls.push(ArgDecl {
                name: name.to_string(),
                default,
                pos: self.line.pos_at(*offset),
            });
        }
        Ok(InstructionKind::Arg(decls))
    }

    fn key_values(&self, instruction: &str, rest: usize) -> PResult<Vec<KeyValue>> {
        let words = self.words_from(rest, self.escape)?;
        let Some((first, first_at)) = words.first() else {
            return Err(self.bad(format!("{instruction} needs at least one KEY=VALUE"), rest));
        };
        let unq =
            |raw: &str, at: usize| unquote(raw, self.escape).map_err(|(k, o)| self.err(k, at + o));
        if !first.contains('=') {
            // Legacy `ENV KEY value with spaces`: the value is the rest of the line.
            let Some((_, value_at)) = words.get(1) else {
                return Err(self.bad(
                    format!(
                        "{instruction} {first} has no value: write {instruction} {first}=VALUE"
                    ),
                    *first_at,
                ));
            };
            return Ok(vec![KeyValue {
                key: unq(first, *first_at)?,
                value: Word {
                    raw: self.text()[*value_at..].trim_end().to_string(),
                    pos: self.line.pos_at(*value_at),
                },
            }]);
        }
        let mut pairs = Vec::new();
        for (raw, offset) in &words {
            let Some(eq) = raw.find('=') else {
                return Err(self.bad(format!("\"{raw}\" is not of the form KEY=VALUE"), *offset));
            };
            let key = unq(&raw[..eq], *offset)?;
            if key.is_empty() {
                return Err(self.bad(format!("{instruction} names can not be blank"), *offset));
            }
            pairs.push(KeyValue {
                key,
                value: Word {
                    raw: raw[eq + 1..].to_string(),
                    pos: self.line.pos_at(offset + eq + 1),
                },
            });
        }
        Ok(pairs)
    }

    fn rest_word(&self, instruction: &str, rest: usize) -> PResult<Word> {
        let value = self.text()[rest..].trim_end();
        if value.is_empty() {
            return Err(self.bad(format!("{instruction} needs an argument"), rest));
        }
        Ok(Word {
            raw: value.to_string(),
            pos: self.line.pos_at(rest),
        })
    }

    /// `Some` when the text is a JSON exec form; an error when it was meant
    /// to be one (`["...` or `['...` closed by `]`) but is not valid JSON.
    fn json_array(&self, offset: usize) -> PResult<Option<Vec<String>>> {
        let text = self.text()[offset..].trim_end();
        if !text.starts_with('[') {
            return Ok(None);
        }
        match serde_json::from_str::<Vec<serde_json::Value>>(text) {
            Ok(items) => items
                .into_iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => Ok(s),
                    _ => Err(self.err(
                        ErrorKind::BadJson("when using JSON array syntax, arrays must be comprised of strings only".into()),
                        offset,
                    )),
                })
                .collect::<PResult<Vec<String>>>()
                .map(Some),
            Err(e) => {
                let after_bracket = text[1..].trim_start();
                let meant_json = text.ends_with(']')
                    && (after_bracket.starts_with('"') || after_bracket.starts_with('\''));
                if !meant_json {
                    return Ok(None);
                }
                // serde_json columns are 1-based characters on the (single) line.
                let at = text
                    .char_indices()
                    .nth(e.column().saturating_sub(1))
                    .map_or(text.len(), |(i, _)| i);
                let msg = e.to_string();
                let msg = msg.split(" at line").next().unwrap_or(&msg).to_string();
                Err(self.err(
                    ErrorKind::BadJson(format!("{msg} (exec form needs a JSON array of double-quoted strings)")),
                    offset + at,
                ))
            }
        }
    }

    fn command(&self, instruction: &str, offset: usize) -> PResult<Command> {
        if let Some(items) = self.json_array(offset)? {
            return Ok(Command::Exec(items));
        }
        let text = self.text()[offset..].trim_end();
        if text.is_empty() {
            return Err(self.bad(format!("{instruction} needs a command"), offset));
        }
        // The shell will parse this: check its quotes now so the error has a position.
        self.words_from(offset, '\\')?;
        Ok(Command::Shell(text.to_string()))
    }

    fn shell(&self, rest: usize) -> PResult<Vec<String>> {
        match self.json_array(rest)? {
            Some(items) if !items.is_empty() => Ok(items),
            Some(_) => Err(self.bad("SHELL needs at least the shell program", rest)),
            None => Err(self.err(
                ErrorKind::BadJson(
                    "SHELL requires the arguments in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]"
                        .into(),
                ),
                rest,
            )),
        }
    }

    fn list(&self, instruction: &str, rest: usize, json_ok: bool) -> PResult<Vec<Word>> {
        if json_ok {
            if let Some(items) = self.json_array(rest)? {
                let pos = self.line.pos_at(rest);
                return Ok(items.into_iter().map(|raw| Word { raw, pos }).collect());
            }
        }
        let words = self.words_from(rest, self.escape)?;
        if words.is_empty() {
            return Err(self.bad(format!("{instruction} needs at least one argument"), rest));
        }
        Ok(words.iter().map(|w| self.word(w)).collect())
    }

    fn run(&self, rest: usize, lines: Option<&mut Lines>) -> PResult<InstructionKind> {
        let mut words = self.words_from(rest, '\\')?;
        let flags = self.flags(&mut words, RUN_FLAGS, "RUN")?;
        let Some((_, cmd_at)) = words.first() else {
            return Err(self.bad("RUN needs a command", rest));
        };
        let command = self.command("RUN", *cmd_at)?;
        let heredocs = match &command {
            Command::Shell(_) => self.heredocs(&words, lines, false)?,
            Command::Exec(_) => Vec::new(),
        };
        let mut mounts = Vec::new();
        let mut network = Network::Default;
        let mut insecure = false;
        for flag in &flags {
            let value = flag.value.clone().unwrap_or_default();
            match flag.name {
                "mount" => mounts.push(self.mount(&value, flag.offset)?),
                "network" => {
                    network = match value.as_str() {
                        "default" => Network::Default,
                        "none" => Network::None,
                        "host" => Network::Host,
                        _ => {
                            return Err(self.err(
                                ErrorKind::BadFlag(format!(
                                    "--network takes default, none or host, not \"{value}\""
                                )),
                                flag.offset,
                            ))
                        }
                    }
                }
                _ => {
                    insecure = match value.as_str() {
                        "sandbox" => false,
                        "insecure" => true,
                        _ => {
                            return Err(self.err(
                                ErrorKind::BadFlag(format!(
                                    "--security takes sandbox or insecure, not \"{value}\""
                                )),
                                flag.offset,
                            ))
                        }
                    }
                }
            }
        }
        Ok(InstructionKind::Run(Run {
            command,
            mounts,
            network,
            insecure,
            heredocs,
        }))
    }

    /// Reads the bodies of the `<<NAME` words, in order, from the lines
    /// following this instruction.
    fn heredocs(
        &self,
        words: &[RawWord],
        lines: Option<&mut Lines>,
        names_files: bool,
    ) -> PResult<Vec<Heredoc>> {
        let markers: Vec<_> = words
            .iter()
            .filter_map(|(raw, at)| heredoc_marker(raw).map(|m| (m, *at)))
            .collect();
        if markers.is_empty() {
            return Ok(Vec::new());
        }
        let Some(lines) = lines else {
            return Err(self.bad("heredocs are not allowed in ONBUILD triggers", markers[0].1));
        };
        let mut docs = Vec::new();
        for ((strip_tabs, raw_name), at) in markers {
            let name = unquote(raw_name, self.escape).map_err(|(k, o)| self.err(k, at + o))?;
            if name.is_empty() {
                return Err(self.bad("heredoc needs a delimiter name after <<", at));
            }
            if names_files && !is_plain_name(&name) {
                return Err(self.bad(
                    format!(
                        "heredoc name \"{name}\" is a file name here (COPY/ADD copy the body \
                         as a file of that name): it cannot contain '/' or be '.' or '..'"
                    ),
                    at,
                ));
            }
            let expand = !raw_name.contains(['"', '\'']);
            let (content, pos) = lines
                .read_heredoc(&name, strip_tabs)
                .ok_or_else(|| self.err(ErrorKind::UnterminatedHeredoc(name.clone()), at))?;
            docs.push(Heredoc {
                name,
                content,
                expand,
                pos,
            });
        }
        Ok(docs)
    }

    fn copy(
        &self,
        rest: usize,
        is_add: bool,
        lines: Option<&mut Lines>,
    ) -> PResult<InstructionKind> {
        let instruction = if is_add { "ADD" } else { "COPY" };
        let mut words = self.words_from(rest, self.escape)?;
        let allowed = if is_add { ADD_FLAGS } else { COPY_FLAGS };
        let flags = self.flags(&mut words, allowed, instruction)?;
        let args_at = words.first().map_or(self.text().len(), |w| w.1);
        let (mut paths, heredocs) = match self.json_array(args_at)? {
            Some(items) => {
                let pos = self.line.pos_at(args_at);
                let words = items.into_iter().map(|raw| Word { raw, pos }).collect();
                (words, Vec::new())
            }
            None => {
                let heredocs = self.heredocs(&words, lines, true)?;
                (
                    words.iter().map(|w| self.word(w)).collect::<Vec<_>>(),
                    heredocs,
                )
            }
        };
        if paths.len() < 2 {
            return Err(self.bad(
                format!("{instruction} needs at least one source and a destination"),
                args_at,
            ));
        }
        let dest = paths.pop().expect("checked: at least two paths");
        let excludes = flags
            .iter()
            .filter(|f| f.name == "exclude")
            .map(|f| Word {
                raw: f.value.clone().unwrap_or_default(),
                pos: self.line.pos_at(f.offset),
            })
            .collect();
        Ok(InstructionKind::Copy(Copy {
            is_add,
            sources: paths,
            dest,
            from: self.flag_word(&flags, "from"),
            chown: self.flag_word(&flags, "chown"),
            chmod: self.flag_word(&flags, "chmod"),
            link: Self::has_flag(&flags, "link"),
            parents: Self::has_flag(&flags, "parents"),
            checksum: self.flag_word(&flags, "checksum"),
            keep_git_dir: Self::has_flag(&flags, "keep-git-dir"),
            excludes,
            heredocs,
        }))
    }

    fn healthcheck(&self, rest: usize) -> PResult<InstructionKind> {
        let mut words = self.words_from(rest, '\\')?;
        let flags = self.flags(&mut words, HEALTHCHECK_FLAGS, "HEALTHCHECK")?;
        let Some((first, at)) = words.first() else {
            return Err(self.bad("HEALTHCHECK needs NONE or CMD COMMAND", rest));
        };
        match first.to_ascii_uppercase().as_str() {
            "NONE" if words.len() == 1 && flags.is_empty() => {
                Ok(InstructionKind::Healthcheck(Healthcheck::None))
            }
            "NONE" => Err(self.bad("HEALTHCHECK NONE takes no flags or arguments", *at)),
            "CMD" => {
                let cmd_at = words.get(1).map_or(self.text().len(), |w| w.1);
                let command = self.command("HEALTHCHECK CMD", cmd_at)?;
                let value = |name: &str| {
                    flags
                        .iter()
                        .find(|f| f.name == name)
                        .and_then(|f| f.value.clone())
                };
                let retries = match flags.iter().find(|f| f.name == "retries") {
                    Some(f) => Some(f.value.as_deref().unwrap_or("").parse::<u32>().map_err(
                        |_| {
                            self.err(
                                ErrorKind::BadFlag("--retries needs a whole number".into()),
                                f.offset,
                            )
                        },
                    )?),
                    None => None,
                };
                Ok(InstructionKind::Healthcheck(Healthcheck::Check {
                    command,
                    interval: value("interval"),
                    timeout: value("timeout"),
                    start_period: value("start-period"),
                    start_interval: value("start-interval"),
                    retries,
                }))
            }
            _ => Err(self.bad(
                format!("HEALTHCHECK takes NONE or CMD, not \"{first}\""),
                *at,
            )),
        }
    }

    fn onbuild(&self, rest: usize) -> PResult<InstructionKind> {
        let trigger = self.text()[rest..].trim_end();
        let keyword = trigger
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match keyword.as_str() {
            "" => return Err(self.bad("ONBUILD needs an instruction", rest)),
            "ONBUILD" | "FROM" | "MAINTAINER" => {
                return Err(self.bad(
                    format!("{keyword} isn't allowed as an ONBUILD trigger"),
                    rest,
                ))
            }
            _ => {}
        }
        let inner = self.line.suffix(rest);
        let mut parser = LineParser {
            line: &inner,
            source: self.source,
            escape: self.escape,
        };
        parser.instruction(None)?;
        Ok(InstructionKind::Onbuild(trigger.to_string()))
    }

    fn mount(&self, spec: &str, offset: usize) -> PResult<Mount> {
        let value_at = offset + "--mount=".len();
        parse_mount(spec, self.escape, self.line.pos_at(offset))
            .map_err(|msg| self.err(ErrorKind::BadFlag(format!("--mount: {msg}")), value_at))
    }
}

/// `<<NAME`, `<<-NAME`, `<<"NAME"`, `3<<NAME`: (strip tabs, raw delimiter).
fn heredoc_marker(word: &str) -> Option<(bool, &str)> {
    let body = word
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .strip_prefix("<<")?;
    let (strip, name) = match body.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, body),
    };
    if name.is_empty() || name.contains('<') {
        return None;
    }
    Some((strip, name))
}
