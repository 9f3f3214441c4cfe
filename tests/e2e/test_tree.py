"""End to end: `rtcp send A B DIR/` and `rtcp send -` (format version 2) to a real `rtcp recv`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

from tests.e2e.conftest import RTCP, make_file, needs_proxy, send


def send_many(port: int, *args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RTCP, "send", *map(str, args), "--to", f"127.0.0.1:{port}"],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )


def tree_of(root) -> dict[str, bytes | None]:
    """Every path under root: a file's bytes, None for a folder."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = Path(p).read_bytes()
    return out


def test_a_tree_with_empty_files_and_folders_arrives_whole(receiver, tmp_path):
    recv, port, out = receiver()
    src = tmp_path / "src" / "photos"
    (src / "2024" / "june").mkdir(parents=True)
    (src / "empty-folder").mkdir()
    (src / "empty.txt").write_bytes(b"")
    make_file(src / "2024" / "june" / "big.bin", 1_500_000)  # asks for an offer
    make_file(src / "2024" / "small.bin", 5000, seed=2)
    (src / "link").symlink_to(src / "empty.txt")
    single = make_file(tmp_path / "notes.txt", 100, seed=3)
    res = send_many(port, src, single, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] is True and report["files"] == 4 and report["failures"] == []
    assert b"skipped the symlink" in res.stderr
    expected = tree_of(tmp_path / "src")
    del expected["photos/link"]
    expected["notes.txt"] = single.read_bytes()
    assert tree_of(out) == expected
    for entry in report["results"]:
        if entry["path"].endswith("big.bin"):
            data = (out / "photos/2024/june/big.bin").read_bytes()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["verified"]
    recv.wait_line(r"received 8 entries from .*: all 8 verified")
    for rel in ("photos", "photos/2024", "photos/2024/june/big.bin", "photos/empty.txt"):
        # the sender's times, as rsync -a keeps them
        assert (out / rel).stat().st_mtime_ns == (tmp_path / "src" / rel).stat().st_mtime_ns, rel


def test_a_thousand_small_files_cross_one_connection(receiver, tmp_path):
    recv, port, out = receiver()
    src = tmp_path / "many"
    src.mkdir()
    for i in range(1000):
        (src / f"f{i:04}.txt").write_bytes(f"file {i}\n".encode() * 50)
    res = send_many(port, src, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified_entries"] == 1001
    assert tree_of(out / "many") == tree_of(src)
    summary = recv.wait_line(r"received 1001 entries from (\S+) in")
    lines = [ln for ln in recv.stdout.splitlines() if ln.startswith("received '")]
    peers = {re.search(r" from (\S+) in ", ln).group(1) for ln in lines}
    assert len(lines) == 1000 and peers == {summary.group(1)}  # one connection, one handshake


def test_refused_entries_are_reported_and_the_rest_goes_on(receiver, tmp_path):
    _recv, port, out = receiver()
    src = tmp_path / "d"
    src.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (src / name).write_bytes(name.encode())
    (out / "d").mkdir(parents=True)
    (out / "d" / "b.txt").write_bytes(b"precious")
    res = send_many(port, src, "--json")
    assert res.returncode == 6, res.stderr  # the first failure's exit code: file exists
    report = json.loads(res.stdout)
    assert [f["path"] for f in report["failures"]] == ["d/b.txt"]
    assert "exists" in report["failures"][0]["error"]
    assert (out / "d" / "b.txt").read_bytes() == b"precious"
    assert (out / "d" / "a.txt").read_bytes() == b"a.txt"
    assert (out / "d" / "c.txt").read_bytes() == b"c.txt"
    human = send_many(port, src)
    assert b"verified     0 of 3 files" in human.stdout
    assert b"d/b.txt: the receiver refused: file exists" in human.stdout
    assert human.stderr.count(b"rtcp: error:") == 1


def test_a_bad_name_in_the_middle_of_a_tree_is_refused_alone(receiver, tmp_path, monkeypatch):
    """A sender that does not check its paths (ours does): the receiver refuses the bad one,
    creates nothing outside --out, and stores the others."""
    from rtcp.transfer import records as rec
    from rtcp.transfer.tree import Entry, send_tree

    _recv, port, out = receiver()
    files = [make_file(tmp_path / n, 2000, seed=i) for i, n in enumerate(("a", "evil", "b"))]
    entries = [
        Entry("file", "a.txt", str(files[0]), 2000),
        Entry("file", "../escaped.txt", str(files[1]), 2000),
        Entry("file", "b.txt", str(files[2]), 2000),
    ]
    monkeypatch.setattr(rec, "validate_path", lambda path: path)  # this sender's side only
    result = send_tree(entries, "127.0.0.1", port, timeout_s=20.0)
    assert [r.verified for r in result.results] == [True, False, True]
    assert "'..' segment" in result.results[1].error
    assert result.exit_code == 8
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(os.listdir(out)) == ["a.txt", "b.txt"]


def test_stdin_of_unknown_size_arrives_verified(receiver, tmp_path):
    _recv, port, out = receiver()
    data = os.urandom(700_000)
    res = send_many(port, "-", "--name", "piped.bin", "--json", stdin=data)
    assert res.returncode == 0, res.stderr
    (entry,) = json.loads(res.stdout)["results"]
    assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert (out / "piped.bin").read_bytes() == data


def test_stdin_needs_a_name_and_a_name_needs_stdin(receiver, tmp_path):
    _recv, port, _out = receiver()
    res = send_many(port, "-", stdin=b"x")
    assert res.returncode == 2 and b"--name" in res.stderr
    res = send(make_file(tmp_path / "f", 10), port, "--name", "x")
    assert res.returncode == 2 and "--name" in res.stderr


def _partials(out) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.startswith(".rtcp-tmp-partial-"))


def _interrupt_at_60_percent(src_dir, big, pport, out) -> None:
    """Start sending src_dir through the proxy, stop the sender (SIGTERM: it resets the
    connection) once the receiver holds 60% of big, and wait for the partial it keeps."""
    from tests.e2e.conftest import Proc, wait_for

    size = big.stat().st_size
    sender = Proc(["send", str(src_dir), "--to", f"127.0.0.1:{pport}", "--quiet"])
    try:

        def held() -> bool:
            names = [n for n in os.listdir(out) if n.startswith(".rtcp-tmp-")]
            return any((out / n).stat().st_size >= 0.6 * size for n in names)

        wait_for(held, 30, "60% of the file at the receiver")
        sender.signal(signal.SIGTERM)
        assert sender.wait(15) == 130
    finally:
        sender.stop()


@needs_proxy
def test_resume_sends_only_the_rest_and_a_changed_file_starts_over(receiver, proxy, tmp_path):
    from tests.e2e.conftest import wait_for

    recv, port, out = receiver()
    _proxy, pport = proxy(port, "--rate", "40mbit", "--loss", "1%", "--seed", "5")
    src = tmp_path / "d"
    src.mkdir()
    big = make_file(src / "big.bin", 8 * 1024 * 1024)
    size = big.stat().st_size
    _interrupt_at_60_percent(src, big, pport, out)
    wait_for(lambda: len(_partials(out)) == 2, 15, "the partial and its sidecar")
    assert not (out / "d" / "big.bin").exists()

    res = send_many(port, src, "--json")  # straight to the receiver: the rest only
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    (entry,) = [r for r in report["results"] if r["path"] == "d/big.bin"]
    assert entry["verified"] and entry["resumed_from"] >= 0.5 * size
    assert report["stats"]["data_bytes_sent"] < 0.45 * size
    assert (out / "d" / "big.bin").read_bytes() == big.read_bytes()
    assert _partials(out) == []

    # the same path and mtime, other first bytes: the prefix does not match, all is sent again
    (out / "d" / "big.bin").unlink()
    _interrupt_at_60_percent(src, big, pport, out)
    wait_for(lambda: len(_partials(out)) == 2, 15, "the partial and its sidecar")
    stamp = big.stat().st_mtime_ns
    with open(big, "r+b") as f:
        f.write(b"changed!")
    os.utime(big, ns=(stamp, stamp))
    res = send_many(port, src, "--json")
    assert res.returncode == 0, res.stderr
    assert b"changed since the partial on the receiver: starting over" in res.stderr
    report = json.loads(res.stdout)
    assert report["stats"]["data_bytes_sent"] >= size
    assert (out / "d" / "big.bin").read_bytes() == big.read_bytes()
    assert _partials(out) == []
    recv.stop()


@needs_proxy
def test_resume_after_the_receiver_restarted(receiver, proxy, tmp_path):
    from tests.e2e.conftest import Proc, wait_for

    recv, port, out = receiver()
    _proxy, pport = proxy(port, "--rate", "40mbit")
    src = tmp_path / "d"
    src.mkdir()
    big = make_file(src / "big.bin", 8 * 1024 * 1024, seed=4)
    size = big.stat().st_size
    sender = Proc(["send", str(src), "--to", f"127.0.0.1:{pport}", "--quiet", "--timeout", "5s"])
    try:

        def held() -> bool:
            names = [n for n in os.listdir(out) if n.startswith(".rtcp-tmp-")]
            return any((out / n).stat().st_size >= 0.6 * size for n in names)

        wait_for(held, 30, "60% of the file at the receiver")
        recv.signal(signal.SIGTERM)  # a clean shutdown keeps the partial
        assert recv.wait(15) == 0
        assert sender.wait(20) != 0
    finally:
        sender.stop()
    assert len(_partials(out)) == 2
    _recv2, port2, _ = receiver(out=out)  # the new receiver keeps it (younger than 24 h)
    res = send_many(port2, src, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["stats"]["data_bytes_sent"] < 0.45 * size
    assert (out / "d" / "big.bin").read_bytes() == big.read_bytes()


def test_old_partials_are_removed_at_start(receiver, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for suffix in (".part", ".json"):
        (out / f".rtcp-tmp-partial-0123{suffix}").write_bytes(b"{}")
        os.utime(out / f".rtcp-tmp-partial-0123{suffix}", (1000, 1000))
    receiver("--partial-max-age", "1h", out=out)
    assert _partials(out) == []


def test_partials_beyond_the_byte_bound_are_removed_at_start(receiver, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for key, size in (("0123", 3000), ("4567", 1000)):  # the first is the older
        (out / f".rtcp-tmp-partial-{key}.part").write_bytes(b"x" * size)
        (out / f".rtcp-tmp-partial-{key}.json").write_bytes(b"{}")
    os.utime(out / ".rtcp-tmp-partial-0123.json", (1000, 1000))
    receiver("--partial-max-bytes", "3KiB", out=out)
    assert _partials(out) == [".rtcp-tmp-partial-4567.json", ".rtcp-tmp-partial-4567.part"]


def test_parallel_connections_share_the_files_and_the_receiver_limits_hold(receiver, tmp_path):
    src = tmp_path / "p"
    src.mkdir()
    for i in range(30):
        make_file(src / f"f{i:02}.bin", 3000 + 1000 * i, seed=i)
    recv, port, out = receiver()
    res = send_many(port, src, "--parallel", "3", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["handshakes"] == 3 and report["verified_entries"] == 31
    assert [r["path"] for r in report["results"]] == ["p/"] + [f"p/f{i:02}.bin" for i in range(30)]
    assert tree_of(out / "p") == tree_of(src)
    for _ in range(3):
        recv.wait_line(r"received \d+ entr(y|ies) from .*: all \d+ verified")

    _recv2, port2, out2 = receiver("--max-per-source", "2", out=tmp_path / "out2")
    res = send_many(port2, src, "--parallel", "3", "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 8, res.stderr  # one connection refused by the receiver's limit
    failed = report["failures"]
    assert failed and all("connections per source" in f["error"] for f in failed)
    stored = [r["path"] for r in report["results"] if r["verified"] and r["kind"] == "file"]
    assert len(stored) + len(failed) in (30, 31)  # the folder fails with its connection
    for path in stored:
        assert (out2 / path).read_bytes() == (tmp_path / path).read_bytes()


def test_recv_once_waits_for_the_whole_tree(receiver, tmp_path):
    src = tmp_path / "t"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.txt").write_bytes(b"x" * i)
    recv, port, out = receiver("--once")
    res = send_many(port, src)
    assert res.returncode == 0, res.stderr
    assert recv.wait(15) == 0
    assert sorted(os.listdir(out / "t")) == ["0.txt", "1.txt", "2.txt"]
