"""Command-line entry points (argparse, one module per sub-command)."""
