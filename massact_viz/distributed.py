"""Work shared over processes: the same command launched with ``accelerate launch`` or ``torchrun``
runs its units of work on every process and ends with the result one process would give.

The engine is HF accelerate's :class:`accelerate.PartialState` (GPUs with NCCL, CPU processes with gloo,
several nodes through accelerate's config or SLURM); nothing here schedules anything. A process's
units are every ``world``-th one from its rank (units of similar cost, so ranks finish together);
each writes its finished units atomically into the job's resumable parts folder, so a process that
dies loses only the unit it was running and the same command, launched again (with any number of
processes), shares out the units not done yet. After a barrier the main process merges. Shared this way:
``scan`` (units: batches of prompts), ``disrupt`` (channel-set configurations), ``localize`` (chunks of
prompts; resumable with ``out=``, else the scores are gathered in memory) and ``transport_study``
(pair x seed; resumable with ``out=``, else gathered). The teaching model's trainer shares each step instead
(``massact_viz.shapes.train``: every process a slice of the batch, gradients averaged with :meth:`Ranks.mean_`).

Sharing is asked for (``distributed=True``; the command line does it when launched as one of several
processes), never guessed: a script that gives each process its own prompts keeps working. Before any
work the processes check that they run the same job (:meth:`Ranks.agree`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence, TypeVar

from .errors import MassActError
from .files import resume_manifest

T = TypeVar("T")

#: How long a process waits at a barrier for the others (the main process making a baseline or merging,
#: a relaunched process redoing its lost units). torch's default (10 min with NCCL) is too short for
#: real models; a process that dies is noticed by the launcher, which stops the others.
TIMEOUT = timedelta(hours=24)


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

    def gather(self, value: Any) -> list:
        """Every process's ``value``, in rank order, on every process (a collective: also a barrier)."""
        if self.world == 1:
            return [value]
        from accelerate.utils import gather_object
        return gather_object([value])

    def from_main(self, value: Any) -> Any:
        """The main process's ``value``, on every process (a collective)."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list
        return broadcast_object_list([value], from_process=0)[0]

    def mean_(self, tensors: Sequence[Any]) -> None:
        """Replace each tensor, in place, by its mean over the processes (one collective over a flattened copy:
        data-parallel training averages its gradients so). Nothing to do in a single process."""
        if self.world == 1 or not tensors:
            return
        import torch
        from accelerate.utils import reduce

        flat = reduce(torch.cat([t.detach().reshape(-1) for t in tensors]), reduction="mean")
        at = 0
        for t in tensors:
            t.copy_(flat[at:at + t.numel()].view_as(t))
            at += t.numel()

    def any(self, flags: Sequence[bool], device: Any = "cpu") -> list[bool]:
        """For each flag, whether it is true on any process (one collective; ``device``: where its tensor lives,
        the process's GPU under NCCL)."""
        if self.world == 1:
            return [bool(f) for f in flags]
        import torch
        from accelerate.utils import reduce

        votes = reduce(torch.tensor([float(bool(f)) for f in flags], device=device), reduction="sum")
        return [bool(v > 0) for v in votes.tolist()]

    def start_job(self, directory, settings: dict, what: str, hint: str) -> None:
        """Start or resume the resumable job in ``directory`` on every process: the main process creates (or
        checks) its manifest (:func:`massact_viz.files.resume_manifest`), then the others check it."""
        if self.main:
            resume_manifest(directory, settings, what, hint)
        self.barrier()
        if not self.main:
            resume_manifest(directory, settings, what, hint)

    def agree(self, job: dict, what: str) -> None:
        """Refuse, on every process, when the processes were not given the same job (settings and output)."""
        if self.world == 1:
            return
        digest = hashlib.sha256(json.dumps(job, sort_keys=True, default=repr).encode()).hexdigest()
        seen = self.gather(digest)
        if len(set(seen)) > 1:
            odd = [r for r, d in enumerate(seen) if d != seen[0]]
            raise MassActError(f"the {self.world} processes were given different {what}s (processes {odd} differ "
                               f"from process 0); shared work needs the same arguments on every process. To give "
                               f"each process its own work, call it with distributed=False.")


def ranks(cpu: bool | None = None) -> Ranks:
    """This process's :class:`Ranks`: a single process unless launched as one of several, then accelerate's
    state (joining the process group the launcher set up). ``cpu``: processes on the CPU (gloo) even where
    there are GPUs (default: the CPU only without a GPU). The first call decides for the process."""
    if not launched():
        return Ranks()
    import torch
    from accelerate import PartialState

    first = not PartialState._shared_state
    state = PartialState(cpu=(not torch.cuda.is_available()) if cpu is None else cpu, timeout=TIMEOUT)
    if first:   # leave the process group cleanly at exit (gloo aborts a process that exits inside it)
        import atexit
        atexit.register(leave)
    device = "cpu" if state.device.type == "cpu" else str(state.device)   # accelerate says "cpu:0"
    return Ranks(state.process_index, state.num_processes, device)


def leave() -> None:
    """Leave the process group (at exit, or before it): wait (a minute at most) until every CPU process gets
    here, then destroy the group, so no process exits while gloo still talks to it. Registered at exit;
    a script may call it itself before its last line. Nothing to do in a single process."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60), wait_all_ranks=True)
    except Exception:  # noqa: BLE001 a process that failed is the launcher's to report
        pass
    finally:
        dist.destroy_process_group()
