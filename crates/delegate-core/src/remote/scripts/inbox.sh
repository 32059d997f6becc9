#!/bin/bash
# delegate's inbox helper: how an agent on the brother reads what the lead sent it with
# `delegate say`. The launch script writes it into the task directory as `inbox` (0700);
# the agent is told to run
#
#   "$DELEGATE_TASK_DIR/inbox"            every message not handed over yet, oldest first
#   "$DELEGATE_TASK_DIR/inbox" ack <id>   message <id> was read (and is being acted on)
#   "$DELEGATE_TASK_DIR/inbox" --all      every message again; writes no receipt
#
# Files next to this script:
#   inbox.jsonl      written only by the lead's say script (remote/scripts/say.sh), one line per
#                    message, exactly {"id":N,"at":"<utc>","author":<json>,"text":<json>}
#                    (the lead checks the shape, the readers below rely on it)
#   delivered.jsonl  append-only receipts, which the lead's sync reads back:
#                    {"id":N,"at":"<utc>","via":"inbox"}   printed by this helper
#                    {"id":N,"at":"<utc>","via":"hook"}    handed over by the Claude hook
#                    {"id":N,"at":"<utc>","via":"ack"}     acknowledged by the agent
#
# A message with any receipt counts as delivered. Reading the receipts, choosing what to
# hand over and appending the new receipts happen under flock(1) on delivered.jsonl when
# the host has flock, so two readers at once (two `inbox` calls, or one and the hook) never
# hand out the same message twice. inbox.jsonl itself is read without that lock: say.sh
# appends whole lines under its own, and a last line still missing its newline (an append
# in progress) waits for the next call.
#
# A plain call prints, per message,
#   --- message <id> from <author> at <at> ---
#   <text>
# with author and text decoded from JSON by bash (no jq on brothers), or `no new messages`.
# Receipts are written only once the text is on stdout. Exit 0; usage errors exit 2 (also
# `ack` of an id that is not in the inbox); a lock or write failure exits 1.
#
# The Claude hook sources this file (`. inbox --source`) for the same parsing, selection and
# receipts: one reader of these formats, not two.

main() {
	set -uo pipefail
	umask 077 # files it creates (outbox, receipts) are the task's alone, whatever the login umask
	# Bytes, not characters: lengths, slices and the control-character ranges below.
	export LC_ALL=C
	usage() {
		printf '%s\n' 'usage: inbox            print new messages from the lead' \
			'       inbox ack <id>   acknowledge message <id>' \
			'       inbox --all      print every message again' >&2
		exit 2
	}
	local dir=${BASH_SOURCE[0]%/*}
	[ "$dir" = "${BASH_SOURCE[0]}" ] && dir=.
	local mode=new target=''
	if [ $# -gt 0 ]; then
		case $1 in
		--all) [ $# -eq 1 ] || usage; mode=all ;;
		ack)
			if [ $# -ne 2 ] || ! [[ $2 =~ ^[1-9][0-9]{0,17}$ ]]; then usage; fi
			mode=ack target=$2
			;;
		*) usage ;;
		esac
	fi

	local i out author body=''
	if [ "$mode" = all ]; then
		inbox_load "$dir" all
		for i in "${!ids[@]}"; do
			inbox_format "$i" || true
		done
		[ -n "$body" ] || body=$'no messages\n'
		printf '%s' "$body"
		return 0
	fi

	inbox_lock "$dir" 30 || {
		printf 'inbox: could not lock %s\n' "$dir/delivered.jsonl" >&2
		exit 1
	}
	inbox_load "$dir"
	if [ "$mode" = ack ]; then
		if [ -z "${known[$target]-}" ]; then
			printf 'inbox: there is no message %s\n' "$target" >&2
			usage
		fi
		if [ -z "${acked[$target]-}" ]; then
			inbox_receipts ack "$target" || {
				printf 'inbox: could not append to %s (disk full?)\n' "$dir/delivered.jsonl" >&2
				exit 1
			}
		fi
		printf 'acknowledged %s\n' "$target"
		return 0
	fi

	local -a shown=()
	for i in "${!ids[@]}"; do
		[ -n "${seen[${ids[i]}]-}" ] && continue # an id twice in the inbox
		seen[${ids[i]}]=1
		inbox_format "$i" && shown+=("${ids[i]}")
	done
	if [ "${#shown[@]}" -eq 0 ]; then
		printf 'no new messages\n'
		return 0
	fi
	printf '%s' "$body" || exit 1
	inbox_receipts inbox "${shown[@]}" || {
		printf 'inbox: could not append to %s (disk full?)\n' "$dir/delivered.jsonl" >&2
		exit 1
	}
}

# Appends message number $1 (an index into ids) to body, decoded; false (and nothing
# appended) for a body that is not valid JSON.
inbox_format() {
	json_decode "${authors[$1]}" || return 1
	author=$out
	json_decode "${texts[$1]}" || return 1
	body+="--- message ${ids[$1]} from $author at ${ats[$1]} ---"$'\n'"$out"$'\n'
}

# Opens delivered.jsonl in directory $1 for appending as fd INBOX_LOCK and locks it,
# waiting at most $2 seconds. Without flock on the host it only opens the file.
inbox_lock() {
	exec {INBOX_LOCK}>>"$1/delivered.jsonl" || return 1
	if hash flock 2>/dev/null; then
		flock -w "$2" -x "$INBOX_LOCK" || return 1
	fi
	return 0
}

# Reads the receipts and the inbox of directory $1 into
#   seen[id] acked[id]      ids with any receipt; ids with an ack
#   known[id]               ids of every well-formed inbox line
#   ids ats authors texts   the well-formed, complete inbox lines in file order (author and
#                           text still JSON-escaped, as the hook copies them): every line
#                           when $2 is `all`, else only those without a receipt
#   INBOX_CUT               a newline when delivered.jsonl ends inside a line (a write cut
#                           short by a full disk), so the next receipt starts on its own
# Lines are taken apart by position and by regexes on their first KiB only: bash's pattern
# removal on a long string costs time quadratic in its length.
inbox_load() {
	ids=() ats=() authors=() texts=() INBOX_CUT=''
	unset seen acked known
	declare -gA seen=() acked=() known=()
	local -a lines=()
	local l n id at author text
	local receipt='^\{"id":([1-9][0-9]{0,17}),"at":"[^"]*","via":"(inbox|hook|ack)"\}$'
	[ -f "$1/delivered.jsonl" ] && mapfile lines <"$1/delivered.jsonl"
	for l in "${lines[@]}"; do
		[ "${l: -1}" = $'\n' ] || { INBOX_CUT=$'\n'; continue; }
		[[ ${l:0:-1} =~ $receipt ]] || continue
		seen[${BASH_REMATCH[1]}]=1
		[ "${BASH_REMATCH[2]}" = ack ] && acked[${BASH_REMATCH[1]}]=1
	done
	lines=()
	[ -f "$1/inbox.jsonl" ] && mapfile lines <"$1/inbox.jsonl"
	for l in "${lines[@]}"; do
		n=${#l}
		[ "${l:n-1}" = $'\n' ] || continue # an append in progress
		inbox_split "$l" || continue
		known[$id]=1
		[ "${2-}" = all ] || [ -z "${seen[$id]-}" ] || continue
		text=${l:text_at:n-3-text_at}
		ids+=("$id") ats+=("$at") authors+=("$author") texts+=("$text")
	done
}

# Takes apart the head of inbox line $1 (with its newline), shaped exactly
#   {"id":N,"at":"<utc>","author":"<json>","text":"<json>"}
# into id, at, author (still escaped) and text_at, where the text's body starts (it runs
# to 3 bytes before the end). False for a line of another shape. The author ends at the
# first `","text":"`, which no JSON string body holds (its quotes are all escaped); the
# lead keeps `at` and the author short (64 and 256 bytes), so the head holds all this.
inbox_split() {
	local head=${1:0:1024} rest
	local re='^\{"id":([1-9][0-9]{0,17}),"at":"([^"\[:cntrl:]]*)","author":"'
	[ "${1: -3}" = '"}'$'\n' ] && [[ $head =~ $re ]] || return 1
	id=${BASH_REMATCH[1]} at=${BASH_REMATCH[2]}
	rest=${head:${#BASH_REMATCH[0]}}
	[[ $rest == *'","text":"'* ]] || return 1
	author=${rest%%'","text":"'*}
	text_at=$((${#BASH_REMATCH[0]} + ${#author} + 10))
	[ $((${#1} - 3)) -ge "$text_at" ]
}

# out = the JSON string body $1, decoded: \" \\ \/ \b \f \n \r \t, and \uXXXX as UTF-8
# (a surrogate pair as one character; a lone surrogate or \u0000, which a bash string
# cannot hold, as U+FFFD). False if $1 could not sit between the quotes of a JSON string
# (a raw quote or control character, an unknown escape, a dangling backslash): what the
# lead writes always can; this keeps a hand-edited inbox from breaking the hook's JSON.
#
# One pass over the body split at its backslashes (word splitting is linear; repeated
# ${s//x/y} or ${s#*x} on a long string are not), the pieces collected in an array and
# joined once. A quote appended before the split keeps a trailing empty piece, and is
# dropped after.
json_decode() {
	# shellcheck disable=SC2141 # a backslash is exactly the separator wanted
	local - IFS="\\"
	set -f
	# shellcheck disable=SC2206 # split at backslashes on purpose (IFS above, globbing off)
	local -a p=($1'"')
	IFS=' '
	local n=${#p[@]} i=1 piece cp lo plain='*["'$'\x01''-'$'\x1f'']*'
	p[n - 1]=${p[n - 1]:0:-1}
	# shellcheck disable=SC2053 # $plain is a pattern
	[[ ${p[0]} != $plain ]] || return 1
	local -a o=("${p[0]}")
	while ((i < n)); do
		piece=${p[i]}
		i=$((i + 1))
		if [ -z "$piece" ]; then
			# An escaped backslash: the piece after its second backslash is plain text.
			((i < n)) || return 1
			piece=${p[i]}
			i=$((i + 1))
			o+=("\\")
		else
			case ${piece:0:1} in
			'"' | /) o+=("${piece:0:1}") ;;
			n) o+=($'\n') ;;
			t) o+=($'\t') ;;
			r) o+=($'\r') ;;
			b) o+=($'\b') ;;
			f) o+=($'\f') ;;
			u)
				[[ ${piece:1:4} == [0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F] ]] || return 1
				cp=$((16#${piece:1:4}))
				if ((cp >= 0xD800 && cp <= 0xDBFF)) && [ "${#piece}" -eq 5 ] && ((i < n)) &&
					[[ ${p[i]:0:5} == u[dD][c-fC-F][0-9a-fA-F][0-9a-fA-F] ]]; then
					lo=$((16#${p[i]:1:4}))
					cp=$((0x10000 + ((cp - 0xD800) << 10) + lo - 0xDC00))
					piece=${p[i]}
					i=$((i + 1))
				elif ((cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))); then
					cp=65533
				fi
				utf8 "$cp"
				o+=("$ch")
				piece=${piece:4}
				;;
			*) return 1 ;;
			esac
			piece=${piece:1}
		fi
		# shellcheck disable=SC2053
		[[ $piece != $plain ]] || return 1
		o+=("$piece")
	done
	printf -v out '%s' "${o[@]}"
}

# ch = code point $1 as UTF-8 bytes.
utf8() {
	local c=$1 e
	if ((c < 0x80)); then
		printf -v e '\\x%02x' "$c"
	elif ((c < 0x800)); then
		printf -v e '\\x%02x\\x%02x' $((0xC0 | c >> 6)) $((0x80 | (c & 0x3F)))
	elif ((c < 0x10000)); then
		printf -v e '\\x%02x\\x%02x\\x%02x' $((0xE0 | c >> 12)) $((0x80 | (c >> 6 & 0x3F))) $((0x80 | (c & 0x3F)))
	else
		printf -v e '\\x%02x\\x%02x\\x%02x\\x%02x' $((0xF0 | c >> 18)) $((0x80 | (c >> 12 & 0x3F))) \
			$((0x80 | (c >> 6 & 0x3F))) $((0x80 | (c & 0x3F)))
	fi
	printf -v ch '%b' "$e"
}

# Appends one receipt `via` $1 for each id in $2... to the locked delivered.jsonl, in one
# write.
inbox_receipts() {
	local via=$1 id t=$EPOCHREALTIME at all=$INBOX_CUT
	shift
	TZ=UTC0 printf -v at '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
	for id; do
		all+="{\"id\":$id,\"at\":\"$at\",\"via\":\"$via\"}"$'\n'
	done
	printf '%s' "$all" >&"$INBOX_LOCK"
}

# ctx = what the Claude hook hands over, as the body of a JSON string, and hooked = the ids
# whose text it holds. Undelivered messages are taken oldest first, each as
#   Message <id> from <author> (delegate say): <text>
# with author and text copied still escaped, joined by \n\n (escaped: 4 bytes), while the
# whole stays within $1 bytes. The first message that does not fit ends the list (it
# comes at the next call, so the order holds); a message that could never fit alone is
# replaced by a short notice pointing at this helper, and gets no receipt. Expects
# inbox_load to have run.
inbox_context() {
	# $2: the task directory, to name the helper by absolute path (Claude Code refuses a
	# command that starts with a variable).
	local cap=$1 tdir=${2-} i id entry need mine how
	ctx='' hooked=()
	for i in "${!ids[@]}"; do
		id=${ids[i]}
		[ -n "${seen[$id]-}" ] && continue
		seen[$id]=1
		json_decode "${authors[i]}" || continue
		how=''
		[ -n "$tdir" ] && how="; acknowledge it with '$tdir/inbox' ack $id"
		entry="Message $id from ${authors[i]} (delegate say$how): ${texts[i]}"
		mine=1
		if [ "${#entry}" -le "$cap" ]; then
			json_decode "${texts[i]}" || continue
		else
			entry="Message $id from ${authors[i]} (delegate say) is too long to show here (${#texts[i]} bytes): run '$tdir/inbox' to read it."
			mine=''
		fi
		need=${#entry}
		[ -n "$ctx" ] && need=$((need + 4))
		[ $((${#ctx} + need)) -le "$cap" ] || break
		[ -n "$ctx" ] && ctx+='\n\n'
		ctx+=$entry
		[ -n "$mine" ] && hooked+=("$id")
	done
	return 0
}

# Sourced (by the hook): define the functions only.
[ "${1-}" = --source ] || main "$@"
