//! Table-driven tests of the Dockerfile dialect: parsing, errors with exact
//! positions, variable expansion and BuildKit's ARG scoping.

use std::collections::BTreeMap;

use kbuild::dockerfile::{self, words, Command, Dockerfile, Healthcheck, InstructionKind, Word};
use kbuild::plan::{self, PlanRequest, StageScope};
use kbuild::platform::Platform;

/// Renders a parsed file as one line per instruction, for compact tables.
fn render(file: &Dockerfile) -> String {
    let mut out = Vec::new();
    for arg in &file.meta_args {
        out.push(format!(
            "ARG {}{}",
            arg.name,
            arg.default
                .as_ref()
                .map(|d| format!("=[{}]", d.raw))
                .unwrap_or_default()
        ));
    }
    for stage in &file.stages {
        let f = &stage.from;
        let mut line = format!("FROM {}", f.image.raw);
        if let Some(n) = &f.name {
            line += &format!(" AS {}", n.raw);
        }
        if let Some(p) = &f.platform {
            line += &format!(" platform={}", p.raw);
        }
        out.push(line);
        for ins in &stage.instructions {
            out.push(render_kind(&ins.kind));
        }
    }
    out.join("\n")
}

fn cmd(c: &Command) -> String {
    match c {
        Command::Shell(s) => format!("sh:[{s}]"),
        Command::Exec(v) => format!("exec:{v:?}"),
    }
}

fn words_of(ws: &[Word]) -> String {
    ws.iter()
        .map(|w| w.raw.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn render_kind(kind: &InstructionKind) -> String {
    match kind {
        InstructionKind::From(_) => unreachable!("FROM starts a stage"),
        InstructionKind::Arg(args) => format!(
            "ARG {}",
            args.iter()
                .map(|a| format!(
                    "{}{}",
                    a.name,
                    a.default
                        .as_ref()
                        .map(|d| format!("=[{}]", d.raw))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        InstructionKind::Env(kv) | InstructionKind::Label(kv) => {
            let name = if matches!(kind, InstructionKind::Env(_)) {
                "ENV"
            } else {
                "LABEL"
            };
            format!(
                "{name} {}",
                kv.iter()
                    .map(|p| format!("{}=[{}]", p.key, p.value.raw))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        InstructionKind::Run(r) => {
            let mut s = format!("RUN {}", cmd(&r.command));
            for m in &r.mounts {
                s += &format!(
                    " mount({:?},target={:?},from={:?},id={:?},ro={},sharing={:?})",
                    m.kind, m.target, m.from, m.id, m.read_only, m.sharing
                );
            }
            if r.network != dockerfile::Network::Default {
                s += &format!(" network={:?}", r.network);
            }
            if r.insecure {
                s += " insecure";
            }
            for h in &r.heredocs {
                s += &format!(
                    " <<{}{}={:?}",
                    h.name,
                    if h.expand { "" } else { "(literal)" },
                    h.content
                );
            }
            s
        }
        InstructionKind::Copy(c) => {
            let mut s = format!(
                "{} {} -> {}",
                if c.is_add { "ADD" } else { "COPY" },
                words_of(&c.sources),
                c.dest.raw
            );
            for (name, w) in [
                ("from", &c.from),
                ("chown", &c.chown),
                ("chmod", &c.chmod),
                ("checksum", &c.checksum),
            ] {
                if let Some(w) = w {
                    s += &format!(" {name}={}", w.raw);
                }
            }
            if c.link {
                s += " link";
            }
            if c.parents {
                s += " parents";
            }
            if c.keep_git_dir {
                s += " keep-git-dir";
            }
            if !c.excludes.is_empty() {
                s += &format!(" exclude={}", words_of(&c.excludes));
            }
            for h in &c.heredocs {
                s += &format!(
                    " <<{}{}={:?}",
                    h.name,
                    if h.expand { "" } else { "(literal)" },
                    h.content
                );
            }
            s
        }
        InstructionKind::Workdir(w) => format!("WORKDIR [{}]", w.raw),
        InstructionKind::User(w) => format!("USER [{}]", w.raw),
        InstructionKind::Shell(v) => format!("SHELL {v:?}"),
        InstructionKind::Entrypoint(c) => format!("ENTRYPOINT {}", cmd(c)),
        InstructionKind::Cmd(c) => format!("CMD {}", cmd(c)),
        InstructionKind::Expose(w) => format!("EXPOSE {}", words_of(w)),
        InstructionKind::Volume(w) => format!("VOLUME {}", words_of(w)),
        InstructionKind::StopSignal(w) => format!("STOPSIGNAL [{}]", w.raw),
        InstructionKind::Healthcheck(Healthcheck::None) => "HEALTHCHECK NONE".into(),
        InstructionKind::Healthcheck(Healthcheck::Check {
            command,
            interval,
            retries,
            ..
        }) => {
            format!(
                "HEALTHCHECK {} interval={interval:?} retries={retries:?}",
                cmd(command)
            )
        }
        InstructionKind::Onbuild(t) => format!("ONBUILD [{t}]"),
        InstructionKind::Maintainer(m) => format!("MAINTAINER [{m}]"),
    }
}

/// (name, input, expected): expected is the rendering, or `err L:C text`.
const PARSE_CASES: &[(&str, &str, &str)] = &[
    // --- FROM ---
    ("from simple", "FROM debian:bookworm\n", "FROM debian:bookworm"),
    ("from as", "FROM debian AS build\n", "FROM debian AS build"),
    ("from lowercase as", "from debian as build\n", "FROM debian AS build"),
    ("from mixed-case keyword", "FrOm alpine\n", "FROM alpine"),
    ("from platform", "FROM --platform=$BUILDPLATFORM golang:1.22 AS b\n", "FROM golang:1.22 AS b platform=$BUILDPLATFORM"),
    ("from variable image", "ARG BASE=debian\nFROM ${BASE}\n", "ARG BASE=[debian]\nFROM ${BASE}"),
    ("from variable name", "FROM x AS ${TARGETARCH}-upstream\n", "FROM x AS ${TARGETARCH}-upstream"),
    ("from two args", "FROM a b\n", "err 1:8 FROM takes one or three arguments"),
    ("from bad as", "FROM a AT b\n", "err 1:8 expected AS between the image and the stage name"),
    ("from no args", "FROM\n", "err 1:5 FROM needs an image"),
    ("from unknown flag", "FROM --plat=x a\n", "err 1:6 unknown flag --plat for FROM"),
    ("from flag without value", "FROM --platform a\n", "err 1:6 flag --platform needs a value"),
    ("crlf line endings", "FROM a\r\nRUN b\r\n", "FROM a\nRUN sh:[b]"),
    ("bom", "\u{feff}FROM a\n", "FROM a"),
    ("leading indentation", "  FROM a\n\tRUN b\n", "FROM a\nRUN sh:[b]"),
    // --- comments and continuations ---
    ("comments skipped", "# hello\nFROM a\n# mid\nRUN b\n", "FROM a\nRUN sh:[b]"),
    ("continuation", "FROM a\nRUN apt-get update \\\n  && apt-get install -y rsync\n", "FROM a\nRUN sh:[apt-get update   && apt-get install -y rsync]"),
    ("continuation with trailing blanks", "FROM a\nRUN a \\  \n b\n", "FROM a\nRUN sh:[a  b]"),
    ("continuation across comment", "FROM a\nRUN a \\\n# not part\n  b\n", "FROM a\nRUN sh:[a   b]"),
    ("continuation across blank line", "FROM a\nRUN a \\\n\n  b\n", "FROM a\nRUN sh:[a   b]"),
    ("continuation at end of file", "FROM a\nRUN a \\\n", "FROM a\nRUN sh:[a]"),
    ("hash inside instruction is text", "FROM a\nRUN echo '#not a comment'\n", "FROM a\nRUN sh:[echo '#not a comment']"),
    // --- directives ---
    ("escape backtick", "# escape=`\nFROM a\nRUN a `\n b\n", "FROM a\nRUN sh:[a  b]"),
    ("escape backtick keeps backslash", "# escape=`\nFROM a\nCOPY C:\\src C:\\dst\n", "FROM a\nCOPY C:\\src -> C:\\dst"),
    ("syntax directive", "# syntax=docker/dockerfile:1\nFROM a\n", "FROM a"),
    ("directive case insensitive", "# ESCAPE=`\nFROM a\nRUN x `\n y\n", "FROM a\nRUN sh:[x  y]"),
    ("directive after comment is comment", "# hi\n# escape=`\nFROM a\nRUN a \\\n b\n", "FROM a\nRUN sh:[a  b]"),
    ("bad escape", "# escape=x\nFROM a\n", "err 1:1 invalid escape token 'x'"),
    ("duplicate directive", "# escape=`\n# escape=\\\nFROM a\n", "err 2:1 only one escape directive"),
    // --- instructions ---
    ("unknown instruction", "FROM a\nRUNN echo\n", "err 2:1 unknown instruction: RUNN"),
    ("unknown indented instruction", "FROM a\n   FOO bar\n", "err 2:4 unknown instruction: FOO"),
    ("instruction before from", "RUN x\n", "err 1:1 RUN must come after a FROM"),
    ("empty file", "", "err 1:1 the Dockerfile is empty"),
    ("only comments", "# just\n# comments\n\n", "err 1:1 the Dockerfile is empty"),
    ("only args", "ARG A=1\n", "err 1:1 no FROM instruction"),
    ("arg multiple", "ARG A=1 B C=\"x y\"\nFROM a\n", "ARG A=[1]\nARG B\nARG C=[\"x y\"]\nFROM a"),
    ("arg bad name", "FROM a\nARG 1A=x\n", "err 2:5 invalid ARG name \"1A\""),
    ("arg empty", "FROM a\nARG\n", "err 2:4 ARG needs a name"),
    ("env pairs", "FROM a\nENV A=1 B=\"two words\" C=$A\n", "FROM a\nENV A=[1] B=[\"two words\"] C=[$A]"),
    ("env legacy", "FROM a\nENV PATH /usr/local/bin:$PATH\n", "FROM a\nENV PATH=[/usr/local/bin:$PATH]"),
    ("env legacy spaces", "FROM a\nENV MSG hello world\n", "FROM a\nENV MSG=[hello world]"),
    ("env no value", "FROM a\nENV A\n", "err 2:5 ENV A has no value"),
    ("env missing equals", "FROM a\nENV A=1 B\n", "err 2:9 \"B\" is not of the form KEY=VALUE"),
    ("env blank name", "FROM a\nENV =1\n", "err 2:5 ENV names can not be blank"),
    ("label quoted key", "FROM a\nLABEL \"org.opencontainers.image.title\"=\"kbuild\" v=1\n", "FROM a\nLABEL org.opencontainers.image.title=[\"kbuild\"] v=[1]"),
    ("workdir", "FROM a\nWORKDIR /src/app\n", "FROM a\nWORKDIR [/src/app]"),
    ("workdir empty", "FROM a\nWORKDIR\n", "err 2:8 WORKDIR needs an argument"),
    ("user", "FROM a\nUSER app:app\n", "FROM a\nUSER [app:app]"),
    ("shell json", "FROM a\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\n", "FROM a\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]"),
    ("shell not json", "FROM a\nSHELL /bin/bash -c\n", "err 2:7 SHELL requires the arguments in JSON form"),
    ("shell empty json", "FROM a\nSHELL []\n", "err 2:7 SHELL needs at least the shell program"),
    ("entrypoint exec", "FROM a\nENTRYPOINT [\"/init\"]\n", "FROM a\nENTRYPOINT exec:[\"/init\"]"),
    ("cmd shell", "FROM a\nCMD echo hi\n", "FROM a\nCMD sh:[echo hi]"),
    ("cmd empty exec", "FROM a\nCMD []\n", "FROM a\nCMD exec:[]"),
    ("cmd bad json", "FROM a\nCMD [\"a\", 'b']\n", "err 2:11 invalid JSON array"),
    ("cmd trailing comma", "FROM a\nCMD [\"a\",]\n", "err 2:10 invalid JSON array: trailing comma"),
    ("cmd json non-string", "FROM a\nCMD [\"a\", 1]\n", "err 2:5 arrays must be comprised of strings only"),
    ("run shell test bracket", "FROM a\nRUN [ -f /etc/os-release ]\n", "FROM a\nRUN sh:[[ -f /etc/os-release ]]"),
    ("expose", "FROM a\nEXPOSE 80/tcp 443 6443\n", "FROM a\nEXPOSE 80/tcp,443,6443"),
    ("volume json", "FROM a\nVOLUME [\"/data\", \"/var/lib\"]\n", "FROM a\nVOLUME /data,/var/lib"),
    ("volume words", "FROM a\nVOLUME /data /logs\n", "FROM a\nVOLUME /data,/logs"),
    ("stopsignal", "FROM a\nSTOPSIGNAL SIGRTMIN+3\n", "FROM a\nSTOPSIGNAL [SIGRTMIN+3]"),
    ("maintainer", "FROM a\nMAINTAINER Jane Doe <jane@example.com>\n", "FROM a\nMAINTAINER [Jane Doe <jane@example.com>]"),
    ("healthcheck none", "FROM a\nHEALTHCHECK NONE\n", "FROM a\nHEALTHCHECK NONE"),
    ("healthcheck cmd", "FROM a\nHEALTHCHECK --interval=5s --retries=3 CMD curl -f http://localhost/\n", "FROM a\nHEALTHCHECK sh:[curl -f http://localhost/] interval=Some(\"5s\") retries=Some(3)"),
    ("healthcheck bad retries", "FROM a\nHEALTHCHECK --retries=x CMD true\n", "err 2:13 --retries needs a whole number"),
    ("healthcheck bad keyword", "FROM a\nHEALTHCHECK RUN x\n", "err 2:13 HEALTHCHECK takes NONE or CMD"),
    ("onbuild", "FROM a\nONBUILD RUN make\n", "FROM a\nONBUILD [RUN make]"),
    ("onbuild from", "FROM a\nONBUILD FROM b\n", "err 2:9 FROM isn't allowed as an ONBUILD trigger"),
    ("onbuild onbuild", "FROM a\nONBUILD ONBUILD RUN x\n", "err 2:9 ONBUILD isn't allowed as an ONBUILD trigger"),
    ("onbuild bad trigger", "FROM a\nONBUILD FOO x\n", "err 2:9 unknown instruction: FOO"),
    // --- RUN flags ---
    ("run exec", "FROM a\nRUN [\"apt-get\", \"update\"]\n", "FROM a\nRUN exec:[\"apt-get\", \"update\"]"),
    ("run cache mount", "FROM a\nRUN --mount=type=cache,target=/var/cache/apt,sharing=locked apt-get update\n",
        "FROM a\nRUN sh:[apt-get update] mount(Cache,target=Some(\"/var/cache/apt\"),from=None,id=None,ro=false,sharing=Locked)"),
    ("run bind mount from stage", "FROM a\nRUN --mount=from=builder,source=/out,target=/in cp /in/x /\n",
        "FROM a\nRUN sh:[cp /in/x /] mount(Bind,target=Some(\"/in\"),from=Some(\"builder\"),id=None,ro=true,sharing=Shared)"),
    ("run tmpfs and secret", "FROM a\nRUN --mount=type=tmpfs,target=/tmp --mount=type=secret,id=token cat /run/secrets/token\n",
        "FROM a\nRUN sh:[cat /run/secrets/token] mount(Tmpfs,target=Some(\"/tmp\"),from=None,id=None,ro=false,sharing=Shared) mount(Secret,target=None,from=None,id=Some(\"token\"),ro=false,sharing=Shared)"),
    ("run bind rw", "FROM a\nRUN --mount=type=bind,target=/src,rw make\n",
        "FROM a\nRUN sh:[make] mount(Bind,target=Some(\"/src\"),from=None,id=None,ro=false,sharing=Shared)"),
    ("run network none", "FROM a\nRUN --network=none make test\n", "FROM a\nRUN sh:[make test] network=None"),
    ("run security insecure", "FROM a\nRUN --security=insecure make\n", "FROM a\nRUN sh:[make] insecure"),
    ("run bad network", "FROM a\nRUN --network=bridge x\n", "err 2:5 --network takes default, none or host"),
    ("run bad mount type", "FROM a\nRUN --mount=type=nfs,target=/x true\n", "err 2:13 unknown mount type \"nfs\""),
    ("run mount missing target", "FROM a\nRUN --mount=type=cache true\n", "err 2:13 target=PATH is required"),
    ("run mount unknown option", "FROM a\nRUN --mount=type=cache,target=/x,color=red true\n", "err 2:13 unknown option \"color\""),
    ("run mount bad sharing", "FROM a\nRUN --mount=type=cache,target=/x,sharing=all true\n", "err 2:13 sharing=\"all\""),
    ("run unknown flag", "FROM a\nRUN --privileged true\n", "err 2:5 unknown flag --privileged for RUN"),
    ("run duplicate flag", "FROM a\nRUN --network=none --network=host true\n", "err 2:20 flag --network is given more than once"),
    ("run no command", "FROM a\nRUN --network=none\n", "err 2:5 RUN needs a command"),
    ("run unterminated double quote", "FROM a\nRUN echo \"hello\n", "err 2:10 unterminated double quote"),
    ("run unterminated single quote", "FROM a\nRUN echo 'it\n", "err 2:10 unterminated single quote"),
    ("unterminated quote after continuation", "FROM a\nRUN echo ok \\\n  && echo \"bad\n", "err 3:11 unterminated double quote"),
    // --- heredocs ---
    ("run heredoc", "FROM a\nRUN <<EOF\napt-get update\napt-get install -y rsync\nEOF\n", "FROM a\nRUN sh:[<<EOF] <<EOF=\"apt-get update\\napt-get install -y rsync\\n\""),
    ("run heredoc dash strips tabs", "FROM a\nRUN <<-EOT\n\techo a\n\t\techo b\n\tEOT\n", "FROM a\nRUN sh:[<<-EOT] <<EOT=\"echo a\\necho b\\n\""),
    ("run heredoc quoted is literal", "FROM a\nRUN <<'EOF'\necho $HOME\nEOF\n", "FROM a\nRUN sh:[<<'EOF'] <<EOF(literal)=\"echo $HOME\\n\""),
    ("run heredoc double quoted", "FROM a\nRUN <<\"EOF\" bash\necho $X\nEOF\n", "FROM a\nRUN sh:[<<\"EOF\" bash] <<EOF(literal)=\"echo $X\\n\""),
    ("run two heredocs", "FROM a\nRUN <<A cat - && <<B cat\none\nA\ntwo\nB\n", "FROM a\nRUN sh:[<<A cat - && <<B cat] <<A=\"one\\n\" <<B=\"two\\n\""),
    ("run heredoc with redirect fd", "FROM a\nRUN cat 3<<X\nx\nX\n", "FROM a\nRUN sh:[cat 3<<X] <<X=\"x\\n\""),
    ("heredoc then instruction", "FROM a\nRUN <<EOF\nls\nEOF\nRUN echo after\n", "FROM a\nRUN sh:[<<EOF] <<EOF=\"ls\\n\"\nRUN sh:[echo after]"),
    ("heredoc after continuation", "FROM a\nRUN --network=none \\\n  <<EOF\nls\nEOF\n", "FROM a\nRUN sh:[<<EOF] network=None <<EOF=\"ls\\n\""),
    ("heredoc keeps comment-like lines", "FROM a\nRUN <<EOF\n# not a comment\nEOF\n", "FROM a\nRUN sh:[<<EOF] <<EOF=\"# not a comment\\n\""),
    ("heredoc unterminated", "FROM a\nRUN <<EOF\necho hi\n", "err 2:5 unterminated heredoc: no line \"EOF\""),
    ("heredoc quoted in word is not heredoc", "FROM a\nRUN echo \"<<EOF\"\n", "FROM a\nRUN sh:[echo \"<<EOF\"]"),
    ("copy heredoc", "FROM a\nCOPY <<EOF /etc/motd\nWelcome\nEOF\n", "FROM a\nCOPY <<EOF -> /etc/motd <<EOF=\"Welcome\\n\""),
    ("copy two heredocs", "FROM a\nCOPY <<one <<two /dir/\n1\none\n2\ntwo\n", "FROM a\nCOPY <<one,<<two -> /dir/ <<one=\"1\\n\" <<two=\"2\\n\""),
    ("add heredoc unterminated", "FROM a\nADD <<X /x\n", "err 2:5 unterminated heredoc: no line \"X\""),
    // --- COPY / ADD ---
    ("copy basic", "FROM a\nCOPY src/ /app/\n", "FROM a\nCOPY src/ -> /app/"),
    ("copy many sources", "FROM a\nCOPY a b c /dst/\n", "FROM a\nCOPY a,b,c -> /dst/"),
    ("copy flags", "FROM a\nCOPY --from=build --chown=1000:1000 --chmod=0755 --link /out/bin /usr/bin/\n", "FROM a\nCOPY /out/bin -> /usr/bin/ from=build chown=1000:1000 chmod=0755 link"),
    ("copy link false", "FROM a\nCOPY --link=false a /b\n", "FROM a\nCOPY a -> /b"),
    ("copy bad bool", "FROM a\nCOPY --link=yes a /b\n", "err 2:6 --link takes true or false"),
    ("copy json", "FROM a\nCOPY [\"my file\", \"/dst dir/\"]\n", "FROM a\nCOPY my file -> /dst dir/"),
    ("copy exclude and parents", "FROM a\nCOPY --parents --exclude=*.md --exclude=.git ./ /src/\n", "FROM a\nCOPY ./ -> /src/ parents exclude=*.md,.git"),
    ("copy one arg", "FROM a\nCOPY onlyone\n", "err 2:6 COPY needs at least one source and a destination"),
    ("copy checksum rejected", "FROM a\nCOPY --checksum=sha256:00 a /b\n", "err 2:6 unknown flag --checksum for COPY"),
    ("add checksum", "FROM a\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/x.tar /x\n",
        "FROM a\nADD https://example.com/x.tar -> /x checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d"),
    ("add from rejected", "FROM a\nADD --from=b x /y\n", "err 2:5 unknown flag --from for ADD"),
    ("add keep git dir", "FROM a\nADD --keep-git-dir=true https://github.com/a/b.git /src\n", "FROM a\nADD https://github.com/a/b.git -> /src keep-git-dir"),
    ("stages grouped", "ARG V=1\nFROM a AS one\nRUN x\nFROM one\nRUN y\n", "ARG V=[1]\nFROM a AS one\nRUN sh:[x]\nFROM one\nRUN sh:[y]"),
];

#[test]
fn parse_table() {
    let mut failures = Vec::new();
    for (name, input, expected) in PARSE_CASES {
        let got = match dockerfile::parse("Dockerfile", input) {
            Ok(file) => render(&file),
            Err(e) => format!("err {}:{} {}", e.pos.line, e.pos.column, e.kind),
        };
        let ok = match expected.strip_prefix("err ") {
            Some(rest) => {
                let (pos, text) = rest.split_once(' ').unwrap();
                got.starts_with(&format!("err {pos} ")) && got.contains(text)
            }
            None => got == *expected,
        };
        if !ok {
            failures.push(format!(
                "{name}:\n  input:    {input:?}\n  expected: {expected}\n  got:      {got}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        PARSE_CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn errors_render_a_caret_under_the_column() {
    let err =
        dockerfile::parse("images/Dockerfile.x", "FROM a\nRUN --network=bridge x\n").unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        "--network takes default, none or host, not \"bridge\"\n  --> images/Dockerfile.x:2:5\n  |\n2 | RUN --network=bridge x\n  |     ^"
    );
    assert_eq!(err.file(), "images/Dockerfile.x");
}

/// (word, expected expansion or `err TEXT`), with A=a, EMPTY="", SPACE="x y".
const EXPAND_CASES: &[(&str, &str)] = &[
    ("$A", "a"),
    ("${A}", "a"),
    ("pre${A}post", "preapost"),
    ("$A$A", "aa"),
    ("$UNSET", ""),
    ("${UNSET:-def}", "def"),
    ("${EMPTY:-def}", "def"),
    ("${EMPTY-def}", ""),
    ("${UNSET-def}", "def"),
    ("${A:-def}", "a"),
    ("${A:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${UNSET:-${A}}", "a"),
    ("${UNSET:-x${A}y}", "xay"),
    ("\\$A", "$A"),
    ("'$A'", "$A"),
    ("\"$A\"", "a"),
    ("\"\\$A\"", "$A"),
    ("\"a b\"", "a b"),
    ("\"${SPACE}\"", "x y"),
    ("a\\ b", "a b"),
    ("$", "$"),
    ("a$-b", "a$-b"),
    ("${A:?must be set}", "a"),
    ("${UNSET:?must be set}", "err UNSET: must be set"),
    ("${EMPTY?}", ""),
    ("${UNSET?}", "err UNSET: is not set"),
    ("${A", "err unterminated variable reference"),
    ("${}", "err bad substitution"),
    ("${A/x/y}", "err unsupported modifier '/'"),
    ("'open", "err unterminated single quote"),
];

#[test]
fn expansion_table() {
    let vars = |name: &str| match name {
        "A" => Some("a".to_string()),
        "EMPTY" => Some(String::new()),
        "SPACE" => Some("x y".to_string()),
        _ => None,
    };
    for (word, expected) in EXPAND_CASES {
        let got = match words::expand(word, '\\', &vars) {
            Ok(s) => s,
            Err((kind, _)) => format!("err {kind}"),
        };
        match expected.strip_prefix("err ") {
            Some(text) => assert!(
                got.starts_with("err ") && got.contains(text),
                "{word:?}: got {got:?}, want error with {text:?}"
            ),
            None => assert_eq!(got, *expected, "{word:?}"),
        }
    }
}

#[test]
fn expansion_error_points_into_the_file() {
    let file = dockerfile::parse("Dockerfile", "ARG X\nFROM base-${X:?needs-X}\n").unwrap();
    let err = plan::plan(&file, &PlanRequest::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("X: needs-X") && err.contains("Dockerfile:2:11"),
        "{err}"
    );
}

/// Variables visible at the end of the target stage.
fn stage_vars(
    text: &str,
    build_args: &[(&str, &str)],
    names: &[&str],
) -> (Vec<String>, Vec<String>) {
    let file = dockerfile::parse("Dockerfile", text).unwrap();
    let request = PlanRequest {
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: None,
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        source_date_epoch: Some(1_700_000_000),
    };
    let plan = plan::plan(&file, &request).unwrap();
    let mut scope = StageScope::new(&plan.build, BTreeMap::new());
    for ins in &file.stages[plan.target].instructions {
        match &ins.kind {
            InstructionKind::Arg(decls) => decls.iter().for_each(|d| scope.declare_arg(d).unwrap()),
            InstructionKind::Env(pairs) => scope.set_env(pairs).unwrap(),
            _ => {}
        }
    }
    let values = names
        .iter()
        .map(|n| scope.lookup(n).unwrap_or_else(|| "<unset>".into()))
        .collect();
    (plan.images.clone(), values)
}

/// (spec, build args, variables to read, expected images, expected values)
type ScopeCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const SCOPE_CASES: &[ScopeCase] = &[
    // SOURCE_DATE_EPOCH is an automatic ARG, as in BuildKit: unseen until
    // the stage declares it, then the build's epoch.
    (
        "FROM scratch\n",
        &[],
        &["SOURCE_DATE_EPOCH"],
        &[],
        &["<unset>"],
    ),
    (
        "FROM scratch\nARG SOURCE_DATE_EPOCH\n",
        &[],
        &["SOURCE_DATE_EPOCH"],
        &[],
        &["1700000000"],
    ),
    // A global ARG is visible to FROM but not inside the stage.
    (
        "ARG V=12\nFROM debian:$V\n",
        &[],
        &["V"],
        &["debian:12"],
        &["<unset>"],
    ),
    // Re-declaring it inside the stage brings the global value in.
    (
        "ARG V=12\nFROM debian:$V\nARG V\n",
        &[],
        &["V"],
        &["debian:12"],
        &["12"],
    ),
    // A build arg overrides the global default, in FROM and in the stage.
    (
        "ARG V=12\nFROM debian:$V\nARG V\n",
        &[("V", "13")],
        &["V"],
        &["debian:13"],
        &["13"],
    ),
    // A stage default is used when no build arg is given...
    ("FROM a\nARG W=local\n", &[], &["W"], &["a"], &["local"]),
    // ...and the build arg wins over the stage default.
    (
        "FROM a\nARG W=local\n",
        &[("W", "cli")],
        &["W"],
        &["a"],
        &["cli"],
    ),
    // A stage ARG with a default ignores the global default.
    (
        "ARG V=global\nFROM a\nARG V=stage\n",
        &[],
        &["V"],
        &["a"],
        &["stage"],
    ),
    // Automatic platform ARGs: in FROM without declaration, in stages only once declared.
    (
        "FROM img-$TARGETARCH\n",
        &[],
        &["TARGETARCH"],
        &["img-arm64"],
        &["<unset>"],
    ),
    (
        "FROM a\nARG TARGETARCH\nARG TARGETPLATFORM\n",
        &[],
        &["TARGETARCH", "TARGETPLATFORM"],
        &["a"],
        &["arm64", "linux/arm64"],
    ),
    // A build arg overrides an automatic ARG.
    (
        "FROM img-$TARGETARCH\n",
        &[("TARGETARCH", "riscv64")],
        &[],
        &["img-riscv64"],
        &[],
    ),
    // Global defaults may use earlier globals and automatic ARGs.
    (
        "ARG A=x\nARG B=${A}-${TARGETARCH}\nFROM $B\n",
        &[],
        &[],
        &["x-arm64"],
        &[],
    ),
    // A build arg no global ARG declares does not reach FROM.
    (
        "FROM img${NOTDECLARED:-default}\n",
        &[("NOTDECLARED", "x")],
        &[],
        &["imgdefault"],
        &[],
    ),
    // ENV shadows an earlier ARG; a later ARG shadows ENV; values in one ENV see the old scope.
    (
        "FROM a\nARG X=arg\nENV X=env Y=$X\n",
        &[],
        &["X", "Y"],
        &["a"],
        &["env", "arg"],
    ),
    (
        "FROM a\nENV X=env\nARG X=arg\n",
        &[],
        &["X"],
        &["a"],
        &["arg"],
    ),
    // ARGs do not cross stages.
    (
        "FROM a AS one\nARG Z=1\nFROM one\n",
        &[],
        &["Z"],
        &["a"],
        &["<unset>"],
    ),
    // An ARG default can use an earlier stage ARG.
    (
        "FROM a\nARG P=/opt\nARG Q=$P/bin\n",
        &[],
        &["Q"],
        &["a"],
        &["/opt/bin"],
    ),
];

#[test]
fn arg_scoping_table() {
    for (text, args, names, images, values) in SCOPE_CASES {
        let (got_images, got_values) = stage_vars(text, args, names);
        assert_eq!(got_images, *images, "images of {text:?} with {args:?}");
        assert_eq!(
            got_values, *values,
            "values of {names:?} in {text:?} with {args:?}"
        );
    }
}

#[test]
fn env_is_inherited_from_a_base_stage_but_args_are_not() {
    let text = "FROM a AS base\nENV E=1\nARG G=2\nFROM base\nCOPY --from=${E}${G} / /\n";
    let file = dockerfile::parse("Dockerfile", text).unwrap();
    let err = plan::plan(&file, &PlanRequest::default())
        .unwrap_err()
        .to_string();
    // E expands to 1, G is unset: --from=1 names the stage itself, a cycle.
    assert!(
        err.contains("circular dependency detected on stage: 1"),
        "{err}"
    );
}

#[test]
fn parser_survives_every_prefix_of_a_real_file() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/plan/kairos-ubuntu.Dockerfile"
    ))
    .unwrap();
    for end in (0..text.len()).filter(|i| text.is_char_boundary(*i)) {
        let _ = dockerfile::parse("Dockerfile", &text[..end]);
    }
}

#[test]
fn case_count_meets_the_bar() {
    let total = PARSE_CASES.len() + EXPAND_CASES.len() + SCOPE_CASES.len();
    assert!(total >= 80, "only {total} table cases");
}
