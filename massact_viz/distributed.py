"""Work shared over processes: the same command launched with ``accelerate launch`` or ``torchrun``
runs its units of work on every process and ends with the result one process would give.

The engine is HF accelerate's :class:`accelerate.PartialState` (GPUs with NCCL, CPU processes with gloo,
several nodes through accelerate's config or SLURM); nothing here schedules anything. A process's
units are every ``world``-th one from its rank (units of similar cost, so ranks finish together);
each writes its finished units atomically into the job's resumable parts folder, so a process that
dies loses only the unit it was running and the same command, launched again (with any number of
processes), finishes the rest. After a barrier the main process merges. Shared this way: ``scan`` (units:
batches of prompts) and ``disrupt`` (units: channel-set configurations). ``localize`` (chunks of prompts)
and ``transport_study`` (pair x seed) share their units and gather the scores in memory (not resumable).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started as one of several (``accelerate launch``, ``torchrun``: WORLD_SIZE > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


@dataclass(frozen=True)
class Ranks:
    """This process's place among the launched ones: ``rank`` of ``world``, and its own ``device``
    (``cuda:LOCAL_RANK`` on a GPU node, ``cpu`` otherwise; None in a single process: the caller's choice)."""

    rank: int = 0
    world: int = 1
    device: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, units: Sequence[T]) -> list[T]:
        """This process's units: every ``world``-th one, from its rank."""
        return list(units)[self.rank::self.world]

    def barrier(self) -> None:
        """Wait until every process gets here (nothing to wait for in a single process)."""
        if self.world > 1:
            from accelerate import PartialState
            PartialState().wait_for_everyone()


def ranks() -> Ranks:
    """This process's :class:`Ranks`: a single process unless launched as one of several, then
    accelerate's state (which joins the process group the launcher set up)."""
    if not launched():
        return Ranks()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    device = "cpu" if state.device.type == "cpu" else str(state.device)   # accelerate says "cpu:0"
    return Ranks(state.process_index, state.num_processes, device)
