#!/usr/bin/env bash
# Run the whole delegate test suite on a fresh Debian machine with Rust.
#
#   scripts/test.sh [extra args for the test runner]
#
# 1. Installs the system tools the integration tests need (apt-get, only what
#    is missing; uses sudo when not root and sudo is available), and Chromium for
#    the board page's browser tests.
# 2. When running as root: creates the unprivileged `dlgtest` account that the
#    delegate-testkit fake SSH hosts log in as (idempotent).
# 3. Installs the pinned real agent CLIs (claude, codex) from npm for the e2e suites
#    (scripts/install-agents.sh; cached in target/agents).
# 4. Installs the pinned real `agentbus` (PyPI) into a venv for the NATS interop tests
#    (scripts/install-agentbus.sh; cached in target/agentbus).
# 5. Runs `cargo nextest run --workspace` (plus doctests) when cargo-nextest is
#    installed, else `cargo test --workspace`.
# 6. Runs the suites that need extra tools when they are installed: supply-chain checks
#    (cargo-deny) and a short fuzz smoke (nightly + cargo-fuzz); see RELIABILITY.md.
#
# Works non-interactively (CI=true, no stdin).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    fi
fi

have_sudo() {
    [ "$(id -u)" -eq 0 ] || [ "${#SUDO[@]}" -gt 0 ]
}

# --- system packages --------------------------------------------------------
# cron: `delegate service` falls back to a crontab line; its test edits a test user's crontab.
# nats-server: the NATS JetStream transport's tests start real servers (Debian's is 2.9).
packages=(tmux openssh-server openssh-client bubblewrap socat shellcheck cron nats-server)
missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if have_sudo; then
        echo "test.sh: installing: ${missing[*]}" >&2
        "${SUDO[@]}" apt-get update -q </dev/null
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
    else
        echo "test.sh: WARNING: missing packages (${missing[*]}) and no root/sudo to install them" >&2
    fi
fi

# Chromium (Debian's package) for the board page's browser tests (tests/e2e/board_page.rs).
# Installed on its own: where it cannot be (no such package, no root), the rest still runs
# and those tests say loudly that they skipped; under CI they fail instead.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if have_sudo; then
        echo "test.sh: installing: chromium" >&2
        { "${SUDO[@]}" apt-get update -q </dev/null \
            && "${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium </dev/null; } \
            || echo "test.sh: WARNING: chromium could not be installed: the board page's browser tests cannot run" >&2
    else
        echo "test.sh: WARNING: chromium is missing and there is no root/sudo to install it" >&2
    fi
fi

# --- privilege-separation dir for the per-test sshd instances ---------------
if [ "$(id -u)" -eq 0 ]; then
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
elif [ "${#SUDO[@]}" -gt 0 ]; then
    "${SUDO[@]}" mkdir -p /run/sshd || true
fi

# --- the remote login user for fake hosts (only needed when root) -----------
# When tests run as root, delegate-testkit's sshd lets the tests log in as
# `dlgtest`, not root. useradd leaves the account locked ('!'), which sshd with
# `UsePAM no` refuses even for key logins, so set the password field to '*'
# (no password login possible, but not "locked").
if [ "$(id -u)" -eq 0 ]; then
    if ! id -u dlgtest >/dev/null 2>&1; then
        echo "test.sh: creating user dlgtest" >&2
        useradd -m -s /bin/bash dlgtest
    fi
    usermod -p '*' dlgtest
fi

# --- the real agent CLIs --------------------------------------------------------
# The e2e suites run the real `claude` and `codex` (versions in scripts/agent-versions.env)
# against the test kit's model stand-in; installed from npm once, then cached.
# scripts/test-latest-agents.sh sets DELEGATE_TEST_AGENTS_BIN to the newest ones instead.
if [ -z "${DELEGATE_TEST_AGENTS_BIN:-}" ]; then
    DELEGATE_TEST_AGENTS_BIN="$(scripts/install-agents.sh)"
fi
export DELEGATE_TEST_AGENTS_BIN
echo "test.sh: real agent CLIs from $DELEGATE_TEST_AGENTS_BIN" >&2

# --- the real agentbus (PyPI) ---------------------------------------------------
# The NATS interop tests run the real `agentbus` CLI (version in scripts/agent-versions.env)
# against the test kit's nats-server; installed into a venv once, then cached.
if [ -z "${DELEGATE_TEST_AGENTBUS_BIN:-}" ]; then
    DELEGATE_TEST_AGENTBUS_BIN="$(scripts/install-agentbus.sh)"
fi
export DELEGATE_TEST_AGENTBUS_BIN
echo "test.sh: agentbus from $DELEGATE_TEST_AGENTBUS_BIN" >&2

# --- run the tests ------------------------------------------------------------
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace "$@" </dev/null
    # nextest does not run doctests.
    cargo test --doc --workspace </dev/null
else
    cargo test --workspace "$@" </dev/null
fi

# --- suites that need extra tools: run when the machine has them ----------------
# (RELIABILITY.md): supply-chain checks need cargo-deny; fuzzing needs a nightly
# toolchain and cargo-fuzz, and runs a short smoke here (scripts/fuzz.sh says why it
# skips). Set DELEGATE_SKIP_EXTRA=1 to leave them out.
if [ "${DELEGATE_SKIP_EXTRA:-0}" != 1 ]; then
    if cargo deny --version >/dev/null 2>&1; then
        scripts/supply-chain.sh </dev/null
    else
        echo "test.sh: supply-chain checks skipped: cargo-deny is not installed (see RELIABILITY.md)" >&2
    fi
    FUZZ_SECONDS="${FUZZ_SECONDS:-5}" scripts/fuzz.sh </dev/null
fi
