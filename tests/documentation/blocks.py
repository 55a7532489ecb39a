"""The documentation's shell sessions, read and run as a reader would type them.

A ```` ```console ```` block is a session: ``$ COMMAND`` lines (a line ending in ``\\`` goes
on on the next, a here-document to its end marker), each followed by the output the reader
should see. Every block of a page runs in one shell, in order (exports and files carry over,
as in the reader's terminal), and every output line shown must be among what its command
printed (``...`` stands for anything: a time, a run id). A command must exit 0; one that is
meant to fail shows it (``...; echo "exit $?"``).

A command ending in ``&`` starts a server in the background (the fake API): its output goes to
a file of its own, and the next command waits (bounded) until its port answers and it has
printed its first line.

Blocks that cannot run here are fenced as something else, and a how-to's shell blocks that do
not run say why in their title (```` ```sh title="not run: ..." ````).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```(\S*)([^\n]*)\n(.*?)^```$", re.M | re.S)


@dataclass
class Command:
    line: str  # as shown, continuation lines joined with their backslashes
    expected: list[str] = field(default_factory=list)

    @property
    def background(self) -> bool:
        return self.line.rstrip().endswith("&")


def fences(text: str) -> list[tuple[str, str, str]]:
    """(language, the rest of the info string, body) of every fenced block."""
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(text)]


def sessions(text: str) -> list[Command]:
    """The commands of every ``console`` block of a page, in order."""
    commands: list[Command] = []
    for language, _, body in fences(text):
        if language != "console":
            continue
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                parts = [line[2:]]
                while parts[-1].endswith("\\") and i + 1 < len(lines):
                    i += 1
                    parts.append(lines[i])
                heredoc = re.search(r"<<-?'?(\w+)'?", parts[0])
                while heredoc and parts[-1] != heredoc.group(1) and i + 1 < len(lines):
                    i += 1  # a here-document's lines are the command's, to its end marker
                    parts.append(lines[i])
                commands.append(Command("\n".join(parts)))
            elif line.strip():
                if not commands:
                    raise ValueError(f"output before any command: {line!r}")
                commands[-1].expected.append(line.rstrip())
            i += 1
    return commands


def matches(expected: str, output: str) -> bool:
    """Whether a line shown is among the lines printed (``...``: anything)."""
    pattern = ".*".join(re.escape(part.strip()) for part in expected.split("..."))
    return any(re.search(pattern, line) for line in output.splitlines())


@dataclass
class Ran:
    command: Command
    output: str
    code: int | None  # None: not reached


def script(commands: list[Command], port: int | None) -> str:
    """One bash script: each command between markers, its exit code after it."""
    out = ["trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for n, command in enumerate(commands):
        out.append(f"echo '@@@ start {n}'")
        if command.background:
            out.append(f"{command.line.rstrip()[:-1].rstrip()} > .background-{n}.log 2>&1 &")
            if port is not None:
                # Bounded: 30 s at most for the server to answer on its port.
                out.append(
                    "for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"
                    f"{port}) 2>/dev/null && break; sleep 0.1; done"
                )
            # ... and has said so (it prints once it listens: a moment after the port answers).
            out.append(
                f"for _ in $(seq 100); do [ -s .background-{n}.log ] && break; sleep 0.1; done"
            )
            out.append(f"cat .background-{n}.log")
        else:
            out.append(command.line)
        out.append(f'echo "@@@ exit {n} $?"')
    return "\n".join(out) + "\n"


def run_session(
    commands: list[Command], cwd: Path, env: dict[str, str], timeout: float, port: int | None
) -> list[Ran]:
    done = subprocess.run(
        ["bash", "-c", script(commands, port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    outputs: dict[int, list[str]] = {}
    codes: dict[int, int] = {}
    current: int | None = None
    for line in done.stdout.splitlines():
        if started := re.fullmatch(r"@@@ start (\d+)", line):
            current = int(started.group(1))
            outputs[current] = []
        elif ended := re.fullmatch(r"@@@ exit (\d+) (\d+)", line):
            codes[int(ended.group(1))] = int(ended.group(2))
        elif current is not None:
            outputs[current].append(line)
    return [Ran(c, "\n".join(outputs.get(n, [])), codes.get(n)) for n, c in enumerate(commands)]
