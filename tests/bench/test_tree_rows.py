"""The tree rows' summary: files per second and MB/s, rtcp beside tar over kernel TCP."""

from __future__ import annotations

from rtcp.bench import tree_rows


def test_the_summary_gives_files_per_second_and_the_ratio_to_tar() -> None:
    rows = [
        {"name": "tree-2000x4KiB-rtcp", "files_per_s": 500.0, "goodput_bytes_per_s": 2048000.0},
        {"name": "tree-2000x4KiB-tar-tcp", "files_per_s": 1000.0, "goodput_bytes_per_s": 4096000.0},
        {"name": "tree-20x4MiB-rtcp", "files_per_s": None, "goodput_bytes_per_s": None},
    ]
    expected = (
        "tree of 2000 files of 4 KiB: rtcp 500 files/s (2.05 MB/s), tar over TCP 1,000 files/s"
        " (4.10 MB/s) = 0.50 x tar"
    )
    assert tree_rows.summary_lines(rows) == [expected]
    assert tree_rows.summary_lines([]) == []
