"""The ``embplan`` command.

``embplan demo``, ``embplan plan CASE.json -o plan.h5``, ``embplan validate CASE.json``, ``embplan show plan.h5``,
``embplan kernel --voxel-mm 4.42 -o kernel.csv``, ``embplan export-dicom plan.h5 -o dose.dcm``,
``embplan phantom-dicom --out DIR``, ``embplan verify plan.h5 post.json -o verification.h5``,
``embplan phantom-post plan.h5 --out DIR``, ``embplan --version``.

Exit codes: 0 done; 1 invalid input or unreadable file (one line on stderr, ``embplan: error: <reason>``, and
nothing written); 2 usage. Summaries are rich tables on a terminal, plain text otherwise; ``--json`` prints one
JSON object for scripts. A progress spinner shows on stderr for long steps only when stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import __version__
from .errors import EmbplanError

if TYPE_CHECKING:  # pragma: no cover
    from .case import Case
    from .plan_model import Plan

__all__ = ["app", "main", "plan_summary", "version_text", "DEMO_CASE_RESOURCE", "DICOM_TEMPLATE_RESOURCE"]

#: The packaged demo case (package data, read through importlib.resources).
DEMO_CASE_RESOURCE = "data/demo_tare_phantom.json"
#: The case template of ``embplan phantom-dicom`` (package data).
DICOM_TEMPLATE_RESOURCE = "data/tare_dicom_template.json"

_SEVERITY_ORDER = ("contraindication", "warning", "caution", "info")
_SEVERITY_STYLE = {
    "contraindication": "bold white on red",
    "warning": "bold red",
    "caution": "yellow",
    "info": "cyan",
}
#: DVH points shown in summaries when the plan has them (keys of DVHRecord.d_gy / v_percent).
_DVH_POINTS = ("D95", "D70", "D50", "D2", "V100Gy", "V70Gy", "V40Gy", "V30Gy")

app = typer.Typer(
    name="embplan",
    help="Plan liver-directed embolization for NET liver metastases, with Y-90 radioembolization dosimetry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# ====================================================================================== plumbing
# Shared by every command (add a command as a thin function near the end of the file and use these):
# - ``with _errors(as_json):`` around the command's body: an EmbplanError, an OSError, any other exception becomes
#   ``embplan: error: ...`` on stderr (one line per problem; with --json also one JSON object on stdout), exit 1,
#   never a traceback;
# - ``_load_case(path, allow_outside_paths)``: load and validate a case, with its paths confined to its folder;
# - ``_check_output(path, what)``: fail before long work when an output cannot be written there;
# - ``_write_files([(path, what, writer), ...])``: write several outputs all or nothing (``writer(fh)`` writes
#   a binary file object); ``_write_outputs(plan, plan_path, report_path)`` for a plan and its report.
class _Failure(Exception):
    """Internal: stop with exit status 1 and this reason."""


#: Environment variable: folders (os.pathsep-separated) where the paths in a case may point besides the case's
#: own folder (a site's data root), without --allow-outside-paths.
DATA_ROOT_ENV = "EMBPLAN_DATA_ROOT"


def _problems(exc: BaseException) -> tuple[str, list[str]]:
    """The error as a header and one line per problem (a CaseError's structured list when it has one)."""
    from .plausibility import printable

    lines = [printable(line) for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    header, problems = lines[0], lines[1:]
    if len(problems) == 1 and header.endswith(": 1 problem"):  # one problem: one line
        return f"{header.removesuffix(': 1 problem')}: {problems[0]}", problems
    return header, problems


def _fail(message: str | BaseException, as_json: bool = False, kind: str | None = None) -> None:
    header, problems = _problems(message) if isinstance(message, BaseException) else _problems(_Failure(message))
    if as_json:
        obj: dict[str, Any] = {"ok": False, "error": header, "problems": problems}
        if kind:
            obj["type"] = kind
        errors = getattr(message, "errors", None)
        if isinstance(errors, list):
            obj["fields"] = [{"path": e.get("path", ""), "message": e.get("msg", "")} for e in errors
                             if isinstance(e, dict)]
        _print_json(obj)  # for scripts, on stdout; the lines below stay on stderr for people
    shown = [header] if len(problems) == 1 and problems[0] in header else [header, *problems]
    for line in shown:
        typer.echo(f"embplan: error: {line}", err=True)
    raise typer.Exit(code=1)


def _os_error_text(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else None
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}: {reason}" if where is not None else reason


@contextlib.contextmanager
def _errors(as_json: bool = False) -> Iterator[None]:
    """Turn every failure into exit status 1 and a message, never a traceback: an EmbplanError as it is (one
    line per problem), an OSError naming its path, a MemoryError, and (as "internal error") anything else."""
    try:
        yield
    except typer.Exit:
        raise
    except EmbplanError as exc:
        _fail(exc, as_json, type(exc).__name__)
    except _Failure as exc:
        _fail(str(exc), as_json, "EmbplanError")
    except OSError as exc:
        _fail(_os_error_text(exc), as_json, "OSError")
    except MemoryError:
        _fail("out of memory", as_json, "MemoryError")
    except RecursionError:
        _fail("input nested too deeply", as_json, "RecursionError")
    except Exception as exc:  # noqa: BLE001 - a bug must not print a traceback either
        _fail(f"internal error ({type(exc).__name__}: {exc}); please report it", as_json, "InternalError")


@contextlib.contextmanager
def _progress(message: str) -> Iterator[None]:
    """A spinner on stderr while a long step runs, only when stderr is a terminal."""
    from rich.console import Console

    from .progress import display_enabled, listen

    console = Console(stderr=True)
    if console.is_terminal and display_enabled():
        with console.status(message) as status, listen(lambda stage: status.update(f"{message} {stage}")):
            yield
    else:
        yield


def _stdout_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False)


def _print_json(obj: Any) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
    # json.dumps escapes C0 characters; C1, bidi and separator characters (inside strings only) become \uXXXX
    typer.echo("\n".join(_printable(line, json_escapes=True) for line in text.split("\n")))


def _printable(text: str, json_escapes: bool = False) -> str:
    """``text`` with control, bidi and separator characters escaped (see embplan.plausibility.printable)."""
    from .plausibility import printable

    return printable(text, json_escapes=json_escapes)


def _json_default(obj: Any) -> Any:
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def _check_output(path: Path, what: str) -> None:
    """Fail early (before seconds of planning) when an output file cannot be written where asked."""
    from .io import check_output_path

    check_output_path(path, error=EmbplanError, what=f"the {what}")


def _check_output_folder(out: Path) -> None:
    """Fail early when ``out`` cannot be (or become) the output folder."""
    if out.exists() and not out.is_dir():
        raise _Failure(f"{out}: --out must be a folder")
    parent = out.parent
    if not out.exists():
        if not parent.is_dir():
            raise _Failure(f"{out}: cannot create the output folder: {parent} does not exist")
        import os

        if not os.access(parent, os.W_OK | os.X_OK):
            raise _Failure(f"{out}: cannot create the output folder: {parent} is not writable")


def _make_output_folder(out: Path) -> None:
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise _Failure(f"{out}: cannot create the output folder: {exc.strerror or exc}") from None


def _data_roots() -> list[Path]:
    import os

    value = os.environ.get(DATA_ROOT_ENV, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _case_paths(case: Case) -> dict[str, str]:
    """The paths a case names, by field (dosimetry.images.dicom.*)."""
    d = case.dosimetry
    spec = getattr(d.images, "dicom", None) if d is not None and d.images is not None else None
    if spec is None:
        return {}
    return {f"dosimetry.images.dicom.{name}": getattr(spec, name) for name in ("ct", "spect", "pet", "rtstruct", "seg")
            if getattr(spec, name) is not None}


def _confine_paths(case: Case, allow_outside_paths: bool) -> None:
    """Every path of a case must lie inside the case's folder (or a data root of EMBPLAN_DATA_ROOT), after
    symbolic links are followed, unless --allow-outside-paths: a case must not make embplan read elsewhere."""
    if allow_outside_paths:
        return
    base = case.base_dir
    roots = [base, *_data_roots()]
    bad = [f"{field}: {given!r} lies outside the case's folder (use --allow-outside-paths, or set {DATA_ROOT_ENV})"
           for field, given in _case_paths(case).items()
           if not any(_inside(case.resolve_path(given), root) for root in roots)]
    if bad:
        from .errors import CaseError

        n = len(bad)
        raise CaseError("\n".join([f"invalid case: {n} path{'s' if n != 1 else ''} outside its folder", *bad]))


def _shown_path(path: Path, case: Case) -> str:
    """A path as printed: relative to the case's folder when inside it."""
    try:
        return str(path.resolve().relative_to(case.base_dir.resolve()))
    except (ValueError, OSError, RuntimeError):
        return str(path)


def _load_case(path: Path, allow_outside_paths: bool = False) -> Case:
    from .case import load_case

    case = load_case(path)
    _confine_paths(case, allow_outside_paths)
    return case


def _make_plan(case: Case) -> Plan:
    from .planner import plan as make_plan

    with _progress("Planning (dosimetry, risk rules) ..."):
        return make_plan(case)


def _render_report(plan: Plan) -> str:
    from .report import render_report

    with _progress("Rendering the report ..."):
        return render_report(plan)


def _write_files(outputs: list[tuple[Path, str, Callable[[Any], object]]]) -> None:
    """Write several outputs all or nothing: ``writer(fh)`` fills a binary file object for each ``(path, what,
    writer)``; if any writer or any commit fails, no output is written (earlier files are kept)."""
    from .io import atomic_files

    with atomic_files([(path, what) for path, what, _ in outputs], error=EmbplanError) as handles:
        for (_, _, writer), fh in zip(outputs, handles, strict=True):
            writer(fh)


def _write_outputs(plan: Plan, plan_path: Path | None, report_path: Path | None) -> None:
    """Render first, then write the plan and the report all or nothing."""
    html = _render_report(plan) if report_path is not None else None
    outputs: list[tuple[Path, str, Callable[[Any], object]]] = []
    if plan_path is not None:
        from .io.hdf5 import write_plan_file

        outputs.append((plan_path, "plan", lambda fh: write_plan_file(plan, fh)))
    if report_path is not None and html is not None:
        data = html.encode("utf-8")
        outputs.append((report_path, "report", lambda fh: fh.write(data)))
    if outputs:
        with _progress(f"Writing {', '.join(str(p) for p, _, _ in outputs)} ..."):
            _write_files(outputs)


# ====================================================================================== summaries
def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The plan's essentials as plain JSON data (what ``--json`` prints)."""
    case = plan.case
    proc = plan.procedure
    out: dict[str, Any] = {
        "patient_id": case.patient.id,
        "procedure": {
            "kind": proc.kind,
            "territory": proc.territory,
            "device": proc.device,
            "standard_protocol": proc.standard_protocol,
            "deviations": list(proc.deviations),
            "parameters": proc.parameters,
        },
        "sequence": {
            "follows_ladder": plan.sequence.follows_ladder,
            "skipped": list(plan.sequence.skipped),
            "suggested_next": plan.sequence.suggested_next,
        },
        "board_recommendation": None if plan.board is None else plan.board.recommendation.summary,
        "highest_severity": None if plan.highest_severity is None else str(plan.highest_severity.value),
        "flags": [
            {
                "code": f.code,
                "severity": str(f.severity.value),
                "message": f.message,
                "evidence": f.evidence,
                "context": f.context,
            }
            for f in _flags_by_severity(plan)
        ],
        "dosimetry": None,
    }
    d = plan.dosimetry
    if d is not None:
        rx = d.prescription
        out["dosimetry"] = {
            "activity_gbq": d.activity_gbq,
            "source": d.source,
            "method": d.method,
            "tumor_dose_gy": d.tumor_dose_gy,
            "normal_liver_dose_gy": d.normal_liver_dose_gy,
            "perfused_dose_gy": d.perfused_dose_gy,
            "lung_dose_gy": d.lung_dose_gy,
            "lung_shunt_fraction": d.lung_shunt_fraction,
            "tumor_to_normal_ratio": d.tumor_to_normal_ratio,
            # issue 13: what the doses assume and mean
            "prescribed_activity_gbq": d.prescribed_activity_gbq,
            "dose_activity": d.dose_activity,
            "definitions": dict(d.definitions),
            "lung_shunt": None if d.lung_shunt is None else d.lung_shunt.model_dump(mode="json"),
            "lesions": [les.model_dump(mode="json") for les in d.lesions],
            "prescription": {
                "method": rx.method,
                "activity_gbq": rx.activity_gbq,
                "activity_for_target_gbq": rx.activity_for_target_gbq,
                "max_safe_activity_gbq": rx.max_safe_activity_gbq,
                "binding_constraint": rx.binding_constraint,
                "conflict": rx.conflict,
            },
            "compartment": d.compartment.model_dump(mode="json"),
            "voxel": None if d.voxel is None else d.voxel.model_dump(mode="json"),
            "dvh": {
                name: {
                    "volume_ml": rec.volume_ml,
                    "mean_gy": rec.mean_gy,
                    "min_gy": rec.min_gy,
                    "max_gy": rec.max_gy,
                    "d_gy": rec.d_gy,
                    "v_percent": rec.v_percent,
                }
                for name, rec in d.dvh.items()
            },
        }
    return out


def _flags_by_severity(plan: Plan) -> list[Any]:
    return sorted(plan.flags, key=lambda f: (-f.severity.rank, f.code))


def _dose_rows(plan: Plan) -> list[tuple[str, float | None, float | None]]:
    d = plan.dosimetry
    if d is None:
        return []
    c, v = d.compartment, d.voxel
    return [
        ("tumour", c.tumor_gy, v.tumor_gy if v else None),
        ("non-tumour liver", c.normal_liver_gy, v.normal_liver_gy if v else None),
        ("perfused", c.perfused_gy, v.perfused_gy if v else None),
        ("perfused non-tumour liver", c.perfused_normal_liver_gy, v.perfused_normal_liver_gy if v else None),
        ("lung", c.lung_gy, v.lung_gy if v else None),
    ]


def _dvh_points(rec: Any) -> list[tuple[str, str]]:
    points = []
    for key in _DVH_POINTS:
        if key in rec.d_gy:
            points.append((key, f"{rec.d_gy[key]:.1f} Gy"))
        elif key in rec.v_percent:
            points.append((key, f"{rec.v_percent[key]:.1f} %"))
    return points


def _summary_text(plan: Plan, written: list[Path]) -> str:
    """Plain-text summary (when stdout is not a terminal)."""
    proc = plan.procedure
    lines = [f"embplan plan for patient {plan.case.patient.id}"]
    device = f", {proc.device}" if proc.device else ""
    lines.append(f"procedure: {proc.kind} ({proc.territory}{device}); protocol: {proc.standard_protocol}")
    lines.append("deviations: " + ("; ".join(proc.deviations) if proc.deviations else "none"))
    seq = plan.sequence
    lines.append(
        f"sequence: {'follows the TAE -> TACE -> TARE ladder' if seq.follows_ladder else 'does not follow the ladder'}"
        f"; suggested next: {seq.suggested_next}"
    )
    if plan.board is not None:  # issue 11: the tumour board's answer in one line (embplan board for the whole)
        lines.append(f"tumour board: {plan.board.recommendation.summary}")
    d = plan.dosimetry
    if d is not None:
        rx = d.prescription
        lines.append(
            f"activity: {d.activity_gbq:.2f} GBq ({rx.method}"
            + (f"; binding: {rx.binding_constraint}" if rx.binding_constraint else "")
            + ("; CONFLICT: target not reachable within limits" if rx.conflict else "")
            + ")"
            + (f"; delivered, prescribed {rx.activity_gbq:.2f} GBq" if d.dose_activity == "delivered" else "")
        )
        lines.append(f"mean absorbed dose (Gy)   {'compartment':>12} {'voxel':>8}")
        if d.dose_activity == "delivered":  # issue 13: what the columns mean
            lines.append(f"  (compartment: {d.compartment.source} model at the delivered activity, what the flags "
                         f"check; voxel: the {d.method if d.voxel is not None else '-'} map, mass-weighted)")
        for name, comp, vox in _dose_rows(plan):
            if comp is None and vox is None:
                continue
            lines.append(f"  {name:<24}{_fmt(comp):>12} {_fmt(vox):>8}")
        for name, rec in d.dvh.items():
            pts = ", ".join(f"{k} {v}" for k, v in _dvh_points(rec))
            lines.append(f"  DVH {name}: mean {rec.mean_gy:.1f} Gy" + (f"; {pts}" if pts else ""))
    hs = plan.highest_severity
    lines.append(f"flags: {len(plan.flags)}" + (f" (highest: {hs.value})" if hs is not None else ""))
    for f in _flags_by_severity(plan):
        lines.append(f"  [{f.severity.value.upper()}] {f.code}: {f.message}")
        lines.append(f"      evidence: {f.evidence}")
    for path in written:
        lines.append(f"wrote {path}")
    return "\n".join(_printable(line) for line in lines)  # a line break inside a value cannot start a line


def _summary_rich(plan: Plan, written: list[Path]) -> None:
    from rich.markup import escape as _markup_escape
    from rich.table import Table

    def escape(text: str) -> str:
        return _markup_escape(_printable(text))

    console = _stdout_console()
    proc = plan.procedure
    hs = plan.highest_severity
    title = f"[bold]embplan[/bold] plan for patient [bold]{escape(plan.case.patient.id)}[/bold]"
    if hs is not None:
        title += f"  highest severity: [{_SEVERITY_STYLE[hs.value]}]{hs.value}[/]"
    console.print(title)
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("procedure", escape(f"{proc.kind} ({proc.territory}{', ' + proc.device if proc.device else ''})"))
    t.add_row("protocol", escape(proc.standard_protocol))
    t.add_row("deviations", escape("; ".join(proc.deviations) if proc.deviations else "none"))
    t.add_row("suggested next", escape(plan.sequence.suggested_next))
    if plan.board is not None:
        t.add_row("tumour board", escape(plan.board.recommendation.summary))
    d = plan.dosimetry
    if d is not None:
        rx = d.prescription
        act = f"{d.activity_gbq:.2f} GBq ({rx.method}"
        act += f"; binding: {rx.binding_constraint}" if rx.binding_constraint else ""
        act += "; CONFLICT" if rx.conflict else ""
        act += ")" + (f"; delivered, prescribed {rx.activity_gbq:.2f} GBq" if d.dose_activity == "delivered" else "")
        t.add_row("activity", escape(act))
    console.print(t)
    if d is not None:
        dt = Table(title="Mean absorbed dose (Gy)")
        dt.add_column("compartment")
        dt.add_column("compartment model", justify="right")
        dt.add_column("voxel", justify="right")
        for name, comp, vox in _dose_rows(plan):
            if comp is None and vox is None:
                continue
            dt.add_row(name, _fmt(comp), _fmt(vox))
        console.print(dt)
        if d.dvh:
            vt = Table(title="DVH")
            vt.add_column("structure")
            vt.add_column("volume (mL)", justify="right")
            vt.add_column("mean (Gy)", justify="right")
            vt.add_column("points")
            for name, rec in d.dvh.items():
                pts = ", ".join(f"{k} {v}" for k, v in _dvh_points(rec))
                vt.add_row(escape(name), f"{rec.volume_ml:.0f}", f"{rec.mean_gy:.1f}", pts)
            console.print(vt)
    if not plan.flags:
        console.print("[green]No rule raised a flag.[/green]")
    ft = Table(title=f"Flags ({len(plan.flags)})", show_lines=True)
    ft.add_column("severity")
    ft.add_column("code")
    ft.add_column("message and evidence")
    for f in _flags_by_severity(plan):
        sev = f.severity.value
        ft.add_row(
            f"[{_SEVERITY_STYLE[sev]}]{sev}[/]",
            f.code,
            escape(f.message) + "\n[dim]evidence: " + escape(f.evidence) + "[/dim]",
        )
    if plan.flags:
        console.print(ft)
    for path in written:
        console.print(f"wrote {escape(str(path))}")


def _print_summary(plan: Plan, written: list[Path], as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        obj = plan_summary(plan)
        obj["written"] = [str(p) for p in written]
        if extra:
            obj.update(extra)
        _print_json(obj)
    elif sys.stdout.isatty():
        _summary_rich(plan, written)
    else:
        typer.echo(_summary_text(plan, written))


# ====================================================================================== commands
#: The distributions whose versions change embplan's numbers or files (printed by ``embplan --version`` and
#: recorded in every plan's provenance).
_VERSIONED_DEPENDENCIES = ("numpy", "numba", "scipy", "pydantic", "h5py", "pydicom", "highdicom", "SimpleITK")


def version_text() -> str:
    """``embplan X.Y.Z`` and one line per numerical dependency with its installed version (or "not installed")."""
    from importlib import metadata

    lines = [f"embplan {__version__}", f"python {sys.version.split()[0]}"]
    for dist in _VERSIONED_DEPENDENCIES:
        try:
            lines.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{dist} not installed")
    return "\n".join(lines)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version of embplan and of its numerical dependencies, and exit."),
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="A log line per stage on stderr (-vv: everything).")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Errors only; no progress display.")] = False,
) -> None:
    """Plan liver-directed embolization for NET liver metastases, with Y-90 radioembolization dosimetry."""
    from .progress import configure_logging

    configure_logging(verbose, quiet)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (errors too).")]
OutsidePathsOpt = Annotated[
    bool,
    typer.Option("--allow-outside-paths",
                 help=f"Let the case name files outside its own folder (absolute paths, '..'); or set {DATA_ROOT_ENV}."),
]


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for plan.h5 and report.html.")] = Path("embplan-demo"),
    as_json: JsonOpt = False,
) -> None:
    """Plan the packaged phantom TARE case end to end: writes OUT/plan.h5 and OUT/report.html."""
    with _errors(as_json):
        from .case import load_case

        text = resources.files("embplan").joinpath(DEMO_CASE_RESOURCE).read_text(encoding="utf-8")
        case = load_case(json.loads(text))
        _check_output_folder(out)
        plan = _make_plan(case)
        plan_path, report_path = out / "plan.h5", out / "report.html"
        _make_output_folder(out)
        _write_outputs(plan, plan_path, report_path)
        _print_summary(plan, [plan_path, report_path], as_json)


@app.command("plan")
def plan_cmd(
    case_file: Annotated[Path, typer.Argument(metavar="CASE.json", help="The case file (JSON).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The plan file to write (HDF5).")],
    report: Annotated[Path | None, typer.Option("--report", help="Also write an HTML report here.")] = None,
    as_json: JsonOpt = False,
    allow_outside_paths: OutsidePathsOpt = False,
) -> None:
    """Plan a case: validate it, plan it, write the plan (HDF5) and optionally the report (HTML), all or nothing."""
    with _errors(as_json):
        case = _load_case(case_file, allow_outside_paths)
        _check_output(output, "plan")
        if report is not None:
            _check_output(report, "report")
            if report.absolute() == output.absolute():
                raise _Failure(f"{report}: --report must differ from -o")
        plan = _make_plan(case)
        _write_outputs(plan, output, report)
        _print_summary(plan, [p for p in (output, report) if p is not None], as_json)


@app.command()
def validate(
    case_file: Annotated[Path, typer.Argument(metavar="CASE.json", help="The case file (JSON).")],
    as_json: JsonOpt = False,
    allow_outside_paths: OutsidePathsOpt = False,
) -> None:
    """Check a case file: exit 0 when it is valid, else 1 with the field and the reason. The DICOM files and
    folders a case names must exist (they are read when the case is planned) and lie in the case's folder."""
    with _errors(as_json):
        from .imaging.image_set import dicom_input_paths

        case = _load_case(case_file, allow_outside_paths)
        dicom = dicom_input_paths(case)
        from .board.cumulative import dose_file_paths  # issue 11: earlier dose maps must exist too

        dicom.update(dose_file_paths(case))
        proc = case.procedure
        info = {
            "valid": True,
            "file": str(case_file),
            "patient_id": case.patient.id,
            "procedure": proc.kind,
            "procedure_date": str(proc.date),
        }
        if dicom:
            info["dicom_inputs"] = {name: _shown_path(path, case) for name, path in dicom.items()}
        if as_json:
            _print_json(info)
        else:
            found = f"; DICOM inputs found: {', '.join(dicom)}" if dicom else ""
            typer.echo(f"{case_file}: valid (patient {_printable(case.patient.id)}, {proc.kind} on {proc.date}{found})")


@app.command()
def show(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.h5", help="A plan file written by embplan.")],
    as_json: JsonOpt = False,
) -> None:
    """Print a saved plan: procedure, activity, doses, DVH points, flags by severity with evidence."""
    with _errors(as_json):
        from .io.hdf5 import load_plan

        plan = load_plan(plan_file)
        _print_summary(plan, [], as_json, extra={"file": str(plan_file)} if as_json else None)


def _parse_voxel_mm(text: str) -> float | tuple[float, float, float]:
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"expected a number or dz,dy,dx in mm, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 3:
        return (values[0], values[1], values[2])
    raise typer.BadParameter(f"expected a number or dz,dy,dx in mm, got {text!r}")


def kernel_csv(kernel: Any) -> str:
    """CSV text of a voxel S-value kernel: comment header, then ``i,j,k,S_mGy_per_MBq_s`` for every voxel.

    ``i, j, k`` are signed voxel offsets from the source voxel along x, y, z (array axes 2, 1, 0); rows run
    k, then j, then i (C order of the (z, y, x) array). Values are written with full float precision.
    """
    import numpy as np

    s = np.asarray(kernel.mgy_per_mbq_s)
    cz, cy, cx = (n // 2 for n in s.shape)
    params = json.dumps(kernel.parameters, sort_keys=True, ensure_ascii=False, default=_json_default)
    source = kernel.parameters.get("source", "unknown")
    lines = [
        f"# Y-90 voxel S-value kernel exported by embplan {__version__}",
        f"# source: {' '.join(str(source).split())}",
        f"# voxel_mm (z, y, x): {', '.join(repr(float(v)) for v in kernel.voxel_mm)}; "
        f"density_g_cm3: {float(kernel.density_g_cm3)!r}; shape (z, y, x): {s.shape}",
        "# S: mGy per MBq s of cumulated activity in the source voxel (i, j, k) = (0, 0, 0); i, j, k: signed "
        "offsets along x, y, z",
        f"# parameters: {params}",
        "i,j,k,S_mGy_per_MBq_s",
    ]
    for kz in range(s.shape[0]):
        for jy in range(s.shape[1]):
            for ix in range(s.shape[2]):
                lines.append(f"{ix - cx},{jy - cy},{kz - cz},{float(s[kz, jy, ix])!r}")
    return "\n".join(lines) + "\n"


@app.command()
def kernel(
    voxel_mm: Annotated[str, typer.Option("--voxel-mm", help="Voxel size in mm: one number (cubic) or dz,dy,dx.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The CSV file to write.")],
    density: Annotated[
        float, typer.Option("--density", help="Medium density, g/cm3 (default: soft tissue, 1.04).")
    ] = 1.04,
    as_json: JsonOpt = False,
) -> None:
    """Export a Y-90 voxel S-value kernel (mGy per MBq s) as CSV: i,j,k,S_mGy_per_MBq_s."""
    voxel = _parse_voxel_mm(voxel_mm)
    with _errors(as_json):
        from .dosimetry.kernels import y90_voxel_kernel
        from .io import atomic_write_text

        _check_output(output, "kernel")
        with _progress("Computing the voxel kernel ..."):
            k = y90_voxel_kernel(voxel, density_g_cm3=density)
        atomic_write_text(output, kernel_csv(k), error=EmbplanError, what="kernel")
        info = {
            "written": str(output),
            "shape": list(k.shape),
            "voxel_mm": list(k.voxel_mm),
            "density_g_cm3": k.density_g_cm3,
            "centre_mgy_per_mbq_s": float(k.mgy_per_mbq_s[k.centre_index]),
        }
        if as_json:
            _print_json(info)
        else:
            typer.echo(
                f"wrote {output}: {k.shape[0]}x{k.shape[1]}x{k.shape[2]} kernel, centre "
                f"{info['centre_mgy_per_mbq_s']:.4g} mGy/(MBq s)"
            )


@app.command("export-dicom")
def export_dicom(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.h5", help="A plan file written by embplan.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The DICOM RT Dose file to write.")],
    method: Annotated[
        str | None, typer.Option("--method", help="Dose map to export (default: the plan's dose method).")
    ] = None,
    reference_ct: Annotated[
        Path | None,
        typer.Option("--reference-ct", help="CT file or series folder the dose was computed on (patient, study, "
                                             "frame of reference)."),
    ] = None,
    conservative: Annotated[
        bool,
        typer.Option("--conservative", help="For older receiving systems: Dose Summation Type PLAN referencing an "
                                            "RT Plan UID (no RT Plan file is written), no Plan Overview Sequence."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a plan's dose map as a DICOM RT Dose file (in the CT's frame of reference for a DICOM case, or of
    --reference-ct)."""
    with _errors(as_json):
        from .imaging.rtdose import write_rt_dose
        from .io.export import rt_dose_export
        from .io.hdf5 import load_plan

        _check_output(output, "RT Dose")
        e = rt_dose_export(load_plan(plan_file), method, reference_ct)
        method = e.method
        _write_files([(output, "RT Dose", lambda fh: write_rt_dose(
            e.dose_gy, e.grid, fh, reference_ct=e.reference, dose_comment=e.comment,
            tissue_heterogeneity_correction=e.heterogeneity, conservative=conservative,
        ))])
        info = {"written": str(output), "method": method, "max_gy": float(e.dose_gy.max()),
                "reference": e.reference_source}
        if conservative:  # issue 17
            import pydicom

            ds = pydicom.dcmread(output, stop_before_pixels=True)
            info.update(dose_summation_type=str(ds.DoseSummationType),
                        referenced_rt_plan_uid=str(ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID))
        if as_json:
            _print_json(info)
        else:
            typer.echo(f"wrote {output}: {method} dose, max {info['max_gy']:.1f} Gy")


@app.command("phantom-dicom")
def phantom_dicom(
    out: Annotated[Path, typer.Option("--out", help="Folder for the DICOM set and the case file.")],
    seed: Annotated[int, typer.Option("--seed", min=0, help="Phantom seed (places the tumours).")] = 7,
    voxel_mm: Annotated[
        float, typer.Option("--voxel-mm", min=1.0, max=10.0, help="Phantom voxel size in mm (the CT and SPECT grid).")
    ] = 4.42,
    as_json: JsonOpt = False,
) -> None:
    """Write the synthetic phantom as DICOM (OUT/ct/, OUT/spect/nm.dcm, OUT/rtstruct.dcm) and a case that uses it,
    OUT/tare_dicom.json (glass TARE of the right lobe); then: embplan plan OUT/tare_dicom.json -o OUT/plan.h5."""
    with _errors(as_json):
        import numpy as np

        from .case import load_case
        from .imaging.image_set import territory_mask
        from .imaging.phantom import make_phantom
        from .imaging.phantom_dicom import structure_roles, write_phantom_dicom
        from .io import atomic_write_text

        _check_output_folder(out)
        case_path = out / "tare_dicom.json"
        data = json.loads(resources.files("embplan").joinpath(DICOM_TEMPLATE_RESOURCE).read_text(encoding="utf-8"))
        phantom = make_phantom("net_liver", seed, voxel_mm)
        dicom = data["dosimetry"]["images"]["dicom"]
        dicom.update(ct="ct", spect="spect/nm.dcm", rtstruct="rtstruct.dcm", structures=structure_roles(phantom))
        case = load_case(data)  # checked before anything is written
        # the MAA goes where the case's procedure injects (its territory), as in the phantom workflow
        perfused = territory_mask(case, phantom.masks, phantom.grid.shape)
        with _progress("Writing the phantom DICOM set ..."):
            paths = write_phantom_dicom(phantom, out, perfused_mask=np.asarray(perfused), patient_id=case.patient.id)
        atomic_write_text(case_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", error=EmbplanError,
                          what="case")
        info: dict[str, Any] = {
            "written": {name: str(path) for name, path in paths.items()} | {"case": str(case_path)},
            "phantom": {"seed": seed, "voxel_mm": voxel_mm, "shape": list(phantom.grid.shape)},
            "next": [f"embplan plan {case_path} -o {out / 'plan.h5'}",
                     f"embplan export-dicom {out / 'plan.h5'} -o {out / 'dose.dcm'}"],
        }
        if as_json:
            _print_json(info)
        else:
            typer.echo(f"wrote {out}: CT series ct/ ({phantom.grid.shape[0]} slices), SPECT spect/nm.dcm, RTSTRUCT "
                       f"rtstruct.dcm, and the case {case_path}")
            typer.echo("next: " + " && ".join(info["next"]))

# ---------------------------------------------------------------------------------------------- export (issue 15)
@app.command("export")
def export_cmd(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.h5", help="A plan file written by embplan.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="rtdose | seg | nrrd | nifti.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File (rtdose, seg) or folder (nrrd, nifti).")],
    method: Annotated[
        str | None, typer.Option("--method", help="Dose map for rtdose (default: the plan's dose method).")
    ] = None,
    reference_ct: Annotated[
        Path | None,
        typer.Option("--reference-ct", help="CT file or series folder of the plan (patient, study, frame of "
                                             "reference) for rtdose and seg."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a plan for other tools: the dose as DICOM RT Dose, the structures (embplan's own masks included) as
    DICOM SEG, or dose, CT and masks as NRRD / NIfTI files (LPS / RAS geometry via ITK) in a folder."""
    with _errors(as_json):
        from .io.export import EXPORT_FORMATS, export_plan
        from .io.hdf5 import load_plan

        if fmt not in EXPORT_FORMATS:
            raise _Failure(f"--format: {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
        if fmt in ("rtdose", "seg"):
            _check_output(output, "export")
        elif output.exists() and not output.is_dir():
            raise _Failure(f"{output}: -o must be a folder for --format {fmt}")
        elif not output.parent.is_dir():
            raise _Failure(f"{output}: folder {output.parent} does not exist")
        plan = load_plan(plan_file)
        info = export_plan(plan, output, fmt, method=method, reference_ct=reference_ct)
        if as_json:
            _print_json(info)
        else:
            typer.echo(f"wrote {fmt}: " + ", ".join(info["written"]))


# ====================================================================================== tumour board (issue 11)
_MARK = {"met": "[green]met[/]", "unmet": "[red]unmet[/]", "unknown": "[yellow]unknown[/]"}
_STATUS_STYLE = {"recommended": "bold green", "possible": "green", "not_eligible": "red", "needs_data": "yellow"}


def _board_rich(board: Any, plan_flags: list[Any] | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = _stdout_console()
    if not con.is_terminal or con.width < 140:  # a board reads the table on a wide screen (or a file)
        con = Console(file=sys.stdout, highlight=False, width=max(con.width, 160))
    ref = board.reference_date.isoformat() if board.reference_date else "?"
    con.print(f"[bold]Tumour board review[/]: patient {escape(board.case_id)}, reference date {ref}")
    rec = board.recommendation
    con.print(f"\n[bold]Recommendation[/]: {escape(rec.summary)}")
    for st in rec.steps:
        con.print(f"  {st.order}. {escape(st.action)}\n     why: {escape(st.reason)}")
    if rec.would_change:
        con.print("[bold]Would change it[/] (missing data):")
        for w in rec.would_change:
            con.print(f"  - {escape(w)}")
    t = Table(title="Options, criterion by criterion", show_lines=True, expand=True)
    t.add_column("Option", ratio=2)
    t.add_column("Status", min_width=12, no_wrap=True)
    t.add_column("Criteria (value; requirement)", ratio=5)
    t.add_column("Why", ratio=3)
    for o in board.options:
        crit = "\n".join(f"{_MARK[c.status.value]} {escape(c.label)}: {escape(c.value or 'n/a')}"
                         + (f" ({escape(c.threshold)})" if c.threshold else "") for c in o.criteria)
        title = o.title + (f" [{o.procedure}]" if o.procedure else "")
        t.add_row(escape(title), f"[{_STATUS_STYLE[o.status.value]}]{o.status.value}[/]", crit, escape(o.reason))
    con.print(t)
    c = Table(title="Course per lobe and segment", show_lines=True, expand=True)
    for col, r in (("Territory", 1), ("History", 4), ("Next step", 2), ("Why", 4)):
        c.add_column(col, ratio=r)
    for tc in board.course:
        c.add_row(escape(tc.territory) + ("" if tc.disease_present is None else
                                          (" (disease)" if tc.disease_present else " (no disease)")),
                  escape("\n".join(tc.history) or "none"), escape(tc.next_step or "-"), escape(tc.reason))
    con.print(c)
    if board.staged_plan:
        sp = Table(title="Staged plan", expand=True)
        for col in ("#", "Territory", "Procedure", "Earliest date", "Note / source"):
            sp.add_column(col)
        for st in board.staged_plan:
            sp.add_row(str(st.order), escape(st.territory), escape(st.procedure),
                       st.earliest_date.isoformat() if st.earliest_date else "-",
                       escape(st.note or st.source))
        con.print(sp)
    lv = board.liver
    albi = (f"ALBI {lv.albi_score:.2f} (grade {lv.albi_grade})" if lv.albi_score is not None else "ALBI n/a")
    comp = {True: "compensated", False: "decompensated", None: "compensation undecided"}[lv.compensated]
    con.print(f"\n[bold]Liver over the years[/]: {albi}; cirrhosis {'yes' if lv.cirrhosis else 'no'}; ascites "
              f"{'not recorded' if lv.ascites is None else ('yes' if lv.ascites else 'no')}; {comp}")
    for td in lv.territory_doses:
        dose = (f"lung {td.cumulative_lung_gy:.1f} Gy" if td.cumulative_lung_gy is not None else
                f"non-tumour liver {td.cumulative_normal_liver_gy:.1f} Gy" if td.cumulative_normal_liver_gy is not None
                else "no recorded dose")
        con.print(f"  {escape(td.territory)}: {dose} ({escape(td.source)})")
    for n in lv.notes:
        con.print(f"  - {escape(n)}")
    if board.consent:
        ct = Table(title="Consent numbers", show_lines=True, expand=True)
        for col, r in (("Option", 2), ("Outcome", 3), ("Value", 3), ("Source (caveat)", 5)):
            ct.add_column(col, ratio=r)
        for ci in board.consent:
            ct.add_row(escape(ci.option_key), escape(ci.outcome), escape(ci.value),
                       escape(ci.source + (f" ({ci.caveat})" if ci.caveat else "")))
        con.print(ct)
    ft = Table(title="Follow-up", expand=True)
    ft.add_column("Date", ratio=1)
    ft.add_column("What", ratio=6)
    for fu in board.follow_up:
        ft.add_row(fu.date.isoformat() if fu.date else "-", escape(fu.what))
    con.print(ft)
    if plan_flags:
        con.print("[bold]Plan flags[/]: " + ", ".join(f"{f.code} ({f.severity})" for f in plan_flags))


@app.command()
def board(
    case_file: Annotated[Path, typer.Argument(metavar="CASE.json|PLAN.h5",
                                              help="A case file (JSON), or a plan file written by embplan.")],
    as_json: JsonOpt = False,
    with_plan: Annotated[bool, typer.Option("--plan", help="Plan the case first (dosimetry): the review then names "
                                                          "the tumours the plan leaves untreated.")] = False,
    allow_outside_paths: OutsidePathsOpt = False,
) -> None:
    """The tumour board's review: every option with its criteria, the recommendation, the course per lobe, the
    staged plan, the liver over the years, consent numbers and the follow-up dates."""
    with _errors(as_json):
        flags = None
        if case_file.suffix.lower() in (".h5", ".hdf5"):
            from .io.hdf5 import load_plan

            plan = load_plan(case_file)
            if plan.board is None:
                raise _Failure(f"{case_file}: the plan file holds no tumour-board review (written by an older embplan)")
            review, flags = plan.board, plan.flags
        elif with_plan:
            plan = _make_plan(_load_case(case_file, allow_outside_paths))
            assert plan.board is not None  # plan() always reviews the case (planner.build_review)
            review, flags = plan.board, plan.flags
        else:
            from .board import review as make_review

            review = make_review(_load_case(case_file, allow_outside_paths))
        if as_json:
            _print_json({"file": str(case_file), "board": review.model_dump(mode="json"),
                         **({"flags": [f.code for f in flags]} if flags is not None else {})})
        else:
            _board_rich(review, flags)


@app.command()
def warmup(
    float32: Annotated[bool, typer.Option("--float32", help="Also compile the float32 convolution.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compile the dose engine now (once after an install, in a container build, on each cluster worker), so that
    the first plan does not pay numba's compilation; later runs load numba's cache."""
    with _errors():
        from .dosimetry.warmup import cache_locations
        from .dosimetry.warmup import warmup as run_warmup

        with _progress("Compiling the dose engine (numba) ..."):
            seconds = run_warmup(float32=float32)
        info: dict[str, Any] = {"seconds": round(seconds, 3), "cache": cache_locations()}
        if as_json:
            _print_json(info)
        else:
            typer.echo(f"dose engine ready in {seconds:.1f} s (numba cache: {', '.join(info['cache'].values())})")


@app.command()
def batch(
    cases: Annotated[Path, typer.Argument(metavar="CASES", help="A folder of case files, or a CSV listing them.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the plans and the cohort table.")],
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Address of an existing Dask scheduler (default: a local cluster).")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Workers of the local cluster.")] = None,
    report: Annotated[bool, typer.Option("--report", help="Also write each case's HTML report.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Plan every case of a cohort on Dask (embplan[cohort]): OUT/plans/, OUT/cohort.csv and OUT/cohort.parquet.
    Cases already planned (same case content, same embplan version) are skipped; a bad case gets its row with the
    error. Exit 0 when the table is written, even with failed cases (see its status column)."""
    with _errors():
        import logging

        from .cohort import run_batch
        from .progress import display_enabled

        if display_enabled() and logging.getLogger("embplan").getEffectiveLevel() > logging.INFO:
            logging.getLogger("embplan.cohort").setLevel(logging.INFO)  # counts in the log, unless --quiet
        res = run_batch(cases, output, scheduler=scheduler, workers=workers, report=report)
        info: dict[str, Any] = {"cases": len(res.rows), "planned": res.planned, "skipped": res.skipped,
                "duplicates": res.duplicates, "errors": res.errors, "seconds": round(res.seconds, 2),
                "workers": res.workers, "table": [str(res.csv_path), str(res.parquet_path)],
                "failed": {r["case_id"]: r.get("error") for r in res.rows if r.get("status") != "ok"}}
        if as_json:
            _print_json(info)
        else:
            typer.echo(f"{info['cases']} cases: {res.planned} planned, {res.skipped} skipped (already planned), "
                       f"{res.duplicates} duplicates, {res.errors} errors, in {res.seconds:.1f} s")
            for cid, err in info["failed"].items():
                typer.echo(f"  error {cid}: {err}")
            typer.echo(f"wrote {res.csv_path} and {res.parquet_path}")


# ---- post-treatment verification (issue 14): embplan verify, embplan phantom-post
def _verification_summary(v: Any, written: list[Path]) -> dict[str, Any]:
    r = v.result
    return {
        "patient_id": r.patient_id,
        "delivered_activity_gbq": r.delivered.delivered_activity_gbq,
        "planned_activity_gbq": r.delivered.planned_activity_gbq,
        "registration": {"source": r.registration["source"], "quality": r.registration["quality"],
                         "transform": r.registration["transform"]},
        "structures": [s.model_dump(mode="json") for s in r.structures],
        "lung_shunt": {"planned": r.lung_shunt_planned_fraction, "delivered": r.lung_shunt_delivered_fraction},
        "activity_outside_fraction": r.activity_outside_fraction,
        "deposits": [d.model_dump(mode="json") for d in r.deposits],
        "flags": [f.model_dump(mode="json") for f in r.flags],
        "gamma": r.gamma.model_dump(mode="json") if r.gamma is not None else None,
        "prior_treatment": r.prior_treatment,
        "written": [str(p) for p in written],
    }


@app.command("verify")
def verify_cmd(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.h5", help="The plan file (with voxel data).")],
    post_file: Annotated[Path, typer.Argument(metavar="POST.json", help="The post-treatment images and times.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The verification file to write (HDF5).")],
    report: Annotated[Path | None, typer.Option("--report", help="Also write an HTML report here.")] = None,
    prior_out: Annotated[
        Path | None, typer.Option("--prior-out", help="Also write the prior-treatment record (JSON) for the next case.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a delivered Y-90 treatment: the delivered dose (post-treatment PET or bremsstrahlung SPECT) beside
    the plan, per structure, with the registration quality, extrahepatic deposits and flags as delivered."""
    with _errors(as_json):
        from .io import atomic_write_text
        from .io.verification import save_verification, verify_files

        outs = [p for p in (output, report, prior_out) if p is not None]
        for p, what in ((output, "verification"), (report, "report"), (prior_out, "prior-treatment record")):
            if p is not None:
                _check_output(p, what)
        if len({p.resolve() for p in outs}) != len(outs):
            raise _Failure("-o, --report and --prior-out must name different files")
        with _progress("Verifying (registration, delivered dose) ..."):
            v = verify_files(plan_file, post_file)
        html_text = None
        if report is not None:
            from .report.verification import render_verification_report

            html_text = render_verification_report(v)
        save_verification(v, output)
        if report is not None and html_text is not None:
            atomic_write_text(report, html_text, error=EmbplanError, what="report")
        if prior_out is not None:
            atomic_write_text(prior_out, json.dumps(v.result.prior_treatment, indent=2) + "\n", error=EmbplanError,
                              what="prior-treatment record")
        if as_json:
            _print_json(_verification_summary(v, outs))
            return
        r = v.result
        q = r.registration["quality"]
        lines = [
            f"verified {plan_file} with {post_file}: delivered {r.delivered.delivered_activity_gbq:.3f} GBq "
            f"(planned {r.delivered.planned_activity_gbq:.3f} GBq)",
            f"registration ({r.registration['source']}): rotation {q['rotation_deg']:.2f} deg, translation "
            f"{q['translation_mm']:.1f} mm, Mattes MI {q['mattes_mi_before']:.3f} -> {q['mattes_mi_after']:.3f}",
            f"{'structure':24s} {'planned Gy':>11s} {'delivered Gy':>13s} {'diff':>8s}",
        ]
        for s in r.structures:
            pct = "-" if s.difference_percent is None else f"{s.difference_percent:+.1f}%"
            lines.append(f"{s.structure:24s} {s.planned_mean_gy:11.1f} {s.delivered_mean_gy:13.1f} {pct:>8s}")
        lines.append(f"lung shunt: planned {r.lung_shunt_planned_fraction:.1%}, delivered "
                     f"{r.lung_shunt_delivered_fraction:.1%}; outside liver and lungs {r.activity_outside_fraction:.1%}")
        for f in r.flags:
            lines.append(f"[{f.severity}] {f.code}: {f.message}")
        lines.append("wrote " + ", ".join(str(p) for p in outs))
        typer.echo("\n".join(lines))


@app.command("phantom-post")
def phantom_post(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.h5", help="A plan with voxel data (e.g. embplan demo).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the simulated PET/CT, post.json and truth.json.")],
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the simulated CT noise.")] = 2026,
    spect: Annotated[bool, typer.Option("--spect", help="A bremsstrahlung SPECT instead of a Y-90 PET.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Simulate the post-treatment Y-90 PET/CT of a plan (rotated and shifted frame, one tumour under-perfused, gut
    deposition) and write OUT/post.json for embplan verify. Synthetic data for demos and tests."""
    with _errors(as_json):
        from .io.hdf5 import load_plan
        from .synthetic import PostSimulation, simulate_post_treatment

        plan = load_plan(plan_file)
        if out.exists() and not out.is_dir():
            raise _Failure(f"{out}: --out must be a folder")
        if not out.parent.is_dir() and str(out.parent):
            raise _Failure(f"{out}: cannot create the output folder: {out.parent} does not exist")
        with _progress("Simulating the post-treatment PET/CT ..."):
            sim = simulate_post_treatment(plan, out, PostSimulation(seed=seed, modality="spect" if spect else "pet"))
        info: dict[str, Any] = {"written": {k: str(v) for k, v in sim.paths.items()},
                "truth": {k: sim.truth[k] for k in ("delivered_activity_gbq", "under_perfused_tumor",
                                                    "under_perfusion_fraction", "gut_fraction", "transform")},
                "next": f"embplan verify {plan_file} {sim.paths['post']} -o verification.h5 --report verification.html"}
        if as_json:
            _print_json(info)
        else:
            emission = "bremsstrahlung SPECT spect/bremss.dcm" if spect else "Y-90 PET pet/"
            typer.echo(f"wrote {out}: post-treatment CT ct/, {emission}, rtstruct.dcm, post.json, truth.json "
                       f"(delivered {sim.truth['delivered_activity_gbq']:.3f} GBq)")
            typer.echo("next: " + info["next"])


def main(argv: list[str] | None = None) -> int:
    """Run the command with ``argv``; return the exit status (for ``python -m embplan``)."""
    from typer.main import get_command

    cmd = get_command(app)
    try:
        cmd.main(args=argv, prog_name="embplan", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
