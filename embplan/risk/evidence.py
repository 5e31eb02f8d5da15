"""Citations the risk flags carry in ``Flag.evidence`` (after /work/shared/EVIDENCE.md).

Each constant names the source and the finding the rule relies on; ``[U]`` marks a finding not verified at the
primary source. Threshold values themselves live (with their sources) in :mod:`embplan.thresholds`.
"""

from __future__ import annotations

from ..thresholds import EANM_2022, MEZHIR_2011, RETNET, VAN_ROEKEL

__all__ = [
    "EANM_2022", "MEZHIR_2011", "RETNET", "VAN_ROEKEL", "AGAHI_2022", "ODISIO_2016", "BHAGAT_2013", "GUIU_2012",
    "SU_2017", "TOMOZAWA_2018", "CURRIE_2019", "KWON_2019", "UK_NET_CHD", "WJH_2015", "KENNEDY_2014",
    "DOXORUBICIN_LABEL", "ENETS_2022", "MAZZAFERRO_2007", "NET_NO_DOSE_THRESHOLD", "DU_BOIS_1916",
    "ROBERSON_REILD",
]

AGAHI_2022 = "Agahi et al., Curr Oncol 2022 (TARE after biliary intervention: abscess 1/15 (6.6%), infection 13.3%)"
ODISIO_2016 = (
    "Odisio et al. 2016 (aggressive prophylaxis: levofloxacin + metronidazole + neomycin + erythromycin bowel "
    "preparation, 0/10 abscesses after ablation)"
)
BHAGAT_2013 = "Bhagat et al., Cardiovasc Intervent Radiol 2013 (DEB-TACE in NET: bilomas in 54% of patients)"
GUIU_2012 = (
    "Guiu et al., J Hepatol 2012 (biloma or parenchymal infarct: odds ratio 9.78 for drug-eluting beads, 8.13 "
    "for NET; liver or biliary injury in 30.8% of patients)"
)
SU_2017 = (
    "Su et al., J Vasc Interv Radiol 2017 (glass, NET, n=54: cirrhosis-like morphology 56.4% after whole-liver vs "
    "26.7% after unilobar TARE)"
)
TOMOZAWA_2018 = (
    "Tomozawa et al., J Vasc Interv Radiol 2018 (resin, NET, n=93: cirrhosis-like morphology or portal "
    "hypertension in 29%, more after bilobar treatment)"
)
CURRIE_2019 = (
    "Currie et al., J Vasc Interv Radiol 2019 (chronic radioembolization-induced hepatotoxicity in 13%, 5% died; "
    "tumour involvement > 50% a risk factor)"
)
KWON_2019 = (
    "Kwon et al., Pancreas 2019 (carcinoid crisis in 6% (3/54) of liver-directed procedures, haemodynamic "
    "instability 26%)"
)
UK_NET_CHD = "UK NET protocol: carcinoid heart disease in > 50% of patients with carcinoid syndrome [U: secondary]"
WJH_2015 = "World J Hepatol 2015;7(16), Table 1 (TAE/TACE with severely reduced portal flow: contraindication)"
KENNEDY_2014 = "Kennedy, J Gastrointest Oncol 2014 (TARE indicated at ECOG <= 2)"
DOXORUBICIN_LABEL = (
    "Doxorubicin prescribing information (cumulative cardiotoxicity above 450-550 mg/m2); Swain et al., Cancer "
    "2003 [U: not in EVIDENCE.md]"
)
ENETS_2022 = (
    "ENETS 2022 guidance (via NICE): G1 intestinal NET with carcinoid syndrome -> TAE; G2 or non-intestinal -> "
    "TACE or TARE; sequential TAE -> TACE -> TARE (Soulen, CIRSE 2019)"
)
MAZZAFERRO_2007 = (
    "Milan-NET criteria (Mazzaferro et al., J Hepatol 2007; via medicalalgorithms.com): G1/G2, primary resected "
    "and drained by the portal system, <= 50% liver involvement, stable >= 6 months, age <= 55 (60 in some "
    "sources) [U]"
)
NET_NO_DOSE_THRESHOLD = (
    "No tumour-dose threshold is validated for NET: the targets come from HCC, ICC and colorectal series "
    f"({EANM_2022}, Tables 2 and 3)"
)
DU_BOIS_1916 = "Du Bois D, Du Bois EF, Arch Intern Med 1916 (body surface area = 0.007184 W^0.425 H^0.725)"
ROBERSON_REILD = (
    "REILD risk factors: earlier radioembolization, EBRT or chemotherapy; high dose; single-session whole-liver "
    "treatment (Braat; Roberson; via van Roekel thesis pp.38-39)"
)
