#!/bin/bash
# delegate's report helper: how an agent on the brother talks back to the lead. The launch
# script writes it into the task directory as `report` (0700); the agent is told to call
#
#   "$DELEGATE_TASK_DIR/report" <receipt|progress|question|done|blocked> <text...>
#   "$DELEGATE_TASK_DIR/report" status <running|needs_input|completed|failed> [text...]
#   "$DELEGATE_TASK_DIR/report" artifact PATH "what it is"
#
# An artifact is a file the lead may copy back (`delegate fetch N --artifacts`): its path
# (made absolute from the current directory) and description are appended as one
# NUL-separated record to `artifacts` next to this script (read by remote/scripts/
# artifacts.sh, which checks where it points when the lead asks), and the report line's
# text is "artifact PATH: what it is".
#
# A text of `-` is read from stdin. Each call appends ONE line to outbox.jsonl next to this
# script, which the lead's next sync picks up:
#
#   {"seq":N,"at":"<utc>","kind":"progress","text":"..."}
#   {"seq":N,"at":"<utc>","kind":"status","status":"needs_input","text":"needs_input <text>"}
#
# (a status line's text starts with the status word, so a reader that only knows `text`
# still sees it), plus `"truncated":true` when the text was cut at 16 KiB. seq is 1 + the
# lines already in the file, counted and appended under flock(1) when the host has it:
# lines may exceed PIPE_BUF, so a plain O_APPEND write alone would not keep concurrent
# reports whole. Pure bash otherwise: nothing of delegate is installed on a brother.
# Prints "reported" and exits 0; a usage error exits 2; an unwritable outbox exits 1.

main() {
	set -uo pipefail
	umask 077 # files it creates (outbox, receipts) are the task's alone, whatever the login umask
	# Bytes, not characters: lengths, the cap and the control-character ranges below.
	export LC_ALL=C
	local cap=16384
	usage() {
		printf '%s\n' 'usage: report <receipt|progress|question|done|blocked> <text...|->' \
			'       report status <running|needs_input|completed|failed> [text...|-]' \
			'       report artifact PATH "what it is"' >&2
		exit 2
	}
	local kind=${1-} status='' text artifact=''
	case $kind in
	artifact)
		shift
		{ [ $# -ge 1 ] && [ -n "$1" ]; } || usage
		artifact=$1
		shift
		[[ $artifact == /* ]] || artifact=$PWD/$artifact
		;;
	receipt | progress | question | done | blocked)
		shift
		[ $# -gt 0 ] || usage
		;;
	status)
		shift
		status=${1-}
		case $status in running | needs_input | completed | failed) shift ;; *) usage ;; esac
		;;
	*) usage ;;
	esac
	if [ -n "$artifact" ] && [ $# -eq 0 ]; then
		text=''
	elif [ $# -eq 1 ] && [ "$1" = - ]; then
		# One byte past the cap tells a cut text from one that fits. Builtin read: NULs are
		# dropped, which JSON text could not carry anyway.
		IFS= read -r -d '' -N $((cap + 1)) text
		# Whatever the writer still sends is dropped rather than left to break its pipe.
		[ "${#text}" -le "$cap" ] || cat >/dev/null
		# Like $(...): the newline that ends piped text is not part of it.
		while [[ $text == *$'\n' ]]; do text=${text%$'\n'}; done
	else
		text=$*
	fi
	[ -n "$status" ] && text=$status${text:+ $text}
	local description=''
	if [ -n "$artifact" ]; then
		description=${text:0:cap}
		text="artifact $artifact${text:+: $text}"
	fi

	local truncated=''
	if [ "${#text}" -gt "$cap" ]; then
		text=${text:0:cap}
		utf8_trim
		truncated=',"truncated":true'
	fi
	json_escape

	local dir=${BASH_SOURCE[0]%/*}
	[ "$dir" = "${BASH_SOURCE[0]}" ] && dir=.
	local out=$dir/outbox.jsonl lock
	if ! exec {lock}>>"$out"; then
		printf 'report: cannot write %s\n' "$out" >&2
		exit 1
	fi
	if hash flock 2>/dev/null; then
		flock -x "$lock" || {
			printf 'report: could not lock %s\n' "$out" >&2
			exit 1
		}
	fi
	if [ -n "$artifact" ] && ! printf '%s\0%s\0' "$artifact" "$description" >>"$dir/artifacts"; then
		printf 'report: could not append to %s (disk full?)\n' "$dir/artifacts" >&2
		exit 1
	fi
	local -a lines=()
	mapfile -t lines <"$out"
	local t=$EPOCHREALTIME at
	TZ=UTC0 printf -v at '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
	local line
	printf -v line '{"seq":%d,"at":"%s","kind":"%s"%s,"text":"%s"%s}' \
		$((${#lines[@]} + 1)) "$at" "$kind" "${status:+,\"status\":\"$status\"}" "$text" "$truncated"
	if ! printf '%s\n' "$line" >&"$lock"; then
		printf 'report: could not append to %s (disk full?)\n' "$out" >&2
		exit 1
	fi
	printf 'reported\n'
}

# Drops a multi-byte UTF-8 character that the cap cut in half: the trailing continuation
# bytes (10xxxxxx) and their lead byte, when the lead byte wants more than are there.
utf8_trim() {
	local i n=${#text} k=0 c need
	for ((i = n - 1; i >= 0 && i >= n - 4; i--)); do
		c=${text:i:1}
		if [[ $c == [$'\x80'-$'\xbf'] ]]; then
			k=$((k + 1))
			continue
		fi
		if [[ $c == [$'\xc0'-$'\xff'] ]]; then
			need=1
			[[ $c == [$'\xe0'-$'\xef'] ]] && need=2
			[[ $c == [$'\xf0'-$'\xff'] ]] && need=3
			((k < need)) && text=${text:0:i}
		fi
		return
	done
}

# JSON string escaping of $text in place: backslash and quote, the usual short escapes,
# every other control character as \u00XX. Bytes >= 0x80 (UTF-8) stay as they are. The
# replacements are quoted: bash 5.2 would otherwise read `&` and `\` in them specially.
json_escape() {
	text=${text//"\\"/"\\\\"}
	text=${text//'"'/'\"'}
	[[ $text == *[$'\x01'-$'\x1f\x7f']* ]] || return 0
	text=${text//$'\n'/'\n'}
	text=${text//$'\t'/'\t'}
	text=${text//$'\r'/'\r'}
	local i hex c
	for i in {1..31} 127; do
		printf -v hex '%02x' "$i"
		printf -v c '%b' "\\x$hex"
		text=${text//"$c"/'\u00'"$hex"}
	done
}

main "$@"
