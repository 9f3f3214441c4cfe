#!/usr/bin/env bash
# rtcp demo: send an 8 MB file through a deliberately bad network and prove it arrived intact.
#
#   rtcp recv  <-- rtcp proxy (loss, reordering, duplication, corruption, delay) <-- rtcp send
#
# Then it watches TCP work: a 20 KB file through a lossy proxy with every process tracing
# (--trace), the transfer drawn as a ladder diagram (rtcp explain: lost datagrams end at an X)
# and as a time-sequence plot (rtcp plot), kept in ./demo-out/ with the traces and a capture.
#
# Run it with `make demo` (which puts the project's venv first on PATH), or directly when
# `rtcp` is on your PATH. Every process it starts is stopped on exit, whatever happens.
set -euo pipefail

command -v rtcp >/dev/null || { echo "demo: rtcp is not on PATH (try: make demo)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/rtcp-demo.XXXXXX")"
pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Start a command in the background (in this shell, so that cleanup can stop it), its
# stdout in a file; wait for its "listening on HOST:PORT" line and set $port.
port=""
start_and_get_port() {
    local log="$1"
    shift
    "$@" >"$log" 2>"$log.err" &
    local pid=$!
    pids+=("$pid")
    local i
    for ((i = 0; i < 100; i++)); do
        port="$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$log" | head -n 1)"
        [[ -n "$port" ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "demo: '$*' failed to start:" >&2
            cat "$log.err" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "demo: '$*' did not report its port" >&2
    return 1
}

echo "==> starting the receiver (files land in $work/inbox)"
start_and_get_port "$work/recv.log" rtcp recv --listen 127.0.0.1:0 --out "$work/inbox"
recv_port="$port"
echo "    rtcp recv listening on 127.0.0.1:$recv_port"

echo "==> starting an impairing proxy in front of it"
impair=(--loss 3% --reorder 5% --duplicate 2% --corrupt 2% --delay 5ms --seed 42)
start_and_get_port "$work/proxy.log" \
    rtcp proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$recv_port" "${impair[@]}"
proxy_port="$port"
echo "    rtcp proxy listening on 127.0.0.1:$proxy_port: ${impair[*]}"

echo "==> generating an 8 MB file of random bytes"
head -c $((8 * 1024 * 1024)) /dev/urandom >"$work/demo.bin"

echo "==> sending it through the proxy"
rtcp send "$work/demo.bin" --to "127.0.0.1:$proxy_port"

echo "==> what the receiver logged"
sed -n '2,$p' "$work/recv.log"

echo "==> checking both copies ourselves"
sent="$(sha256sum "$work/demo.bin" | cut -d' ' -f1)"
got="$(sha256sum "$work/inbox/demo.bin" | cut -d' ' -f1)"
echo "    sent     $sent"
echo "    received $got"
if [[ "$sent" != "$got" ]]; then
    echo "demo: FAILED, the copies differ" >&2
    exit 1
fi
echo "==> identical: the file crossed loss, reordering, duplication and corruption intact"

echo "==> what the proxy did to the datagrams"
kill "${pids[1]}" && wait "${pids[1]}" || true
sed 's/^/    /' "$work/proxy.log.err" | grep -v '^    $' || true

# --- Watching TCP work -------------------------------------------------------------------
# A small file, so that the ladder shows every segment: a new receiver and a new proxy (10%
# loss; seed 3 drops data segments early on), each writing a trace, like the sender.
out="$PWD/demo-out"
mkdir -p "$out"
rm -f "$out"/send.jsonl "$out"/recv.jsonl "$out"/proxy.jsonl "$out"/send.pcap "$out"/demo-plot.png

echo
echo "==> watching TCP work: a 20 KB file through 10% loss, every process tracing (--trace)"
start_and_get_port "$work/recv2.log" \
    rtcp recv --listen 127.0.0.1:0 --out "$work/inbox2" --trace "$out/recv.jsonl"
recv2_pid="${pids[-1]}"
recv2_port="$port"
start_and_get_port "$work/proxy2.log" \
    rtcp proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$recv2_port" --loss 10% --seed 3 \
    --trace "$out/proxy.jsonl"
proxy2_pid="${pids[-1]}"
proxy2_port="$port"
head -c $((20 * 1024)) /dev/urandom >"$work/small.bin"
rtcp send "$work/small.bin" --to "127.0.0.1:$proxy2_port" --quiet \
    --trace "$out/send.jsonl" --pcap "$out/send.pcap"
# stopping them closes their traces
kill "$recv2_pid" && wait "$recv2_pid" || true
kill "$proxy2_pid" && wait "$proxy2_pid" 2>/dev/null || true

echo "==> the transfer as a ladder diagram: rtcp explain send.jsonl recv.jsonl proxy.jsonl"
(cd "$out" && rtcp explain send.jsonl recv.jsonl proxy.jsonl)

echo "==> the time-sequence plot: rtcp plot send.jsonl -o demo-plot.png"
if rtcp plot "$out/send.jsonl" -o "$out/demo-plot.png" 2>"$work/plot.err"; then
    echo "    the plot is $out/demo-plot.png"
else
    sed 's/^/    /' "$work/plot.err"
    echo "    (no plot: rtcp plot needs matplotlib, pip install 'rtcp[plot]')"
fi
echo "    the traces and a capture of the sender are in $out/:"
echo "    send.jsonl, recv.jsonl, proxy.jsonl (docs/trace-format.md), send.pcap (Wireshark with"
echo "    contrib/wireshark/rtcp.lua: wireshark -X lua_script:contrib/wireshark/rtcp.lua $out/send.pcap)"
