"""Transport over many caption pairs and seeds: every reported number with its interval.

One transport is an anecdote. :func:`transport_study` runs :func:`~massact_viz.probes.transport.transport`
(same settings) over a list of (source, target) pairs and noise seeds and keeps every row's metrics as a
``(pairs, seeds)`` matrix, so each mean comes with a 95 % bootstrap interval over pairs
(:mod:`massact_viz.intervals`) and top-k is compared with its controls pair by pair.

    study = transport_study(model, "data/prompts/shapes_pairs.tsv", seeds=2, k=8, controls=["random-k"])
    print(study.markdown())
    print(study.compare("colour_source", "transported", "random-k").sentence)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ...errors import MassActError
from ...files import atomic_write, strict_json
from ...prompts import read_lines
from ...intervals import Comparison, Interval, compare, mean_interval
from ...distributed import Ranks, ranks
from ...progress import progress_bar
from .plan import PLAN_KEYS

if TYPE_CHECKING:
    from ...model import Model
    from .results import TransportResult

#: The metrics :meth:`TransportStudy.markdown` shows by default (those present in the result).
TABLE_METRICS = ("valid", "colour_source", "judge_source", "toward_source", "ssim_target", "composite")


def read_pairs(source: str | os.PathLike | Sequence) -> list[tuple[str, str, str]]:
    """(source, target, note) triples from a TSV file (header ``source<TAB>target[<TAB>note]``, ``#``
    comments) or a list of (source, target[, note]) tuples."""
    if isinstance(source, (str, os.PathLike)):
        lines = read_lines(source)   # a path, or a shipped set in data/prompts (e.g. "shapes_pairs.tsv")
        if lines and lines[0].lower().startswith("source\t"):
            lines = lines[1:]
        rows = [ln.split("\t") for ln in lines]
    else:
        rows = [list(r) for r in source]
    out = []
    for i, r in enumerate(rows):
        if len(r) < 2 or not all(isinstance(x, str) and x.strip() for x in r[:2]):
            raise MassActError(f"pair {i} must be (source, target[, note]) with two non-empty prompts, got {r!r}.")
        out.append((r[0].strip(), r[1].strip(), r[2].strip() if len(r) > 2 else ""))
    if not out:
        raise MassActError("no pairs given: pass a TSV file or a list of (source, target) tuples.")
    return out


@dataclass
class TransportStudy:
    """Metrics of every row over pairs x seeds (see :func:`transport_study`)."""

    pairs: list[tuple[str, str, str]]
    seeds: list[int]
    settings: dict
    values: dict[str, dict[str, np.ndarray]]  # row -> metric -> (pairs, seeds), NaN where undefined
    example: Any = None  # the first unit this process ran (images, previews) for display; None if none ran
    results: list = field(default_factory=list)  # every TransportResult when keep_results=True

    @property
    def rows(self) -> list[str]:
        return list(self.values)

    def _where(self, where: Callable[[str], bool] | str | None) -> np.ndarray:
        if where is None:
            return np.ones(len(self.pairs), bool)
        if isinstance(where, str):
            prefix = where
            where = lambda note: note.startswith(prefix)  # noqa: E731
        return np.array([bool(where(note)) for _, _, note in self.pairs])

    def matrix(self, row: str, metric: str, where=None) -> np.ndarray:
        if row not in self.values:
            raise MassActError(f"row {row!r} was not run; this study has {self.rows}.")
        if metric not in self.values[row]:
            raise MassActError(f"metric {metric!r} is not in row {row!r}; it has {sorted(self.values[row])}.")
        return self.values[row][metric][self._where(where)]

    def interval(self, row: str, metric: str, where=None) -> Interval:
        """Mean of ``metric`` in ``row`` over the (selected) pairs, seeds averaged within a pair, with its 95 %
        bootstrap interval. ``where``: a note prefix (``"object colour"``) or a function of the note."""
        return mean_interval(self.matrix(row, metric, where))

    def compare(self, metric: str, a: str = "transported", b: str = "random-k", where=None) -> Comparison:
        """Row ``a`` against row ``b`` on the same pairs (paired bootstrap of the difference)."""
        return compare(self.matrix(a, metric, where), self.matrix(b, metric, where), f"{a} {metric}", b)

    def markdown(self, metrics: Sequence[str] = TABLE_METRICS, where=None) -> str:
        rows = self.rows
        have = [m for m in metrics if any(m in self.values[r] for r in rows)]
        n = int(self._where(where).sum())
        lines = [f"mean [95 % bootstrap interval over n = {n} pairs, {len(self.seeds)} seed(s) each]", "",
                 "| row | " + " | ".join(have) + " |", "|---|" + "---|" * len(have)]
        for r in rows:
            cells = [self.interval(r, m, where).fmt() if m in self.values[r] else "-" for m in have]
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"pairs": [list(p) for p in self.pairs], "seeds": self.seeds, "settings": self.settings,
                "values": {r: {m: np.where(np.isnan(v), None, v).tolist() for m, v in ms.items()}
                           for r, ms in self.values.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "TransportStudy":
        vals = {r: {m: np.array([[np.nan if x is None else x for x in row] for row in v], float)
                    for m, v in ms.items()} for r, ms in d["values"].items()}
        return cls([tuple(p) for p in d["pairs"]], list(d["seeds"]), d.get("settings", {}), vals)


def transport_study(model: "Model", pairs: Any, *, seeds: int | Sequence[int] = 1, progress: bool = True,
                    keep_results: bool = False, distributed: bool = False, out: str | os.PathLike | None = None,
                    **transport_kwargs: Any) -> TransportStudy:
    """Run :func:`~massact_viz.probes.transport.transport` with the same settings on every pair and seed.

    ``pairs``: a TSV file (``data/prompts/shapes_pairs.tsv`` layout) or a list of ``(source, target[, note])``;
    ``seeds``: how many noise seeds per pair (0, 1, ...) or the list of them. Other keywords are
    :func:`transport`'s (``k``, ``controls``, ``steps``, ...; ``previews`` defaults to False here).
    Every setting is validated on the first pair before anything runs.
    ``distributed=True``: share the (pair, seed) units with the other processes launched by ``accelerate
    launch`` or ``torchrun`` (each given the same arguments); their metrics are gathered, so every process
    returns the single-process study (``example`` and ``results`` hold only the units a process ran).
    ``out``: a folder that makes the study resumable: each finished (pair, seed) unit's metrics are written
    there atomically (``units/``), and the same call again (after an interruption, or a process that died;
    with any number of processes) runs only the units not done and returns the same study; other
    arguments are refused with a clear message."""

    from .probe import transport
    from .plan import plan_transport

    triples = read_pairs(pairs)
    seed_list = list(range(seeds)) if isinstance(seeds, int) and not isinstance(seeds, bool) else list(seeds)
    if not seed_list or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seed_list):
        raise MassActError(f"seeds must be a positive count or a list of non-negative integers, got {seeds!r}.")
    for bad in ("seed", "progress"):
        if bad in transport_kwargs:
            raise MassActError(f"transport_study() sets {bad}= itself (seeds= gives the noise seeds).")
    if transport_kwargs.get("source_run") is not None:
        raise MassActError("transport_study() runs a new source for every pair; source_run= serves one source only.")
    transport_kwargs.setdefault("previews", False)
    run_kwargs = {k: v for k, v in transport_kwargs.items() if k not in PLAN_KEYS}
    plan_transport(model, triples[0][0], triples[0][1], run_kwargs=run_kwargs,
                   **{k: v for k, v in transport_kwargs.items() if k in PLAN_KEYS})  # fail before work
    share = ranks() if distributed else Ranks()
    job = {"pairs": triples, "seeds": seed_list, "kwargs": repr(sorted(transport_kwargs.items()))}
    share.agree({**job, "keep": keep_results, "out": None if out is None else str(Path(out).resolve())},
                "transport study")
    units = [(i, j) for i in range(len(triples)) for j in range(len(seed_list))]
    folder = Path(out) if out is not None else None
    if folder is not None:
        hint = "Resume it with the same pairs, seeds and transport settings, or choose another out= to start over."
        job = {**job, "kind": "transport study", "model": model.source, "dtype": str(model.dtype)}
        share.start_job(folder, job, "transport study", hint)
    example, results, settings, metrics = None, [], {}, {}
    have: list = []
    if folder is not None:   # units finished before (read back), shared out by the main process's view
        done_now = [u for u in units if _unit_file(folder, u).exists()] if share.main else None
        have = [tuple(u) for u in share.from_main(done_now)]
    desc = "transport study (pairs x seeds)" + ("" if share.world == 1 else f", process {share.rank} of {share.world}")
    mine = share.share([u for u in units if u not in have])
    bar = progress_bar(total=len(mine), desc=desc, unit="run", disable=not progress)
    try:
        for i, j in mine:
            src, tgt, _ = triples[i]
            r: TransportResult = transport(model, src, tgt, seed=seed_list[j], progress=False, **transport_kwargs)
            if example is None:
                example = r
            unit_settings = {k: v for k, v in r.settings.items()
                             if k not in ("source", "target", "seed", "tokens", "control_channels")}
            if (i, j) == units[0]:
                settings = unit_settings
            if keep_results:
                results.append(r)
            metrics[(i, j)] = r.metrics
            if folder is not None:
                atomic_write(_unit_file(folder, (i, j)),
                             strict_json({"metrics": r.metrics, "settings": unit_settings}) + "\n")
            bar.update()
    finally:
        bar.close()
    if folder is not None:   # every unit is on disk once every process is here: read the others' back
        share.barrier()
        for u in units:
            if u not in metrics:
                doc = json.loads(_unit_file(folder, u).read_text(encoding="utf-8"))
                metrics[u] = doc["metrics"]
                if u == units[0]:
                    settings = doc["settings"]
    elif share.world > 1:   # every process gets every unit's metrics (a collective: also the barrier)
        for got_settings, got_metrics in share.gather((settings, metrics)):
            settings = settings or got_settings
            metrics.update(got_metrics)
    values: dict[str, dict[str, np.ndarray]] = {}
    for i, j in units:   # in the single process's order
        for row, ms in metrics[(i, j)].items():
            for m, v in ms.items():
                arr = values.setdefault(row, {}).setdefault(m, np.full((len(triples), len(seed_list)), np.nan))
                arr[i, j] = np.nan if v is None else float(v)
    return TransportStudy(triples, seed_list, settings, values, example, results)


def _unit_file(folder: Path, unit: tuple[int, int]) -> Path:
    """Where a resumable study keeps one finished (pair, seed) unit's metrics."""
    return folder / "units" / f"pair{unit[0]:05d}-seed{unit[1]:03d}.json"



__all__ = ["transport_study", "TransportStudy", "read_pairs", "TABLE_METRICS"]
