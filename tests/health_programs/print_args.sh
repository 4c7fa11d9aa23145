#!/bin/sh
# Health-check program for tests: prints all its arguments on one line (shows %h/%p replaced).
echo "$*"
