#!/bin/bash
# delegate-testkit fake coding agent.
#
# Installed by delegate-testkit as <host dir>/bin/claude and <host dir>/bin/codex;
# the persona comes from the basename of $0. The @...@ placeholders are
# replaced when the testkit writes the script (host dir, absolute tool paths,
# so the script keeps working when a test hides tools from the remote PATH).
#
# Behaviour:
#   --version (only argument)  print the persona's version, exit 0, record nothing
#   otherwise                  append ONE JSON line to <host dir>/agent-records.jsonl,
#                              then act according to <host dir>/agent-mode:
#     ok (default)   print a few lines in the persona's stream-json style, exit 0
#     fail:N         exit N (after recording)
#     sleep:S        sleep S seconds (after recording), then behave like ok
#
# Record fields (strings that may hold arbitrary bytes are base64):
#   name, argv (base64 per argument, argv[1..]), cwd (base64), stdin_sha256 (hex),
#   stdin_bytes, environ (base64 of /proc/$$/environ, NUL-separated), pid, ppid,
#   stdin_is_tty, mode, time ($EPOCHREALTIME).
# Stdin is read completely before recording, except when it is a terminal
# (then nothing is read and stdin_bytes is 0).
set -u

DLGTK_DIR='@DLGTK_DIR@'
B64='@BASE64@'
SHA256SUM='@SHA256SUM@'
MKTEMP='@MKTEMP@'
CAT='@CAT@'
WC='@WC@'
RM='@RM@'
SLEEP='@SLEEP@'

records="$DLGTK_DIR/agent-records.jsonl"
persona="${0##*/}"

if [ "$#" -eq 1 ] && [ "$1" = "--version" ]; then
    case "$persona" in
        codex) printf '%s\n' 'codex-cli 0.169.0' ;;
        *) printf '%s\n' '2.1.329 (Claude Code)' ;;
    esac
    exit 0
fi

json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    printf '%s' "$s"
}

b64() {
    printf '%s' "$1" | "$B64" -w0
}

mode=ok
if [ -r "$DLGTK_DIR/agent-mode" ]; then
    IFS= read -r mode <"$DLGTK_DIR/agent-mode" || true
    [ -n "$mode" ] || mode=ok
fi

# --- argv ---------------------------------------------------------------------
argv_json=""
for a in "$@"; do
    argv_json+="${argv_json:+,}\"$(b64 "$a")\""
done

# --- stdin --------------------------------------------------------------------
tty=false
tmp=$("$MKTEMP" "$DLGTK_DIR/tmp/stdin.XXXXXX")
if [ -t 0 ]; then
    tty=true
else
    "$CAT" >"$tmp" 2>/dev/null || true
fi
sha=$("$SHA256SUM" <"$tmp")
sha=${sha%% *}
bytes=$("$WC" -c <"$tmp")
bytes=${bytes//[!0-9]/}
"$RM" -f "$tmp"

# --- environment, cwd -----------------------------------------------------------
environ=""
if [ -r "/proc/$$/environ" ]; then
    environ=$("$B64" -w0 <"/proc/$$/environ")
fi
cwd=$(b64 "$(pwd -P)")

line="{\"name\":\"$(json_escape "$persona")\",\"argv\":[$argv_json],\"cwd\":\"$cwd\""
line+=",\"stdin_sha256\":\"$sha\",\"stdin_bytes\":${bytes:-0},\"environ\":\"$environ\""
line+=",\"pid\":$$,\"ppid\":$PPID,\"stdin_is_tty\":$tty,\"mode\":\"$(json_escape "$mode")\""
line+=",\"time\":\"${EPOCHREALTIME:-0}\"}"
printf '%s\n' "$line" >>"$records"

# --- behaviour ------------------------------------------------------------------
case "$mode" in
    ok) ;;
    fail:*)
        code=${mode#fail:}
        printf 'fake %s: failing with exit code %s (agent-mode)\n' "$persona" "$code" >&2
        exit "$code"
        ;;
    sleep:*)
        "$SLEEP" "${mode#sleep:}" &
        sleeper=$!
        trap 'kill "$sleeper" 2>/dev/null; exit 129' HUP
        trap 'kill "$sleeper" 2>/dev/null; exit 130' INT
        trap 'kill "$sleeper" 2>/dev/null; exit 143' TERM
        wait "$sleeper"
        trap - HUP INT TERM
        ;;
    *)
        printf 'fake %s: unknown agent-mode %s\n' "$persona" "$mode" >&2
        exit 97
        ;;
esac

new_id() {
    local id=""
    IFS= read -r id </proc/sys/kernel/random/uuid 2>/dev/null || true
    [ -n "$id" ] || id="00000000-0000-4000-8000-$(printf '%012d' "$$")"
    printf '%s' "$id"
}

case "$persona" in
    codex)
        thread_id=""
        prev=""
        for a in "$@"; do
            if [ "$prev" = "resume" ] && [ "${a#-}" = "$a" ]; then
                thread_id=$a
            fi
            prev=$a
        done
        [ -n "$thread_id" ] || thread_id=$(new_id)
        thread_id=$(json_escape "$thread_id")
        printf '%s\n' "{\"type\":\"thread.started\",\"thread_id\":\"$thread_id\"}"
        printf '%s\n' '{"type":"turn.started"}'
        printf '%s\n' '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"done"}}'
        printf '%s\n' '{"type":"turn.completed","usage":{"input_tokens":1,"cached_input_tokens":0,"output_tokens":1}}'
        ;;
    *)
        session_id=""
        prev=""
        for a in "$@"; do
            case "$prev" in
                --session-id | --resume | -r) session_id=$a ;;
            esac
            case "$a" in
                --session-id=*) session_id=${a#--session-id=} ;;
                --resume=*) session_id=${a#--resume=} ;;
            esac
            prev=$a
        done
        [ -n "$session_id" ] || session_id=$(new_id)
        sid=$(json_escape "$session_id")
        printf '%s\n' "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"$sid\",\"cwd\":\"$(json_escape "$(pwd -P)")\",\"model\":\"claude-fake\",\"claude_code_version\":\"2.1.329\"}"
        printf '%s\n' "{\"type\":\"assistant\",\"message\":{\"id\":\"msg_fake\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-fake\",\"content\":[{\"type\":\"text\",\"text\":\"done\"}]},\"session_id\":\"$sid\"}"
        printf '%s\n' "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"num_turns\":1,\"result\":\"done\",\"session_id\":\"$sid\",\"total_cost_usd\":0}"
        ;;
esac
exit 0
