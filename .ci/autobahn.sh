#!/usr/bin/env bash
# Autobahn|Testsuite conformance run: the bridge in front of examples/echo_backend.rs is an
# echo server, and `wstest -m fuzzingclient` runs cases 1.* to 10.*, 12.* and 13.*
# (permessage-deflate) against it.
#
#   bash .ci/autobahn.sh
#
# Needs Python 2.7 (autobahntestsuite 0.8.2 runs on nothing newer): pyenv's 2.7.18 or
# `python2.7` on PATH, or AUTOBAHN_PYTHON=/path/to/python2.7. Without it the run is skipped
# (exit 0, says so plainly). The testsuite is installed into target/autobahn-venv from the pins
# in .ci/autobahn-requirements.txt (reused while the pins are unchanged).
#
# Output: target/autobahn-report/ (index.html, index.json, one JSON + HTML file per case),
# logs in target/autobahn-logs/. Exits non-zero if any case's behavior or behaviorClose is
# FAILED or UNIMPLEMENTED (behaviorClose WRONG CODE, UNCLEAN and FAILED BY CLIENT count as
# failures too), or if
# the run itself broke; the last line is `conformance: N passed, M failed`.
#
# Environment: AUTOBAHN_CASES (comma-separated case patterns, default 1.* to 10.*, 12.*, 13.*),
# AUTOBAHN_TIMEOUT (seconds for the whole wstest run, default 1800).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'autobahn: %s\n' "$*" >&2
    echo "conformance: ERROR ($*)"
    exit 1
}

# --- (a) Python 2.7 -----------------------------------------------------------------------
find_python27() {
    local candidates=()
    [[ -n "${AUTOBAHN_PYTHON:-}" ]] && candidates+=("$AUTOBAHN_PYTHON")
    candidates+=("$HOME/.pyenv/versions/2.7.18/bin/python")
    local p
    for p in "$HOME"/.pyenv/versions/2.7.*/bin/python; do candidates+=("$p"); done
    candidates+=(python2.7 python2)
    for p in "${candidates[@]}"; do
        # A pyenv shim exists even when the version it points to does not: ask the interpreter.
        if command -v "$p" >/dev/null 2>&1 &&
            "$p" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; then
            "$p" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

step "python 2.7"
if ! PY27=$(find_python27); then
    echo "conformance: SKIPPED (no Python 2.7 on this machine)"
    exit 0
fi
echo "using $PY27 ($("$PY27" -c 'import sys; print(sys.version.split()[0])'))"

# --- (b) virtualenv with the pinned testsuite ---------------------------------------------
VENV=$ROOT/target/autobahn-venv
REQS=$ROOT/.ci/autobahn-requirements.txt
STAMP=$VENV/.requirements.sha256
WANT=$(sha256sum "$REQS" | cut -d' ' -f1)
step "testsuite virtualenv ($VENV)"
if [[ -x $VENV/bin/wstest && -f $STAMP && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "up to date"
else
    rm -rf "$VENV" "$ROOT/target/autobahn-bootstrap"
    mkdir -p "$ROOT/target"
    # Python 2.7 ships neither venv nor virtualenv; virtualenv 16.7.12 is the last one-file
    # release that runs on 2.7, and it bundles a pip (20.3.4) that still installs for 2.7.
    # It goes into a scratch folder, so the machine's Python is left untouched.
    "$PY27" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$ROOT/target/autobahn-bootstrap" 'virtualenv==16.7.12' 2>&1 |
        grep -v DEPRECATION || true
    [[ -f $ROOT/target/autobahn-bootstrap/virtualenv.py ]] || die "could not install virtualenv for Python 2.7"
    PYTHONPATH=$ROOT/target/autobahn-bootstrap "$PY27" -m virtualenv --quiet --no-download "$VENV" ||
        die "could not create $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-python-version-warning \
        -r "$REQS" || die "pip install -r .ci/autobahn-requirements.txt failed"
    [[ -x $VENV/bin/wstest ]] || die "wstest is missing from $VENV after the install"
    echo "$WANT" >"$STAMP"
fi
PYTHONWARNINGS=ignore "$VENV/bin/wstest" --autobahnversion 2>/dev/null | sed 's/^/  /' || true

# --- (c) build and start the echo backend and the bridge ----------------------------------
step "cargo build --release --bin websocket-bridge --example echo_backend"
cargo build --release --bin websocket-bridge --example echo_backend

LOGS=$ROOT/target/autobahn-logs
REPORT=$ROOT/target/autobahn-report
rm -rf "$LOGS" "$REPORT"
mkdir -p "$LOGS"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Two free ports below the kernel's ephemeral range (32768 and up on Linux), so that outgoing
# connections of whatever else runs on the machine cannot take them between this check and
# the bind; a start that fails anyway is retried with other ports.
pick_ports() {
    python3 - <<'EOF'
import random, socket
ports = []
while len(ports) < 2:
    port = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    if port not in ports:
        ports.append(port)
print(*ports)
EOF
}

# Waits (at most 30 s) until the bridge answers GET /healthz and the backend echoes a POST;
# gives up early when one of the processes has exited.
wait_ready() {
    local pid
    for _ in $(seq 300); do
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || return 1
        done
        if python3 - "$BRIDGE_PORT" "$ECHO_PORT" <<'EOF'; then
import sys, urllib.request
bridge, echo = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{bridge}/healthz", timeout=2) as r:
        assert r.status == 200
    req = urllib.request.Request(f"http://127.0.0.1:{echo}/echo", data=b"ping",
                                 headers={"content-type": "text/plain"})
    with urllib.request.urlopen(req, timeout=2) as r:
        assert r.status == 200 and r.read() == b"ping"
except Exception:
    sys.exit(1)
EOF
            return 0
        fi
        sleep 0.1
    done
    return 1
}

for attempt in 1 2 3 4 5; do
    read -r ECHO_PORT BRIDGE_PORT < <(pick_ports)
    step "starting echo backend on 127.0.0.1:$ECHO_PORT and bridge on 127.0.0.1:$BRIDGE_PORT"
    "$ROOT/target/release/examples/echo_backend" "127.0.0.1:$ECHO_PORT" >"$LOGS/echo_backend.log" 2>&1 &
    PIDS+=($!)
    RUST_LOG=${RUST_LOG:-info} "$ROOT/target/release/websocket-bridge" \
        --address "127.0.0.1:$BRIDGE_PORT" \
        --allowlist "http://127\\.0\\.0\\.1:$ECHO_PORT/.*" \
        --max-message-size 20MiB \
        >"$LOGS/bridge.log" 2>&1 &
    PIDS+=($!)
    if wait_ready; then
        break
    fi
    tail -n 5 "$LOGS/echo_backend.log" "$LOGS/bridge.log" >&2 || true
    cleanup
    [[ $attempt -lt 5 ]] || die "the echo backend or the bridge did not come up (5 attempts)"
    echo "retrying with other ports"
done
echo "ready"

# --- (d) the fuzzing client -----------------------------------------------------------------
SERVER_URL="ws://127.0.0.1:$BRIDGE_PORT/connect?f=http://127.0.0.1:$ECHO_PORT/echo"
CASES=${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,8.*,9.*,10.*,12.*,13.*}
SPEC=$LOGS/fuzzingclient.json
python3 - "$SPEC" "$SERVER_URL" "$REPORT" "$CASES" <<'EOF'
import json, sys
spec, url, outdir, cases = sys.argv[1:5]
with open(spec, "w") as f:
    json.dump({
        "outdir": outdir,
        "servers": [{"agent": "websocket-bridge", "url": url}],
        "cases": [c.strip() for c in cases.split(",") if c.strip()],
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }, f, indent=2)
EOF

step "wstest -m fuzzingclient (cases $CASES) against $SERVER_URL"
echo "progress: $LOGS/wstest.log"
START=$(date +%s)
# In the background and waited for, so that Ctrl-C or SIGTERM reaches the traps at once
# (bash runs a trap only after a foreground command ends); `timeout` passes the signal on.
(cd "$LOGS" && PYTHONWARNINGS=ignore exec timeout "${AUTOBAHN_TIMEOUT:-1800}" \
    "$VENV/bin/wstest" -m fuzzingclient -s "$SPEC") >"$LOGS/wstest.log" 2>&1 &
PIDS+=($!)
set +e
wait "${PIDS[-1]}"
WSTEST_STATUS=$?
set -e
ELAPSED=$(($(date +%s) - START))
echo "wstest finished in ${ELAPSED}s with status $WSTEST_STATUS"
cleanup

if [[ $WSTEST_STATUS -ne 0 || ! -f $REPORT/index.json ]]; then
    tail -n 30 "$LOGS/wstest.log" >&2 || true
    if [[ $WSTEST_STATUS -eq 124 ]]; then
        die "wstest did not finish within ${AUTOBAHN_TIMEOUT:-1800}s"
    fi
    die "wstest exited with status $WSTEST_STATUS and/or wrote no $REPORT/index.json"
fi

# --- (e) summary ------------------------------------------------------------------------------
step "results ($REPORT/index.html)"
python3 - "$REPORT" <<'EOF'
import json, os, sys
from collections import Counter

report = sys.argv[1]
with open(os.path.join(report, "index.json")) as f:
    index = json.load(f)

def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
passed = failed = 0
for agent, cases in sorted(index.items()):
    behavior = Counter(c["behavior"] for c in cases.values())
    close = Counter(c["behaviorClose"] for c in cases.values())
    print(f"agent {agent}: {len(cases)} cases")
    for name, counter in (("behavior", behavior), ("behaviorClose", close)):
        extra = sorted(set(counter) - set(ORDER))
        parts = [f"{k} {counter.get(k, 0)}" for k in ORDER + extra]
        print(f"  {name + ':':15} " + ", ".join(parts))

    # A case passes when neither verdict is a failure. Besides FAILED, the closing-handshake
    # verdict can be WRONG CODE, UNCLEAN or FAILED BY CLIENT: those count as failures too.
    bad = [case_id for case_id in sorted(cases, key=case_key)
           if cases[case_id]["behavior"] not in PASSING
           or cases[case_id]["behaviorClose"] not in PASSING]
    passed += len(cases) - len(bad)
    failed += len(bad)
    if bad:
        print(f"  FAILED cases ({len(bad)}):")
        for case_id in bad:
            c = cases[case_id]
            detail = {}
            path = os.path.join(report, c.get("reportfile", ""))
            try:
                with open(path) as f:
                    detail = json.load(f)
            except (OSError, ValueError):
                pass
            print(f"    {case_id}: behavior {c['behavior']}, close {c['behaviorClose']}, "
                  f"remote close code {c.get('remoteCloseCode')} ({c.get('reportfile')})")
            if detail:
                print(f"      expected: {json.dumps(detail.get('expected'))[:300]}")
                print(f"      received: {json.dumps(detail.get('received'))[:300]}")
                if detail.get("result"):
                    print(f"      result:   {detail['result'][:300]}")
                if detail.get("resultClose"):
                    print(f"      close:    {detail['resultClose'][:300]}")

    slow = sorted(((c.get("duration", 0), k) for k, c in cases.items()), reverse=True)
    total_ms = sum(d for d, _ in slow)
    print(f"  case time: {total_ms / 1000:.1f}s in all; slowest:")
    for ms, case_id in slow[:10]:
        print(f"    {case_id:8} {ms / 1000:7.2f}s")

with open(os.path.join(report, "summary.txt"), "w") as f:
    f.write(f"{passed} {failed}\n")
EOF
read -r PASSED FAILED <"$REPORT/summary.txt"
echo "total wstest time: ${ELAPSED}s"
echo "conformance: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
