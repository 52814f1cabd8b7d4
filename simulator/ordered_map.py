"""Run tasks on worker threads and hand their results back in submission order, a bounded number ahead.

Every block loop of the simulator and the metrics uses it: numpy ufuncs and the compiled kernels release the GIL,
so threads overlap the work, while the consumer still sees blocks in pattern order.
"""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor


def ordered_map(work, items, threads):
    """Yield `work(item)` for each of `items` in order, with at most 2 * threads tasks submitted ahead."""
    threads = max(1, int(threads))
    with ThreadPoolExecutor(max_workers=threads) as executor:
        items = iter(items)
        pending = [executor.submit(work, item) for item in itertools.islice(items, 2 * threads)]
        try:
            while pending:
                result = pending.pop(0).result()
                nxt = next(items, None)
                if nxt is not None:
                    pending.append(executor.submit(work, nxt))
                yield result
        finally:
            for f in pending:
                f.cancel()
