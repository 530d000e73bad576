#!/bin/sh
# Stand-in for the ElkFS daemons in the harness's own tests: follows the ready-file and SIGTERM
# contract, and misbehaves on request (--fake-* flags) so the harness's reactions can be checked.
trap 'echo "2025-01-01T00:00:00Z  INFO stopping on SIGTERM" >&2; exit 0' TERM
ready=""
listen="127.0.0.1:0"
while [ $# -gt 0 ]; do
    case "$1" in
        --ready-file) ready="$2"; shift ;;
        --listen) listen="$2"; shift ;;
        --fake-error) echo "2025-01-01T00:00:00Z ERROR $2" >&2; shift ;;
        --fake-exit) echo "2025-01-01T00:00:00Z ERROR fatal: $2" >&2; exit 3 ;;
        --fake-print-master) echo "master=$ELKFS_MASTER"; exit 0 ;;
        --fake-ignore-term) trap '' TERM ;;
        --fake-in-use-once)
            if [ ! -e "$2" ]; then
                : > "$2"
                echo "2025-01-01T00:00:00Z ERROR bind $listen: Address already in use (os error 98)" >&2
                exit 1
            fi
            shift ;;
    esac
    shift
done
case "$listen" in
    *:0) listen="127.0.0.1:$(( $$ % 20000 + 20000 ))" ;;
esac
echo "2025-01-01T00:00:00Z  INFO $(basename "$0") ready on $listen" >&2
printf '%s\n' "$listen" > "$ready.tmp" && mv "$ready.tmp" "$ready"
while :; do
    sleep 1 &
    wait $!
done
