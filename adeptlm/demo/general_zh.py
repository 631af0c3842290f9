"""A Chinese general-knowledge exam for the Chinese demo, to measure forgetting (written for adeptlm).

Plain facts a school pupil knows, in five categories, mostly table-driven: each table row asks one
fact, in both directions where the table allows (the capital of a province, and the province of a
capital), and the other rows' values are its distractors, so about 250 questions come from a few
tables: one question is 0.4 points, so a change of 3 points is seven or more questions. The
before/after difference is reported with its uncertainty in the run's report. Pure function of the
seed.
"""

from __future__ import annotations

import random

GENERAL_CATEGORIES = {"provinces": ("general_provinces", "中国地理", "Social Science"),
                      "world": ("general_world", "世界地理", "Social Science"),
                      "antonyms": ("general_antonyms", "汉语词汇", "Humanities"),
                      "arithmetic": ("general_arithmetic", "小学数学", "STEM"),
                      "common": ("general_common", "生活常识", "Other")}

PROVINCE_CAPITALS = [
    ("广东省", "广州"), ("浙江省", "杭州"), ("江苏省", "南京"), ("四川省", "成都"), ("湖北省", "武汉"), ("湖南省", "长沙"),
    ("河南省", "郑州"), ("河北省", "石家庄"), ("山东省", "济南"), ("山西省", "太原"), ("陕西省", "西安"), ("福建省", "福州"),
    ("江西省", "南昌"), ("安徽省", "合肥"), ("云南省", "昆明"), ("贵州省", "贵阳"), ("辽宁省", "沈阳"), ("吉林省", "长春"),
    ("黑龙江省", "哈尔滨"), ("甘肃省", "兰州"), ("青海省", "西宁"), ("海南省", "海口"), ("广西壮族自治区", "南宁"), ("西藏自治区", "拉萨"),
    ("新疆维吾尔自治区", "乌鲁木齐"), ("内蒙古自治区", "呼和浩特"), ("宁夏回族自治区", "银川"),
]
COUNTRY_CAPITALS = [
    ("法国", "巴黎"), ("英国", "伦敦"), ("日本", "东京"), ("德国", "柏林"), ("意大利", "罗马"), ("俄罗斯", "莫斯科"),
    ("美国", "华盛顿"), ("加拿大", "渥太华"), ("澳大利亚", "堪培拉"), ("韩国", "首尔"), ("埃及", "开罗"),
    ("西班牙", "马德里"), ("印度", "新德里"), ("泰国", "曼谷"), ("巴西", "巴西利亚"), ("希腊", "雅典"),
    ("土耳其", "安卡拉"), ("越南", "河内"), ("葡萄牙", "里斯本"), ("荷兰", "阿姆斯特丹"), ("中国", "北京"),
    ("阿根廷", "布宜诺斯艾利斯"), ("墨西哥", "墨西哥城"), ("挪威", "奥斯陆"),
]
ANTONYMS = [
    ("大", "小"), ("高", "矮"), ("快", "慢"), ("冷", "热"), ("多", "少"), ("长", "短"), ("黑", "白"), ("上", "下"),
    ("前", "后"), ("左", "右"), ("早", "晚"), ("新", "旧"), ("胖", "瘦"), ("远", "近"), ("深", "浅"), ("轻", "重"),
    ("买", "卖"), ("来", "去"), ("哭", "笑"), ("开", "关"), ("真", "假"), ("难", "易"),
]
COMMON = [  # (question, [A, B, C, D], answer)
    ("水的化学式是什么？", ["H2O", "CO2", "O2", "NaCl"], "A"),
    ("一年有几个月？", ["十个", "十二个", "十一个", "十三个"], "B"),
    ("一个星期有几天？", ["五天", "六天", "七天", "八天"], "C"),
    ("太阳从哪个方向升起？", ["西方", "南方", "北方", "东方"], "D"),
    ("中国的首都是哪座城市？", ["北京", "上海", "广州", "深圳"], "A"),
    ("被称为中国国宝的动物是什么？", ["老虎", "大熊猫", "孔雀", "骆驼"], "B"),
    ("《红楼梦》的作者是谁？", ["罗贯中", "施耐庵", "曹雪芹", "吴承恩"], "C"),
    ("《西游记》的作者是谁？", ["曹雪芹", "罗贯中", "施耐庵", "吴承恩"], "D"),
    ("李白是哪个朝代的诗人？", ["唐朝", "宋朝", "元朝", "清朝"], "A"),
    ("中秋节人们通常吃什么？", ["粽子", "月饼", "汤圆", "饺子"], "B"),
    ("端午节人们通常吃什么？", ["月饼", "汤圆", "粽子", "年糕"], "C"),
    ("中国最长的河流是哪条？", ["黄河", "珠江", "淮河", "长江"], "D"),
    ("世界上最高的山峰是哪座？", ["珠穆朗玛峰", "泰山", "富士山", "阿尔卑斯山"], "A"),
    ("地球上面积最大的海洋是哪个？", ["大西洋", "太平洋", "印度洋", "北冰洋"], "B"),
    ("在标准大气压下，水的沸点是多少摄氏度？", ["50", "0", "100", "200"], "C"),
    ("人体最大的器官是什么？", ["心脏", "肝脏", "大脑", "皮肤"], "D"),
    ("蜘蛛有几条腿？", ["八条", "六条", "四条", "十条"], "A"),
    ("植物进行光合作用需要什么？", ["月光", "阳光", "雪", "沙子"], "B"),
    ("地球绕太阳公转一周大约需要多长时间？", ["一天", "一个月", "一年", "十年"], "C"),
    ("人呼吸时需要吸入哪种气体？", ["氦气", "氮气", "氖气", "氧气"], "D"),
    ("一天有多少个小时？", ["二十四个", "十二个", "三十个", "六十个"], "A"),
    ("红灯亮时行人应该怎么做？", ["快跑过去", "停下等待", "闭眼走过", "倒着走"], "B"),
    ("彩虹通常出现在什么天气之后？", ["下雪", "刮风", "下雨", "起雾"], "C"),
    ("熊猫最喜欢吃什么？", ["鱼", "肉", "苹果", "竹子"], "D"),
    ("春节是农历的哪一天？", ["正月初一", "八月十五", "五月初五", "腊月初八"], "A"),
    ("哪个行星被称为红色星球？", ["金星", "火星", "木星", "土星"], "B"),
]


def _table_rows(rng: random.Random, pairs: list[tuple[str, str]], wording) -> list[list[str]]:
    rows = []
    for key, value in pairs:
        others = [v for k, v in pairs if k != key]
        choices = rng.sample(others, 3) + [value]
        rng.shuffle(choices)
        rows.append([wording(key), *choices, "ABCD"[choices.index(value)]])
    return rows


def _arithmetic_rows(rng: random.Random, n: int = 66) -> list[list[str]]:
    rows = []
    for k in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 39)
        if k % 3 == 2:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            text, value = f"{a}乘以{b}等于多少？", a * b
        elif k % 3 == 1:
            a, b = max(a, b), min(a, b)
            text, value = f"{a}减{b}等于多少？", a - b
        else:
            text, value = f"{a}加{b}等于多少？", a + b
        wrong = rng.sample([d for d in (-10, -2, -1, 1, 2, 10) if value + d >= 0], 3)
        choices = [str(value + d) for d in wrong] + [str(value)]
        rng.shuffle(choices)
        rows.append([text, *choices, "ABCD"[choices.index(str(value))]])
    return rows


def general_rows(seed: int = 11) -> dict[str, dict[str, list[list[str]]]]:
    """{category: {"dev": [1 row], "val": rows}} with C-Eval's columns (id first)."""
    rng = random.Random(seed + 5)
    swap = lambda pairs: [(v, k) for k, v in pairs]  # noqa: E731
    kind = {v: ("首府" if k.endswith("自治区") else "省会") for k, v in PROVINCE_CAPITALS}
    tables = {"provinces": _table_rows(rng, PROVINCE_CAPITALS,
                                       lambda k: f"{k}的{'首府' if k.endswith('自治区') else '省会'}是哪座城市？")
              + _table_rows(rng, swap(PROVINCE_CAPITALS), lambda v: f"{v}是哪个省级行政区的{kind[v]}？"),
              "world": _table_rows(rng, COUNTRY_CAPITALS, lambda k: f"{k}的首都是哪座城市？")
              + _table_rows(rng, swap(COUNTRY_CAPITALS), lambda v: f"{v}是哪个国家的首都？"),
              "antonyms": _table_rows(rng, ANTONYMS, lambda k: f"“{k}”的反义词是哪个字？")
              + _table_rows(rng, swap(ANTONYMS), lambda v: f"哪个字是“{v}”的反义词？"),
              "arithmetic": _arithmetic_rows(rng),
              "common": [[q, *opts, ans] for q, opts, ans in COMMON]}
    out = {}
    for cat, rows in tables.items():
        out[cat] = {"dev": [["0", *rows[0]]], "val": [[str(k), *r] for k, r in enumerate(rows[1:])]}
    return out


# General questions for the replay stage (the base model's own answers join the SFT data), written
# for this project: everyday knowledge the general exam does not ask (none of its tables' facts), so
# the exam still measures what was kept rather than what was replayed.
REPLAY_PROMPTS = [
    "请简单介绍一下长城。", "如何煮一锅米饭？", "什么是光合作用？", "为什么天空是蓝色的？", "写一句关于春天的诗。",
    "怎样保持身体健康？", "请解释什么是地震。", "猫和狗有什么不同？", "下雨天出门要带什么？", "如何学好一门外语？",
    "请介绍一下故宫。", "冬天为什么会下雪？", "什么是电脑？", "请说出三种常见的水果。", "如何礼貌地拒绝别人？",
    "为什么要节约用水？", "请介绍一下黄山。", "什么是月食？", "早餐吃什么比较健康？", "如何写一封感谢信？",
    "请解释一下什么是重力。", "火车和飞机哪个更快？", "什么是互联网？", "请介绍一下京剧。", "怎样种一盆花？",
    "为什么要刷牙？", "什么是彩虹？", "请说出三种常见的交通工具。", "怎样做番茄炒蛋？", "为什么树叶在秋天会变黄？",
    "请介绍一下西湖。", "什么是风？", "如何安排一天的学习时间？", "请说说你对读书的看法。", "蜜蜂是怎样采蜜的？",
    "什么是温度计？", "请介绍一下孔子。", "为什么要保护环境？", "如何照顾一只小狗？", "请解释什么是潮汐。",
    "什么是食物链？", "请说出四个季节的名字。", "怎样才能睡得更好？", "请介绍一下兵马俑。", "什么是指南针？",
    "为什么冰会浮在水面上？", "请写一个关于友谊的句子。", "如何正确地洗手？", "请介绍一下熊猫的生活习性。",
    "什么是太阳能？", "请解释一下什么是雾。", "如何在图书馆找一本书？", "请介绍一下丝绸之路。", "什么是化石？",
    "为什么鱼能在水里呼吸？", "请说出三种乐器。", "如何与新同学交朋友？", "什么是火山？", "请介绍一下端午节的来历。",
    "怎样过马路才安全？", "什么是显微镜？", "请解释一下什么是回声。", "如何整理自己的房间？", "请介绍一下造纸术。",
]
