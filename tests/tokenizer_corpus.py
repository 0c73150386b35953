"""A deterministic tokenizer test corpus: clinical text, doses and units, many scripts, emoji,
whitespace runs, contractions, code, and text that looks like special tokens.

Everything is generated from a seeded ``random.Random``; nothing is downloaded. ``build_corpus()``
returns the same list on every run and platform.
"""

from __future__ import annotations

import random
import string
import unicodedata

CLINICAL = [
    "Patient is a 67-year-old male with a history of T2DM, HTN and CKD stage 3b.",
    "Chief complaint: chest pain radiating to the left arm for 2 hours.",
    "HPI: 45F presents with fever (38.9 °C), productive cough and dyspnea x3 days.",
    "Vitals: BP 120/80 mmHg, HR 88 bpm, RR 18/min, SpO2 97% on RA, T 37.2°C.",
    "BP 145/95 mmHg; pulse 102; SpO₂ 91% on 2 L/min NC.",
    "Labs: Na 138 mmol/L, K 4.1 mmol/L, Cr 1.42 mg/dL, eGFR 48 mL/min/1.73m².",
    "HbA1c 7.2%, fasting glucose 142 mg/dL (7.9 mmol/L).",
    "WBC 12.4 × 10^9/L, Hb 10.2 g/dL, Plt 245 × 10³/µL.",
    "Troponin I 0.04 ng/mL (ref < 0.03); BNP 450 pg/mL.",
    "ECG: sinus tachycardia, ST-elevation in leads II, III, aVF.",
    "CXR: bilateral infiltrates, no pneumothorax.",
    "A/P: community-acquired pneumonia (CURB-65 = 2) -> admit to medicine.",
    "Assessment & Plan:\n1. Sepsis, likely urinary source.\n2. AKI on CKD.\n3. DM2, uncontrolled.",
    "Allergies: NKDA. Social hx: 20 pack-year smoker, quit 2015; EtOH socially.",
    "Family history significant for MI in father at age 52.",
    "ROS negative except as noted in HPI.",
    "Physical exam: alert & oriented ×3, lungs with crackles at R base, no JVD.",
    "Plan: start ceftriaxone 1 g IV q24h + azithromycin 500 mg PO daily.",
    "Discharge instructions: follow up with PCP in 1-2 weeks; return if SOB worsens.",
    "The patient's INR was 2.8 on warfarin 5 mg daily; target range 2.0–3.0.",
    "GCS 15 (E4V5M6). Pupils equal, round, reactive to light.",
    "s/p CABG ×3 (2019), EF 35–40% on TTE.",
    "Pt c/o N/V/D since yesterday; denies hematemesis or melena.",
    "Differential diagnosis includes PE, ACS, aortic dissection, and pericarditis.",
    "Q: What is the first-line treatment for uncomplicated hypertension?",
    "A: Thiazide diuretics, ACE inhibitors, ARBs, or CCBs are first-line options.",
    "Dx: Type 2 diabetes mellitus without complications (E11.9).",
    "MRI brain w/wo contrast: no acute intracranial abnormality.",
    "Blood cultures ×2 pending; UA positive for nitrites and leukocyte esterase.",
    "Weight 82.5 kg, height 178 cm, BMI 26.0 kg/m².",
    "Insulin glargine 20 units SC qHS; lispro sliding scale AC & HS.",
    "Code status: Full code. HCP: daughter (555-123-4567).",
    "Pain 7/10, sharp, non-radiating; worse with inspiration.",
    "The MRN is 00123456 and the visit date is 2024-03-15T14:30:00Z.",
    "Na⁺/K⁺-ATPase, Ca²⁺ 2.35 mmol/L, HCO₃⁻ 18 mEq/L, pH 7.31, pCO₂ 32 mmHg.",
    "Dose: 0.1 µg/kg/min norepinephrine, titrate to MAP ≥ 65 mmHg.",
    "Heparin drip 18 units/kg/h; aPTT goal 60–85 s.",
    "Med42 is a clinical large language model developed in Abu Dhabi, UAE.",
    "IMPRESSION: Findings consistent with acute appendicitis. Recommend surgical consult.",
    "He's been taking ibuprofen 400mg TID for knee OA; we'll switch to acetaminophen.",
]

DRUGS = [
    "metformin",
    "amoxicillin-clavulanate",
    "lisinopril",
    "atorvastatin",
    "apixaban",
    "warfarin",
    "levothyroxine",
    "empagliflozin",
    "semaglutide",
    "piperacillin/tazobactam",
    "vancomycin",
    "ceftriaxone",
    "furosemide",
    "hydrochlorothiazide",
    "amlodipine",
    "metoprolol succinate",
    "insulin glargine",
    "prednisone",
    "methylprednisolone",
    "acetaminophen",
    "paracetamol",
    "ondansetron",
    "pantoprazole",
    "enoxaparin",
    "clopidogrel",
    "aspirin",
    "morphine sulfate",
    "oxycodone/APAP",
    "Tylenol®",
    "Lipitor™",
    "trimethoprim-sulfamethoxazole",
    "norepinephrine",
    "dexmedetomidine",
    "salbutamol",
    "ipratropium",
]
DOSES = [
    "500",
    "875/125",
    "0.5",
    "1",
    "2.5",
    "10",
    "20",
    "40",
    "81",
    "100",
    "1,000",
    "1000",
    "0.125",
    "12.5",
    "5-10",
]
UNITS = ["mg", "g", "mcg", "µg", "μg", "mL", "units", "IU", "mg/kg", "mg/m²", "mEq", "mmol", "%", "puffs"]
ROUTES = ["PO", "IV", "IM", "SC", "SL", "PR", "inh", "IVPB", "per NG tube", "topically"]
FREQS = [
    "BID",
    "TID",
    "QID",
    "daily",
    "q6h",
    "q8h",
    "q12h",
    "PRN",
    "qHS",
    "once",
    "x1",
    "stat",
    "q4-6h PRN pain",
]

NUMBERS = [
    "1,000,000",
    "3.14e-5",
    "6.022E+23",
    "-0.001",
    "+12.5",
    "1/2",
    "½",
    "¾",
    "0.0",
    "007",
    "1e10",
    "100%",
    "99.9th percentile",
    "2024-03-15",
    "15/03/2024",
    "03/15/24",
    "12:45:07",
    "14h30",
    "Mar 15, 2024",
    "2nd",
    "21st",
    "3rd",
    "10^9/L",
    "10⁹/L",
    "5×10⁴",
    "≥",
    "≤",
    "±",
    "~",
    "≈",
    "°C",
    "°F",
    "98.6°F",
    "37 °C",
    "µg/kg/min",
    "mmol/L",
    "mL/min/1.73 m²",
    "m²",
    "cm³",
    "12345678901234567890",
    "3.141592653589793",
    "1.",
    ".5",
    "$1,234.56",
    "€99",
    "£5",
    "¥1000",
    "AED 250",
    "#12",
    "No. 5",
    "v2.3.1",
    "IPv4 192.168.0.1",
]

EMOJI = [
    "😀",
    "👍",
    "👍🏽",
    "👋🏿",
    "👨‍👩‍👧‍👦",
    "👩🏻‍⚕️",
    "🧑‍⚕️",
    "🏳️‍🌈",
    "🇦🇪",
    "🇺🇸",
    "🇮🇳",
    "❤️",
    "❤",
    "🩺",
    "💊",
    "💉",
    "🧬",
    "🫀",
    "🫁",
    "🦠",
    "🤒",
    "🤕",
    "🚑",
    "🏥",
    "✅",
    "❌",
    "⚠️",
    "☕",
    "🙂🙃",
    "😂😂😂",
    "🔥",
    "1️⃣",
    "#️⃣",
    "©️",
    "🇬🇧🇫🇷",
]

SCRIPTS = [
    # CJK
    "患者男性，67岁，主诉胸痛2小时。",
    "高血压，糖尿病，慢性肾病。",
    "血压120/80毫米汞柱",
    "我想在apple工作1314151天～",
    "患者は発熱と咳を訴えています。",
    "カタカナとひらがなと漢字",
    "환자는 흉통을 호소합니다.",
    "혈압 120/80",
    # Arabic
    "المريض يعاني من ارتفاع ضغط الدم والسكري.",
    "مرحبا بكم في أبوظبي، الإمارات العربية المتحدة",
    "ضغط الدم ١٢٠/٨٠ ملم زئبق",
    "الأدوية: ميتفورمين ٥٠٠ ملغ مرتين يوميا",
    "الْحَمْدُ لِلَّهِ",
    "Med42 من أبوظبي",
    "\u200fنص من اليمين\u200f",
    # Hindi
    "रोगी को बुखार और खांसी है।",
    "रक्तचाप 120/80 mmHg",
    "नमस्ते दुनिया",
    "मधुमेह और उच्च रक्तचाप",
    # Cyrillic
    "Пациент жалуется на боль в груди.",
    "Артериальное давление 120/80 мм рт. ст.",
    "ПРИВЕТ мир Ёлка ёж",
    # Greek
    "Ο ασθενής έχει πυρετό.",
    "α-βλοκέρ, β-αναστολείς, γ-GT, Δ, Σ, ω, μg",
    "ΑΒΓΔΕ αβγδε",
    # others
    "שלום עולם",
    "Türkçe: İstanbul ılık",
    "Tiếng Việt: bệnh nhân bị sốt",
    "ภาษาไทย ผู้ป่วย",
    "ქართული",
    "Ꭰꭰ Cherokee",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝐁𝐨𝐥𝐝",
    "ﬁ ﬂ ﬀ ligatures",
    "Ａｌｌ ｆｕｌｌｗｉｄｔｈ １２３",
    "ᠮᠣᠩᠭᠣᠯ",
    "ឃ្លាំង",
    "ᄀᄁᄂ jamo",
    "ℕ ℤ ℚ ℝ ℂ ∀x ∃y ∑ ∏ √ ∞",
]

ACCENTED = [
    "café",
    "naïve",
    "Ångström",
    "Müller",
    "Ségolène",
    "résumé",
    "Zürich",
    "São Paulo",
    "Łódź",
    "crème brûlée",
    "Dvořák",
    "piñata",
    "coöperate",
    "Ærøskøbing",
    "Þór",
    "ñandú",
    "Œuvre",
    "Å",
    "ḱṷṓn",
]

CONTRACTIONS = [
    "DON'T",
    "don't",
    "Don'T",
    "it's",
    "IT'S",
    "They'Re",
    "they're",
    "THEY'RE",
    "I'M",
    "i'm",
    "we'VE",
    "We've",
    "you'll",
    "YOU'LL",
    "she'd",
    "SHE'D",
    "'s",
    "'S",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "o'clock",
    "rock 'n' roll",
    "it’s",
    "don’t",
    "patient's",
    "patients'",
    "''quoted''",
    "'single'",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    " ' ",
    "a ' b",
    " 't 'd 's 'm 'll 're 've",
    "What ? Yes ! No . So , then",
]

CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    'print("Hello, world!")',
    '{"bp": "120/80", "hr": 88, "meds": ["metformin", "lisinopril"], "ok": true}',
    "SELECT * FROM patients WHERE age >= 65 AND dx LIKE 'E11%';",
    '<div class="note"><p>BP&nbsp;120/80</p></div>',
    "if x != None and y == 0:\n\tpass\nelse:\n\traise ValueError('bad')",
    "^[A-TV-Z][0-9][0-9AB]\\.?[0-9A-TV-Z]{0,4}$",
    "$ ls -la /var/log | grep -i error && echo done",
    "x = [i*i for i in range(10) if i % 2 == 0]",
    'fn main() { println!("{}", 42u32); }',
    "#include <stdio.h>\nint main(void) { return 0; }",
    "a->b; c::d; e=>f; g<-h; i |> j",
    "https://www.example.org/path?q=chest%20pain&lang=ar#top",
    "user@example.com",
    "C:\\Users\\doctor\\notes.txt",
    "  indented\n    more indented\n\tand tabbed",
    "// TODO: fix\n/* block */",
    "```python\nimport numpy as np\n```",
    "| Test | Value | Unit |\n|------|-------|------|\n| Na | 138 | mmol/L |",
]

SPECIALS = [
    "</s>",
    "<s>",
    "<unk>",
    "<s></s>",
    "</s></s>",
    "<s><s>",
    "<</s>>",
    "</s",
    "<|eot_id|>",
    "<|eot_id",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "<|start_header_id|>assistant<|end_header_id|>",
    "<|reserved_special_token_5|>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|system|>:",
    "<|prompter|>:",
    "<|assistant|>:",
    "<|system|>: You are Med42.\n<|prompter|>: What is HbA1c?\n<|assistant|>:",
    "<0x0A>",
    "<0xFF>",
    "<0x00>",
    "▁",
    "▁▁",
    "▁Hello",
    "Ġ",
    "Ċ",
    "ĠĠthe",
    "[INST] hello [/INST]",
    "<<SYS>>\nsys\n<</SYS>>",
    "<pad>",
    "<mask>",
    "<|fim_prefix|>",
    "<repo_name>",
]

WHITESPACE = [
    " ",
    "  ",
    "   ",
    "    ",
    "     ",
    "      ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    "\r\n\r\n",
    "\r",
    " \n",
    "\n ",
    " \t \n",
    "\u00a0",
    "\u2009",
    "\u202f",
    "\u3000",
    "\u200b",
    "\ufeff",
    "\u2028",
    "\u2029",
    "\u000b",
    "\u000c",
    "\u0085",
]

PUNCT_EXTRA = "…—–«»“”‘’¿¡·•§¶†‡‰′″‹›⁄€™©®°±×÷"

SINGLE_CHARS = (
    list(string.printable)
    + list(PUNCT_EXTRA)
    + [
        "\x00",
        "\x01",
        "\x1b",
        "\x7f",
        "\x80",
        "\x9f",
        "é",
        "ß",
        "ÿ",
        "Ā",
        "ǅ",
        "ʼ",
        "\u0300",
        "Ω",
        "Ж",
        "א",
        "ب",
        "ह",
        "ก",
        "ა",
        "ᄀ",
        "\u200d",
        "€",
        "™",
        "∑",
        "▁",
        "□",
        "、",
        "あ",
        "中",
        "한",
        "\ue000",
        "\uf8ff",
        "ﬀ",
        "\ufffd",
        "\uffff",
        "𝐀",
        "😀",
        "🏽",
        "\U000e0041",
        "\U0010ffff",
    ]
)

_WORDS = (
    "the patient was admitted to the hospital with acute onset shortness of breath and was treated with "
    "oxygen diuretics and antibiotics blood pressure heart rate temperature glucose insulin kidney liver "
    "chronic acute history examination diagnosis treatment follow up discharge emergency department "
    "intensive care unit medication allergy dose daily twice"
)
WORDS = _WORDS.split()


def _zalgo(rng: random.Random, text: str) -> str:
    """``text`` with 1-6 random combining marks (U+0300-U+036F) after each character."""
    out = []
    for c in text:
        out.append(c)
        out.extend(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(1, 6)))
    return "".join(out)


def _icd10(rng: random.Random) -> str:
    letter = rng.choice("ABCDEFGHIJKLMNOPQRSTVWXYZ")
    code = f"{letter}{rng.randint(0, 99):02d}"
    if rng.random() < 0.7:
        code += "." + "".join(rng.choice("0123456789X") for _ in range(rng.randint(1, 4)))
    return code


def _dose(rng: random.Random) -> str:
    parts = [rng.choice(DRUGS), rng.choice(DOSES) + rng.choice(["", " "]) + rng.choice(UNITS)]
    parts += [rng.choice(ROUTES), rng.choice(FREQS)]
    return " ".join(parts[: rng.randint(2, 4)])


def _vitals(rng: random.Random) -> str:
    return rng.choice(
        [
            f"BP {rng.randint(80, 200)}/{rng.randint(40, 120)} mmHg",
            f"HR {rng.randint(40, 180)} bpm",
            f"T {rng.uniform(35, 41):.1f} °C",
            f"T {rng.uniform(95, 105):.1f}°F",
            f"SpO2 {rng.randint(70, 100)}%",
            f"HbA1c {rng.uniform(4.5, 14):.1f}%",
            f"K {rng.uniform(2.5, 6.5):.1f} mmol/L",
            f"Cr {rng.uniform(0.4, 9.9):.2f} mg/dL",
            f"glucose {rng.randint(40, 600)} mg/dL",
            f"{rng.uniform(0.01, 2):.2f} µg/kg/min",
            f"{rng.randint(1, 999_999_999):,}",
            f"{rng.uniform(-1e6, 1e6):.3e}",
            f"{rng.randint(1900, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
            f"ICD-10 {_icd10(rng)}",
            _icd10(rng),
        ]
    )


def _punct_soup(rng: random.Random) -> str:
    pool = string.punctuation + PUNCT_EXTRA
    return "".join(rng.choice(pool) for _ in range(rng.randint(1, 24)))


def _ws(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return " " * rng.randint(1, 6)
    return rng.choice(WHITESPACE)


def _nf_variant(rng: random.Random, text: str) -> str:
    return unicodedata.normalize(rng.choice(["NFC", "NFD", "NFKC", "NFKD"]), text)


def _case(rng: random.Random, text: str) -> str:
    return rng.choice([str.upper, str.lower, str.title, str.swapcase, str])(text)


FIXED: list[list[str]] = [
    CLINICAL,
    NUMBERS,
    EMOJI,
    SCRIPTS,
    ACCENTED,
    CONTRACTIONS,
    CODE,
    SPECIALS,
    WHITESPACE,
]


def _fragment(rng: random.Random) -> str:
    """One random fragment of any kind."""
    kind = rng.randrange(14)
    if kind < len(FIXED):
        return rng.choice(FIXED[kind])
    if kind == 9:
        return _dose(rng)
    if kind == 10:
        return _vitals(rng)
    if kind == 11:
        return _punct_soup(rng)
    if kind == 12:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
    return rng.choice(SINGLE_CHARS)


def _transform(rng: random.Random, text: str) -> str:
    """A random change: case, Unicode normal form, Zalgo, surrounding whitespace, or none."""
    r = rng.random()
    if r < 0.15:
        return _case(rng, text)
    if r < 0.25:
        return _nf_variant(rng, text)
    if r < 0.28:
        return _zalgo(rng, text[:12])
    if r < 0.45:
        return _ws(rng) + text + (_ws(rng) if rng.random() < 0.5 else "")
    return text


def _mix(rng: random.Random, n_fragments: int) -> str:
    seps = [" ", "", "\n", ", ", ". ", "\t", "  ", "\r\n", " - ", ": ", "; "]
    parts = [_transform(rng, _fragment(rng)) for _ in range(n_fragments)]
    out = parts[0]
    for p in parts[1:]:
        out += rng.choice(seps) + p
    return out


def build_corpus(n: int = 2400, seed: int = 20240315) -> list[str]:
    """At least ``n`` distinct strings: every fixed fragment (and its NFD/NFC forms), the empty
    string, single characters, generated doses/vitals/codes, and random mixes (some long)."""
    rng = random.Random(seed)
    items: list[str] = ["", *SINGLE_CHARS]
    for group in FIXED:
        items.extend(group)
    for text in ACCENTED + SCRIPTS[:10] + CLINICAL[:10]:
        items.append(unicodedata.normalize("NFD", text))
        items.append(unicodedata.normalize("NFC", text))
    items += [_zalgo(rng, w) for w in ("zalgo", "Hé", "text", "علاج", "中文")]
    items += ["e\u0301", "e\u0301\u0301", "\u0301", "a\u0308\u0304", "\u1100\u1161\u11a8"]
    items += [" " * k + w + " " * j for k in range(7) for j in range(3) for w in ("x", "Hello", "<s>")]
    items += (
        ["\n" * k for k in range(1, 7)] + ["\r\n" * k for k in range(1, 4)] + ["\t" * k for k in range(1, 5)]
    )
    items += [_case(rng, c) for c in CONTRACTIONS for _ in range(2)]
    items += [_dose(rng) for _ in range(120)]
    items += [_vitals(rng) for _ in range(120)]
    items += [_punct_soup(rng) for _ in range(60)]
    while len(dict.fromkeys(items)) < n:
        r = rng.random()
        if r < 0.6:
            items.append(_mix(rng, rng.randint(2, 6)))
        elif r < 0.9:
            items.append(_mix(rng, rng.randint(7, 20)))
        else:
            items.append(_mix(rng, rng.randint(40, 80)))
    return list(dict.fromkeys(items))


def clinical_note(rng: random.Random, n_chars: int) -> str:
    """A long, mostly English clinical note of about ``n_chars`` characters (for benchmarks)."""
    lines: list[str] = []
    size = 0
    while size < n_chars:
        r = rng.random()
        if r < 0.45:
            line = rng.choice(CLINICAL)
        elif r < 0.65:
            line = "- " + _dose(rng)
        elif r < 0.85:
            line = ", ".join(_vitals(rng) for _ in range(rng.randint(1, 4)))
        elif r < 0.93:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))).capitalize() + "."
        else:
            line = rng.choice(SCRIPTS + CONTRACTIONS + EMOJI)
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)
