"""Text frontend: raw English/Mandarin text -> phonemes of upstream GPT-SoVITS v2's 732-symbol table.

``frontend.text_to_ids(text, language)`` is the entry point; ``symbols`` holds the table.
Modules: ``normalize`` (numbers, abbreviations, punctuation), ``numbers`` (numbers as words),
``english`` (CMU dictionary G2P), ``chinese`` (jieba + pypinyin G2P), ``tone_sandhi``.
Importing this package imports none of them.
"""
