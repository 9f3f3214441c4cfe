"""`rtcp bench`: measure rtcp against the ceilings of this machine (see docs/performance.md).

defaults   sizes, repeats, output paths, the quick rows (light: imported by every `rtcp` start)
command    the typer command registered as `rtcp bench` (imports the rest only when it runs)
runner     the rows, the interleaved repeats, the medians, the results document
ceilings   the bare UDP relay, UDP blaster and sink, kernel-TCP pieces (each its own process)
rtcp_rows  one `rtcp recv` + `rtcp proxy` + `rtcp send` run
procs      starting, reaping (exact CPU and peak RSS from wait4) and cleaning up child processes
report     the table, results.json (history, comparison with the previous run), the PNG
"""
