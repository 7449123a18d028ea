"""A labelled micro-corpus for migration tests: 25 SciFact documents, 20 queries, their qrels.

Taken from BEIR SciFact (the first 20 judged queries, their relevant documents and 10 random
distractors; texts cut to ~300 characters so one document is one chunk). Small enough to embed
in about half a second, yet hard enough that retrieval quality separates models: measured
nDCG@10 (vector mode) is 0.929 for all-MiniLM-L6-v2 and its max_seq_length-128 variant, 0.862
with CLS pooling and 0.811 with max_seq_length 16 - both beyond the gate's 0.02 tolerance.
Generated once from /work/shared/data/scifact; kept inline so tests need no external files.
"""

from __future__ import annotations

import json
from pathlib import Path

# (doc_id, title, text)
DOCS: list[tuple[str, str, str]] = [
    (
        "13734012",
        "Prevalent abnormal prion protein in human appendixes after bovine spongiform encephalopathy epizootic: large scale survey",
        "OBJECTIVES To carry out a further survey of archived appendix samples to understand better the differences between existing estimates of the prevalence of subclinical infection with prions after the bovine spongiform encephalopathy epizootic and to see whether a broader birth cohort was affected,",
    ),
    (
        "1606628",
        "Estimates of global prevalence of childhood underweight in 1990 and 2015.",
        "CONTEXT One key target of the United Nations Millennium Development goals is to reduce the prevalence of underweight among children younger than 5 years by half between 1990 and 2015.   \n OBJECTIVE To estimate trends in childhood underweight by geographic regions of the world.   \n DESIGN, SETTING,",
    ),
    (
        "22080671",
        "KLF4-dependent phenotypic modulation of smooth muscle cells has a key role in atherosclerotic plaque pathogenesis",
        "Previous studies investigating the role of smooth muscle cells (SMCs) and macrophages in the pathogenesis of atherosclerosis have provided controversial results owing to the use of unreliable methods for clearly identifying each of these cell types. Here, using Myh11-CreERT2 ROSA floxed STOP eYFP",
    ),
    (
        "22942787",
        "Relation between Medicare screening reimbursement and stage at diagnosis for older patients with colon cancer.",
        "CONTEXT Medicare's reimbursement policy was changed in 1998 to provide coverage for screening colonoscopies for patients with increased colon cancer risk, and expanded further in 2001 to cover screening colonoscopies for all individuals.   \n OBJECTIVE To determine whether the Medicare reimbursement",
    ),
    (
        "2613775",
        "Sudden infant death syndrome.",
        "Despite declines in prevalence during the past two decades, sudden infant death syndrome (SIDS) continues to be the leading cause of death for infants aged between 1 month and 1 year in developed countries. Behavioural risk factors identified in epidemiological studies include prone and side",
    ),
    (
        "31715818",
        "New opportunities: the use of nanotechnologies to manipulate and track stem cells.",
        "Nanotechnologies are emerging platforms that could be useful in measuring, understanding, and manipulating stem cells. Examples include magnetic nanoparticles and quantum dots for stem cell labeling and in vivo tracking; nanoparticles, carbon nanotubes, and polyplexes for the intracellular delivery",
    ),
    (
        "3202143",
        "Insulin Signaling and Dietary Restriction Differentially Influence the Decline of Learning and Memory with Age",
        "Of all the age-related declines, memory loss is one of the most devastating. While conditions that increase longevity have been identified, the effects of these longevity-promoting factors on learning and memory are unknown. Here we show that the C. elegans Insulin/IGF-1 receptor mutant daf-2",
    ),
    (
        "32390525",
        "Prevention of malaria in long-term travelers.",
        "CONTEXT Long-term travelers, defined here as those traveling for periods of 6 months or longer, face particular challenges regarding malaria prevention. Current guidelines for malaria prevention primarily address prevention of Plasmodium falciparum infections in short-term travelers.   \n OBJECTIVES",
    ),
    (
        "32587939",
        "Wolfram syndrome 1 and adenylyl cyclase 8 interact at the plasma membrane to regulate insulin production and secretion",
        "Endoplasmic reticulum (ER) stress causes pancreatic β-cell dysfunction and contributes to β-cell loss and the progression of type 2 diabetes. Wolfram syndrome 1 (WFS1) has been shown to be an important regulator of the ER stress signalling pathway; however, its role in β-cell function remains",
    ),
    (
        "33409100",
        "Effect of homocysteine lowering on mortality and vascular disease in advanced chronic kidney disease and end-stage renal disease: a randomized controlled trial.",
        "CONTEXT High plasma homocysteine levels are a risk factor for mortality and vascular disease in observational studies of patients with chronic kidney disease. Folic acid and B vitamins decrease homocysteine levels in this population but whether they lower mortality is unknown.   \n OBJECTIVE To",
    ),
    (
        "3471191",
        "Association of Pembrolizumab With Tumor Response and Survival Among Patients With Advanced Melanoma.",
        "IMPORTANCE The programmed death 1 (PD-1) pathway limits immune responses to melanoma and can be blocked with the humanized anti-PD-1 monoclonal antibody pembrolizumab.   \n OBJECTIVE To characterize the association of pembrolizumab with tumor response and overall survival among patients with",
    ),
    (
        "41493639",
        "ABC of burns. Introduction.",
        "Burns are one of the most devastating conditions encountered in medicine. The injury represents an assault on all aspects of the patient, from the physical to the psychological. It affects all ages, from babies to elderly people, and is a problem in both the developed and developing world. All of",
    ),
    (
        "44265107",
        "Liver transplantation and opioid dependence.",
        "ContextChronic hepatitis C is the leading cause for liver transplantation in the United States. Intravenous drug use, the major risk factor, accounts for approximately 60% of hepatitis C virus transmission. Information from the United Network of Organ Sharing (UNOS) does not address substance use",
    ),
    (
        "641786",
        "Relapse specific mutations in NT5C2 in childhood acute lymphoblastic leukemia",
        "Relapsed childhood acute lymphoblastic leukemia (ALL) carries a poor prognosis, despite intensive retreatment, owing to intrinsic drug resistance. The biological pathways that mediate resistance are unknown. Here, we report the transcriptome profiles of matched diagnosis and relapse bone marrow",
    ),
    (
        "6490571",
        "Prevalence, severity, and unmet need for treatment of mental disorders in the World Health Organization World Mental Health Surveys.",
        "CONTEXT Little is known about the extent or severity of untreated mental disorders, especially in less-developed countries.   \n OBJECTIVE To estimate prevalence, severity, and treatment of Diagnostic and Statistical Manual of Mental Disorders, Fourth Edition (DSM-IV) mental disorders in 14",
    ),
    (
        "16745747",
        "Genetic Interaction between Mutations in c-Myb and the KIX Domains of CBP and p300 Affects Multiple Blood Cell Lineages and Influences Both Gene Activation and Repression",
        "Adult blood cell production or definitive hematopoiesis requires the transcription factor c-Myb. The closely related KAT3 histone acetyltransferases CBP (CREBBP) and p300 (EP300) bind c-Myb through their KIX domains and mice homozygous for a p300 KIX domain mutation exhibit multiple blood defects.",
    ),
    (
        "73136607",
        "Assessment of older people: Self-maintaining and instrumental activities of daily living.",
        "THE use of formal devices for assessing function is becoming standard in agencies serving the elderly. In the Gerontological Society's recent contract study on functional assessment (Howell, 1968), a large assortment of rating scales, checklists, and other techniques in use in applied settings was",
    ),
    (
        "13312471",
        "Vitamin D insufficiency and the blunted PTH response in established osteoporosis: the role of magnesium deficiency",
        "Vitamin D insufficiency is common, however within individuals, not all manifest the biochemical effects of PTH excess. This further extends to patients with established osteoporosis. The mechanism underlying the blunted PTH response is unclear but may be related to magnesium (Mg) deficiency. The",
    ),
    (
        "23785605",
        "Cardiovascular risk factors and migraine: the GEM population-based study.",
        "BACKGROUND Migraine, particularly with aura, is a risk factor for early-onset ischemic stroke. The underlying mechanisms are unknown, but may in part be due to migraineurs having an increased risk profile for cardiovascular disease. In this study, the authors compare the cardiovascular risk profile",
    ),
    (
        "15816729",
        "Interface Contractility between Differently Fated Cells Drives Cell Elimination and Cyst Formation",
        "Although cellular tumor-suppression mechanisms are widely studied, little is known about mechanisms that act at the level of tissues to suppress the occurrence of aberrant cells in epithelia. We find that ectopic expression of transcription factors that specify cell fates causes abnormal epithelial",
    ),
    (
        "45770026",
        "Eicosapentaenoic acid is converted via ω-3 epoxygenation to the anti-inflammatory metabolite 12-hydroxy-17,18-epoxyeicosatetraenoic acid.",
        "Eicosapentaenoic acid (EPA) has beneficial effects in many inflammatory disorders. In this study, dietary EPA was converted to 17,18-epoxyeicosatetraenoic acid (17,18-EpETE) by ω-3 epoxygenation in the mouse peritoneal cavity. Mediator lipidomics revealed a series of novel oxygenated metabolites of",
    ),
    (
        "40996863",
        "Restless legs syndrome and attention-deficit/hyperactivity disorder: a review of the literature.",
        "STUDY OBJECTIVE To review evidence on the association between restless legs syndrome (RLS) and attention-deficit/hyperactivity disorder (ADHD), to discuss the hypothetical mechanisms underlying this association, and to consider the potential interest for common pharmacologic treatments of RLS and",
    ),
    (
        "43700577",
        "Sphingosine can pre- and post-condition heart and utilizes a different mechanism from sphingosine 1-phosphate.",
        "Consistent with previous reports, sphingosine at a high concentration (5 microM) was cardiotoxic as evidenced by increased infarct size in response to ischemia/reperfusion in an ex vivo rat heart. Sphingosine 1-phosphate (S1P) at 5 microM was cardioprotective. However, at a physiologic",
    ),
    (
        "33554389",
        "The relationship of the level of cyclic amp to differentiation in primary cultures of chick muscle cells.",
        "Abstract The effect of increased levels of cAMP upon the differentiation of primary cultures of chick myo blasts has been investigated. 0.1 mM But 2 cAMP or 1 mM 3-isobutyl-1-methylxanthine was added to the cultures 24 h after plating and maintained throughout the 70 h period of culture examined.",
    ),
    (
        "21330280",
        "The Spliceosome: Design Principles of a Dynamic RNP Machine",
        "Ribonucleoproteins (RNPs) mediate key cellular functions such as gene expression and its regulation. Whereas most RNP enzymes are stable in composition and harbor preformed active sites, the spliceosome, which removes noncoding introns from precursor messenger RNAs (pre-mRNAs), follows",
    ),
]

QUERIES: dict[str, str] = {
    "0": "0-dimensional biomaterials lack inductive properties.",
    "2": "1 in 5 million in UK have abnormal PrP positivity.",
    "4": "1-1% of colorectal cancer patients are diagnosed with regional or distant metastases.",
    "6": "10% of sudden infant death syndrome (SIDS) deaths happen in newborns aged less than 6 months.",
    "9": "32% of liver transplantation programs required patients to discontinue methadone treatment in 2001.",
    "10": "4-PBA treatment decreases endoplasmic reticulum stress in response to general endoplasmic reticulum stress markers.",
    "11": "4-PBA treatment raises endoplasmic reticulum stress in response to general endoplasmic reticulum stress markers.",
    "12": "40mg/day dosage of folic acid and 2mg/day dosage of vitamin B12 does not affect chronic kidney disease (CKD) progression.",
    "14": "5'-nucleotidase metabolizes 6MP.",
    "15": "50% of patients exposed to radiation have activated markers of mesenchymal stem cells.",
    "17": "53% of perinatal mortality is due to low birth weight.",
    "18": "61% of colorectal cancer patients are diagnosed with regional or distant metastases.",
    "19": "7-day-old adult Caenorhabditis elegans exhibit approximately 5% of the learning capacity seen in 1-day old adults.",
    "20": "7-day-old adult Caenorhabditis elegans exhibit approximately 75% of the learning capacity seen in 1-day old adults.",
    "21": "70% of burn patients are admitted for hospitalization and further treatment after appearing at hospital emergency wards or outpatient clinics.",
    "22": "76-85% of people with severe mental disorder receive no treatment in low and middle income countries.",
    "24": "90% of patients with melanoma and an objective response to PD-1 blockade will experience a progression in their melanoma.",
    "25": "90% of sudden infant death syndrome (SIDS) deaths happen in newborns aged less than 6 months.",
    "26": "A 100g dose of chloroquine chemoprophylactic regimen results in retinal toxicity after 1 year of weekly intake.",
    "27": "A 100g dose of chloroquine chemoprophylactic regimen results in retinal toxicity after 5-6 years of weekly intake.",
}

QRELS: dict[str, dict[str, int]] = {
    "0": {"31715818": 1},
    "2": {"13734012": 1},
    "4": {"22942787": 1},
    "6": {"2613775": 1},
    "9": {"44265107": 1},
    "10": {"32587939": 1},
    "11": {"32587939": 1},
    "12": {"33409100": 1},
    "14": {"641786": 1},
    "15": {"22080671": 1},
    "17": {"1606628": 1},
    "18": {"22942787": 1},
    "19": {"3202143": 1},
    "20": {"3202143": 1},
    "21": {"41493639": 1},
    "22": {"6490571": 1},
    "24": {"3471191": 1},
    "25": {"2613775": 1},
    "26": {"32390525": 1},
    "27": {"32390525": 1},
}


def write_beir(directory: Path) -> tuple[Path, Path]:
    """Write QUERIES and QRELS as BEIR files (queries.jsonl, qrels.tsv) for the gate's settings."""
    directory.mkdir(parents=True, exist_ok=True)
    queries = directory / "queries.jsonl"
    qrels = directory / "qrels.tsv"
    queries.write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    rows = ["query-id\tcorpus-id\tscore"]
    rows += [f"{q}\t{d}\t{s}" for q, docs in QRELS.items() for d, s in docs.items()]
    qrels.write_text("\n".join(rows) + "\n")
    return queries, qrels
