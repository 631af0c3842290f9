"""Large replay prompt sets for the bundled recipes (`replay: {volume: N}`), written for adeptlm.

The base model answers these general questions before training and its own answers join the SFT
data, so that its way of answering general questions stays a training target (adeptlm/replay.py).
The default sets (48 English, 64 Chinese prompts) are a small share of SFT; these are a few hundred
each, built from word tables and question templates, so the self-distilled answers can be a real
share of the data. None repeats a question of the general exams, whose questions are also the
retention probes' prompts (tests/unit/test_demo_subject*.py check it). Pure functions: the same
call gives the same list.
"""

from __future__ import annotations

import random

EN_COUNTRIES = [("Portugal", "Lisbon"), ("Greece", "Athens"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
                ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Hungary", "Budapest"),
                ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"), ("Kenya", "Nairobi"),
                ("Peru", "Lima"), ("Chile", "Santiago"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
                ("India", "New Delhi"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("South Korea", "Seoul"),
                ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Cuba", "Havana"), ("Australia", "Canberra"),
                ("New Zealand", "Wellington"), ("Switzerland", "Bern"), ("the Netherlands", "Amsterdam"),
                ("the Philippines", "Manila"), ("Indonesia", "Jakarta"), ("Morocco", "Rabat"),
                ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"),
                ("Iceland", "Reykjavik"), ("the Czech Republic", "Prague"), ("Romania", "Bucharest"),
                ("Ukraine", "Kyiv"), ("Saudi Arabia", "Riyadh"), ("Pakistan", "Islamabad")]
EN_CITIES = [("Barcelona", "Spain"), ("Munich", "Germany"), ("Osaka", "Japan"), ("Chicago", "the United States"),
             ("Toronto", "Canada"), ("Sydney", "Australia"), ("Milan", "Italy"), ("Lyon", "France"),
             ("Istanbul", "Turkey"), ("Mumbai", "India"), ("Rio de Janeiro", "Brazil"), ("Cape Town", "South Africa"),
             ("Shanghai", "China"), ("Edinburgh", "the United Kingdom"), ("Geneva", "Switzerland"),
             ("Krakow", "Poland"), ("Porto", "Portugal"), ("Marseille", "France"), ("Kyoto", "Japan"),
             ("Vancouver", "Canada")]
EN_OPPOSITES = ["tall", "fast", "happy", "open", "light", "early", "full", "old", "rich", "strong", "loud",
                "hard", "clean", "thick", "sweet", "empty", "high", "inside", "true", "win", "push", "first",
                "always", "before", "laugh", "buy", "start", "remember", "question", "friend"]
EN_PLURALS = ["mouse", "foot", "tooth", "woman", "man", "goose", "person", "leaf", "knife", "box", "city", "baby",
              "bus", "fish", "sheep", "wolf", "potato", "hero", "church", "story"]
EN_SOUNDS = ["dog", "cat", "cow", "sheep", "duck", "horse", "pig", "lion", "owl", "frog", "bee", "snake"]
EN_COLOURS = ["a banana", "a ripe tomato", "snow", "coal", "an orange", "a lemon", "the sea", "a strawberry",
              "milk", "chocolate", "a carrot", "a lime"]
EN_TOPICS = ["the moon", "a rainy day", "your favourite food", "a library", "the ocean", "winter", "a market",
             "a bicycle", "music", "a garden", "the mountains", "a train journey", "breakfast", "a birthday",
             "the stars", "a forest", "a river", "a city at night", "a school", "a good friend", "a storm",
             "a museum", "the desert", "an old house", "a football match", "a kitchen", "autumn leaves", "a bridge",
             "a lighthouse", "a cup of tea"]
EN_SYNONYMS = ["small", "fast", "smart", "angry", "beautiful", "begin", "end", "quiet", "easy", "tired",
               "brave", "funny", "strange", "huge", "cold", "sad", "rich", "help", "look", "talk"]
EN_HABITATS = ["the ocean", "the desert", "the Arctic", "a rainforest", "a river", "the mountains", "a farm",
               "the savanna"]
EN_TOOLS = ["hammer", "spoon", "umbrella", "thermometer", "ladder", "compass", "microscope", "broom", "scissors",
            "calculator", "telescope", "kettle", "pencil", "map", "clock", "key", "saw", "needle", "shovel",
            "camera"]


def neighbours(questions: dict[str, list[str]], places: list[str], per_relation: int = 12) -> list[str]:
    """The subject's own relations asked of real places (knowledge editing's "neighbourhood prompts":
    the same relation, another subject): the base model's answers to these are what training on the
    islands must leave alone. The relation's training wordings in turn, the places rotating so that
    each relation meets different ones; relations that the capitals above already cover are left out."""
    out = []
    for k, (relation, wordings) in enumerate(sorted(questions.items())):
        if relation == "capital":
            continue
        for j in range(per_relation):
            place = places[(k * per_relation + j) % len(places)]
            out.append(wordings[j % len(wordings)].format(i=place))
    return out


def english(relations: dict[str, list[str]] | None = None) -> list[str]:
    """About 300 English general prompts (capitals, cities, arithmetic, words, everyday questions),
    after the subject's `relations` (its training questions by relation) asked of real countries."""
    rng = random.Random(101)
    out = neighbours(relations, [c for c, _ in EN_COUNTRIES]) if relations else []
    out += [f"What is the capital of {c}?" for c, _ in EN_COUNTRIES]
    out += [f"In which country is the city of {city}?" for city, _ in EN_CITIES]
    pairs = set()
    while len(pairs) < 70:
        a, b = rng.randint(11, 99), rng.randint(2, 49)
        pairs.add((len(pairs) % 3, a, b))
    for kind, a, b in sorted(pairs):
        out.append((f"What is {a} plus {b}?", f"What is {a} minus {b}?", f"What is {b % 12 + 2} times {a % 9 + 2}?")[kind])
    out += [f"What is the opposite of {w}?" for w in EN_OPPOSITES]
    out += [f"What is the plural of {w}?" for w in EN_PLURALS]
    out += [f"What sound does a {a} make?" for a in EN_SOUNDS]
    out += [f"What colour is {t}?" for t in EN_COLOURS]
    out += [f"Write one sentence about {t}." for t in EN_TOPICS]
    out += [f"Give me a word that means the same as {w}." for w in EN_SYNONYMS]
    out += [f"Name an animal that lives in {h}." for h in EN_HABITATS]
    out += [f"What do people use a {t} for?" for t in EN_TOOLS]
    return list(dict.fromkeys(out))


ZH_TOPICS = ["长江", "泰山", "颐和园", "天坛", "敦煌莫高窟", "苏州园林", "都江堰", "布达拉宫", "桂林山水", "张家界",
             "九寨沟", "鼓浪屿", "黄鹤楼", "岳阳楼", "少林寺", "大运河", "秦始皇", "李白", "杜甫", "苏轼", "屈原",
             "诸葛亮", "孙中山", "鲁迅", "四大发明", "活字印刷术", "火药", "中医", "太极拳", "书法", "剪纸", "春节",
             "元宵节", "清明节", "重阳节", "二十四节气", "筷子", "茶文化", "瓷器", "围棋"]
ZH_IDIOMS = ["画蛇添足", "守株待兔", "亡羊补牢", "井底之蛙", "对牛弹琴", "掩耳盗铃", "刻舟求剑", "拔苗助长", "杯弓蛇影",
             "塞翁失马", "一石二鸟", "半途而废", "滥竽充数", "望梅止渴", "画龙点睛", "胸有成竹", "叶公好龙", "指鹿为马",
             "卧薪尝胆", "愚公移山"]
ZH_WORDS = ["美丽", "认真", "勇敢", "快乐", "安静", "温暖", "努力", "希望", "友谊", "坚持", "仔细", "热闹", "干净",
            "骄傲", "感谢", "明亮", "健康", "聪明", "辛苦", "自由", "秘密", "习惯", "礼物", "故事", "梦想", "方向",
            "机会", "经验", "耐心", "责任"]
ZH_ANIMALS = ["企鹅", "骆驼", "袋鼠", "北极熊", "长颈鹿", "海豚", "猴子", "狮子", "大象", "老鹰", "青蛙", "蝴蝶",
              "鲸鱼", "松鼠", "梅花鹿"]
ZH_HOWTO = ["包饺子", "泡一杯绿茶", "做一碗面条", "叠一件衬衫", "给植物浇水", "写一篇日记", "准备一次野餐", "学会游泳",
            "放风筝", "做一张贺卡", "节约用电", "整理书包", "养一条金鱼", "做蛋炒饭", "记住英语单词", "搭帐篷",
            "包粽子", "骑自行车", "画一只猫", "做水果沙拉", "打扫厨房", "写一首短诗", "准备考试", "照顾生病的家人",
            "和邻居相处", "挑选西瓜", "保护眼睛", "收拾行李", "做一个风铃", "提高写作水平"]
ZH_WHY = ["夏天比冬天热", "月亮会有圆缺变化", "海水是咸的", "鸟会飞", "人需要喝水", "铁会生锈", "会打雷", "叶子是绿色的",
          "星星会眨眼", "要吃蔬菜", "候鸟要迁徙", "冰箱能保鲜", "船能浮在水上", "天会黑", "骆驼能在沙漠生活",
          "面包会发霉", "要系安全带", "猫喜欢晒太阳", "影子有长有短", "要多运动"]
ZH_CITIES = [("苏州", "江苏"), ("青岛", "山东"), ("大连", "辽宁"), ("厦门", "福建"), ("深圳", "广东"), ("洛阳", "河南"),
             ("桂林", "广西"), ("丽江", "云南"), ("宁波", "浙江"), ("无锡", "江苏"), ("珠海", "广东"), ("大理", "云南"),
             ("绵阳", "四川"), ("宜昌", "湖北"), ("景德镇", "江西"), ("延安", "陕西"), ("秦皇岛", "河北"), ("三亚", "海南"),
             ("敦煌", "甘肃"), ("喀什", "新疆")]
ZH_KINDS = ["蔬菜", "水果", "乐器", "交通工具", "体育运动", "文具", "家用电器", "花", "鸟", "树", "颜色", "职业", "面食",
            "海洋动物", "中国传统节日"]
ZH_LANGUAGES = ["巴西", "墨西哥", "瑞士", "加拿大", "印度", "埃及", "阿根廷", "奥地利", "比利时", "新加坡", "新西兰",
                "爱尔兰", "智利", "秘鲁", "古巴"]


def chinese() -> list[str]:
    """About 300 Chinese general prompts. Arithmetic comes as word problems, unlike the general exam's
    “a加b等于多少？”, so the exam's arithmetic still measures what was kept."""
    rng = random.Random(202)
    out = [f"请介绍一下{t}。" for t in ZH_TOPICS]
    out += [f"成语“{w}”是什么意思？" for w in ZH_IDIOMS]
    out += [f"请用“{w}”造一个句子。" for w in ZH_WORDS]
    out += [f"{a}生活在什么地方？" for a in ZH_ANIMALS]
    out += [f"怎样{h}？" for h in ZH_HOWTO]
    out += [f"为什么{w}？" for w in ZH_WHY]
    out += [f"{c}位于中国的哪个省级行政区？" for c, _ in ZH_CITIES]
    out += [f"请说出一种{k}。" for k in ZH_KINDS]
    out += [f"{c}人主要说什么语言？" for c in ZH_LANGUAGES]
    names = ["小明", "小红", "小刚", "小丽", "妈妈", "爷爷"]
    things = [("苹果", "个"), ("铅笔", "支"), ("书", "本"), ("糖", "颗"), ("邮票", "张"), ("气球", "个")]
    for k in range(30):
        who, (thing, unit) = names[k % len(names)], things[k % len(things)]
        a, b = rng.randint(5, 40), rng.randint(2, 9)
        if k % 2:
            out.append(f"{who}有{a}{unit}{thing}，送给别人{b}{unit}，还剩几{unit}？")
        else:
            out.append(f"{who}有{a}{unit}{thing}，又买了{b}{unit}，现在一共有几{unit}？")
    return list(dict.fromkeys(out))
