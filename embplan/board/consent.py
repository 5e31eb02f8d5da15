"""The numbers a patient consents to, per option, with their source and caveat; and the follow-up schedule with
dates from the procedure date (imaging every 3 months in year 1, every 6 months in year 2; labs; what triggers
retreatment). Where a number comes from another tumour or a small series, the caveat says so."""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from typing import TYPE_CHECKING

from ..risk import evidence as ev
from ..thresholds import MEZHIR_2011, Thresholds
from .model import BoardOption, ConsentItem, FollowUpItem, OptionStatus, StagedStep
from .surgery import MAXWELL_2016, MOHAN_2015, TANER_2013
from .systemic import CLARINET, NETTER_1

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["consent_items", "follow_up", "add_months", "CHEN_2018", "FIORE_2014", "NGO_2021", "MAYO_2010",
           "MAZZAFERRO_2016", "SEED_REPEAT_RESECTION", "SEED_ABLATION"]

#: Liver-directed embolization in NET: symptom control 75%, objective response 55-60%, liver PFS 18 months G1 / 12
#: months G2, serious adverse events 6.5%, mortality 0-2% (the seed's numbers from the RETNET protocol).
CHEN_2018 = "RETNET protocol (Chen JX, Soulen MC et al., 2018) [U: exact reference not retrieved]"
FIORE_2014 = "Fiore F et al., In Vivo 2014 (TAE vs TACE in NET: post-embolization syndrome 41% vs 61%)"
NGO_2021 = ("Ngo L et al., Ann Surg Oncol 2021 (meta-analysis, TACE vs TARE for NET liver metastases: overall survival "
            "odds ratio 1.92 favouring TACE, similar PFS and complications) [U: journal and direction not verified at "
            "the source]")
MAYO_2010 = ("Mayo SC et al., Ann Surg Oncol 2010;17:3129-36 (multi-institutional, n=339: resection of NET liver "
             "metastases, 5-year OS 74%, recurrence common) [U: figures from secondary sources]")
MAZZAFERRO_2016 = ("Mazzaferro V et al., Am J Transplant 2016;16:2892-902 (Milan-NET, intention-to-treat: 5- and "
                   "10-year OS 97.2% and 88.8% with transplant vs 50.9% and 22.4% without) [U: secondary]")
SEED_REPEAT_RESECTION = ("the seed: 10-year OS 60.3% after repeat surgery vs 52.0% intra-arterial vs 45.9% SSA for "
                         "liver-only recurrence [U: primary source not retrieved]")
SEED_ABLATION = "the seed: ablation of NET liver metastases, 5-year OS about 53%, local recurrence 22% [U]"

_OK = (OptionStatus.RECOMMENDED, OptionStatus.POSSIBLE)


def _ia_items(key: str, procedure: str, case: Case) -> list[ConsentItem]:
    out = [
        ConsentItem(option_key=key, outcome="symptom control", value="75%", source=CHEN_2018,
                    caveat="NET series; pooled over TAE/TACE/TARE"),
        ConsentItem(option_key=key, outcome="objective response rate", value="55-60%", source=CHEN_2018,
                    caveat="NET series; pooled over TAE/TACE/TARE"),
        ConsentItem(option_key=key, outcome="liver progression-free survival", value="about 18 months (G1), 12 months "
                    "(G2)", source=CHEN_2018, caveat="NET series"),
        ConsentItem(option_key=key, outcome="serious adverse events", value="6.5%", source=CHEN_2018, caveat=""),
        ConsentItem(option_key=key, outcome="procedure-related mortality", value="0-2%", source=CHEN_2018, caveat=""),
    ]
    if procedure in ("TAE", "TACE"):
        out.append(ConsentItem(option_key=key, outcome="post-embolization syndrome (pain, fever, nausea)",
                               value="41% after TAE, 61% after TACE", source=FIORE_2014,
                               caveat="small randomised series"))
    if procedure in ("TACE", "TARE"):
        out.append(ConsentItem(option_key=key, outcome="TACE vs TARE", value="overall survival odds ratio 1.92 "
                               "favouring TACE; similar PFS and complications", source=NGO_2021,
                               caveat="meta-analysis of retrospective series"))
    if procedure == "TARE":
        out.append(ConsentItem(option_key=key, outcome="chronic liver injury (radioembolization-induced "
                               "hepatotoxicity)", value="13%, 5% died; cirrhosis-like morphology 27% after one lobe, "
                               "56% after the whole liver", source=f"{ev.CURRIE_2019}; {ev.SU_2017}",
                               caveat="retrospective NET series (n=54 in Su 2017)"))
    b = case.patient.biliary
    if b.biliary_enteric_anastomosis and procedure in ("TAE", "TACE"):
        out.append(ConsentItem(option_key=key, outcome="liver abscess (biliary-enteric anastomosis)",
                               value="33% (11/34), 21% of those died", source=MEZHIR_2011,
                               caveat="mixed tumours, small series"))
    elif b.biliary_enteric_anastomosis or b.biliary_stent or not b.sphincter_of_oddi_intact:
        out.append(ConsentItem(option_key=key, outcome="liver abscess (biliary intervention)",
                               value="about 7% after TARE (1/15); about 10% after embolization with an incompetent "
                               "sphincter (2/21)", source=f"{ev.AGAHI_2022}; {MEZHIR_2011}",
                               caveat="small series, mixed tumours"))
    if case.patient.disease.functional_syndrome != "none":
        out.append(ConsentItem(option_key=key, outcome="carcinoid / hormonal crisis", value="about 6% of procedures; "
                               "haemodynamic instability 26%", source=ev.KWON_2019, caveat="small series (n=54)"))
    return out


def consent_items(case: Case, options: list[BoardOption]) -> list[ConsentItem]:
    """Consent numbers for every option that is recommended or possible (and for the requested procedure's lobe)."""
    out: list[ConsentItem] = []
    for opt in options:
        if opt.status not in _OK:
            continue
        k = opt.key
        if k.startswith("intra_arterial_") and opt.procedure in ("TAE", "TACE", "TARE"):
            out.extend(_ia_items(k, opt.procedure, case))
        elif k == "resection":
            out.append(ConsentItem(option_key=k, outcome="overall survival after resection", value="5-year about 74%",
                                   source=MAYO_2010, caveat="retrospective multi-institutional series; recurrence is "
                                   "common"))
        elif k == "repeat_resection":
            out.append(ConsentItem(option_key=k, outcome="10-year overall survival", value="60.3% repeat surgery vs "
                                   "52.0% intra-arterial vs 45.9% SSA", source=SEED_REPEAT_RESECTION,
                                   caveat="retrospective comparison"))
        elif k.startswith("transplant_"):
            out.append(ConsentItem(option_key=k, outcome="overall survival with transplant (Milan-NET)",
                                   value="5-year 97.2%, 10-year 88.8% (vs 50.9% / 22.4% without)",
                                   source=MAZZAFERRO_2016, caveat="single-centre, selected patients (n=88)"))
        elif k == "ablation":
            out.append(ConsentItem(option_key=k, outcome="overall survival and local recurrence",
                                   value="5-year OS about 53%; local recurrence 22%", source=SEED_ABLATION,
                                   caveat="small series"))
            out.append(ConsentItem(option_key=k, outcome="symptom improvement; recurrence anywhere",
                                   value="92%; 63-87%", source=MOHAN_2015, caveat="systematic review of small series"))
        elif k == "ablation_with_resection":
            out.append(ConsentItem(option_key=k, outcome="overall survival; local recurrence at the ablation site",
                                   value="80% / 59% at 5 / 10 years; 3.8%", source=TANER_2013,
                                   caveat="single-centre series (n=94)"))
        elif k == "debulking":
            out.append(ConsentItem(option_key=k, outcome="survival after >= 70% cytoreduction",
                                   value="better PFS and OS than below 70%", source=MAXWELL_2016,
                                   caveat="retrospective single-centre series"))
        elif k == "systemic":
            out.append(ConsentItem(option_key=k, outcome="PRRT: progression-free at 20 months", value="65.2% vs 10.8%",
                                   source=NETTER_1, caveat="midgut NET only"))
            out.append(ConsentItem(option_key=k, outcome="SSA: progression-free survival", value="longer than "
                                   "placebo", source=CLARINET, caveat="GEP-NET, Ki-67 < 10%"))
    return _merge(out)


def _merge(items: list[ConsentItem]) -> list[ConsentItem]:
    """One row per (outcome, value, source): the option keys joined (both lobes' TAE rows say the same)."""
    merged: dict[tuple[str, str, str, str], list[str]] = {}
    for it in items:
        merged.setdefault((it.outcome, it.value, it.source, it.caveat), []).append(it.option_key)
    return [ConsentItem(option_key=", ".join(dict.fromkeys(keys)), outcome=o, value=v, source=src, caveat=c)
            for (o, v, src, c), keys in merged.items()]


def add_months(d: date, months: int) -> date:
    """``d`` plus whole calendar months (the day clipped to the month's length)."""
    m = d.month - 1 + months
    y, m = d.year + m // 12, m % 12 + 1
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def follow_up(case: Case, th: Thresholds, staged: list[StagedStep]) -> list[FollowUpItem]:
    """Dated follow-up from the procedure date: labs, imaging q3 months in year 1 and q6 months in year 2, the staged
    steps, and the retreatment triggers."""
    when = case.procedure.date
    proc = case.procedure.kind
    src1 = type(th).model_fields["board_followup_imaging_year1_months"].description or ""
    src2 = type(th).model_fields["board_followup_imaging_year2_months"].description or ""
    labs_src = type(th).model_fields["board_followup_labs_days"].description or ""
    out = [FollowUpItem(date=when + timedelta(days=th.board_followup_labs_days),
                        what="Labs: bilirubin, albumin (ALBI), INR, transaminases, platelets"
                        + ("; watch for REILD (jaundice, ascites)" if proc == "TARE" else "")
                        + ("; chromogranin / 5-HIAA if functional" if case.patient.disease.functional_syndrome != "none"
                           else ""), source=labs_src)]
    step1, step2 = th.board_followup_imaging_year1_months, th.board_followup_imaging_year2_months
    m = step1
    while m <= 12:
        out.append(FollowUpItem(date=add_months(when, m), what=f"Imaging (multiphase CT or MRI; SSTR PET if "
                                f"indicated) and labs, month {m}: response per lobe (RECIST 1.1 / mRECIST)",
                                source=src1))
        m += step1
    m = 12 + step2
    while m <= 24:
        out.append(FollowUpItem(date=add_months(when, m), what=f"Imaging and labs, month {m}", source=src2))
        m += step2
    first = next((st for st in staged if st.order == 1), None)
    kind = proc.replace("_", "-")
    if first is not None and first.procedure != proc:
        what = f"This procedure: {first.procedure} of the {first.territory} (the board's step; requested: {kind})"
    else:
        what = f"This procedure: {kind} of the {case.procedure.territory.describe()}"
    out.append(FollowUpItem(date=when, what=what, source="the case; the board's staged plan"))
    for st in staged:
        if st.order == 1:
            continue
        out.append(FollowUpItem(date=st.earliest_date, what=f"Staged step {st.order}: {st.procedure} of the "
                                f"{st.territory} (earliest date, after labs show recovery)" +
                                (f": {st.note}" if st.note else ""), source=st.source))
    out.append(FollowUpItem(date=None, what="Retreatment triggers: progression in a treated lobe (RECIST 1.1) -> the "
                            "lobe's next ladder step; new or untreated disease in the other lobe -> its staged step; "
                            "returning hormonal symptoms -> retreat or add SSA; extrahepatic progression -> systemic "
                            "therapy / PRRT (tumour board)", source="the seed's working approach; Soulen, CIRSE 2019"))
    return sorted(out, key=lambda f: (f.date is None, f.date or when))
