#!/bin/sh
# Health-check program for tests: prints OK, then exits with the status given as $1.
echo OK
exit "$1"
