"""``review(case) -> BoardReview``: every option judged criterion by criterion, the recommendation, the course per
lobe, the staged plan, the liver over the years, consent numbers and the dated follow-up.

The recommendation orders the options as the seed's working approach does: surgery where it can cure (resection,
with ablation; transplant referral where every criterion of a rule set is met); systemic therapy first for G3/NEC;
otherwise liver-directed therapy that keeps the most options open for a long-surviving patient, lobe by lobe on each
lobe's own history (TAE first, TACE when refractory, TARE third or first with a biliary risk), staged when both
lobes need treatment; debulking for a functioning tumour; systemic therapy / PRRT when indicated. Only options whose
every criterion is met are recommended; options with unknown criteria name the data that would decide them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..protocols.sequencing import next_step
from ..risk import evidence as ev
from ..thresholds import Thresholds
from .consent import consent_items, follow_up
from .facts import (
    TERRITORY_SEGMENTS,
    BoardDoseFacts,
    biliary_risk,
    board_territories,
    lobe_name,
    untreated_tumors,
)
from .intra_arterial import LobeState, intra_arterial_options, is_nec, lobe_state
from .liver import liver_reserve
from .model import (
    BoardOption,
    BoardReview,
    CumulativeVoxelDose,
    OptionStatus,
    Recommendation,
    RecommendationStep,
    StagedStep,
    TerritoryCourse,
)
from .segments import segment_courses
from .surgery import ablation, ablation_with_resection, debulking, repeat_resection, resection
from .systemic import systemic_option
from .transplant import transplant_options

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case
    from ..protocols.history import PriorTreatment

__all__ = ["review", "build_review"]

_OK = (OptionStatus.RECOMMENDED, OptionStatus.POSSIBLE)
_RESP = {"complete": "complete response", "partial": "partial response", "stable": "stable disease",
         "progression": "progression", "unknown": "response unknown"}


def review(case: Case | Mapping[str, Any] | str | os.PathLike[str], *, dose: BoardDoseFacts | None = None,
           thresholds: Thresholds | None = None) -> BoardReview:
    """The tumour board's review of ``case`` (a :class:`~embplan.case.Case` or anything ``load_case`` accepts).

    ``dose``: the planned TARE's dose facts per tumour (the planner passes them; without them the course relies on
    the case's lesions and liver distribution). ``thresholds``: a site base; the case's overrides apply on top."""
    from ..case import load_case
    from ..risk.case_facts import effective_thresholds

    loaded = load_case(case)
    th = effective_thresholds(loaded, thresholds)
    return build_review(loaded, th, dose)


def _history_line(r: PriorTreatment, lobe_segs: frozenset[int] | None = None) -> str:
    resp = r.response_for(lobe_segs) if lobe_segs is not None else r.response
    where = f" ({r.territory.describe()})" if r.territory is not None else ""
    extra = ""
    if r.kind == "TARE" and r.normal_liver_dose_gy is not None:
        extra = f", non-tumour liver {r.normal_liver_dose_gy:g} Gy"
    if r.kind == "TARE" and r.dose_file is not None:
        extra += f", dose map {os.path.basename(r.dose_file)}"
    if r.kind in ("TACE", "DEB_TACE") and r.doxorubicin_mg is not None:
        extra = f", doxorubicin {r.doxorubicin_mg:g} mg"
    return (f"{r.date.isoformat()}: {r.kind.replace('_', '-')}{where}{extra}: "
            f"{_RESP.get(resp, 'response not recorded') if resp else 'response not recorded'}")


def _after_text(case: Case, kind: str) -> str:
    if kind == "DEB_TACE":
        kind = "TACE"
    code, text = next_step(kind, biliary_enteric_anastomosis=bool(biliary_risk(case)))
    return text


def _course(case: Case, th: Thresholds, states: list[LobeState], dose: BoardDoseFacts | None,
            staged: list[StagedStep], options: dict[str, BoardOption]) -> list[TerritoryCourse]:
    proc = case.procedure
    out = []
    untreated, partial = untreated_tumors(dose)
    for st in states:
        segs = TERRITORY_SEGMENTS[st.lobe]
        dated = [(r.date, _history_line(r, segs)) for r in case.patient.prior_treatments
                 if r.territory is not None and r.territory.couinaud_segments & segs]
        dated += [(r.date, f"{r.date.isoformat()}: {r.kind} (systemic)"
                   + (f": {_RESP.get(r.response_for(segs) or '', '')}" if r.response_for(segs) else ""))
                  for r in case.patient.prior_treatments
                  if r.territory is None and r.kind in ("PRRT", "SSA", "chemotherapy")]
        hist = [text for _, text in sorted(dated, key=lambda x: x[0])]
        last = None
        for r in sorted(case.patient.prior_treatments, key=lambda r: r.date):
            if r.territory is None or r.territory.couinaud_segments & segs:
                resp = r.response_for(segs)
                if resp is not None:
                    last = f"{_RESP.get(resp, resp)} after {r.kind.replace('_', '-')} on {r.date.isoformat()}"
        if st.treated_now:
            hist.append(f"{proc.date.isoformat()}: {proc.kind.replace('_', '-')} ({proc.territory.describe()}): "
                        "this plan")
            part = [t for t in partial if t.lobe in (st.lobe, None)]
            opt = options[f"intra_arterial_{st.lobe}_lobe"]
            blocked = opt.procedure in ("TAE", "TACE", "TARE") and opt.status not in _OK
            if blocked:
                why_not = "; ".join(f"{c.label} {c.status.value}" + (f" ({c.value})" if c.value else "")
                                    for c in opt.criteria if c.status.value != "met")
                nxt = f"{opt.procedure} not advised now"
                after = None
                st_reason = f"{st.reason}; {opt.procedure} not advised: {why_not}"
            elif proc.kind != st.step and st.step in ("TAE", "TACE", "TARE"):
                nxt = f"{st.step} instead of the requested {proc.kind.replace('_', '-')}"
                after = st.step
            elif st.step == "SYSTEMIC":
                nxt = "systemic therapy (this lobe)"
                after = None
            else:
                nxt = f"{proc.kind} now ({proc.date.isoformat()})"
                after = proc.kind
            if not blocked:
                st_reason = st.reason
            reason = st_reason + (f". After it: follow-up imaging; on progression, {_after_text(case, after)}."
                                  if after else ".")
            if part:
                reason += " Partly outside the perfused territory: " + ", ".join(
                    f"{t.name} ({t.perfused_fraction:.0%} inside, {t.mean_dose_gy:.1f} Gy)" for t in part) + "."
        elif st.step == "none":
            nxt, reason = "none", st.reason
        elif (st.needs_treatment and st.step in ("TAE", "TACE", "TARE")
              and options[f"intra_arterial_{st.lobe}_lobe"].status == OptionStatus.NOT_ELIGIBLE):
            opt = options[f"intra_arterial_{st.lobe}_lobe"]
            why_not = "; ".join(f"{c.label} unmet ({c.value})" for c in opt.criteria if c.status.value == "unmet")
            nxt = f"{st.step} not advised now"
            reason = f"{st.reason}; {st.step} not advised: {why_not}"
        elif st.needs_treatment is False:
            nxt = f"surveillance (on progression: {st.step if st.step != 'SYSTEMIC' else 'systemic therapy'})"
            reason = f"{st.need_reason}. {st.reason}"
        elif st.needs_treatment is None:
            nxt = f"image first ({st.need_reason}); then {st.step if st.step != 'SYSTEMIC' else 'systemic therapy'}"
            reason = st.reason
        else:
            nxt = st.step if st.step != "SYSTEMIC" else "systemic therapy"
            reason = st.reason
            names = [t for t in untreated if t.name in st.untreated]
            if names:
                reason = ("untreated by this plan: " + ", ".join(f"{t.name} ({t.volume_ml:.1f} mL, "
                                                                  f"{t.mean_dose_gy:.1f} Gy)" for t in names)
                          + f". {reason}")
            stg = [s for s in staged if s.territory == lobe_name(st.lobe)]
            if stg:
                reason += (f". Staged: {stg[0].procedure} from {stg[0].earliest_date.isoformat()}"
                           if stg[0].earliest_date else "")
        out.append(TerritoryCourse(territory=lobe_name(st.lobe), disease_present=st.disease, history=hist,
                                   last_response=last, next_step=nxt, reason=reason))
    return out + segment_courses(case, out, _history_line, _RESP)


def _staged(case: Case, th: Thresholds, states: list[LobeState], options: dict[str, BoardOption]) -> list[StagedStep]:
    """Staged lobar plan when both lobes need liver-directed treatment: the requested lobe now, the other after the
    interval (board_staged_lobar_interval_days); whole-liver TARE becomes right then left."""
    proc = case.procedure
    src = type(th).model_fields["board_staged_lobar_interval_days"].description or ""
    interval = th.board_staged_lobar_interval_days
    needing = [s for s in states if s.disease and s.step in ("TAE", "TACE", "TARE")
               and options[f"intra_arterial_{s.lobe}_lobe"].status in _OK]
    now = [s for s in states if s.treated_now]
    if proc.territory.is_whole_liver:
        # whole-liver TARE in one session is avoided (Su 2017): right lobe now, left lobe after the interval
        if proc.kind != "TARE" or len([s for s in states if s.disease]) < 2:
            return []
        if any(options[f"intra_arterial_{s.lobe}_lobe"].status not in _OK for s in states):
            return []  # a lobe's TARE is not advised: no staged TARE plan
        first, second = (states[0], states[1])
        return [
            StagedStep(order=1, territory=lobe_name(first.lobe), procedure=first.step if first.step in
                       ("TAE", "TACE", "TARE") else proc.kind, earliest_date=proc.date, interval_days=0,
                       source="instead of the requested whole-liver session (Su 2017; Currie 2019)",
                       note="whole-liver treatment in one session avoided"),
            StagedStep(order=2, territory=lobe_name(second.lobe), procedure=second.step if second.step in
                       ("TAE", "TACE", "TARE") else proc.kind, earliest_date=proc.date + timedelta(days=interval),
                       interval_days=interval, source=src,
                       note=_window_note(th, first, second, proc.kind)),
        ]
    if not now or len([s for s in states if s.disease]) < 2:
        return []
    if any(options[f"intra_arterial_{s.lobe}_lobe"].status not in _OK for s in now):
        return []  # this plan's own lobe is not advised: nothing to stage after it
    others = [s for s in needing if not s.treated_now]
    if not others:
        return []
    first = now[0]
    own = first.step if first.step in ("TAE", "TACE", "TARE") else proc.kind
    steps = [StagedStep(order=1, territory=proc.territory.describe(), procedure=own,
                        earliest_date=proc.date, interval_days=0, source="this plan",
                        note="" if own == proc.kind else f"instead of the requested {proc.kind.replace('_', '-')}: "
                        f"{first.reason}")]
    for i, other in enumerate(others, start=2):
        note = ""
        if other.untreated:
            note = f"treats {', '.join(other.untreated)} (untreated by this plan)"
        wn = _window_note(th, first, other, own)
        note = "; ".join(x for x in (note, wn) if x)
        steps.append(StagedStep(order=i, territory=lobe_name(other.lobe), procedure=other.step,
                                earliest_date=proc.date + timedelta(days=interval), interval_days=interval,
                                source=src, note=note))
    return steps


def _window_note(th: Thresholds, first: LobeState, second: LobeState, kind_now: str) -> str:
    if second.step == "TARE" and kind_now == "TARE":
        return (f"TARE of both lobes within {th.board_bilobar_tare_window_days} days counts as whole-liver exposure "
                f"(WHOLE_LIVER_TARE; {ev.SU_2017}): weigh a non-radiation step or a longer interval")
    return ""


def _recommend(case: Case, th: Thresholds, options: dict[str, BoardOption], states: list[LobeState],
               staged: list[StagedStep]) -> tuple[Recommendation, set[str]]:
    steps: list[tuple[str, str, str, list[str]]] = []  # option key, action, reason, citations

    def ok(key: str) -> bool:
        return options[key].status in _OK

    def add(key: str, action: str, reason: str | None = None) -> None:
        o = options[key]
        steps.append((key, action, reason or o.reason, o.citations[:3]))

    curative = False
    if ok("resection"):
        add("resection", "Refer for curative (R0) resection of the liver metastases")
        curative = True
    if ok("repeat_resection"):
        add("repeat_resection", "Repeat resection of the liver-only recurrence")
        curative = True
    if ok("ablation_with_resection"):
        add("ablation_with_resection", "Resect the large lesions and ablate the small ones")
        curative = True
    tx = [k for k in ("transplant_milan", "transplant_enets", "transplant_unos") if ok(k)]
    for k in tx:
        add(k, f"Refer for a liver-transplant evaluation ({options[k].title.split(': ')[1]})",
            options[k].reason + ("; avoid TARE before transplant (Su 2017)" if case.procedure.kind == "TARE" else ""))
    nec = is_nec(case, th)
    if nec and ok("systemic"):
        add("systemic", "Systemic therapy first (G3 / NEC)")
    if not curative and ok("ablation"):
        add("ablation", "Thermal ablation of the listed lesions")
    if not curative:
        lobe_order = [s for s in states if s.treated_now] + [s for s in states if not s.treated_now]
        staged_by = {s.territory: s for s in staged}
        for st in lobe_order:
            key = f"intra_arterial_{st.lobe}_lobe"
            o = options[key]
            if o.status not in _OK or o.procedure not in ("TAE", "TACE", "TARE"):
                continue
            stg = staged_by.get(lobe_name(st.lobe))
            when = ""
            if stg is not None and stg.earliest_date is not None and stg.order > 1:
                when = f", staged: from {stg.earliest_date.isoformat()} ({stg.interval_days} days after this plan)"
            elif st.treated_now:
                when = f", now ({case.procedure.date.isoformat()})"
            names = f"; treats {', '.join(st.untreated)} (untreated by this plan)" if st.untreated else ""
            if st.step == "SYSTEMIC" and o.procedure == "TARE":  # NEC: selected TARE after systemic therapy
                add(key, f"Selected TARE of the {lobe_name(st.lobe)} after systemic therapy", o.reason)
                continue
            window = ""
            if stg is not None and stg.order > 1 and "whole-liver exposure" in stg.note:
                window = (f"; TARE of both lobes within {th.board_bilobar_tare_window_days} days is whole-liver "
                          "exposure (WHOLE_LIVER_TARE, Su 2017): weigh a non-radiation step or a longer interval")
            add(key, f"{o.procedure} of the {lobe_name(st.lobe)}{when}", f"{st.reason}{names}{window}")
    blocked = [st for st in states if st.disease and st.needs_treatment and st.step in ("TAE", "TACE", "TARE")
               and options[f"intra_arterial_{st.lobe}_lobe"].status == OptionStatus.NOT_ELIGIBLE]
    if ok("debulking"):
        add("debulking", "Cytoreductive debulking for symptom control")
    if ok("systemic") and not nec and options["systemic"].status == OptionStatus.RECOMMENDED:
        add("systemic", "Systemic therapy / PRRT (indicated)")
    elif ok("systemic") and not nec and case.patient.disease.functional_syndrome != "none":
        add("systemic", "Somatostatin-analogue cover for the hormonal syndrome (peri-procedural and long term)",
            "functional syndrome: SSA controls symptoms and covers procedures (carcinoid crisis, Kwon 2019)")
    if blocked and ok("systemic") and not any(k == "systemic" for k, *_ in steps) and not curative:
        lobes = " and ".join(lobe_name(st.lobe) for st in blocked)
        why = "; ".join(
            f"{lobe_name(st.lobe)} {options[f'intra_arterial_{st.lobe}_lobe'].procedure}: "
            + ", ".join(f"{c.label} unmet ({c.value})" for c in options[f"intra_arterial_{st.lobe}_lobe"].criteria
                        if c.status.value == "unmet")
            for st in blocked)
        if case.patient.ecog >= th.ecog_warning_min:
            add("systemic", f"Somatostatin analogue and best supportive care (ECOG {case.patient.ecog}: liver-directed "
                "therapy not advised; PRRT and chemotherapy need an adequate performance status)", why)
        else:
            add("systemic", f"Systemic therapy / PRRT for the {lobes}: liver-directed therapy not advised there",
                why)
    if not steps and ok("systemic"):
        if case.patient.ecog >= th.ecog_warning_min:
            add("systemic", f"Somatostatin analogue and best supportive care (ECOG {case.patient.ecog}: no "
                "liver-directed option is eligible; PRRT and chemotherapy need an adequate performance status)")
        else:
            add("systemic", "Systemic therapy / PRRT: no liver-directed option is eligible")
    out = [RecommendationStep(order=i, option_key=k, action=a, reason=r, citations=c)
           for i, (k, a, r, c) in enumerate(steps, start=1)]
    would = []
    for o in options.values():
        if o.status == OptionStatus.NEEDS_DATA:
            unknown = [c for c in o.criteria if c.status.value == "unknown"]
            would.append(f"{o.title}: " + "; ".join(c.label + (f" ({c.note})" if c.note else "") for c in unknown))
    if out:
        phrases: list[str] = []
        tx_names = [options[s.option_key].title.split(": ")[1] for s in out if s.option_key.startswith("transplant_")]
        for st_ in out:
            if st_.option_key.startswith("transplant_"):
                phrase = f"Refer for a liver-transplant evaluation ({', '.join(tx_names)})"
                if phrase in phrases:
                    continue
            else:
                phrase = st_.action
            phrases.append(phrase)
        summary = "; then ".join(phrases[:3]) + "."
    else:
        summary = "No option is eligible on the data given; see the data that would change it."
    return Recommendation(summary=summary, steps=out, would_change=would), {s.option_key for s in out}


def build_review(case: Case, th: Thresholds, dose: BoardDoseFacts | None = None, *,
                 cumulative: CumulativeVoxelDose | None = None) -> BoardReview:
    states = [lobe_state(case, th, lobe, dose) for lobe in board_territories(case)]
    option_list: list[BoardOption] = [
        resection(case, th), repeat_resection(case, th), debulking(case, th),
        *transplant_options(case, th),
        ablation(case, th), ablation_with_resection(case, th),
        *intra_arterial_options(case, th, states, dose),
        systemic_option(case, th, states),
    ]
    options = {o.key: o for o in option_list}
    staged = _staged(case, th, states, options)
    rec, chosen = _recommend(case, th, options, states, staged)
    if not any(k.startswith("intra_arterial_") for k in chosen):
        staged = []  # surgery, transplant or systemic therapy first: no staged liver-directed plan to date
    final = []
    for o in option_list:
        if o.key in chosen:
            o = o.model_copy(update={"status": OptionStatus.RECOMMENDED})
        elif o.status == OptionStatus.RECOMMENDED:
            o = o.model_copy(update={"status": OptionStatus.POSSIBLE})
        final.append(o)
    gaps = []
    for o in final:
        for c in o.criteria:
            if c.status.value == "unknown":
                gaps.append(f"{o.title}: {c.label}" + (f" ({c.note})" if c.note else ""))
    return BoardReview(
        case_id=case.patient.id, reference_date=case.procedure.date, options=final, recommendation=rec,
        course=_course(case, th, states, dose, staged, options), staged_plan=staged, liver=liver_reserve(case, th, dose, cumulative),
        consent=consent_items(case, final), follow_up=follow_up(case, th, staged),
        data_gaps=list(dict.fromkeys(gaps)),
    )
