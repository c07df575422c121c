#!/usr/bin/env python
"""Class-unlearning benchmark: ``python run_bench.py --grid quick`` (see README.md)."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
