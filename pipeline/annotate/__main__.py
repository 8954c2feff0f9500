"""`python -m pipeline.annotate ...`: the same commands as `toonface annotate ...`, without
loading the rest of the command line (which imports torch)."""

import argparse
import sys

from pipeline.annotate.cli import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m pipeline.annotate")
add_arguments(parser)
sys.exit(run(parser.parse_args()))
