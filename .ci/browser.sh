#!/usr/bin/env bash
# The demo in a real browser: starts the README's quick-start demo
# (`cargo run --release --example demo`, bridge on a free port), then runs
# .ci/browser/chat.test.mjs, which opens the chat page in two headless-Chromium tabs, sends a
# message from one and checks that it shows up in both (and a reply the other way).
#
#   bash .ci/browser.sh                       # screenshot to target/browser-demo.png
#   UPDATE_SCREENSHOT=1 bash .ci/browser.sh   # screenshot to docs/demo.png (the README's)
#
# Installs what a fresh Debian machine lacks: Chromium (apt-get, needs root) and the pinned
# playwright-core (`npm ci` in .ci/browser; it drives the system Chromium and downloads no
# browser). Needs Node.js 20+. Only 127.0.0.1 is contacted.
#
# Prints PASS/FAIL lines and `browser: N passed, M failed`; exits non-zero on any failure. The
# demo is stopped on every exit path; its output is kept in target/browser-demo-*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
READY_TIMEOUT=${BROWSER_READY_TIMEOUT:-900} # the first `cargo run --release` compiles everything
TEST_TIMEOUT=180

step() { printf '\n==> %s\n' "$*"; }
fail() {
    echo "FAIL: browser setup: $*"
    echo "browser: 0 passed, 1 failed"
    exit 1
}

# --- Chromium -------------------------------------------------------------------------------
step "chromium"
if [[ ! -x $CHROMIUM ]]; then
    [[ $CHROMIUM == /usr/bin/chromium ]] || fail "CHROMIUM_PATH=$CHROMIUM does not exist"
    [[ $(id -u) == 0 ]] || fail "$CHROMIUM is missing and installing it needs root (apt-get install chromium)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || apt-get update -qq || fail "apt-get update failed"
    apt-get install -y -qq chromium || apt-get install -y -qq chromium || fail "apt-get install chromium failed"
fi
# The Debian launcher script complains on stderr about /dev/shm sizes on some machines: harmless.
"$CHROMIUM" --version 2>/dev/null || fail "$CHROMIUM --version failed"

# --- Node.js and playwright-core -------------------------------------------------------------
step "node and playwright-core (npm ci in .ci/browser)"
command -v node >/dev/null 2>&1 || fail "node is not installed (Node.js 20+ is needed)"
command -v npm >/dev/null 2>&1 || fail "npm is not installed"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || fail "node $(node --version) is too old: playwright-core needs 20+"
echo "node $(node --version), npm $(npm --version)"
(cd .ci/browser && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in .ci/browser failed"
node -e 'console.log("playwright-core " + require("./.ci/browser/node_modules/playwright-core/package.json").version)'

# --- the demo ---------------------------------------------------------------------------------
step "demo: cargo run --release --example demo (DEMO_BRIDGE_ADDRESS=127.0.0.1:0)"
mkdir -p target
DEMO_OUT=$ROOT/target/browser-demo-stdout.log
DEMO_ERR=$ROOT/target/browser-demo-stderr.log
: >"$DEMO_OUT"
: >"$DEMO_ERR"
DEMO_PID=

stop_demo() {
    [[ -n $DEMO_PID ]] || return 0
    # SIGTERM to the whole group (cargo and the demo): the demo shuts down gracefully (its
    # shutdown grace is 5 s); whatever is left of the group after 10 s is killed.
    if kill -TERM -- "-$DEMO_PID" 2>/dev/null; then
        for _ in $(seq 100); do
            kill -0 -- "-$DEMO_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$DEMO_PID" 2>/dev/null || true
    fi
    wait "$DEMO_PID" 2>/dev/null || true
    DEMO_PID=
}
show_demo_logs() {
    echo "----- demo stdout ($DEMO_OUT) -----"
    tail -n 40 "$DEMO_OUT" || true
    echo "----- demo stderr, last 60 lines ($DEMO_ERR) -----"
    tail -n 60 "$DEMO_ERR" || true
}
TEST_PID=
cleanup() {
    if [[ -n $TEST_PID ]]; then
        # `timeout` passes the TERM on to node, and playwright-core closes the browser on it.
        kill -TERM "$TEST_PID" 2>/dev/null || true
        wait "$TEST_PID" 2>/dev/null || true
        TEST_PID=
    fi
    stop_demo
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# setsid: the demo and cargo get their own process group, so stop_demo reaches both.
DEMO_BRIDGE_ADDRESS=127.0.0.1:0 setsid cargo run --release --example demo \
    </dev/null >"$DEMO_OUT" 2>"$DEMO_ERR" &
DEMO_PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
next_note=$((SECONDS + 30))
until grep -q '^ready: ' "$DEMO_OUT"; do
    if ! kill -0 "$DEMO_PID" 2>/dev/null; then
        show_demo_logs
        fail "the demo exited before printing its 'ready: ' line"
    fi
    if ((SECONDS >= deadline)); then
        show_demo_logs
        fail "the demo printed no 'ready: ' line within ${READY_TIMEOUT} s"
    fi
    if ((SECONDS >= next_note)); then
        echo "  ... still waiting for the demo (compiling?)"
        next_note=$((SECONDS + 30))
    fi
    sleep 0.2
done
sed 's/^/  demo | /' "$DEMO_OUT"
URL=$(sed -n 's/^ *browser: *\([^ ]*\).*/\1/p' "$DEMO_OUT" | head -n 1)
[[ $URL =~ ^http://127\.0\.0\.1:[0-9]+/$ ]] || { show_demo_logs; fail "no 'browser: http://127.0.0.1:PORT/' line (got '$URL')"; }

# --- the test -----------------------------------------------------------------------------------
step "chat in two headless-Chromium tabs: $URL"
status=0
# In the background and waited for, so that a SIGTERM or Ctrl-C to this script is handled at
# once (bash runs traps only between foreground commands).
CHROMIUM_PATH=$CHROMIUM timeout --kill-after=10 "$TEST_TIMEOUT" node .ci/browser/chat.test.mjs "$URL" &
TEST_PID=$!
wait "$TEST_PID" || status=$?
TEST_PID=
if ((status != 0)); then
    ((status == 124)) && echo "FAIL: browser test: not finished within ${TEST_TIMEOUT} s" && echo "browser: 0 passed, 1 failed"
    show_demo_logs
fi
stop_demo
exit "$status"
