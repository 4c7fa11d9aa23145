#!/bin/sh
# Health-check program for tests: writes its PID and a child's PID to $1, prints OK, then waits
# far past any check's time limit (the check must kill the whole process group).
sleep 600 &
echo "$$ $!" > "$1.tmp" && mv "$1.tmp" "$1"
echo OK
wait
