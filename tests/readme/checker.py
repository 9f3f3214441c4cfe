"""Run every shell block of the README as pasted and check that it prints what the README shows.

    python -m tests.readme.checker [README.md]     (or: make readme-check)

Blocks: a fenced block in `console` is a session transcript: `$ ` starts a command (a line
ending in `\\` continues it), every other line is what the commands print. A block in `sh`
holds commands only. Every block runs, in the README's order, in one bash session in a fresh
temporary folder with the folder of this Python's `rtcp` first on PATH, inside a private
network namespace (so that the README's fixed ports cannot meet another process's). When the
run ends, or hangs for RUN_TIMEOUT_S (the failure then names the block and command it hung in),
every process it started is killed: its process group and every process in its namespace.

Comparison, "numbers aside": hexadecimal ids and hashes, numbers (a comma-separated list of
them counts as one), SI prefixes of sizes and
rates (kB/s or MB/s), and runs of spaces or dashes are normalised before lines are compared (a ladder's arrows stretch with its numbers). The
output of `echo $?` is compared exactly: exit codes are not numbers aside. A command that ends
in `&` runs as a background job, as in a terminal; since a terminal interleaves a job's lines
at unpredictable points, each of its lines must appear somewhere in the README after the
command that started it, while the lines of the foreground commands must appear in order.

HTML comments on the lines before a block's fence change how it is checked:

    <!-- readme-check: skip REASON -->     not run (REASON says why: two hosts, installs...)
    <!-- readme-check: needs TOOL -->      skipped with that reason when TOOL is not on PATH
    <!-- readme-check: varies REASON -->   run; only the first line of each command's output
                                           and its exit status are compared (REASON: what
                                           varies from run to run, e.g. a loss pattern that
                                           depends on timing)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DIRECTIVE = re.compile(r"^<!--\s*readme-check:\s*(skip|needs|varies)\b\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_LANGS = {"console", "sh", "shell", "bash"}
MARK = "\x02rtcp-readme-check"
BG_TAG = "\x01bg"
# The whole README must run within this (a generous bound: it takes seconds).
RUN_TIMEOUT_S = 300
# After a kill: how long the run's processes may take to die and close the output pipe.
KILL_WAIT_S = 10
# The script's first line records its network namespace here (in the run's folder), so that the
# cleanup also finds a process that left the run's process group (setsid, a daemon).
NAMESPACE_FILE = ".readme-check.netns"


@dataclass
class Command:
    text: str  # the command as pasted (continuation lines joined with their backslashes)
    expected: list[str] = field(default_factory=list)  # the lines the README shows after it
    background: bool = False


@dataclass
class Block:
    line: int  # 1-based line of the opening fence in the README
    lang: str
    directives: dict[str, str]  # skip / needs / varies -> its text
    commands: list[Command]
    leading: list[str]  # output lines shown before the first command (of earlier jobs)

    @property
    def skip_reason(self) -> str | None:
        if "skip" in self.directives:
            return self.directives["skip"]
        tool = self.directives.get("needs")
        if tool is not None and shutil.which(tool.split()[0]) is None:
            return f"needs {tool}, not installed"
        return None


def parse(text: str) -> list[Block]:
    """The README's shell blocks, with their directives."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        body = lines[i + 1 : j]
        i = j + 1
        if lang not in SHELL_LANGS:
            continue
        directives: dict[str, str] = {}
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        while k >= 0 and (d := DIRECTIVE.match(lines[k].strip())):
            directives[d.group(1)] = d.group(2)
            k -= 1
        blocks.append(_block(start + 1, lang, directives, body))
    return blocks


def _block(line: int, lang: str, directives: dict[str, str], body: list[str]) -> Block:
    commands: list[Command] = []
    leading: list[str] = []
    pending: list[str] | None = None  # a command being continued
    for raw in body:
        if pending is not None:
            pending.append(raw)
            if not raw.endswith("\\"):
                commands.append(_command("\n".join(pending)))
                pending = None
            continue
        if lang == "console" and not raw.startswith("$ "):
            (commands[-1].expected if commands else leading).append(raw)
            continue
        text = raw[2:] if lang == "console" else raw
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if text.endswith("\\"):
            pending = [text]
        else:
            commands.append(_command(text))
    if pending is not None:
        commands.append(_command("\n".join(pending)))
    return Block(line, lang, directives, commands, leading)


def _command(text: str) -> Command:
    stripped = text.rstrip()
    background = stripped.endswith("&") and not stripped.endswith("&&")
    return Command(stripped, background=background)


# --- normalising -----------------------------------------------------------------------

_HEX = re.compile(r"\b[0-9a-f]{8,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DASHES = re.compile(r"-{2,}")
_SPACES = re.compile(r"\s+")
_SI_PREFIX = re.compile(r"\b[kMG](?=B/s\b|B\b)")  # 900 kB/s and 1.2 MB/s are one shape


_NUMBER_LIST = re.compile(r"#(?:,#)+")


def normalise(line: str) -> str:
    line = _HEX.sub("#", line)
    line = _SI_PREFIX.sub("", line)
    line = _NUMBER.sub("#", line)
    line = _NUMBER_LIST.sub("#", line)  # 3 SACK blocks or 2: a list of numbers is numbers
    line = _DASHES.sub("-", line)
    return _SPACES.sub(" ", line).strip()


# --- running ---------------------------------------------------------------------------


def script(blocks: list[Block]) -> str:
    """One bash script for the blocks that run: a marker before each command."""
    out = ["exec 2>&1", "set +e", f"readlink /proc/self/ns/net > {NAMESPACE_FILE}"]
    job = 0
    for b, block in enumerate(blocks):
        if block.skip_reason is not None:
            continue
        for c, command in enumerate(block.commands):
            # the marker keeps $? for a following `echo $?`; `jobs` forgets finished jobs as
            # an interactive shell does before each prompt (job numbers are then reused)
            out.append(
                f"__rc=$?; jobs >/dev/null; printf '\\n{MARK} {b} {c}\\n'; (exit $__rc)"
            )
            if command.background:
                job += 1
                body = command.text.rstrip()[:-1].rstrip()
                # the job's lines, tagged, so that they may float (see the module docstring)
                out.append(f"{body} > >(sed -u 's/^/{BG_TAG}{b}.{c} /') 2>&1 &")
            else:
                out.append(command.text)
    out.append(f"printf '\\n{MARK} end\\n'")
    out.append("kill $(jobs -p) 2>/dev/null; wait")
    return "\n".join(out) + "\n"


def namespace_prefix() -> list[str] | None:
    """Run in a private network namespace (a loopback of its own), or None where we cannot."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    probe = subprocess.run(
        ["unshare", "--net", "ip", "link", "set", "lo", "up"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return None
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec bash "$0"']


class Hung(Exception):
    """The run did not finish within RUN_TIMEOUT_S; `where` names the command it was in."""

    def __init__(self, where: str, output: str):
        super().__init__(where)
        self.where = where
        self.output = output


def run(blocks: list[Block], workdir: Path, prefix: list[str]) -> str:
    """The script's output. Whatever happens (the run ends, hangs, or this process is
    interrupted), every process the run started is killed before this returns: its process
    group and, since a block may start a daemon in a session of its own, every process in its
    network namespace. A run that does not finish in RUN_TIMEOUT_S raises Hung."""
    path = workdir / ".readme-check.sh"
    path.write_text(script(blocks))
    ns_file = workdir / NAMESPACE_FILE
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("COLUMNS", None)
    env["NO_COLOR"] = "1"
    proc = subprocess.Popen(
        [*prefix, str(path)] if prefix else ["bash", str(path)],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, killed as one
    )
    try:
        try:
            out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_run(proc, ns_file)
            try:  # the pipe closes once its last writer is dead
                out, _ = proc.communicate(timeout=KILL_WAIT_S)
            except subprocess.TimeoutExpired as still:
                out = still.output or b""
            text = out.decode("utf-8", "replace")
            raise Hung(_hung_where(blocks, text), text) from None
        return out.decode("utf-8", "replace")
    finally:
        _kill_run(proc, ns_file)
        path.unlink(missing_ok=True)
        ns_file.unlink(missing_ok=True)


def _kill_run(proc: subprocess.Popen, ns_file: Path) -> None:
    """SIGKILL the run's process group and every process in its private network namespace."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        namespace = ns_file.read_text().strip()
    except FileNotFoundError:
        namespace = ""
    if namespace and namespace != os.readlink("/proc/self/ns/net"):
        for pid in _pids_in_namespace(namespace):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_WAIT_S)


def _pids_in_namespace(namespace: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "net") == namespace:
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def _hung_where(blocks: list[Block], output: str) -> str:
    """The command that was running when the run was stopped (the last marker printed)."""
    last = None
    for line in output.splitlines():
        if line.startswith(MARK):
            fields = line.split()
            last = None if fields[1] == "end" else (int(fields[1]), int(fields[2]))
    if last is None:
        return "the README's run (before its first command)"
    block = blocks[last[0]]
    command = block.commands[last[1]].text.splitlines()[0]
    return f"README block at line {block.line}, `{command}`"


# --- comparing -------------------------------------------------------------------------


@dataclass
class Actual:
    foreground: dict[tuple[int, int], list[str]]  # (block, command) -> its lines
    background: list[tuple[tuple[int, int], str]]  # (block, command that started it), line


# Lines the environment adds and the README cannot show: tshark's warning when run as root.
_ENVIRONMENT_LINES = re.compile(r'^Running as user "root" and group "root"\. This could be dangerous\.$')


def split_output(output: str) -> Actual:
    foreground: dict[tuple[int, int], list[str]] = {}
    background: list[tuple[tuple[int, int], str]] = []
    key: tuple[int, int] | None = None
    for line in output.splitlines():
        if BG_TAG in line:
            before, _, rest = line.partition(BG_TAG)
            origin, _, text = rest.partition(" ")
            b, c = origin.split(".")
            background.append(((int(b), int(c)), text))
            line = before
            if not line:
                continue
        if line.startswith(MARK):
            fields = line.split()
            key = None if fields[1] == "end" else (int(fields[1]), int(fields[2]))
            if key is not None:
                foreground.setdefault(key, [])
            continue
        if key is None or _ENVIRONMENT_LINES.match(line):
            continue
        foreground[key].append(line)
    for lines in foreground.values():  # each marker starts with a newline of its own
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
    return Actual(foreground, background)


def compare(blocks: list[Block], actual: Actual) -> list[str]:
    """Every difference, as one message each (empty: the README is true)."""
    problems: list[str] = []
    floating = list(actual.background)  # background lines not matched yet
    for b, block in enumerate(blocks):
        if block.skip_reason is not None:
            continue
        expected_leading = block.leading
        for line in expected_leading:
            if not _take_background(floating, (b, -1), line):
                problems.append(f"README line {block.line}: no job printed {line!r}")
        for c, command in enumerate(block.commands):
            got = actual.foreground.get((b, c))
            where = f"README block at line {block.line}, `{command.text.splitlines()[0]}`"
            if got is None:
                problems.append(f"{where}: did not run")
                continue
            if "varies" in block.directives:
                problems += _compare_loosely(where, command, got, floating, (b, c))
                continue
            problems += _compare_in_order(where, command, got, floating, (b, c))
    for origin, line in floating:
        problems.append(
            f"a background job (block {origin[0]}, command {origin[1]}) printed {line!r}, "
            "which the README does not show"
        )
    return problems


def _exact(command: Command) -> bool:
    return command.text.strip() == "echo $?"


def _same(command: Command, expected: str, got: str) -> bool:
    if _exact(command):
        return expected.strip() == got.strip()
    return normalise(expected) == normalise(got)


def _take_background(floating, after: tuple[int, int], line: str) -> bool:
    for i, (origin, text) in enumerate(floating):
        if origin <= after and normalise(text) == normalise(line):
            del floating[i]
            return True
    return False


def _compare_in_order(where, command: Command, got: list[str], floating, here) -> list[str]:
    problems = []
    g = 0
    for line in command.expected:
        if g < len(got) and _same(command, line, got[g]):
            g += 1
        elif _take_background(floating, here, line):
            continue
        else:
            shown = got[g] if g < len(got) else "(nothing more)"
            problems.append(f"{where}: the README shows {line!r}, the command printed {shown!r}")
            return problems
    if g < len(got):
        problems.append(f"{where}: printed {got[g]!r} (and more), which the README does not show")
    return problems


def _compare_loosely(where, command: Command, got: list[str], floating, here) -> list[str]:
    """`varies`: the lines of background jobs as usual, then the first line of the command's
    own output only."""
    own = [line for line in command.expected if not _take_background(floating, here, line)]
    if not own:
        return [] if not got else [f"{where}: printed {got[0]!r}; the README shows nothing"]
    if not got or not _same(command, own[0], got[0]):
        return [f"{where}: first line {got[:1]!r}, the README shows {own[0]!r}"]
    return []


def check(readme: Path) -> tuple[list[str], list[str]]:
    """(problems, skipped-block notes) for a README."""
    blocks = parse(readme.read_text(encoding="utf-8"))
    notes = [
        f"line {block.line}: skipped: {block.skip_reason}"
        for block in blocks
        if block.skip_reason is not None
    ]
    prefix = namespace_prefix()
    if prefix is None:
        raise RuntimeError("needs a private network namespace (unshare --net: root) for the "
                           "README's fixed ports")
    with tempfile.TemporaryDirectory(prefix="rtcp-readme-") as tmp:
        workdir = Path(tmp)
        contrib = readme.parent / "contrib"
        if contrib.is_dir():  # the README's commands refer to contrib/ as in a clone
            shutil.copytree(contrib, workdir / "contrib")
        try:
            output = run(blocks, workdir, prefix)
        except Hung as hung:
            message = (f"{hung.where}: did not finish within {RUN_TIMEOUT_S} s (every "
                       "process the run started was killed)")
            return [message], notes
    return compare(blocks, split_output(output)), notes


def main(argv: list[str]) -> int:
    readme = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2] / "README.md"
    try:
        problems, notes = check(readme)
    except RuntimeError as exc:
        print(f"readme-check: cannot run: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"readme-check: {note}")
    for problem in problems:
        print(f"readme-check: {problem}")
    print(f"readme-check: {'OK' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
