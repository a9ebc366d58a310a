"""less_hf benchmarks: `python benchmarks/run.py --preset quick|full` runs them all (see run.py)."""
