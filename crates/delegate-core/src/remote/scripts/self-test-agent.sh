# delegate's built-in self-test agent: a deterministic stand-in for a coding agent that
# needs nothing installed but bash. The launch script writes it into the task directory.
# It reads the prompt on stdin and speaks Claude Code's stream-json, so everything
# downstream of the agent (stream tee, outcome parsing) is exercised without an LLM. It
# talks back through the task's `report` helper like a real agent is told to: a receipt,
# progress, and `done` (or `blocked` when it fails on purpose).
#
# Directives, each on a line of its own in the prompt:
#   @self-test fail N      report an error and exit N
#   @self-test sleep S     work for S seconds (one turn per second, up to the turn limit),
#                          reading the lead's messages with the inbox helper every turn
#   @self-test turns       use every allowed turn and stop at the limit
# Without a directive it succeeds in one turn.

main() {
	set -uo pipefail
	local max_turns=50 session_id=self-test
	while [ $# -gt 0 ]; do
		case $1 in
		--max-turns) max_turns=$2; shift 2 ;;
		--session-id) session_id=$2; shift 2 ;;
		--version) printf 'delegate-self-test 1\n'; return 0 ;;
		*) shift ;;
		esac
	done
	local prompt_file
	prompt_file=$(mktemp)
	cat >"$prompt_file"
	local bytes sum
	bytes=$(wc -c <"$prompt_file" | tr -d ' ')
	sum=$(sha256sum <"$prompt_file") && sum=${sum%% *}
	local mode=ok arg=
	local line
	line=$(grep -a -m1 '^@self-test ' "$prompt_file" || true)
	rm -f -- "$prompt_file"
	if [ -n "$line" ]; then
		read -r _ mode arg <<<"$line"
	fi

	# shellcheck disable=SC1003
	json_safe() { tr -d '\000-\037"\\'; }
	say() { printf '{"type":"assistant","message":{"content":[{"type":"text","text":"%s"}]}}\n' "$1"; }
	result() { # subtype is_error turns text
		printf '{"type":"result","subtype":"%s","is_error":%s,"num_turns":%s,"result":"%s","session_id":"%s","total_cost_usd":0}\n' \
			"$1" "$2" "$3" "$4" "$session_id"
	}
	# The helper's "reported" must not land in the stream (our stdout).
	tell() {
		[ -x "${DELEGATE_TASK_DIR-}/report" ] && "$DELEGATE_TASK_DIR/report" "$@" >/dev/null 2>&1
		return 0
	}
	# Messages from the lead: read with the inbox helper as real agents are told to, say
	# what was heard, and acknowledge each one.
	heard() {
		tell progress "heard: $2"
		"$DELEGATE_TASK_DIR/inbox" ack "$1" >/dev/null 2>&1
		say "heard message $1"
	}
	listen() {
		[ -x "${DELEGATE_TASK_DIR-}/inbox" ] || return 0
		local out line id='' text=''
		out=$("$DELEGATE_TASK_DIR/inbox" 2>/dev/null) || return 0
		while IFS= read -r line; do
			if [[ $line =~ ^---\ message\ ([0-9]+)\ from\ .*\ ---$ ]]; then
				[ -n "$id" ] && heard "$id" "$text"
				id=${BASH_REMATCH[1]}
				text=''
			elif [ -n "$id" ]; then
				text=${text:+$text$'\n'}$line
			fi
		done <<<"$out"
		[ -n "$id" ] && heard "$id" "$text"
		return 0
	}
	printf '{"type":"system","subtype":"init","session_id":"%s","claude_code_version":"delegate-self-test 1","cwd":"%s","tools":[]}\n' \
		"$session_id" "$(pwd | json_safe)"
	say "received a prompt of $bytes bytes, sha256 $sum"
	tell receipt "received a prompt of $bytes bytes, sha256 $sum"

	case $mode in
	fail)
		local code=${arg:-1}
		tell blocked "self-test failure requested (exit $code)"
		result error_during_execution true 1 "self-test failure requested (exit $code)"
		return "$code"
		;;
	sleep)
		local secs=${arg:-5} turn=1
		while [ "$turn" -lt "$secs" ]; do
			sleep 1
			turn=$((turn + 1))
			if [ "$turn" -gt "$max_turns" ]; then
				result error_max_turns true "$max_turns" "stopped at the turn limit"
				return 1
			fi
			listen
			say "turn $turn of $secs"
			tell progress "turn $turn of $secs"
		done
		sleep 1
		tell "done" "self-test worked for $secs seconds"
		result success false "$turn" "self-test worked for $secs seconds"
		;;
	turns)
		local turn
		for ((turn = 2; turn <= max_turns; turn++)); do say "turn $turn"; done
		tell blocked "stopped at the turn limit of $max_turns"
		result error_max_turns true "$max_turns" "stopped at the turn limit"
		return 1
		;;
	*)
		tell progress "working on it"
		tell "done" "self-test completed"
		result success false 1 "self-test completed"
		;;
	esac
}
main "$@"
