"""Speed benchmarks, run as scripts: each prints its figures and the ratio to a baseline
measured in the same run (``python -m m3fm.benchmarks.decoding --help``)."""
