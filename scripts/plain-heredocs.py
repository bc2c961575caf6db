#!/usr/bin/env python3
"""Writes images/Dockerfile.debian with every `RUN <<EOF ... EOF` turned
into a plain RUN that decodes the same script (base64) and runs it with
sh, for peers without heredocs (Debian 12's buildah 1.28). Used by
scripts/bench-iso.sh and scripts/bench-arm64.sh.

usage: scripts/plain-heredocs.py OUT
"""
import base64
import re
import sys


def plain(match):
    script = base64.b64encode(match.group(2).encode()).decode()
    return (
        f"RUN echo {script} | base64 -d > /kbuild-step.sh"
        " && sh /kbuild-step.sh && rm -f /kbuild-step.sh\n"
    )


text = open("images/Dockerfile.debian").read()
text = re.sub(r"RUN <<(\w+)\n(.*?)\n\1\n", plain, text, flags=re.S)
if "RUN <<" in text:
    sys.exit("a heredoc RUN was not converted")
open(sys.argv[1], "w").write(text)
