#!/usr/bin/env bash
# Installs the real `agentbus` CLI (PyPI) at the pinned version for delegate's NATS interop
# tests and prints the directory holding its executable (a venv's bin/).
#
#   scripts/install-agentbus.sh
#
# The venv lands in target/agentbus/<agentbus>_<nats-py>/ (or /var/cache/delegate-test/agentbus
# when the checkout is not reachable by other users) and is reused while it answers.
# Needs Python 3.11 or newer with venv (agentbus reads its config with tomllib); installs
# python3-venv with apt-get when missing and we are root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/agent-versions.env disable=SC1091
. scripts/agent-versions.env

py=""
for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        py=$candidate
        break
    fi
done
if [ -z "$py" ] && [ "$(id -u)" -eq 0 ]; then
    echo "install-agentbus.sh: installing python3-venv" >&2
    # The package lists may be empty on a fresh machine.
    DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv </dev/null >&2
    py=/usr/bin/python3
fi
if [ -z "$py" ]; then
    echo "install-agentbus.sh: needs Python 3.11+ with venv (apt-get install python3-venv)" >&2
    exit 1
fi

base=$PWD/target/agentbus
p=$PWD
while [ "$p" != / ]; do
    if [ "$(stat -c %A "$p" | cut -c10)" != x ]; then
        base=/var/cache/delegate-test/agentbus
        break
    fi
    p=$(dirname "$p")
done
dir=$base/${AGENTBUS_VERSION}_${NATS_PY_VERSION}
bin=$dir/bin
# Complete once the pinned agentbus imports and its CLI answers.
if ! { [ -x "$bin/agentbus" ] && "$bin/python" -c 'import agentbus.cli, nats' >/dev/null 2>&1 &&
    "$bin/agentbus" --help >/dev/null 2>&1; }; then
    rm -rf "$dir"
    mkdir -p "$base"
    echo "install-agentbus.sh: pip install agentbus==$AGENTBUS_VERSION nats-py==$NATS_PY_VERSION" >&2
    "$py" -m venv "$dir" </dev/null >&2
    "$bin/python" -m pip install --quiet --disable-pip-version-check \
        "agentbus==$AGENTBUS_VERSION" "nats-py==$NATS_PY_VERSION" </dev/null >&2
fi
chmod -R a+rX "$base"
echo "install-agentbus.sh: agentbus $("$bin/python" -c 'from importlib.metadata import version; print(version("agentbus"), "nats-py", version("nats-py"))')" >&2
cd "$bin" && pwd
