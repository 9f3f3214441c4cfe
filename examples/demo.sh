#!/usr/bin/env bash
# rtcp demo: send an 8 MB file through a deliberately bad network and prove it arrived intact.
#
#   rtcp recv  <-- rtcp proxy (loss, reordering, duplication, corruption, delay) <-- rtcp send
#
# Then it watches TCP work: a 200 kB file through a lossy proxy with every process tracing
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

# Start a command in the background (in this shell, so that cleanup can stop it) with its
# stdout on a FIFO that we read: wait for its "listening on HOST:PORT" line itself (up to
# START_DEADLINE_S) and set $port. The line, and every later one (copied by a cat that ends
# when the command does), go to the log file.
START_DEADLINE_S=30
port=""
fifo_count=0
start_and_get_port() {
    local log="$1"
    shift
    local fifo="$work/stdout.$((fifo_count += 1))"
    mkfifo "$fifo"
    "$@" >"$fifo" 2>"$log.err" &
    local pid=$!
    pids+=("$pid")
    local fd line
    exec {fd}<"$fifo" # returns once the command has opened its end
    rm -f "$fifo"
    local deadline=$((SECONDS + START_DEADLINE_S))
    port=""
    local closed=0
    while ((SECONDS < deadline)); do
        local rc=0
        IFS= read -r -t "$((deadline - SECONDS))" -u "$fd" line || rc=$?
        ((rc > 128)) && continue # timed out: the loop's condition ends it
        ((rc != 0)) && closed=1 && break # end of file: the command exited
        if [[ "$line" =~ ^listening\ on\ .*:([0-9]+)$ ]]; then
            port="${BASH_REMATCH[1]}"
            break
        fi
    done
    if [[ -z "$port" ]]; then
        exec {fd}<&-
        if ((closed == 0)); then
            echo "demo: '$*' did not report its port within ${START_DEADLINE_S} s" >&2
        else
            # it closed its stdout: it has exited, or is about to (kill -0 would still see it)
            wait "$pid" 2>/dev/null || true
            echo "demo: '$*' failed to start:" >&2
            cat "$log.err" >&2
        fi
        return 1
    fi
    printf '%s\n' "$line" >"$log"
    cat <&"$fd" >>"$log" &
    exec {fd}<&-
}

# Wait (up to START_DEADLINE_S) until a file holds at least N lines.
wait_for_lines() {
    local file="$1" n="$2"
    local deadline=$((SECONDS + START_DEADLINE_S))
    while (($(wc -l <"$file") < n)); do
        if ((SECONDS >= deadline)); then
            echo "demo: no line $n in $file within ${START_DEADLINE_S} s" >&2
            return 1
        fi
        sleep 0.05
    done
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
wait_for_lines "$work/recv.log" 2
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
# A file small enough for a readable ladder but long enough for the plot to show slow start, a
# loss and its repair: a new receiver and a new proxy (DEMO_LOSS of the data direction, a 10 ms
# delay each way, an MTU of 1472 bytes so that segments stay Ethernet-sized; the seed makes the
# same datagrams drop every run), each writing a trace, like the sender (with CUBIC: classic
# slow start). Everything goes to a new folder beside ./demo-out, which replaces ./demo-out only
# once the run has produced it: a failed run leaves the previous demo-out/ as it was.
DEMO_SIZE_KB=200
DEMO_LOSS="3%"
DEMO_SEED=3
DEMO_CC=cubic
final="$PWD/demo-out"
out="$(mktemp -d "$PWD/.demo-out.new.XXXXXX")"
chmod 755 "$out"
cleanup_out() { rm -rf "$out"; }
trap 'cleanup_out; cleanup' EXIT

echo
echo "==> watching TCP work: a $DEMO_SIZE_KB kB file through $DEMO_LOSS loss and 10 ms of delay" \
    "($DEMO_CC), every process tracing (--trace)"
start_and_get_port "$work/recv2.log" \
    rtcp recv --listen 127.0.0.1:0 --out "$work/inbox2" --trace "$out/recv.jsonl"
recv2_pid="${pids[-1]}"
recv2_port="$port"
start_and_get_port "$work/proxy2.log" \
    rtcp proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$recv2_port" \
    --loss-up "$DEMO_LOSS" --delay 10ms --mtu 1472 --seed "$DEMO_SEED" --trace "$out/proxy.jsonl"
proxy2_pid="${pids[-1]}"
proxy2_port="$port"
head -c $((DEMO_SIZE_KB * 1000)) /dev/urandom >"$work/small.bin"
rtcp send "$work/small.bin" --to "127.0.0.1:$proxy2_port" --quiet --cc "$DEMO_CC" \
    --trace "$out/send.jsonl" --pcap "$out/send.pcap"
# stopping them closes their traces
kill "$recv2_pid" && wait "$recv2_pid" || true
kill "$proxy2_pid" && wait "$proxy2_pid" 2>/dev/null || true

echo "==> the transfer as a ladder diagram: rtcp explain send.jsonl recv.jsonl proxy.jsonl"
(cd "$out" && rtcp explain send.jsonl recv.jsonl proxy.jsonl)

echo "==> the time-sequence plot: rtcp plot send.jsonl proxy.jsonl -o demo-plot.png"
plotted=""
if (cd "$out" && rtcp plot send.jsonl proxy.jsonl -o demo-plot.png 2>"$work/plot.err"); then
    plotted=yes
else
    sed 's/^/    /' "$work/plot.err"
    echo "    (no plot: rtcp plot needs matplotlib, pip install 'rtcp[plot]')"
fi

# the new run is complete: it replaces the previous demo-out/
old="$(mktemp -d "$PWD/.demo-out.old.XXXXXX")"
[[ -e "$final" ]] && mv "$final" "$old/"
mv "$out" "$final"
out="$old" # removed on exit, with the previous run
[[ -n "$plotted" ]] && echo "    the plot is $final/demo-plot.png"
echo "    the traces and a capture of the sender are in $final/:"
echo "    send.jsonl, recv.jsonl, proxy.jsonl (docs/trace-format.md), send.pcap (Wireshark with"
echo "    contrib/wireshark/rtcp.lua: wireshark -X lua_script:contrib/wireshark/rtcp.lua $final/send.pcap)"
