"""``embplan batch``: plan a cohort of cases on Dask distributed, and write one cohort table.

Cases
    A folder (every ``*.json`` case file under it, subfolders included, in sorted order) or a CSV file with a
    ``case`` (or ``path``) column of case files, relative to the CSV's folder, and optionally an ``id`` column.
    Each case gets an id: the CSV's ``id``, else its path relative to the folder (or CSV) without ``.json``,
    with ``/`` -> ``__``.

Content hash
    SHA-256 of the case file's bytes and, for the DICOM inputs it names (``dosimetry.images.dicom``), of every
    input file's relative name, size and modification time (hashing hundreds of MB of pixel data per case on every
    run would cost more than most plans). Two entries with the same hash are one case: it is planned once and the
    later entries get rows marked ``duplicate`` with the same numbers.

Outputs under OUT
    ``plans/<id>.h5`` (and ``reports/<id>.html`` with ``report=True``); ``state/<id>.json`` (the case's row, its
    content hash and the embplan version: written last, atomically, once the plan is on disk); ``cohort.csv``
    and ``cohort.parquet`` (one row per entry, written atomically at the end). Every file is written atomically.

Idempotent and resumable
    A case whose state file holds the same content hash and embplan version, and whose plan (and report) exist,
    is skipped (its row is read back). A batch that was interrupted resumes where it stopped: every finished case
    has its state file. A case rejected for bad input (an ``EmbplanError``) is remembered the same way (fix the
    case file and its hash changes); a case that failed for any other reason (a worker lost, out of memory) is
    tried again on the next run.

Failures
    One bad case never stops the batch: its row has ``status == "error"`` and the error (a one-line
    ``EmbplanError`` message, or the exception's type and message for anything else).

Engine
    Dask distributed: a ``LocalCluster`` (``workers`` processes, one thread each; numba's threads are the CPUs
    divided among the workers) by default, or an existing cluster (``scheduler="tcp://host:8786"``), whose workers
    must have the same embplan installed and see the same paths. The cohort table does not depend on the engine
    (the same function plans each case). Progress: Dask's progress bar on a terminal, counts in the log
    otherwise. Dask, pandas and pyarrow are the optional extra ``embplan[cohort]``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import EmbplanError

__all__ = ["CohortError", "CaseEntry", "BatchResult", "discover_cases", "content_hash", "plan_case_task",
           "run_batch", "cohort_row", "EXTRA", "DVH_POINTS"]

log = logging.getLogger(__name__)

#: The optional extra that holds the cohort engine's dependencies.
EXTRA = "cohort"
#: DVH points of every structure in the cohort table (keys of DVHRecord.d_gy).
DVH_POINTS: tuple[str, ...] = ("D95", "D70", "D50", "D2")
_SEVERITIES = ("contraindication", "warning", "caution", "info")
_STATE_FORMAT = 1


class CohortError(EmbplanError):
    """A cohort cannot be run: missing extra, unreadable case list, unwritable output folder, no cluster."""


def _require_extra() -> None:
    missing = []
    for mod in ("dask", "distributed", "pandas", "pyarrow"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise CohortError(
            f"embplan batch needs the optional extra '{EXTRA}' (missing: {', '.join(missing)}): "
            f"pip install 'embplan[{EXTRA}]'"
        )


# ================================================================================================ the cases
@dataclass(frozen=True)
class CaseEntry:
    """One entry of the case list: its id, the case file, and the content hash."""

    case_id: str
    path: Path
    content_hash: str


def _case_id(rel: str) -> str:
    stem = rel[:-5] if rel.lower().endswith(".json") else rel
    cid = re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("\\", "/").replace("/", "__")).strip("._")
    return cid or "case"


def content_hash(path: Path) -> str:
    """SHA-256 of the case file's bytes and of its DICOM inputs' names, sizes and modification times."""
    h = hashlib.sha256()
    data = path.read_bytes()
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)
    try:
        doc = json.loads(data)
        dicom = ((doc.get("dosimetry") or {}).get("images") or {}).get("dicom") or {}
    except (ValueError, AttributeError):
        dicom = {}  # an unreadable case: the planner will say why; its bytes are hashed
    if isinstance(dicom, Mapping):
        for key in ("ct", "spect", "pet", "rtstruct", "seg"):
            given = dicom.get(key)
            if not isinstance(given, str):
                continue
            target = (path.parent / given) if not Path(given).is_absolute() else Path(given)
            files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
            for f in files:
                try:
                    st = f.stat()
                except OSError:
                    h.update(f"{key}:{f.name}:missing".encode())
                    continue
                rel = f.relative_to(target) if target.is_dir() else Path(f.name)
                h.update(f"{key}:{rel.as_posix()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def discover_cases(source: str | os.PathLike[str]) -> list[CaseEntry]:
    """The case list of a folder (every ``*.json`` below it) or a CSV (``case``/``path`` column, optional ``id``)."""
    src = Path(source)
    items: list[tuple[str, Path]] = []
    if src.is_dir():
        for p in sorted(src.rglob("*.json")):
            if any(part.startswith(".") for part in p.relative_to(src).parts):
                continue
            items.append((_case_id(p.relative_to(src).as_posix()), p))
    elif src.is_file() and src.suffix.lower() == ".csv":
        try:
            with open(src, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CohortError(f"{src}: cannot read the case list ({exc})") from exc
        if not rows:
            raise CohortError(f"{src}: the case list is empty")
        col = next((c for c in ("case", "path", "case_file") if c in rows[0]), None)
        if col is None:
            raise CohortError(f"{src}: the case list needs a 'case' (or 'path') column; it has {list(rows[0])}")
        for n, row in enumerate(rows, start=2):
            given = (row.get(col) or "").strip()
            if not given:
                raise CohortError(f"{src}: line {n}: empty {col!r}")
            p = Path(given) if Path(given).is_absolute() else src.parent / given
            cid = (row.get("id") or "").strip()
            items.append((_case_id(cid) if cid else _case_id(given), p))
    elif src.exists():
        raise CohortError(f"{src}: CASES must be a folder of case files or a .csv listing them")
    else:
        raise CohortError(f"{src}: no such folder or file")
    if not items:
        raise CohortError(f"{src}: no case files (*.json) found")
    entries: list[CaseEntry] = []
    seen: dict[str, int] = {}
    for cid, p in items:
        n = seen.get(cid, 0)
        seen[cid] = n + 1
        unique = cid if n == 0 else f"{cid}_{n + 1}"
        try:
            digest = content_hash(p)
        except OSError:
            digest = "missing:" + hashlib.sha256(str(p).encode()).hexdigest()  # planned, and fails with the reason
        entries.append(CaseEntry(unique, p, digest))
    return entries


# ================================================================================================ one case
def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def cohort_row(plan: Any) -> dict[str, Any]:
    """The cohort-table columns of one plan: patient, procedure, activity, the mean doses (plan-level and per DVH
    structure), the DVH points, flags by severity, the board recommendation when the plan has one."""
    case = plan.case
    proc = plan.procedure
    row: dict[str, Any] = {
        "patient_id": case.patient.id,
        "procedure": proc.kind,
        "territory": str(proc.territory),
        "device": proc.device,
        "standard_protocol": proc.standard_protocol,
        "highest_severity": None if plan.highest_severity is None else str(plan.highest_severity.value),
    }
    by_sev: dict[str, list[str]] = {s: [] for s in _SEVERITIES}
    for f in plan.flags:
        by_sev.setdefault(str(f.severity.value), []).append(f.code)
    for sev in _SEVERITIES:
        row[f"flags_{sev}"] = ";".join(sorted(by_sev[sev]))
        row[f"n_flags_{sev}"] = len(by_sev[sev])
    d = plan.dosimetry
    if d is not None:
        row.update(
            activity_gbq=_num(d.activity_gbq),
            dose_source=d.source,
            dose_method=d.method,
            tumor_dose_gy=_num(d.tumor_dose_gy),
            normal_liver_dose_gy=_num(d.normal_liver_dose_gy),
            perfused_dose_gy=_num(d.perfused_dose_gy),
            lung_dose_gy=_num(d.lung_dose_gy),
            lung_shunt_fraction=_num(d.lung_shunt_fraction),
            tumor_to_normal_ratio=_num(d.tumor_to_normal_ratio),
            prescription_method=d.prescription.method,
            binding_constraint=d.prescription.binding_constraint,
            prescription_conflict=bool(d.prescription.conflict),
        )
        for name, rec in d.dvh.items():
            row[f"{name}_volume_ml"] = _num(rec.volume_ml)
            row[f"{name}_mean_gy"] = _num(rec.mean_gy)
            for point in DVH_POINTS:
                row[f"{name}_{point}_gy"] = _num(rec.d_gy.get(point))
    board = getattr(plan, "board", None)
    if board is not None:
        rec = board.recommendation
        row["board_recommendation"] = rec.summary
        row["board_first_step"] = rec.steps[0].option_key if rec.steps else None
    return row


def _atomic_json(path: Path, obj: Any) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n",
                      error=CohortError, what="cohort state")


def plan_case_task(case_file: str, out_dir: str, case_id: str, digest: str, report: bool = False,
                   numba_threads: int | None = None) -> dict[str, Any]:
    """Plan one case and write its plan (and report), then its state file; return its cohort row. Runs on a Dask
    worker; never raises for a bad case (the row carries the error)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    row: dict[str, Any] = {"case_id": case_id, "case_file": case_file, "content_hash": digest,
                           "embplan_version": __version__, "worker": socket.gethostname(), "pid": os.getpid()}
    try:
        if numba_threads:
            import numba

            numba.set_num_threads(max(1, min(int(numba_threads), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]  # numba sets it at import
        from .case import load_case
        from .io.hdf5 import save_plan
        from .planner import plan as make_plan
        from .progress import record_stages

        case = load_case(case_file)
        with record_stages() as rec:
            t1 = time.perf_counter()
            p = make_plan(case)
            t_plan = time.perf_counter() - t1
        row.update(cohort_row(p))
        t2 = time.perf_counter()
        plan_path = out / "plans" / f"{case_id}.h5"
        save_plan(p, plan_path)
        row["plan_file"] = str(plan_path)
        if report:
            from .io import atomic_write_text
            from .report import render_report

            report_path = out / "reports" / f"{case_id}.html"
            atomic_write_text(report_path, render_report(p), error=CohortError, what="report")
            row["report_file"] = str(report_path)
        t_write = time.perf_counter() - t2
        row.update(status="ok", error=None, time_plan_s=t_plan, time_write_s=t_write)
        for name, secs in rec.own.items():
            row[f"stage_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}_s"] = secs
    except EmbplanError as exc:  # bad input: the same case fails the same way next time
        row.update(status="error", error=" ".join(str(exc).split()), error_kind="input")
    except Exception as exc:  # noqa: BLE001 - one bad case never stops the batch; may be transient: retried
        row.update(status="error", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                   error_kind="unexpected")
    row["time_total_s"] = time.perf_counter() - t0
    row["planned_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    if row["status"] == "ok" or row.get("error_kind") == "input":
        # the state file comes last: its presence means the outputs are complete (or the input is bad as it is)
        _atomic_json(out / "state" / f"{case_id}.json",
                     {"format": _STATE_FORMAT, "content_hash": digest, "embplan_version": __version__, "row": row})
    return row


def _cached_row(out: Path, entry: CaseEntry, report: bool) -> dict[str, Any] | None:
    state = out / "state" / f"{entry.case_id}.json"
    try:
        doc = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(doc, dict) and doc.get("content_hash") == entry.content_hash
            and doc.get("embplan_version") == __version__ and isinstance(doc.get("row"), dict)):
        return None
    row = doc["row"]
    if row.get("status") != "ok":
        return dict(row)  # bad input, unchanged since: it would fail the same way
    if not (out / "plans" / f"{entry.case_id}.h5").is_file():
        return None
    if report and not (out / "reports" / f"{entry.case_id}.html").is_file():
        return None
    return dict(row)


# ================================================================================================ the batch
@dataclass
class BatchResult:
    """What :func:`run_batch` did: the rows (one per entry, in case-list order), the table files, counts."""

    rows: list[dict[str, Any]]
    csv_path: Path
    parquet_path: Path
    planned: int
    skipped: int
    duplicates: int
    errors: int
    seconds: float
    workers: int


def _write_table(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    import pandas as pd

    from .io import atomic_output

    first = ["case_id", "action", "status", "error", "duplicate_of", "patient_id", "procedure", "activity_gbq"]
    df = pd.DataFrame(rows)
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    df = df[cols].convert_dtypes()  # nullable types: a flag column with gaps stays boolean, not text
    for c in df.columns:  # a column of text and missing values stays text (Parquet needs one type per column)
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    csv_path, pq_path = out / "cohort.csv", out / "cohort.parquet"
    with atomic_output(csv_path, error=CohortError, what="cohort table") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_output(pq_path, error=CohortError, what="cohort table") as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")
    return csv_path, pq_path


def _progress_display() -> bool:
    from .progress import display_enabled

    return display_enabled() and sys.stdout.isatty()


def run_batch(
    cases: str | os.PathLike[str] | Sequence[CaseEntry],
    out_dir: str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    report: bool = False,
    processes: bool = True,
    client: Any = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> BatchResult:
    """Plan every case on Dask and write the cohort table (see the module docstring).

    ``scheduler``: address of an existing Dask scheduler (else a LocalCluster of ``workers`` workers, default
    2 or the CPU count if smaller; ``processes=False`` runs them as threads of this process). ``client``: an
    existing ``distributed.Client`` to use instead. ``on_row``: called with each row as it arrives.
    """
    _require_extra()
    import distributed

    t0 = time.perf_counter()
    entries = list(cases) if not isinstance(cases, str | os.PathLike) else discover_cases(cases)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CohortError(f"{out}: the output must be a folder")
    if not out.parent.is_dir():
        raise CohortError(f"{out}: cannot create the output folder: {out.parent} does not exist")
    for sub in ("plans", "state") + (("reports",) if report else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)

    rows: dict[str, dict[str, Any]] = {}
    first_of_hash: dict[str, CaseEntry] = {}
    todo: list[CaseEntry] = []
    duplicates: list[tuple[CaseEntry, CaseEntry]] = []
    for e in entries:
        if e.content_hash in first_of_hash:
            duplicates.append((e, first_of_hash[e.content_hash]))
            continue
        first_of_hash[e.content_hash] = e
        cached = _cached_row(out, e, report)
        if cached is not None:
            cached.update(action="skipped", case_id=e.case_id, case_file=str(e.path))
            rows[e.case_id] = cached
        else:
            todo.append(e)
    n_skipped = len(rows)
    log.info("batch: %d entries, %d to plan, %d already planned (skipped), %d duplicates", len(entries), len(todo),
             n_skipped, len(duplicates))

    own_client = None
    cluster = None
    n_workers = 0
    try:
        if todo:
            if client is None:
                if scheduler:
                    try:
                        own_client = distributed.Client(scheduler, timeout="20s")
                    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError from dask
                        raise CohortError(f"--scheduler: cannot connect to {scheduler} ({type(exc).__name__}: {exc})") from exc
                else:
                    n_workers = workers or min(2, os.cpu_count() or 1)
                    if n_workers < 1:
                        raise CohortError(f"--workers: must be >= 1, got {n_workers}")
                    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                                                       dashboard_address=":0")
                    own_client = distributed.Client(cluster)
                client = own_client
            n_workers = n_workers or len(client.scheduler_info().get("workers", {}))
            threads = None
            if cluster is not None:
                threads = max(1, (os.cpu_count() or 1) // max(1, n_workers))
            futures = {
                client.submit(plan_case_task, str(e.path), str(out), e.case_id, e.content_hash, report, threads,
                              key=f"embplan-plan-{e.case_id}-{e.content_hash[:12]}", pure=False): e
                for e in todo
            }
            if _progress_display():
                distributed.progress(list(futures))
            done = errors = 0
            for fut in distributed.as_completed(list(futures)):
                e = futures[fut]
                try:
                    row = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died, or the task could not be run
                    row = {"case_id": e.case_id, "case_file": str(e.path), "content_hash": e.content_hash,
                           "embplan_version": __version__, "status": "error",
                           "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
                row["action"] = "planned"
                rows[e.case_id] = row
                done += 1
                errors += row.get("status") != "ok"
                log.info("batch: %d/%d cases planned (%d errors)%s", done, len(todo), errors,
                         f"; {e.case_id}: {row.get('error')}" if row.get("status") != "ok" else "")
                if on_row is not None:
                    on_row(row)
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()

    for e, orig in duplicates:
        base = rows.get(orig.case_id, {})
        dup = dict(base)
        dup.update(case_id=e.case_id, case_file=str(e.path), action="duplicate", duplicate_of=orig.case_id)
        rows[e.case_id] = dup
    ordered = [rows[e.case_id] for e in entries]
    csv_path, pq_path = _write_table(ordered, out)
    n_err = sum(1 for r in ordered if r.get("status") != "ok")
    result = BatchResult(rows=ordered, csv_path=csv_path, parquet_path=pq_path, planned=len(todo),
                         skipped=n_skipped, duplicates=len(duplicates), errors=n_err,
                         seconds=time.perf_counter() - t0, workers=n_workers)
    log.info("batch: done in %.1f s: %d planned, %d skipped, %d duplicates, %d errors; table %s", result.seconds,
             result.planned, result.skipped, result.duplicates, result.errors, csv_path)
    return result
