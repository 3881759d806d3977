"""Synthesise the embedded demo corpus ``data/demo/`` with espeak-ng.

Three speakers read sentences written for this project: ``ava`` and ``ben``
read English, ``mei`` reads English and Mandarin, plus a few lines each of
Japanese, Korean and Cantonese (a mixed-language speaker, as in upstream
corpora). Audio is stored as 16-bit mono FLAC at espeak-ng's native 22050 Hz,
so the training pipeline's resampling to 32 kHz is exercised.

Deterministic and idempotent: the same espeak-ng version gives byte-identical
files; a file is only rewritten when its bytes change, and FLAC files under the
output folder that the corpus no longer lists are removed.

espeak-ng is needed only to rebuild the corpus, not to use the package::

    apt-get install -y espeak-ng
    python tools/make_demo_corpus.py --out data/demo
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ESPEAK = "espeak-ng"
DOCUMENTED_ESPEAK_VERSION = "1.51"
SAMPLE_RATE = 22050
# espeak-ng amplitude (default 100, peaks near -2 dBFS): 35 peaks near -9 dBFS, like a
# typical recording, and saves about 1.5 bits per sample in FLAC.
AMPLITUDE = 35
# Leading/trailing audio quieter than this (int16 units, about -50 dBFS) is
# trimmed down to TRIM_MARGIN_SECONDS: espeak-ng appends up to 0.4 s of silence.
TRIM_THRESHOLD = 100
TRIM_MARGIN_SECONDS = 0.1


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng voice per language plus fixed prosody."""

    name: str
    voices: dict[str, str]
    words_per_minute: int
    pitch: int


# espeak-ng 1.51's ``cmn`` voice reads Hanzi as pinyin digits spoken in English
# ("ni three"); ``cmn-latn-pinyin`` reads them as Mandarin with tone sandhi.
SPEAKERS = (
    Speaker("ava", {"en": "en-us+f2"}, words_per_minute=175, pitch=62),
    Speaker("ben", {"en": "en-gb+m3"}, words_per_minute=165, pitch=38),
    Speaker(
        "mei",
        {"en": "en-us+f4", "zh": "cmn-latn-pinyin+f4", "ja": "ja+f4", "ko": "ko+f4", "yue": "yue+f4"},
        words_per_minute=168,
        pitch=56,
    ),
)

ENGLISH = (
    "Good morning, everyone.",
    "Could you turn the music down a little?",
    "The kettle has boiled, so grab two mugs from the cupboard.",
    "We left the house at a quarter past seven and still missed the train.",
    "Absolutely, count me in!",
    "Where did you put the spare keys?",
    "The recipe needs 3 eggs, 250 grams of flour, and a pinch of salt.",
    "It rained all night, but the garden looks wonderful this morning.",
    "Thank you so much.",
    "Is this seat taken?",
    "Please remember to lock the back door before you go to bed.",
    "The museum opens at 10 and closes at half past five.",
    "I think the printer is out of paper again.",
    "My grandmother grew up in a small village by the sea, where the only shop sold bread, newspapers, and fishing hooks.",
    "Turn left at the bakery, then take the second street on the right.",
    "How many people are coming to dinner on Saturday?",
    "She finished the marathon in 3 hours and 42 minutes.",
    "Wow, that was fast!",
    "The library will be closed on Monday for repairs.",
    "Honestly, I have no idea what happened next.",
    "Our flight was delayed by two hours because of fog.",
    "Would you like tea or coffee?",
    "The children built a sandcastle with towers, bridges, and a moat full of seawater.",
    "Chapter 14 starts on page 203.",
    "Let's meet by the fountain at noon.",
    "The old clock in the hallway stopped at exactly midnight.",
    "Do you know whether the pharmacy is still open?",
    "He plays the violin, the piano, and, surprisingly, the bagpipes.",
    "Not today, thanks.",
    "The temperature dropped to minus 5 degrees overnight.",
    "Every autumn, thousands of birds fly south across the mountains.",
    "Can I borrow your pen for a moment?",
    "The soup is too salty; add some water and let it simmer.",
    "In 1969, astronauts walked on the Moon for the first time.",
    "I'll call you back in ten minutes.",
    "Why is the sky blue during the day and red at sunset?",
    "The bus was crowded, noisy, and at least twenty minutes late.",
    "Happy birthday to you!",
    "Please write your name at the top of the form.",
    "We planted tomatoes, beans, and a row of sunflowers along the fence.",
    "What time does the last train leave?",
    "The cat is asleep on the warm windowsill.",
    "If you need anything at all, just ask.",
    "Our team scored 2 goals in the final 5 minutes of the match.",
    "The bridge was built more than a hundred years ago.",
    "Have you ever seen the northern lights?",
    "I'd rather walk; it's a lovely evening.",
    "The meeting has been moved to Thursday afternoon.",
    "Careful, the plate is hot.",
    "Fresh bread, strong coffee, and a quiet morning: that's all I want.",
    "Who left the lights on in the kitchen?",
    "The river flooded the fields after a week of heavy rain.",
    "Room 412 is at the end of the corridor.",
    "Sorry, I didn't catch your name.",
    "Scientists found a new species of frog in the rainforest.",
    "Is it going to snow this weekend?",
    "She painted the door bright yellow, and the neighbours loved it.",
    "The train to Edinburgh departs from platform 6.",
    "Just a moment, please.",
    "We need milk, butter, apples, and something for dessert.",
    "How far is it to the nearest petrol station?",
    "The violinist bowed, and the audience rose to its feet.",
    "Don't forget your umbrella.",
    "After dinner, we sat outside and watched the stars come out one by one.",
    "The shop on the corner sells 12 kinds of cheese.",
    "Which way is the beach?",
    "He laughed so hard that he nearly fell off his chair.",
    "The package should arrive within 3 to 5 working days.",
    "Good night, and sleep well.",
    "Could you explain that once more, a bit more slowly?",
    "The lighthouse keeper climbed the spiral stairs every evening at dusk.",
    "I can't believe it's already December.",
    "Whose jacket is this?",
    "The hotel has 86 rooms and a small garden on the roof.",
    "Let me think about it and get back to you tomorrow.",
    "A strong wind blew the leaves across the empty playground.",
    "Are you sure this is the right address?",
    "The concert was sold out weeks ago.",
    "Please don't touch the paintings.",
    "Reading before bed usually helps me fall asleep, although sometimes the story is so exciting that I keep turning pages until two in the morning.",
    "Where were you born?",
    "The baker starts work at 4 in the morning.",
    "Look, a double rainbow!",
    "We walked along the cliffs until the path disappeared into the mist.",
    "What would you do with a whole free day?",
    "The printer, the scanner, and the laptop all broke on the same day.",
    "Keep the change, please.",
    "It takes about 45 minutes to drive to the airport.",
    "The orchestra tuned their instruments while the hall slowly filled.",
    "See you next week!",
)

MANDARIN = (
    "你好，今天天气怎么样？",
    "我每天早上七点起床。",
    "这本书非常有意思，你看过吗？",
    "请把窗户打开，房间里太热了。",
    "我们明天下午三点在图书馆门口见面。",
    "妈妈买了两斤苹果和一条鱼。",
    "他说的话让我非常感动。",
    "北京的冬天又冷又干燥。",
    "你能帮我拿一下那个杯子吗？",
    "火车晚点了二十分钟，大家都很着急。",
    "学习中文需要耐心和练习。",
    "周末我们一起去公园散步吧！",
)

# espeak-ng 1.51's ``ja`` voice reads kana but spells kanji out in English ("Chinese letter"),
# so the Japanese lines are kana only, and avoid the particles は and へ, which it reads as
# written (ha, he) where Japanese says wa, e.
JAPANESE = (
    "おはようございます。",
    "ありがとうございます！",
    "すみません、もういちどおねがいします。",
)

KOREAN = (
    "안녕하세요.",
    "감사합니다!",
    "오늘 날씨가 좋네요.",
)

# Traditional characters with Cantonese words (哋, 嘢, 唔該), as Hong Kong writes.
CANTONESE = (
    "你好，我哋今日去飲茶。",
    "佢講嘢好快。",
    "唔該晒，多謝你！",
)


@dataclass(frozen=True)
class Item:
    """One utterance to synthesise: ``relpath`` is relative to the output folder."""

    relpath: str
    speaker: Speaker
    language: str
    text: str
    words_per_minute: int


def plan_corpus() -> list[Item]:
    """Assign every sentence to a speaker: 34 utterances each for ``ava`` and ``ben``, 43 for ``mei``.

    ``mei`` reads every fourth English sentence and all Mandarin, Japanese, Korean and
    Cantonese ones (those last, so adding them numbered no earlier file anew); ``ava``
    and ``ben`` alternate over the rest. Speaking rate varies by -8/0/+8 words
    per minute along each speaker's utterances for some prosodic variety.
    """
    ava, ben, mei = SPEAKERS
    assignments: list[tuple[Speaker, str, str]] = []
    alternate = 0
    for index, text in enumerate(ENGLISH):
        if index % 4 == 3:
            speaker = mei
        else:
            speaker = (ava, ben)[alternate % 2]
            alternate += 1
        assignments.append((speaker, "en", text))
    assignments.extend((mei, "zh", text) for text in MANDARIN)
    for language, sentences in (("ja", JAPANESE), ("ko", KOREAN), ("yue", CANTONESE)):
        assignments.extend((mei, language, text) for text in sentences)

    counters = {speaker.name: 0 for speaker in SPEAKERS}
    items = []
    for speaker, language, text in assignments:
        counters[speaker.name] += 1
        number = counters[speaker.name]
        rate = speaker.words_per_minute + (-8, 0, 8)[number % 3]
        items.append(Item(f"{speaker.name}/{number:03d}.flac", speaker, language, text, rate))
    return items


def espeak_version() -> str:
    """The installed espeak-ng version, e.g. ``"1.51"``; exits with a hint if missing."""
    try:
        banner = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        sys.exit(f"{ESPEAK} not found: install it with `apt-get install -y espeak-ng`")
    # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    return banner.split(":", 1)[1].split()[0]


def synthesise(item: Item) -> np.ndarray:
    """espeak-ng audio for one item, trimmed: int16 samples ``[N]`` at 22050 Hz."""
    voice = item.speaker.voices[item.language]
    command = [
        ESPEAK,
        "-v",
        voice,
        "-s",
        str(item.words_per_minute),
        "-p",
        str(item.speaker.pitch),
        "-a",
        str(AMPLITUDE),
        "--stdout",
        item.text,
    ]
    wav = subprocess.run(command, capture_output=True, check=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="int16")
    if rate != SAMPLE_RATE or samples.ndim != 1:
        raise RuntimeError(f"{voice} produced {samples.shape} at {rate} Hz, expected mono at {SAMPLE_RATE} Hz")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > TRIM_THRESHOLD)
    if loud.size == 0:
        raise RuntimeError(f"{voice} produced silence for {item.text!r}")
    margin = int(TRIM_MARGIN_SECONDS * SAMPLE_RATE)
    return samples[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def encode_flac(samples: np.ndarray) -> bytes:
    """16-bit mono FLAC bytes of int16 ``samples`` ``[N]`` at 22050 Hz."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
    return buffer.getvalue()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly these bytes."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def build(out_dir: Path) -> None:
    """Synthesise every planned item into ``out_dir`` and write ``demo.list``."""
    version = espeak_version()
    if version != DOCUMENTED_ESPEAK_VERSION:
        print(
            f"warning: {ESPEAK} {version} differs from {DOCUMENTED_ESPEAK_VERSION}: audio will not match the committed corpus",
            file=sys.stderr,
        )

    items = plan_corpus()
    changed = 0
    seconds: dict[tuple[str, str], float] = {}
    lines = []
    for item in items:
        samples = synthesise(item)
        changed += write_if_changed(out_dir / item.relpath, encode_flac(samples))
        key = (item.speaker.name, item.language)
        seconds[key] = seconds.get(key, 0.0) + samples.size / SAMPLE_RATE
        lines.append(f"{item.relpath}|{item.speaker.name}|{item.language}|{item.text}\n")
    changed += write_if_changed(out_dir / "demo.list", "".join(lines).encode("utf-8"))

    planned = {out_dir / item.relpath for item in items}
    for stale in sorted(set(out_dir.rglob("*.flac")) - planned):
        print(f"removing {stale}, no longer part of the corpus")
        stale.unlink()

    durations = [sf.info(out_dir / item.relpath).duration for item in items]
    size = sum((out_dir / item.relpath).stat().st_size for item in items)
    print(f"espeak-ng {version}: {len(items)} utterances, {changed} files written or updated")
    for (speaker, language), total in sorted(seconds.items()):
        count = sum(1 for item in items if (item.speaker.name, item.language) == (speaker, language))
        print(f"  {speaker} {language}: {count} utterances, {total:.1f} s")
    print(f"  duration {sum(durations):.1f} s total, {min(durations):.2f}-{max(durations):.2f} s per utterance")
    print(f"  audio size {size / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "demo", help="output folder (default: data/demo)"
    )
    args = parser.parse_args()
    build(args.out)


if __name__ == "__main__":
    main()
