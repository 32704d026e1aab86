"""Training batches for the teaching model, one per optimizer step.

The batch of step ``s`` is drawn from its own random stream, seeded by ``(seed, s)``: which process renders it,
and whether the run was stopped and resumed before it, never changes it. So the same batches can be rendered
in the training loop (``workers=0``, what a CPU run wants: both cores train) or ahead of it in worker
processes (``workers=N``, what a GPU run wants: drawing 512 scenes takes about as long as the step itself).
"""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import signal
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from . import scenes

__all__ = ["step_batch", "BatchSource", "check_workers"]


def step_batch(seed: int, step: int, batch: int, size: int, p_two: float, p_style_mention: float,
               cond_drop: float) -> tuple[np.ndarray, list[str]]:
    """Step ``step``'s batch: uint8 images (B, H, W, 3) and their captions, a ``cond_drop`` fraction of them
    replaced by ``""`` (the unconditional branch classifier-free guidance needs)."""
    rng = np.random.default_rng([seed, step])
    b = scenes.dataset_batch(rng, batch, size, p_two=p_two, p_style_mention=p_style_mention)
    drop = rng.random(batch) < cond_drop
    return b["images"], ["" if d else c for c, d in zip(b["captions"], drop)]


def check_workers(workers: int) -> None:
    """A clear error for a negative number of data workers."""
    if workers < 0:
        raise ValueError(f"data_workers must be 0 (render in the training loop) or more, got {workers}")


def _ignore_ctrl_c() -> None:
    # Ctrl-C reaches the whole process group: the trainer stops cleanly at the next step (and needs the batch
    # it is waiting for), so the workers leave the signal to it
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: seconds to wait for one rendered batch before saying so (a worker that dies is reported at once)
WAIT_S = 300


class BatchSource:
    """``get(step)`` gives step ``step``'s batch (:func:`step_batch`); with ``workers > 0`` the next
    ``2 * workers`` batches are rendered ahead in that many processes (started with ``spawn``: a script that
    trains with workers needs the ``if __name__ == "__main__":`` guard)."""

    def __init__(self, seed: int, batch: int, size: int, *, p_two: float, p_style_mention: float,
                 cond_drop: float, workers: int = 0):
        check_workers(workers)
        self._job = (seed, batch, size, p_two, p_style_mention, cond_drop)
        self.workers = workers
        self._pool = None
        self._ahead: collections.deque = collections.deque()   # (step, Future)
        self._next = None

    def _args(self, step: int) -> tuple:
        seed, *rest = self._job
        return (seed, step, *rest)

    def get(self, step: int) -> tuple[np.ndarray, list[str]]:
        if not self.workers:
            return step_batch(*self._args(step))
        if self._pool is None:
            # spawn, not fork: the parent holds CUDA and OpenMP threads, which a forked child must not inherit
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_ctrl_c)
        if self._next != step:   # first call, or a jump: drop what was rendered ahead
            self._ahead.clear()
            self._next = step
        while len(self._ahead) < 2 * self.workers:
            s = self._next + len(self._ahead)
            self._ahead.append((s, self._pool.submit(step_batch, *self._args(s))))
        s, res = self._ahead.popleft()
        self._next = step + 1
        try:
            return res.result(timeout=WAIT_S)
        except BrokenProcessPool:
            raise RuntimeError("a data worker process died (out of memory? or a script that trains with "
                               "data_workers lacks the `if __name__ == \"__main__\":` guard); rerun the same command "
                               "to resume from the last checkpoint, with fewer --data-workers or 0") from None
        except concurrent.futures.TimeoutError:
            raise RuntimeError(f"no batch for step {s} from the {self.workers} data workers after {WAIT_S} s; rerun "
                               "the same command to resume from the last checkpoint, with --data-workers 0") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._ahead.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
