#!/bin/bash
# delegate's Claude Code hook: the task's activity feed. The launch script writes it into
# the task directory as `hook`; the per-task settings (claude-settings.json, passed with
# --settings) run it for each event as
#
#   bash '<task dir>/hook' <Event>          with the hook's JSON payload on stdin
#
# It is a bash script and the settings invoke bash explicitly. Run by `sh` anyway, the first
# command (plain POSIX) hands over to bash.
#
# Each call appends ONE line to events.jsonl next to this script:
#
#   {"at":"<utc>","event":"PostToolUse","tool":"Bash","summary":"cargo"}
#
# summary, never more than this (no secrets: a tool's input and response, the prompt and
# the assistant's messages are never written):
#   PostToolUse, PostToolUseFailure   a `file_path`, `notebook_path` or `path` input: that
#                                     path (at most 200 bytes); Bash: the program name only
#                                     (the first word after any NAME=value words); else ""
#   SessionStart                      `source` (startup, resume, ...); the line also gets
#                                     "session_id" (Claude's conversation id)
#   StopFailure                       `error` (authentication_failed, ...)
#   Notification                      `notification_type`
#   SessionEnd                        `reason`
#   Stop and anything else            ""
# The payload is matched with bash regexes (no jq on brothers) and conservatively: a value
# that does not look like a short identifier or a plain path (quotes, escapes, control
# characters) gives an empty summary, so every value written needs no JSON escaping.
#
# Message delivery (`delegate say`, shared/agent-clis.md §4 row 2). On PostToolUse, and on
# Stop when the payload says "stop_hook_active":false, the lead's messages that have no
# receipt yet in delivered.jsonl are handed to Claude. The hook prints ONE JSON line:
#
#   PostToolUse  {"hookSpecificOutput":{"hookEventName":"PostToolUse","additionalContext":"<c>"}}
#   Stop         {"decision":"block","reason":"<c>"}
#
# where <c> is built by the task's `inbox` helper (remote/scripts/inbox.sh, sourced here, so there
# is one reader of the inbox format): the messages oldest first as `Message <id> from
# <author> (delegate say): <text>`, copied still JSON-escaped from inbox.jsonl, joined by
# \n\n, at most 9000 bytes (Claude cuts hook context at 10,000 characters). A message that
# does not fit waits for the next call; one that could never fit is replaced by a notice
# telling Claude to run the inbox helper. Each message handed over gets a `hook` receipt,
# written under the same lock the helper takes, after the JSON is printed.
# Stop delivery makes a message that arrives during Claude's last turn still land in this
# run: Claude keeps working instead of stopping. Only when stop_hook_active is false (the
# stop was not itself caused by a Stop hook), so the hook never keeps Claude in a loop; a
# payload without the field gets no Stop delivery. PostToolUseFailure delivers nothing
# (a failed tool is followed by another call, or by Stop).
#
# Otherwise it prints nothing, and it always exits 0: exit 2 would feed stderr to Claude.
# Hooks are synchronous, so this one stays small: one `head` to read the payload, builtins
# after, and a `flock` only when there is something to hand over.
if [ -z "${BASH_VERSION-}" ]; then exec bash "$0" "$@"; fi

main() {
	set -u
	umask 077 # events.jsonl and receipts it may create are the task's alone
	export LC_ALL=C # byte semantics for lengths and character classes
	local src=${BASH_SOURCE[0]} dir=.
	[[ $src == */* ]] && dir=${src%/*}

	# The first 64 KiB hold every field we use; the rest (tool output) is drained unread so
	# Claude never writes into a closed pipe.
	local payload=''
	if ! [ -t 0 ]; then
		payload=$(head -c 65536)
		[ "${#payload}" -lt 65536 ] || cat >/dev/null
	fi
	# Only what precedes the tool's response: its text is never looked at.
	local head=${payload%%\"tool_response\"*}

	local id='[A-Za-z0-9_.:-]'
	local event=${1-} tool='' summary='' extra='' v
	[[ $event =~ ^$id+$ && ${#event} -le 64 ]] || event=''
	[ -n "$event" ] || { field hook_event_name "$id" 64 && event=$v; }
	[ -n "$event" ] || event=unknown

	case $event in
	PostToolUse | PostToolUseFailure)
		field tool_name "$id" 128 && tool=$v
		if [ "$tool" = Bash ]; then
			program && summary=$v
		else
			local key
			for key in file_path notebook_path path; do
				if field "$key" '[^"\[:cntrl:]]' 4096; then
					summary=${v:0:200}
					utf8_trim
					break
				fi
			done
		fi
		;;
	SessionStart)
		field source "$id" 64 && summary=$v
		field session_id '[A-Za-z0-9-]' 64 && extra=",\"session_id\":\"$v\""
		;;
	StopFailure) field error "$id" 64 && summary=$v ;;
	Notification) field notification_type "$id" 64 && summary=$v ;;
	SessionEnd) field reason "$id" 64 && summary=$v ;;
	esac

	local t=$EPOCHREALTIME at
	TZ=UTC0 printf -v at '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
	printf '{"at":"%s","event":"%s","tool":"%s","summary":"%s"%s}\n' \
		"$at" "$event" "$tool" "$summary" "$extra" >>"$dir/events.jsonl"

	case $event in
	PostToolUse) deliver "$dir" PostToolUse ;;
	Stop) [[ $head =~ \"stop_hook_active\"[[:space:]]*:[[:space:]]*false ]] && deliver "$dir" Stop ;;
	esac
}

# Prints the lead's undelivered messages on fd 3 (the hook's real stdout) as the JSON Claude
# reads for event $2, and records their receipts. See the header.
deliver() {
	local dir=$1 ctx hooked
	[ -s "$dir/inbox.jsonl" ] && [ -f "$dir/inbox" ] || return 0
	# shellcheck source=/dev/null # the task's remote/scripts/inbox.sh, sourced for its functions
	. "$dir/inbox" --source || return 0
	# A first look without the lock: when nothing is new, no process is started.
	inbox_load "$dir"
	inbox_context 9000 "$dir"
	[ -n "$ctx" ] || return 0
	# Again under the lock: a concurrent `inbox` call may have taken them meanwhile.
	inbox_lock "$dir" 5 || return 0
	inbox_load "$dir"
	inbox_context 9000 "$dir"
	[ -n "$ctx" ] || return 0
	if [ "$2" = Stop ]; then
		printf '{"decision":"block","reason":"%s"}\n' "$ctx" >&3 || return 0
	else
		printf '{"hookSpecificOutput":{"hookEventName":"PostToolUse","additionalContext":"%s"}}\n' "$ctx" >&3 ||
			return 0
	fi
	[ "${#hooked[@]}" -eq 0 ] || inbox_receipts hook "${hooked[@]}"
}

# v = the first string value of key $1 in the payload's head, if every character of it is
# in the ERE bracket expression $2 and it is at most $3 bytes long. (The length is checked
# afterwards: a bounded repeat would make the regex compiler expand it that many times.)
field() {
	v=''
	[[ $head =~ \"$1\"[[:space:]]*:[[:space:]]*\"($2+)\" ]] || return 1
	[ "${#BASH_REMATCH[1]}" -le "$3" ] || return 1
	v=${BASH_REMATCH[1]}
}

# v = the program a Bash command runs: its first word, after any NAME=value assignments
# (whose values are skipped, never kept). Plain words only; a command starting with a
# quote, `$(`, a subshell or anything unusual gives nothing.
program() {
	v=''
	local word='[A-Za-z0-9_./:@%+,-]+'
	local assign="[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_./:@%+,-]*[ ]+"
	[[ $head =~ \"command\"[[:space:]]*:[[:space:]]*\"[\ ]*($assign)*($word)([\ \";\&|\)\<\>\\]) ]] || return 1
	v=${BASH_REMATCH[2]:0:64}
}

# Drops a multi-byte UTF-8 character cut in half at the end of $summary.
utf8_trim() {
	local i n=${#summary} k=0 c need
	for ((i = n - 1; i >= 0 && i >= n - 4; i--)); do
		c=${summary:i:1}
		if [[ $c == [$'\x80'-$'\xbf'] ]]; then
			k=$((k + 1))
			continue
		fi
		if [[ $c == [$'\xc0'-$'\xff'] ]]; then
			need=1
			[[ $c == [$'\xe0'-$'\xef'] ]] && need=2
			[[ $c == [$'\xf0'-$'\xff'] ]] && need=3
			((k < need)) && summary=${summary:0:i}
		fi
		return
	done
}

# Only what deliver() writes to fd 3 reaches Claude.
main "$@" 3>&1 >/dev/null 2>&1
exit 0
