"""Mandarin tone sandhi on jieba words, following the rule set upstream uses (PaddleSpeech's).

Syllables are pinyin with a tone digit (``"ni3"``, neutral tone ``5``). Two steps:

* ``merge_words`` joins jieba words so the rules see the right unit: 不 and 一 with the next
  word, verb-一-verb (看一看), reduplications (说说), adjacent words that are all third tone
  or meet on a third tone (at most 3 characters together), and 儿 with the word before it.
* ``apply_sandhi`` changes the tones inside one word, in order:
  不 (bu2 before a 4th tone, bu5 in A不B), 一 (yi1 in numbers and ordinals, yi5 in V一V,
  yi2 before a 4th tone, yi4 before other tones), neutral tones (particles, 的/地/得,
  aspect 了/着/过, suffixes 们/子, localisers, directional complements, the classifier 个,
  reduplicated nouns/verbs/adjectives, a list of common neutral-tone words), then third
  tones (3-3 -> 2-3; three-syllable words by their sub-words; four-character words as two halves).

The list of neutral-tone words is a short list of common words, not upstream's full list;
pypinyin's phrase dictionary already gives many others their neutral tone.
"""

from __future__ import annotations

import jieba
from pypinyin import Style, lazy_pinyin

__all__ = ["apply_sandhi", "merge_words", "tones_of"]

Word = tuple[str, str]  # (characters, jieba part-of-speech tag)

_NEUTRAL_WORDS = frozenset(
    """
    东西 时候 朋友 先生 事情 什么 怎么 这么 那么 多么 这个 那个 衣服 告诉 认识 知道 明白 意思
    地方 关系 清楚 舒服 漂亮 眼睛 耳朵 脑袋 窗户 休息 消息 客气 麻烦 喜欢 多少 姑娘 月亮 太阳
    头发 名字 豆腐 葡萄 萝卜 石头 木头 馒头 舌头 枕头 骨头 丈夫 媳妇 打扮 打听 打算 商量 学生
    聪明 便宜 部分 生意 故事 暖和 凉快 热闹 收拾 规矩 结实 咳嗽 尾巴 嘴巴 哑巴 下巴 队伍 精神
    亲戚 爱人 大夫 师傅 兄弟 姐夫 女婿 和尚 笑话 合同 力气 脾气 福气 运气 志气 小气 心思 主意
    """.split()
)
_NOT_NEUTRAL_WORDS = frozenset("男子 女子 分子 原子 量子 莲子 石子 瓜子 电子 人人 虎虎".split())
_PARTICLES = "吧呢哈啊呐噻嘛吖嗨哦哒额滴哩哟喽啰耶喔诶"
_STRUCTURAL = "的地得"
_PUNCTUATION = "：，；。？！“”‘’':,;.?!"


def tones_of(word: str) -> list[str]:
    """Tone digits of a word's characters as pypinyin reads the word alone: ``"你好" -> ["3", "3"]``.

    A character whose reading has no final (噷 "hm") gets "".
    """
    return [final[-1:] for final in lazy_pinyin(word, style=Style.FINALS_TONE3, neutral_tone_with_five=True)]


def _all_third(tones: list[str]) -> bool:
    return all(t == "3" for t in tones)


def _with_tone(syllable: str, tone: str) -> str:
    return syllable[:-1] + tone


def _merge_bu(words: list[Word]) -> list[Word]:
    out: list[Word] = []
    carry = ""
    for word, pos in words:
        word = carry + word
        carry = ""
        if word == "不":
            carry = word
        else:
            out.append((word, pos))
    if carry:
        out.append((carry, "d"))
    return out


def _merge_yi(words: list[Word]) -> list[Word]:
    reduplicated: list[Word] = []
    i = 0
    while i < len(words):
        word, pos = words[i]
        if word == "一" and reduplicated and i + 1 < len(words) and words[i - 1][0] == words[i + 1][0] and words[i - 1][1] == "v":
            prev, prev_pos = reduplicated[-1]
            reduplicated[-1] = (prev + "一" + prev, prev_pos)
            i += 2
            continue
        reduplicated.append((word, pos))
        i += 1
    out: list[Word] = []
    for word, pos in reduplicated:
        if out and out[-1][0] == "一":
            out[-1] = ("一" + word, out[-1][1])
        else:
            out.append((word, pos))
    return out


def _merge_reduplication(words: list[Word]) -> list[Word]:
    out: list[Word] = []
    for word, pos in words:
        if out and out[-1][0] == word:
            out[-1] = (word + word, out[-1][1])
        else:
            out.append((word, pos))
    return out


def _merge_third_tones(words: list[Word], *, whole_words: bool) -> list[Word]:
    """Join a word to the previous one when both are all third tone (``whole_words``) or meet on
    third tones, unless the previous one was itself just joined, is a reduplication, or the
    result would exceed 3 characters."""
    tones = [tones_of(word) for word, _ in words]
    out: list[Word] = []
    joined_prev = False
    for i, (word, pos) in enumerate(words):
        if i > 0 and not joined_prev:
            if whole_words:
                meet = _all_third(tones[i - 1]) and _all_third(tones[i])
            else:
                meet = tones[i - 1][-1] == "3" and tones[i][0] == "3"
            prev = words[i - 1][0]
            if meet and not (len(prev) == 2 and prev[0] == prev[1]) and len(prev) + len(word) <= 3:
                out[-1] = (out[-1][0] + word, out[-1][1])
                joined_prev = True
                continue
        out.append((word, pos))
        joined_prev = False
    return out


def _merge_er(words: list[Word]) -> list[Word]:
    out: list[Word] = []
    for word, pos in words:
        if out and word == "儿":
            out[-1] = (out[-1][0] + word, out[-1][1])
        else:
            out.append((word, pos))
    return out


def merge_words(words: list[Word]) -> list[Word]:
    """jieba ``(word, pos)`` pairs of one run of Chinese characters -> the units sandhi works on.

    ``[("我", "r"), ("很", "d"), ("好", "a")] -> [("我很好", "r")]``.
    """
    words = _merge_bu(words)
    words = _merge_yi(words)
    words = _merge_reduplication(words)
    words = _merge_third_tones(words, whole_words=True)
    words = _merge_third_tones(words, whole_words=False)
    return _merge_er(words)


def _split_word(word: str) -> tuple[str, str]:
    """Two sub-words: the shortest word jieba's search mode finds, and the rest of ``word``."""
    shortest = min(jieba.cut_for_search(word), key=len)
    if word.find(shortest) == 0:
        return shortest, word[len(shortest) :]
    return word[: -len(shortest)], shortest


def _bu_sandhi(word: str, syllables: list[str]) -> list[str]:
    if len(word) == 3 and word[1] == "不":
        syllables[1] = _with_tone(syllables[1], "5")
        return syllables
    for i, char in enumerate(word[:-1]):
        if char == "不" and syllables[i + 1][-1] == "4":
            syllables[i] = _with_tone(syllables[i], "2")
    return syllables


def _yi_sandhi(word: str, syllables: list[str]) -> list[str]:
    if "一" in word and all(c.isnumeric() for c in word if c != "一"):
        return syllables
    if len(word) == 3 and word[1] == "一" and word[0] == word[2]:
        syllables[1] = _with_tone(syllables[1], "5")
    elif word.startswith("第一"):
        syllables[1] = _with_tone(syllables[1], "1")
    else:
        for i, char in enumerate(word[:-1]):
            if char != "一":
                continue
            if syllables[i + 1][-1] == "4":
                syllables[i] = _with_tone(syllables[i], "2")
            elif word[i + 1] not in _PUNCTUATION:
                syllables[i] = _with_tone(syllables[i], "4")
    return syllables


def _is_neutral_word(word: str) -> bool:
    return word in _NEUTRAL_WORDS or word[-2:] in _NEUTRAL_WORDS


def _neutral_sandhi(word: str, pos: str, syllables: list[str]) -> list[str]:
    for j in range(1, len(word)):
        if word[j] == word[j - 1] and pos[:1] in ("n", "v", "a") and word not in _NOT_NEUTRAL_WORDS:
            syllables[j] = _with_tone(syllables[j], "5")
    ge = word.find("个")
    last = word[-1]
    if last in _PARTICLES or last in _STRUCTURAL:
        syllables[-1] = _with_tone(syllables[-1], "5")
    elif word in ("了", "着", "过") and pos in ("ul", "uz", "ug"):
        syllables[-1] = _with_tone(syllables[-1], "5")
    elif len(word) > 1 and last in "们子" and pos in ("r", "n") and word not in _NOT_NEUTRAL_WORDS:
        syllables[-1] = _with_tone(syllables[-1], "5")
    elif len(word) > 1 and last in "上下里" and pos in ("s", "l", "f"):
        syllables[-1] = _with_tone(syllables[-1], "5")
    elif len(word) > 1 and last in "来去" and word[-2] in "上下进出回过起开":
        syllables[-1] = _with_tone(syllables[-1], "5")
    elif (ge >= 1 and (word[ge - 1].isnumeric() or word[ge - 1] in "几有两半多各整每做是")) or word == "个":
        syllables[ge] = _with_tone(syllables[ge], "5")
    elif _is_neutral_word(word):
        syllables[-1] = _with_tone(syllables[-1], "5")
    first, second = _split_word(word)
    for sub, end in ((first, len(first)), (second, len(word))):
        if sub and _is_neutral_word(sub):
            syllables[end - 1] = _with_tone(syllables[end - 1], "5")
    return syllables


def _third_sandhi(word: str, syllables: list[str]) -> list[str]:
    tones = [s[-1] for s in syllables]
    if len(word) == 2 and _all_third(tones):
        syllables[0] = _with_tone(syllables[0], "2")
    elif len(word) == 3:
        first, _ = _split_word(word)
        if _all_third(tones):
            # 蒙古/包 -> 2 2 3; 纸/老虎 -> 3 2 3
            if len(first) == 2:
                syllables[0] = _with_tone(syllables[0], "2")
            if len(first) in (1, 2):
                syllables[1] = _with_tone(syllables[1], "2")
        else:
            cut = len(first)
            head, tail = tones[:cut], tones[cut:]
            if len(head) == 2 and _all_third(head):  # 所有/人
                syllables[0] = _with_tone(syllables[0], "2")
            if len(tail) == 2 and _all_third(tail):
                syllables[cut] = _with_tone(syllables[cut], "2")
            elif tail and not _all_third(tail) and tail[0] == "3" and head and head[-1] == "3":  # 好/喜欢
                syllables[cut - 1] = _with_tone(syllables[cut - 1], "2")
    elif len(word) == 4:
        for start in (0, 2):
            if _all_third(tones[start : start + 2]):
                syllables[start] = _with_tone(syllables[start], "2")
    return syllables


def apply_sandhi(word: str, pos: str, syllables: list[str]) -> list[str]:
    """Tone-changed syllables of one merged word (one syllable per character).

    ``apply_sandhi("你好", "l", ["ni3", "hao3"]) -> ["ni2", "hao3"]``.
    """
    if len(syllables) != len(word):
        raise ValueError(f"word {word!r} has {len(word)} characters but {len(syllables)} syllables")
    syllables = list(syllables)
    syllables = _bu_sandhi(word, syllables)
    syllables = _yi_sandhi(word, syllables)
    syllables = _neutral_sandhi(word, pos, syllables)
    return _third_sandhi(word, syllables)
