#!/bin/bash
# delegate's write-scope guard for Claude Code (`delegate reopen --write-scope`). The launch
# script writes it into the task directory as `scope-guard`, next to `write-scope` (one
# allowed path per line: absolute, or `~/`-relative to the brother's home); the per-task
# settings run it as a PreToolUse hook for the file-writing tools:
#
#   bash '<task dir>/scope-guard'          with the hook's JSON payload on stdin
#
# For Edit, MultiEdit and Write (`file_path`) and NotebookEdit (`notebook_path`) it resolves
# the target with `realpath -m` (symlinks and `..` followed, so neither leads out) and lets
# the call through only when it is a scope entry or lies under one. Anything it cannot
# check is refused, never waved through: no or several path fields, a path with JSON
# escapes or control characters, a relative path, a missing scope file. A refusal prints
#
#   {"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"deny",
#    "permissionDecisionReason":"..."}}
#
# (Claude Code's documented way for a PreToolUse hook to block a call, in every permission
# mode) and logs a `ScopeDenied` line with the tool and path to events.jsonl. A call it
# allows, or another tool, gets no output: the normal permission flow decides.
# What this does not cover: Bash. Its writes are bounded by the OS sandbox at the `write`
# level (the working directory), not by the scope; the run's evidence says so.
if [ -z "${BASH_VERSION-}" ]; then exec bash "$0" "$@"; fi

main() {
	set -u
	umask 077 # events.jsonl and receipts it may create are the task's alone
	export LC_ALL=C
	local src=${BASH_SOURCE[0]} dir=.
	[[ $src == */* ]] && dir=${src%/*}

	local payload=''
	if ! [ -t 0 ]; then
		payload=$(head -c 262144)
		[ "${#payload}" -lt 262144 ] || cat >/dev/null
	fi
	local tool='' key=''
	[[ $payload =~ \"tool_name\"[[:space:]]*:[[:space:]]*\"([A-Za-z0-9_]+)\" ]] && tool=${BASH_REMATCH[1]}
	case $tool in
	Edit | MultiEdit | Write) key=file_path ;;
	NotebookEdit) key=notebook_path ;;
	'') deny '' '' "the call names no tool delegate can read" ;; # only guarded tools come here
	*) return 0 ;;
	esac

	# Exactly one `"<key>":` in the payload. A `"` inside a JSON string is always escaped, so
	# an unescaped `"file_path"` followed by a colon is a real key, never text in a value.
	local rest=$payload count=0 re_key="\"$key\"[[:space:]]*:(.*)" re_value="\"$key\"[[:space:]]*:[[:space:]]*\"([^\"]*)\""
	while [[ $rest =~ $re_key ]]; do
		count=$((count + 1))
		rest=${BASH_REMATCH[1]}
	done
	[ "$count" -eq 1 ] || deny "$tool" "" "the call names $count $key fields; delegate cannot check it"
	[[ $payload =~ $re_value ]] ||
		deny "$tool" "" "its $key is not a plain string; delegate cannot check it"
	local path=${BASH_REMATCH[1]}
	[[ $path == *[\\[:cntrl:]]* ]] && deny "$tool" "" "its $key holds escapes or control characters; delegate cannot check it"
	[[ $path == /* ]] || deny "$tool" "" "$key must be an absolute path"
	[ -f "$dir/write-scope" ] || deny "$tool" "$path" "the write scope of this run is missing"

	local target entry allowed=''
	target=$(realpath -m -- "$path") || deny "$tool" "$path" "the path cannot be resolved"
	while IFS= read -r entry || [ -n "$entry" ]; do
		[ -n "$entry" ] || continue
		# shellcheck disable=SC2088 # the literal `~` written in the scope file is matched here
		case $entry in "~") entry=$HOME ;; "~/"*) entry=$HOME/${entry:2} ;; esac
		entry=$(realpath -m -- "$entry") || continue
		if [ "$target" = "$entry" ] || [[ $target == "${entry%/}/"* ]]; then
			return 0
		fi
		allowed+="${allowed:+, }$entry"
	done <"$dir/write-scope"
	deny "$tool" "$path" "$target is outside this follow-up's write scope ($allowed); change only files under it"
}

# Blocks the call: the decision on fd 3 (the hook's real stdout), a line in events.jsonl.
# $1 tool, $2 the path as given (may be empty), $3 why. Paths reaching here hold no quote,
# backslash or control character (checked above, or come from realpath of such a path and
# the scope file, whose entries delegate checked), so they need no JSON escaping.
deny() {
	local reason="delegate: write refused: $3" t=$EPOCHREALTIME at
	# Printable ASCII only (LC_ALL=C: every byte above 0x7f is unprintable), no quote or
	# backslash: the JSON needs no escaping and a cut never splits a character.
	reason=${reason//[^[:print:]]/?} && reason=${reason//[\"\\]/?}
	local shown=${2//[^[:print:]]/?} && shown=${shown//[\"\\]/?}
	printf '{"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"deny","permissionDecisionReason":"%s"}}\n' \
		"$reason" >&3
	TZ=UTC0 printf -v at '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
	printf '{"at":"%s","event":"ScopeDenied","tool":"%s","summary":"%s"}\n' "$at" "$1" "${shown:0:200}" \
		>>"$dir/events.jsonl"
	exit 0
}

main "$@" 3>&1 >/dev/null 2>&1
exit 0
