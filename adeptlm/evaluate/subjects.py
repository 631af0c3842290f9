"""Subject names and categories of the public exams (facts from the C-Eval, CMMLU and MMLU releases).

An exam folder may carry its own `subject_mapping.json` in C-Eval's shape
(`{"subject": ["English name", "中文名", "Category"]}`); it takes precedence, which is how a
user's own subject exam names its subjects and groups them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import layouts

# C-Eval: subject -> (English name, Chinese name, category); the 4 categories of the release.
CEVAL: dict[str, tuple[str, str, str]] = {
    "computer_network": ("Computer Network", "计算机网络", "STEM"),
    "operating_system": ("Operating System", "操作系统", "STEM"),
    "computer_architecture": ("Computer Architecture", "计算机组成", "STEM"),
    "college_programming": ("College Programming", "大学编程", "STEM"),
    "college_physics": ("College Physics", "大学物理", "STEM"),
    "college_chemistry": ("College Chemistry", "大学化学", "STEM"),
    "advanced_mathematics": ("Advanced Mathematics", "高等数学", "STEM"),
    "probability_and_statistics": ("Probability and Statistics", "概率统计", "STEM"),
    "discrete_mathematics": ("Discrete Mathematics", "离散数学", "STEM"),
    "electrical_engineer": ("Electrical Engineer", "注册电气工程师", "STEM"),
    "metrology_engineer": ("Metrology Engineer", "注册计量师", "STEM"),
    "high_school_mathematics": ("High School Mathematics", "高中数学", "STEM"),
    "high_school_physics": ("High School Physics", "高中物理", "STEM"),
    "high_school_chemistry": ("High School Chemistry", "高中化学", "STEM"),
    "high_school_biology": ("High School Biology", "高中生物", "STEM"),
    "middle_school_mathematics": ("Middle School Mathematics", "初中数学", "STEM"),
    "middle_school_biology": ("Middle School Biology", "初中生物", "STEM"),
    "middle_school_physics": ("Middle School Physics", "初中物理", "STEM"),
    "middle_school_chemistry": ("Middle School Chemistry", "初中化学", "STEM"),
    "veterinary_medicine": ("Veterinary Medicine", "兽医学", "STEM"),
    "college_economics": ("College Economics", "大学经济学", "Social Science"),
    "business_administration": ("Business Administration", "工商管理", "Social Science"),
    "marxism": ("Marxism", "马克思主义基本原理", "Social Science"),
    "mao_zedong_thought": ("Mao Zedong Thought", "毛泽东思想和中国特色社会主义理论体系概论", "Social Science"),
    "education_science": ("Education Science", "教育学", "Social Science"),
    "teacher_qualification": ("Teacher Qualification", "教师资格", "Social Science"),
    "high_school_politics": ("High School Politics", "高中政治", "Social Science"),
    "high_school_geography": ("High School Geography", "高中地理", "Social Science"),
    "middle_school_politics": ("Middle School Politics", "初中政治", "Social Science"),
    "middle_school_geography": ("Middle School Geography", "初中地理", "Social Science"),
    "modern_chinese_history": ("Modern Chinese History", "近代史纲要", "Humanities"),
    "ideological_and_moral_cultivation": ("Ideological and Moral Cultivation", "思想道德修养与法律基础",
                                          "Humanities"),
    "logic": ("Logic", "逻辑学", "Humanities"),
    "law": ("Law", "法学", "Humanities"),
    "chinese_language_and_literature": ("Chinese Language and Literature", "中国语言文学", "Humanities"),
    "art_studies": ("Art Studies", "艺术学", "Humanities"),
    "professional_tour_guide": ("Professional Tour Guide", "导游资格", "Humanities"),
    "legal_professional": ("Legal Professional", "法律职业资格", "Humanities"),
    "high_school_chinese": ("High School Chinese", "高中语文", "Humanities"),
    "high_school_history": ("High School History", "高中历史", "Humanities"),
    "middle_school_history": ("Middle School History", "初中历史", "Humanities"),
    "civil_servant": ("Civil Servant", "公务员", "Other"),
    "sports_science": ("Sports Science", "体育学", "Other"),
    "plant_protection": ("Plant Protection", "植物保护", "Other"),
    "basic_medicine": ("Basic Medicine", "基础医学", "Other"),
    "clinical_medicine": ("Clinical Medicine", "临床医学", "Other"),
    "urban_and_rural_planner": ("Urban and Rural Planner", "注册城乡规划师", "Other"),
    "accountant": ("Accountant", "注册会计师", "Other"),
    "fire_engineer": ("Fire Engineer", "注册消防工程师", "Other"),
    "environmental_impact_assessment_engineer": ("Environmental Impact Assessment Engineer",
                                                 "环境影响评价工程师", "Other"),
    "tax_accountant": ("Tax Accountant", "税务师", "Other"),
    "physician": ("Physician", "医师资格", "Other"),
}

# CMMLU: subject -> (Chinese name, subcategory list); subcategories map to 5 groups below. A subject in
# several groups is counted once, in the last matching group ("China specific" wins), as the seed does.
CMMLU: dict[str, tuple[str, tuple[str, ...]]] = {
    "agronomy": ("农学", ("other",)), "anatomy": ("解剖学", ("biology",)),
    "ancient_chinese": ("古汉语", ("linguistics", "china specific")), "arts": ("艺术学", ("arts",)),
    "astronomy": ("天文学", ("physics",)), "business_ethics": ("商业伦理", ("business",)),
    "chinese_civil_service_exam": ("中国公务员考试", ("politics", "china specific")),
    "chinese_driving_rule": ("中国驾驶规则", ("other", "china specific")),
    "chinese_food_culture": ("中国饮食文化", ("culture", "china specific")),
    "chinese_foreign_policy": ("中国外交政策", ("politics", "china specific")),
    "chinese_history": ("中国历史", ("history", "china specific")),
    "chinese_literature": ("中国文学", ("literature", "china specific")),
    "chinese_teacher_qualification": ("中国教师资格", ("education", "china specific")),
    "clinical_knowledge": ("临床知识", ("other",)), "college_actuarial_science": ("大学精算学", ("math",)),
    "college_education": ("大学教育学", ("education",)),
    "college_engineering_hydrology": ("大学工程水文学", ("engineering",)), "college_law": ("大学法律", ("law",)),
    "college_mathematics": ("大学数学", ("math",)), "college_medical_statistics": ("大学医学统计", ("statistics",)),
    "college_medicine": ("大学医学", ("other",)), "computer_science": ("计算机科学", ("computer science",)),
    "computer_security": ("计算机安全", ("other",)), "conceptual_physics": ("概念物理学", ("physics",)),
    "construction_project_management": ("建设工程管理", ("other", "china specific")),
    "economics": ("经济学", ("economics",)), "education": ("教育学", ("education",)),
    "electrical_engineering": ("电气工程", ("engineering",)),
    "elementary_chinese": ("小学语文", ("linguistics", "china specific")),
    "elementary_commonsense": ("小学常识", ("other", "china specific")),
    "elementary_information_and_technology": ("小学信息技术", ("other",)),
    "elementary_mathematics": ("初等数学", ("math",)), "ethnology": ("民族学", ("culture", "china specific")),
    "food_science": ("食品科学", ("other",)), "genetics": ("遗传学", ("biology",)),
    "global_facts": ("全球事实", ("global",)), "high_school_biology": ("高中生物", ("biology",)),
    "high_school_chemistry": ("高中化学", ("chemistry",)), "high_school_geography": ("高中地理", ("geography",)),
    "high_school_mathematics": ("高中数学", ("math",)), "high_school_physics": ("高中物理学", ("physics",)),
    "high_school_politics": ("高中政治", ("politics", "china specific")),
    "human_sexuality": ("人类性行为", ("other",)), "international_law": ("国际法学", ("law",)),
    "journalism": ("新闻学", ("sociology",)), "jurisprudence": ("法理学", ("law",)),
    "legal_and_moral_basis": ("法律与道德基础", ("other",)), "logical": ("逻辑学", ("philosophy",)),
    "machine_learning": ("机器学习", ("computer science",)), "management": ("管理学", ("business",)),
    "marketing": ("市场营销", ("business",)), "marxist_theory": ("马克思主义理论", ("philosophy",)),
    "modern_chinese": ("现代汉语", ("linguistics", "china specific")), "nutrition": ("营养学", ("other",)),
    "philosophy": ("哲学", ("philosophy",)), "professional_accounting": ("专业会计", ("business",)),
    "professional_law": ("专业法学", ("law",)), "professional_medicine": ("专业医学", ("other",)),
    "professional_psychology": ("专业心理学", ("psychology",)), "public_relations": ("公共关系", ("politics",)),
    "security_study": ("安全研究", ("politics",)), "sociology": ("社会学", ("culture",)),
    "sports_science": ("体育学", ("other",)),
    "traditional_chinese_medicine": ("中医中药", ("other", "china specific")),
    "virology": ("病毒学", ("biology",)), "world_history": ("世界历史", ("history",)),
    "world_religions": ("世界宗教", ("global",)),
}
CMMLU_GROUPS = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering", "statistics"),
    "Humanities": ("history", "philosophy", "law", "arts", "literature", "global"),
    "Social Science": ("linguistics", "business", "politics", "culture", "economics", "geography", "psychology",
                       "education", "sociology"),
    "Other": ("other",),
    "China specific": ("china specific",),
}

# MMLU: subject -> subcategory; subcategories map to the 4 categories below.
MMLU: dict[str, str] = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics", "business_ethics": "business",
    "clinical_knowledge": "health", "college_biology": "biology", "college_chemistry": "chemistry",
    "college_computer_science": "computer science", "college_mathematics": "math", "college_medicine": "health",
    "college_physics": "physics", "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering", "elementary_mathematics": "math",
    "formal_logic": "philosophy", "global_facts": "other", "high_school_biology": "biology",
    "high_school_chemistry": "chemistry", "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics", "high_school_macroeconomics": "economics",
    "high_school_mathematics": "math", "high_school_microeconomics": "economics", "high_school_physics": "physics",
    "high_school_psychology": "psychology", "high_school_statistics": "math", "high_school_us_history": "history",
    "high_school_world_history": "history", "human_aging": "health", "human_sexuality": "culture",
    "international_law": "law", "jurisprudence": "law", "logical_fallacies": "philosophy",
    "machine_learning": "computer science", "management": "business", "marketing": "business",
    "medical_genetics": "health", "miscellaneous": "other", "moral_disputes": "philosophy",
    "moral_scenarios": "philosophy", "nutrition": "health", "philosophy": "philosophy", "prehistory": "history",
    "professional_accounting": "other", "professional_law": "law", "professional_medicine": "health",
    "professional_psychology": "psychology", "public_relations": "politics", "security_studies": "politics",
    "sociology": "culture", "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}
MMLU_CATEGORIES = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering"),
    "humanities": ("history", "philosophy", "law"),
    "social sciences": ("politics", "culture", "economics", "geography", "psychology"),
    "other (business, health, misc.)": ("other", "business", "health"),
}


@dataclass(frozen=True)
class SubjectInfo:
    name: str  # the subject key (file name stem)
    display: str  # the name used in the prompt header (Chinese for C-Eval/CMMLU, words for MMLU)
    category: str


def subject_info(layout: str, subject: str, mapping: dict | None = None) -> SubjectInfo:
    """Name and category of a subject; a mapping file's entry wins, unknown subjects fall in 'Other'."""
    if mapping and subject in mapping:
        english, chinese, category = mapping[subject]
        return SubjectInfo(subject, english if layouts.get(layout).english else chinese, category)
    return _NAMED_BY.get(layout, _mmlu_info)(subject)


def _ceval_info(subject: str) -> SubjectInfo:
    english, chinese, category = CEVAL.get(subject, (subject.replace("_", " "),) * 2 + ("Other",))
    return SubjectInfo(subject, chinese, category)


def _cmmlu_info(subject: str) -> SubjectInfo:
    chinese, subs = CMMLU.get(subject, (subject.replace("_", " "), ("other",)))
    group = "Other"
    for name, members in CMMLU_GROUPS.items():  # the last matching group wins
        if any(s in members for s in subs):
            group = name
    return SubjectInfo(subject, chinese, group)


def _mmlu_info(subject: str) -> SubjectInfo:
    sub = MMLU.get(subject, "other")
    category = next(c for c, members in MMLU_CATEGORIES.items() if sub in members)
    return SubjectInfo(subject, subject.replace("_", " "), category)


# each layout's table of subject names (a layout without one is named as MMLU's unknown subjects are)
_NAMED_BY = {"ceval": _ceval_info, "cmmlu": _cmmlu_info, "mmlu": _mmlu_info}


def load_mapping(root: Path) -> dict | None:
    """An exam folder's own subject_mapping.json (C-Eval's shape), when it has one."""
    path = root / "subject_mapping.json" if root.is_dir() else root.parent / "subject_mapping.json"
    if not path.is_file():
        return None
    from ..data.files import load_json
    from ..errors import InputError

    data = load_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object: subject -> [English name, Chinese name, category]")
    for key, value in data.items():
        if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
            raise InputError(path, "expected [English name, Chinese name, category]", field=key)
    return data
