"""The human summaries of `rtcp send`: what they say of a resumed transfer."""

from __future__ import annotations

from rtcp.transfer.command import summary_text, tree_summary_text
from rtcp.transfer.sender import SendResult
from rtcp.transfer.tree import TreeResult


def test_the_summary_says_how_much_was_on_the_receiver_already():
    result = SendResult(
        file="big.bin", name="big.bin", peer="127.0.0.1:9", bytes=3_000_000,
        resumed_bytes=1_000_000, verified=True, seconds=1.0, goodput_bytes_per_s=2e6,
    )
    lines = summary_text(result).splitlines()
    assert "  resumed      1.0 MB on the receiver already, 2.0 MB sent" in lines
    assert lines.index("  resumed      1.0 MB on the receiver already, 2.0 MB sent") == 2
    result.resumed_bytes = 0
    assert "resumed" not in summary_text(result)
    tree = TreeResult(peer="p", entries=2, files=2, bytes=5_000_000, resumed_bytes=4_000_000)
    assert "  resumed      4.0 MB on the receiver already, 1.0 MB sent" in tree_summary_text(tree)


def test_the_bar_starts_where_a_resume_starts_and_its_rate_counts_this_run():
    import io
    from types import SimpleNamespace

    from tqdm import tqdm

    from rtcp.transfer.command import _advance

    bar = tqdm(total=3_000_000, file=io.StringIO(), mininterval=0)
    app = SimpleNamespace(resumed_bytes=0, file_bytes_done=0)
    _advance(bar, app)
    assert bar.n == 0
    app.resumed_bytes = app.file_bytes_done = 1_000_000  # the offer was taken
    _advance(bar, app)
    assert bar.n == 1_000_000 and bar.initial == 1_000_000  # not bytes sent by this run
    app.file_bytes_done = 1_500_000
    _advance(bar, app)
    assert bar.n == 1_500_000 and bar.initial == 1_000_000
    bar.close()
