"""Wall-clock timing shared by the speed benchmarks (run them as ``python benchmarks/<name>.py``)."""

import time

__all__ = ["time_calls", "cpu_calls"]


def time_calls(fn, repeat: int) -> list[float]:
    """Seconds taken by each of ``repeat`` calls of ``fn()``."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cpu_calls(fn, repeat: int) -> list[float]:
    """CPU seconds of this process (``time.process_time``) taken by each of ``repeat`` calls of
    ``fn()``: the measure when other processes share the cores."""
    out = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return out
