"""Names people type for dishes: as safe folder names, and as keys that match the same class however it is written."""
from __future__ import annotations

import re
import unicodedata

_RESERVED_FOLDERS = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def folder_name(name: str) -> str:
    """A filesystem-safe folder name for a category: lower case, letters/digits/underscores only.

    "Pad Thai" → "pad_thai", "phở" → "phở", "../etc" → "etc". Names that differ only by case or
    punctuation map to the same base; curate's Workspace.ensure_category adds a suffix to keep folders unique.
    """
    name = unicodedata.normalize("NFKC", name).casefold()
    name = "".join(ch if ch.isalnum() else "_" for ch in name)
    name = re.sub(r"_+", "_", name).strip("_")[:60]
    if not name:
        name = "category"
    if name in _RESERVED_FOLDERS:
        name += "_"
    return name


def class_key(name: str) -> str:
    """'Beef Tartare', 'beef_tartare' and 'beef-tartare' name the same class."""
    return "_".join(name.lower().replace("-", " ").replace("_", " ").split())
