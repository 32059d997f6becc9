#!/usr/bin/env bash
# Installs the real `claude` and `codex` CLIs from npm for delegate's tests and prints the
# directory holding both executables (node_modules/.bin).
#
#   scripts/install-agents.sh              the pinned versions (scripts/agent-versions.env)
#   scripts/install-agents.sh latest       whatever npm calls latest today
#
# The install lands in target/agents/<claude>_<codex>/ (or /var/cache/delegate-test/agents
# when the checkout is not reachable by other users) and is reused while it is complete.
# The test hosts log in as an unprivileged user, so the directory is made readable to all.
# Needs node and npm (installed with apt-get when missing and we are root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/agent-versions.env disable=SC1091
. scripts/agent-versions.env
claude=$CLAUDE_CODE_VERSION codex=$CODEX_VERSION
if [ "${1-}" = latest ]; then
    claude=latest codex=latest
fi

if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "install-agents.sh: installing nodejs and npm" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm </dev/null >&2
    else
        echo "install-agents.sh: npm is missing: install nodejs and npm" >&2
        exit 1
    fi
fi

# The test hosts' user must reach the binaries: a checkout under a private home (/root) is
# not traversable by others, so the cache goes to /var/cache then.
base=$PWD/target/agents
p=$PWD
while [ "$p" != / ]; do
    if [ "$(stat -c %A "$p" | cut -c10)" != x ]; then
        base=/var/cache/delegate-test/agents
        break
    fi
    p=$(dirname "$p")
done
dir=$base/${claude}_${codex}
bin=$dir/node_modules/.bin
# "latest" is asked again every time; a pinned install is complete once both answer.
if [ "$claude" = latest ] || ! { [ -x "$bin/claude" ] && [ -x "$bin/codex" ] &&
    "$bin/claude" --version >/dev/null 2>&1 && "$bin/codex" --version >/dev/null 2>&1; }; then
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "install-agents.sh: npm install @anthropic-ai/claude-code@$claude @openai/codex@$codex" >&2
    # npm 11 skips Claude's postinstall under its install-script policy; the package ships
    # its native binary anyway (agent-clis.md).
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$claude" "@openai/codex@$codex" </dev/null >&2
fi
chmod -R a+rX "$base"
echo "install-agents.sh: $("$bin/claude" --version 2>/dev/null | head -n1), $("$bin/codex" --version 2>/dev/null | grep -m1 -E '[0-9]+\.[0-9]+')" >&2
cd "$bin" && pwd
