#!/bin/sh
# Health-check program for tests: prints OK without a newline (nanny chops the K).
printf OK
