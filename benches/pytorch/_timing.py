"""Timing helper shared by the PyTorch bench scripts."""
import statistics
import time


def timeit(f, warm=2, runs=10):
    """Median wall time of `runs` calls of `f` after `warm` warm-up calls."""
    for _ in range(warm):
        f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)
