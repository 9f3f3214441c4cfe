"""The pure parts of the benchmark: medians, row selection, comparison, the table."""

from __future__ import annotations

import statistics

import pytest

from rtcp.bench import encryption, report, runner
from rtcp.bench.defaults import QUICK_ROWS


def _doc(goodputs: dict[str, float | None], size: int = 1000, ok: bool = True) -> dict:
    rows = []
    relay = goodputs.get("relay-1400") or 100e6  # ratios as the runner takes them: same run
    for name, value in goodputs.items():
        rows.append(
            {
                "name": name,
                "kind": "ceiling" if name.startswith("relay") else "rtcp",
                "ok": ok,
                "runs_completed": 1 if value else 0,
                "runs_requested": 1,
                "errors": [] if value else ["rtcp send failed: timeout"],
                "goodput_bytes_per_s": value,
                "ratio_to_relay": value / relay if value else None,
                "cpu_s_per_mb": {"sender": 0.01, "receiver": 0.02, "proxy": None},
                "peak_rss_bytes": {"sender": 40e6, "receiver": 39e6, "proxy": None},
                "params": {},
            }
        )
    return {
        "schema": report.SCHEMA,
        "timestamp": f"t{size}",
        "git": {"commit": "abc", "dirty": False},
        "machine": {"cpus": 2},
        "config": {
            "size_bytes": size,
            "impaired_size_bytes": size // 8,
            "repeats": 1,
            "relay_row": "relay-1400",
        },
        "duration_s": 1.0,
        "ok": ok,
        "rows": rows,
        "proxy_forwarding": None,
    }


def test_median_tree_takes_each_figure_separately() -> None:
    runs = [
        {"a": 1.0, "cpu": {"sender": 3.0, "proxy": None}, "name": "x"},
        {"a": 5.0, "cpu": {"sender": 1.0, "proxy": None}, "name": "y"},
        {"a": 2.0, "cpu": {"sender": 2.0, "proxy": None}, "name": "z"},
    ]
    assert runner._median_tree(runs) == {
        "a": 2.0,
        "cpu": {"sender": 2.0, "proxy": None},
        "name": "z",
    }
    assert runner._median_tree([]) is None


def test_select_rows_by_name_and_pattern() -> None:
    rows = runner.all_rows()
    names = [r.name for r in runner.select_rows(rows, "relay-1400,rtcp-delay5ms-loss*")]
    assert names[0] == "relay-1400"
    assert "rtcp-delay5ms-loss1pct-mtu1400" in names
    assert all(n == "relay-1400" or n.startswith("rtcp-delay5ms-loss") for n in names)
    assert len(runner.select_rows(rows, "all")) == len(rows)
    with pytest.raises(ValueError, match="nope"):
        runner.select_rows(rows, "nope")


def test_every_issue_row_exists_with_and_without_mtu() -> None:
    names = {r.name for r in runner.all_rows()}
    for base in (
        "rtcp-proxy-clean",
        "rtcp-delay5ms",
        "rtcp-delay5ms-loss1pct",
        "rtcp-delay5ms-loss5pct",
        "rtcp-reorder10pct",
        "rtcp-4senders",
    ):
        assert {base, f"{base}-mtu1400"} <= names
    assert {"relay-1400", "tcp-direct", "tcp-relay", "proxy-forward-1400", "rtcp-direct"} <= names
    assert set(QUICK_ROWS) <= names


def test_comparison_flags_a_regression_beyond_ten_percent() -> None:
    old = report.finish_document(_doc({"relay-1400": 100e6, "rtcp-a": 10e6, "rtcp-b": 10e6}), None)
    assert old["comparison"] is None and len(old["history"]) == 1
    new = report.finish_document(
        _doc({"relay-1400": 101e6, "rtcp-a": 8.9e6, "rtcp-b": 9.5e6, "rtcp-new": 1e6}), old
    )
    rows = new["comparison"]["rows"]
    assert rows["rtcp-a"]["regression"] is True
    assert rows["rtcp-a"]["goodput_change"] == pytest.approx(-0.11)
    assert rows["rtcp-b"]["regression"] is False
    assert "rtcp-new" not in rows
    assert new["comparison"]["regressions"] == ["rtcp-a"]
    assert len(new["history"]) == 2
    assert "REGRESSION" in report.format_table(new)


def test_a_slower_machine_is_not_a_regression() -> None:
    # The relay and rtcp 15% slower together: rtcp's ratio to the relay did not move.
    old = report.finish_document(_doc({"relay-1400": 100e6, "rtcp-a": 10e6}), None)
    new = report.finish_document(_doc({"relay-1400": 85e6, "rtcp-a": 8.5e6}), old)
    entry = new["comparison"]["rows"]["rtcp-a"]
    assert entry["goodput_change"] == pytest.approx(-0.15)
    assert entry["ratio_change"] == pytest.approx(0.0)
    assert entry["regression"] is False
    assert new["comparison"]["regressions"] == []
    assert "+0.0%" in report.format_table(new)


def test_a_slower_ceiling_is_not_a_regression() -> None:
    old = report.finish_document(_doc({"relay-1400": 100e6, "rtcp-a": 10e6}), None)
    new = report.finish_document(_doc({"relay-1400": 50e6, "rtcp-a": 10e6}), old)
    assert new["comparison"]["rows"]["relay-1400"]["goodput_change"] == pytest.approx(-0.5)
    assert new["comparison"]["regressions"] == []
    assert "the ceilings moved by -50%" in report.format_table(new)


def test_comparison_only_against_runs_of_the_same_sizes() -> None:
    full = report.finish_document(_doc({"rtcp-a": 10e6}, size=1000), None)
    quick = report.finish_document(_doc({"rtcp-a": 1e6}, size=10), full)
    assert quick["comparison"] is None
    again = report.finish_document(_doc({"rtcp-a": 10e6}, size=1000), quick)
    assert again["comparison"]["baseline"]["timestamp"] == "t1000"
    assert again["comparison"]["rows"]["rtcp-a"]["regression"] is False
    assert len(again["history"]) == 3


def test_a_file_without_history_becomes_the_first_entry() -> None:
    legacy = _doc({"rtcp-a": 10e6})
    new = report.finish_document(_doc({"rtcp-a": 10e6}), legacy)
    assert [h["timestamp"] for h in new["history"]] == ["t1000", "t1000"]
    assert new["comparison"] is not None


def test_table_shows_failed_rows() -> None:
    doc = report.finish_document(_doc({"relay-1400": 100e6, "rtcp-a": None}, ok=False), None)
    table = report.format_table(doc)
    assert "FAILED" in table
    assert "rtcp send failed: timeout" in table


def test_proxy_forwarding_ratio() -> None:
    rows = [
        {"name": "relay-1400", "datagrams_per_s": 200_000.0},
        {"name": "proxy-forward-1400", "datagrams_per_s": 170_000.0},
    ]
    fwd = report.proxy_forwarding(rows, "relay-1400")
    assert fwd["ratio_to_relay"] == pytest.approx(0.85)
    assert fwd["meets_target"] is True
    assert report.proxy_forwarding(rows[:1], "relay-1400") is None


def _pair_row(name: str, per_round: dict[int, float], cpu: dict) -> dict:
    runs = [{"goodput_bytes_per_s": v} for v in per_round.values()]
    return {
        "name": name, "kind": "rtcp", "runs": runs, "run_rounds": list(per_round),
        "goodput_bytes_per_s": statistics.median(per_round.values()), "cpu_s_per_mb": cpu,
    }


def test_encrypted_to_plaintext_ratio_pairs_runs_of_the_same_round() -> None:
    plain_cpu = {"sender": 0.0021, "receiver": 0.0054, "proxy": None}
    enc_cpu = {"sender": 0.0036, "receiver": 0.0060, "proxy": None}
    rows = [
        _pair_row("rtcp-direct", {1: 250e6, 2: 100e6, 3: 200e6}, plain_cpu),
        # round 2 failed for the encrypted row: its other runs pair with rounds 1 and 3 only
        _pair_row("rtcp-direct-encrypted", {1: 200e6, 3: 150e6}, enc_cpu),
        _pair_row("rtcp-proxy-clean-mtu1400", {1: 150e6}, plain_cpu),
        _pair_row("rtcp-proxy-clean-encrypted-mtu1400", {1: 100e6}, enc_cpu),
    ]
    found = encryption.compare(rows)
    direct, capped = found["pairs"]
    assert direct["run_ratios"] == pytest.approx([0.8, 0.75])
    assert direct["ratio"] == pytest.approx(0.775)
    assert direct["meets_target"] is False
    assert capped["target"] is None and capped["meets_target"] is None
    doc = {"encryption": found}
    lines = encryption.summary_lines(doc)
    assert lines[0] == (
        "encrypted/plaintext, default path, direct: 0.78 (median of 2 per-run ratios;"
        " 175 / 200 MB/s); CPU ms/MB snd/rcv 3.6/6.0 vs 2.1/5.4; BELOW the 0.8 target"
    )
    assert lines[1].startswith("encrypted/plaintext, --mtu 1400, through the proxy: 0.67 ")
    assert lines[1].endswith("no target (the cost per datagram)")
    assert encryption.compare(rows[:1]) is None


def test_the_table_and_history_carry_the_encryption_ratio() -> None:
    doc = _doc({"relay-1400": 100e6, "rtcp-direct": 80e6, "rtcp-direct-encrypted": 72e6})
    for row in doc["rows"]:
        row["runs"], row["run_rounds"] = [{"goodput_bytes_per_s": row["goodput_bytes_per_s"]}], [1]
    doc["encryption"] = encryption.compare(doc["rows"])
    doc = report.finish_document(doc, None)
    assert "encrypted/plaintext, default path, direct: 0.90" in report.format_table(doc)
    assert "meets the 0.8 target" in report.format_table(doc)
    assert doc["history"][-1]["encrypted_to_plaintext"] == {
        "default path, direct": pytest.approx(0.9)
    }


def test_the_table_states_the_start_up_left_out_with_and_without_a_key() -> None:
    doc = _doc({"relay-1400": 100e6, "rtcp-direct": 80e6})
    doc["config"]["sender_startup_cpu_s"] = 0.18
    table = report.format_table(report.finish_document(doc, None))
    assert "costs 0.180 s CPU per `rtcp send`, not counted above." in table
    doc["config"]["sender_startup_cpu_encrypted_s"] = 0.21
    table = report.format_table(report.finish_document(doc, None))
    assert "costs 0.180 s CPU per `rtcp send` (0.210 s with --psk-file), not counted" in table
