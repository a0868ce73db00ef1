"""Timing helper shared by the PyTorch bench scripts."""
import statistics
import time

import torch


def timeit(f, warm=2, runs=10, device="cpu"):
    """Median wall time of `runs` calls of `f` after `warm` warm-up calls.

    On a CUDA device every call is followed by `torch.cuda.synchronize()`, so the time covers the
    kernels and not only their launch.
    """
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(warm):
        f()
    sync()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)
