#!/bin/sh
# Health-check program for tests: prints its first argument (echo adds the newline nanny chops).
echo "$1"
