"""The README's command blocks print what the README shows (tests/readme/checker.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.readme import checker

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_command_block_of_the_readme_prints_what_it_shows():
    if checker.namespace_prefix() is None:
        pytest.skip("needs a private network namespace (unshare --net, root) for the fixed ports")
    problems, _notes = checker.check(README)
    assert problems == []


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(text)
    return path


@pytest.fixture
def namespace():
    if checker.namespace_prefix() is None:
        pytest.skip("needs a private network namespace (unshare --net, root)")


def test_a_wrong_line_exit_code_or_extra_output_is_found(tmp_path, namespace):
    readme = write(
        tmp_path,
        "```console\n$ echo one 1\none 7\n$ false\n$ echo $?\n0\n$ echo more\n```\n",
    )
    problems, _ = checker.check(readme)
    assert len(problems) == 2, problems
    assert "'0'" in problems[0] and "'1'" in problems[0]  # exit codes are compared exactly
    assert "'more'" in problems[1]  # printed, not shown


def test_background_lines_float_and_directives_apply(tmp_path, namespace):
    readme = write(
        tmp_path,
        "```console\n$ (sleep 0.2; echo late 5) &\n$ echo now\nnow\nlate 6\n$ wait\n```\n\n"
        "<!-- readme-check: skip two hosts -->\n```sh\nexit 1\n```\n\n"
        "<!-- readme-check: needs no-such-tool-here -->\n```console\n$ no-such-tool-here\nx\n```\n"
        "<!-- readme-check: varies timing -->\n```console\n$ echo a; echo $RANDOM\na\nb\n```\n",
    )
    problems, notes = checker.check(readme)
    assert problems == []
    assert any("two hosts" in n for n in notes)
    assert any("no-such-tool-here" in n for n in notes)


def test_a_background_line_the_readme_does_not_show_is_found(tmp_path, namespace):
    readme = write(tmp_path, "```console\n$ echo hidden &\n$ wait\n```\n")
    problems, _ = checker.check(readme)
    assert len(problems) == 1 and "hidden" in problems[0]


def test_normalise_keeps_words_and_drops_numbers():
    assert checker.normalise("sent 5.0 MB in 0.169 s, 38.6 MB/s") == checker.normalise(
        "sent 5.0 MB in 1.2 s, 900.1 kB/s"
    )
    assert checker.normalise("|-- data seq=1 ------>|") == checker.normalise(
        "|-- data seq=12345 -->|"
    )
    assert checker.normalise("conn 6c63bbf5") == checker.normalise("conn 04bb5986")
    assert checker.normalise("lost") != checker.normalise("sent")


def _alive(pid: int) -> bool:
    """pid runs (a zombie, killed and waiting for its reaper, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_dead(pid: int, deadline_s: float = 30.0) -> bool:
    end = time.monotonic() + deadline_s
    while _alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_a_hung_block_is_named_and_everything_the_run_started_is_killed(
    tmp_path, namespace, monkeypatch
):
    # a daemon in a session of its own (outside the run's process group), then a foreground
    # command that never ends, as a `rtcp recv` without `&` would
    monkeypatch.setattr(checker, "RUN_TIMEOUT_S", 3)
    daemon, foreground = tmp_path / "daemon.pid", tmp_path / "foreground.pid"
    readme = write(
        tmp_path,
        "Intro.\n\n```console\n$ echo ready\nready\n```\n\n"
        f"```console\n$ sh -c 'echo $$ > {daemon}; exec setsid sleep 1000' &\n"
        f"$ sh -c 'while [ ! -s {daemon} ]; do sleep 0.01; done; echo $$ > {foreground}; "
        "exec sleep 1000'\n```\n",
    )
    problems, _ = checker.check(readme)
    assert len(problems) == 1, problems
    assert problems[0].startswith("README block at line 8, `sh -c 'while"), problems
    assert "did not finish within 3 s" in problems[0]
    for pidfile in (daemon, foreground):
        pid = int(pidfile.read_text())
        assert _wait_dead(pid), f"{pidfile.name}: process {pid} survived the run"
