"""Benchmarks: scripts that print their figures (run them as `.venv/bin/python bench/NAME.py --help`)."""
