"""Write tests/fixtures/frontend/{ja,ko,yue}.json: upstream GPT-SoVITS v2's own phonemes for fixed sentences.

Run by hand, not in CI, with a Python that has upstream's frontend dependencies (see
tests/fixtures/README.md), from the repository root:

    /work/torchenv/bin/python tools/make_frontend_fixtures.py --upstream /work/upstream/GPT_SoVITS

It imports upstream's ``text.cleaner.clean_text`` (v2) unchanged and records, per sentence,
the phonemes, word2ph (Cantonese only) and normalised text it returns. Two things are stubbed
because they are outside the v2 path being recorded:

- g2pk2 looks for NLTK's CMU dictionary at import and tries to download it when missing; it
  only uses it for Latin letters, which upstream's Korean frontend spells out in Hangul before
  calling g2pk2, so an empty dictionary is handed in instead of a download.
- upstream's Japanese module compiles a user dictionary when ``text/ja_userdic`` exists; the
  upstream snapshot used here has none, so nothing is compiled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SENTENCES = {
    "ja": [
        "こんにちは。",
        "今日はいい天気ですね！",
        "東京タワーに行きましょう。",
        "私は学生です。",
        "ありがとうございます、先生。",
        "本当ですか？",
        "ちょっと待ってください。",
        "コーヒーを二杯ください。",
        "電車は3時15分に出ます。",
        "１２３円です。",
        "ラーメンとギョーザが大好き！",
        "きって、きって、きって。",
        "はい、そうです…",
        "彼はNHKで働いています。",
        "今日は、学校へ行きます。",
        "すみません、駅はどこですか？",
        "さようなら！！",
        "お母さんとお父さん",
        "シャッターを押してください。",
        "百パーセント、大丈夫です。",
        "五十％の確率です。",
        "日本語を勉強しています。",
        "ピアノを弾くのが好きです。",
        "２０２４年３月５日です。",
        "「はい」と言いました。",
    ],
    "ko": [
        "안녕하세요.",
        "감사합니다!",
        "오늘 날씨가 좋네요.",
        "저는 학생입니다.",
        "사과 3개를 샀어요.",
        "지금은 2024년입니다.",
        "이것은 무엇입니까?",
        "한국어를 공부하고 있어요.",
        "밥을 먹었어요.",
        "같이 갑시다!",
        "읽고, 쓰고, 말하기.",
        "닭이 울어요.",
        "꽃이 예뻐요.",
        "의사 선생님",
        "TV를 봤어요.",
        "좋아요…",
        "네, 알겠습니다.",
        "신라와 백제",
        "국물이 맛있어요.",
        "학교에 갑니다。",
        "1,000원입니다.",
        "3시 10분에 만나요.",
    ],
    "yue": [
        "你好。",
        "佢個鋤頭太短啦。",
        "我哋今日去飲茶！",
        "你食咗飯未呀？",
        "呢度有3個蘋果。",
        "今年係2024年。",
        "唔該晒，多謝你。",
        "佢講嘢好快，我聽唔明。",
        "今日天氣好好。",
        "我住喺香港。",
        "增長咗50%。",
        "等一陣……",
        "我鍾意睇書、聽歌同埋行山。",
        "你係邊個？",
        "好嘢！",
        "一百二十三蚊。",
        "香港人講廣東話。",
        "巴士站喺邊度？",
        "佢哋喺度傾偈。",
        "《明報》話落雨。",
        "氣溫係-3.5度。",
        "今日係2024年3月5日。",
        "而家3:15。",
        "大概3~5日。",
        "一半即係1/2。",
        "嗯，好啊~",
        "佢話：「得喇！」",
        "ＡＢＣ１２３",
        "我有1000蚊。",
        "冇問題喎。",
        "好耐冇見！",
        "佢好錫個仔。",
        "長江三峽好出名。",
        "爲咗呢間舖頭，佔咗好多時間。",
        "你做乜嘢呀？咁都得麼？",
    ],
}


class _EmptyCmudict:
    @staticmethod
    def dict():
        return {}


def _stub_nltk() -> None:
    import nltk
    import nltk.corpus

    nltk.data.find = lambda *args, **kwargs: None
    nltk.corpus.cmudict = _EmptyCmudict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="upstream's GPT_SoVITS folder (holds text/)")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/frontend"))
    args = parser.parse_args()
    os.environ["version"] = "v2"
    sys.path.insert(0, str(args.upstream.resolve()))
    _stub_nltk()
    import importlib.metadata as metadata

    from text.cleaner import clean_text

    packages = ["pyopenjtalk-plus", "g2pk2", "jamo", "python-mecab-ko", "python-mecab-ko-dic", "ToJyutping"]
    versions = {name: metadata.version(name) for name in packages}
    args.out.mkdir(parents=True, exist_ok=True)
    for language, sentences in SENTENCES.items():
        rows = []
        for text in sentences:
            phones, word2ph, norm_text = clean_text(text, language, "v2")
            rows.append({"text": text, "phonemes": list(phones), "word2ph": word2ph, "norm_text": norm_text})
        table = {"language": language, "generated_with": versions, "sentences": rows}
        path = args.out / f"{language}.json"
        path.write_text(json.dumps(table, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"{path}: {len(rows)} sentences")


if __name__ == "__main__":
    main()
