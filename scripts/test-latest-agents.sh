#!/usr/bin/env bash
# The gated check against agent releases: runs the suites that use the real CLIs with the
# newest `claude` and `codex` on npm, so a release that changes flags or stream formats is
# caught by this command rather than by a user. Not part of scripts/test.sh (it needs the
# registry's `latest` of the day); run it before bumping scripts/agent-versions.env.
#
#   scripts/test-latest-agents.sh [extra test-runner args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$(scripts/install-agents.sh latest)"
export DELEGATE_TEST_AGENTS_BIN=$bin
echo "test-latest-agents.sh: $("$bin/claude" --version | head -n1); $("$bin/codex" --version 2>/dev/null | grep -m1 -E '[0-9]+\.[0-9]+')" >&2
# The real-agent e2e suite, the stand-in's own tests, the doctor against real brothers.
cargo test -p delegate-testkit --test model_standin "$@" </dev/null
cargo test --test e2e real_agents "$@" </dev/null
