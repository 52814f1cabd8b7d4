"""Where `axnet explore` jobs run: a local process pool (`--engine local`) or Ray tasks (`--engine ray`).

Both take the same job dicts to `dnn.workflow.explore_eval.run_job` and hand results back as they finish, in
whatever order; the caller records each one at once. Workers fix torch's thread count (`threads`, default 1) so a
job's result does not depend on the engine or on how many workers share the machine.

Ray: `--address HOST:PORT` joins a running cluster (`ray start --head` on one machine, `ray start
--address HEAD:6379` on the others, each with axnet installed); without it a local Ray with `workers` CPUs is started
for the run and stopped after it. Each task declares `threads` CPUs, and a GPU when the run's device is CUDA.
"""
from __future__ import annotations

import os
import socket
import sys
import time

from circuits.errors import AxnetError
from dnn.workflow.explore_eval import job_label, run_job, setup_worker

ENGINES = ("local", "ray")
CONNECT_TIMEOUT = 5.0  # seconds to wait for a Ray head's port before calling the address unreachable


def default_workers():
    """The machine's core count (what this process may use)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class InlineEngine:
    """One worker: the jobs run in this process, one after the other."""

    def __init__(self, ctx, threads=1):
        self.ctx = ctx
        setup_worker(threads)

    def run(self, jobs):
        for job in jobs:
            yield job, run_job(self.ctx, job)

    def close(self):
        pass


class LocalEngine:
    """A pool of `workers` spawned processes (spawn, not fork: torch's threads do not survive a fork safely)."""

    def __init__(self, ctx, workers, threads=1):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.ctx = ctx
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=setup_worker, initargs=(threads,))

    def run(self, jobs):
        from concurrent.futures import as_completed

        futures = {self.pool.submit(run_job, self.ctx, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def ray_task(ctx, job, threads):
    """What one Ray task runs (a module-level function, so Ray can ship it by reference)."""
    setup_worker(threads)
    return run_job(ctx, job)


def check_address(address):
    """A HOST:PORT address must accept a TCP connection before Ray is asked to join it (Ray itself may wait for
    minutes on an address where nothing answers)."""
    if address in (None, "auto") or address.startswith("ray://"):
        host_port = address[len("ray://"):] if address and address.startswith("ray://") else None
    else:
        host_port = address
    if not host_port:
        return
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        raise AxnetError(f"--address '{address}': expected HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        raise AxnetError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None


class RayEngine:
    """Jobs as Ray tasks on a cluster (`address`) or on a local Ray started for the run."""

    def __init__(self, ctx, workers, address=None, threads=1):
        try:
            import ray
        except ImportError:
            raise AxnetError("--engine ray needs Ray (pip install 'axnet[ray]')") from None
        check_address(address)
        self.ray = ray
        self.started = not ray.is_initialized()
        try:
            if self.started:
                if address:
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
                else:
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError... for a bad cluster
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AxnetError(f"--engine ray{' --address ' + address if address else ''}: cannot start or join "
                             f"Ray ({first[:160]})") from None
        gpus = 1 if str(ctx.get("device", "cpu")).startswith("cuda") else 0
        self.remote = ray.remote(num_cpus=threads, num_gpus=gpus)(ray_task)
        self.ctx_ref = ray.put(ctx)
        self.threads = threads

    def run(self, jobs):
        refs = {self.remote.remote(self.ctx_ref, job, self.threads): job for job in jobs}
        try:
            while refs:
                done, _ = self.ray.wait(list(refs), num_returns=1)
                job = refs.pop(done[0])
                yield job, self.ray.get(done[0])
        finally:
            for ref in refs:
                self.ray.cancel(ref, force=True)

    def close(self):
        if self.started:
            self.ray.shutdown()


def make_engine(name, ctx, workers=None, address=None, threads=1):
    """The engine a run asked for; `workers` defaults to the core count."""
    if name not in ENGINES:
        raise AxnetError(f"--engine '{name}': expected {' or '.join(ENGINES)}")
    if address and name != "ray":
        raise AxnetError("--address applies to --engine ray")
    workers = workers or default_workers()
    if workers < 1:
        raise AxnetError(f"--workers {workers}: expected at least 1")
    if name == "ray":
        return RayEngine(ctx, workers, address, threads)
    return InlineEngine(ctx, threads) if workers == 1 else LocalEngine(ctx, workers, threads)


class Progress:
    """One line per finished job on stderr: running count, what finished, and the time left at the current pace."""

    def __init__(self, total, what, show=True):
        self.total, self.what, self.show = total, what, show
        self.done = 0
        self.t0 = time.perf_counter()

    def step(self, job, result, summary=""):
        self.done += 1
        if not self.show:
            return
        elapsed = time.perf_counter() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        status = f"error: {result['error']}" if "error" in result else summary
        print(f"[{self.done}/{self.total}] {self.what} {job_label(job)}: {status} "
              f"({elapsed:.0f} s, {format_seconds(left)} left)", file=sys.stderr, flush=True)


def format_seconds(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
