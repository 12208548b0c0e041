#!/bin/sh
# exoip --notify hook: log every state change of an elastic IP to syslog / the journal.
#
# Install: install -m 0755 notify.sh /usr/local/bin/exoip-notify
# Use:     exoip -W ... --notify /usr/local/bin/exoip-notify
# See:     journalctl -t exoip-notify   (or /var/log/syslog)
#
# exoip runs it without a shell of its own, with stdin from /dev/null, the EXOIP_* variables set
# and the secrets (API secret, heartbeat key, anything named *SECRET*, *PASSWORD*, *TOKEN*) removed
# from its environment; it is killed after --hook-timeout (30 s). Its own output also ends up in
# exoip's log. --notify also runs at every reconcile while this node is master (EXOIP_REASSERT=1):
# anything done here must be safe to repeat.
set -u

state=${EXOIP_STATE:-UNKNOWN}
previous=${EXOIP_PREVIOUS_STATE:-none}
address=${EXOIP_ADDRESS:-unknown}
reason=${EXOIP_REASON:-}
peer=${EXOIP_PEER:-}

if [ "${EXOIP_REASSERT:-0}" = 1 ]; then
    # Still master after a reconcile: not worth a log line every 30 s.
    exit 0
fi

msg="$address: $previous -> $state"
if [ -n "$peer" ]; then
    msg="$msg (peer $peer)"
fi
if [ -n "$reason" ]; then
    msg="$msg: $reason"
fi

case $state in
    FAULT) priority=daemon.warning ;;
    *) priority=daemon.notice ;;
esac

logger -t exoip-notify -p "$priority" -- "$msg"

# Actions go here, for example:
# case $state in
#     MASTER) ;;              # attached: this node receives the traffic now
#     BACKUP | FAULT | STOP) ;;
# esac
