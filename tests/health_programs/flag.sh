#!/bin/sh
# Health-check program for tests: prints the flag file $1/$2 ("up" or "down"), so a test can
# fail a real server's check while the server itself keeps serving (%h is a word of its own).
cat "$1/$2"
