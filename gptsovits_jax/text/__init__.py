"""Text frontend: raw text -> phonemes of upstream GPT-SoVITS v2's 732-symbol table.

``frontend.text_to_ids(text, language)`` is the entry point; ``symbols`` holds the table.
Languages: English and Mandarin (no extra dependencies), Japanese, Korean and Cantonese
(the ``ja``, ``ko`` and ``yue`` extras), and mixed text split by script.
Modules: ``normalize`` (numbers, abbreviations, punctuation), ``numbers`` (numbers as words),
``english`` (CMU dictionary G2P), ``chinese`` (jieba + pypinyin G2P), ``tone_sandhi``,
``japanese`` (OpenJTalk), ``korean`` (g2pk2 + MeCab), ``cantonese`` (ToJyutping), ``extras``
(lazy imports of the optional libraries). Importing this package imports none of them.
"""
