"""LibreOffice UI strings (`libreoffice-l10n-XX`) -> (English, translation) pairs.

The language packs hold compiled gettext catalogs,
`usr/lib/libreoffice/program/resource/<locale>/LC_MESSAGES/<module>.mo`, whose
message ids are the English source strings themselves (with a context before
`\\x04`), so each catalog is already aligned:

    msgctxt "RID_DRAW_TABLE_TOOLBOX"  msgid "Table"      msgstr "Tabelle"
    msgctxt "ImpressNotebookbar|View2Label"  msgid "~Outline"  msgstr "Glie~derung"
    -> ("Table", "Tabelle"), ("Outline", "Gliederung")

Plural entries give their singular forms. Accelerator marks (`~` in the
resource strings, `_` in the .ui dialog strings, and the trailing "(~F)"
form some Asian locales use) are removed by `corpus_clean.strip_accelerators`
when the pairs are cleaned; `%PRODUCTNAME` becomes LibreOffice here.
"""

from __future__ import annotations

import os
import struct

_LE_MAGIC = 0x950412DE
_BE_MAGIC = 0xDE120495


def read_mo(data: bytes) -> list[tuple[str, str, str]]:
    """A compiled gettext catalog -> [(context, msgid, msgstr)] in file order.

    Plural entries give (singular msgid, first msgstr form). The header entry
    (empty msgid) and untranslated entries (empty msgstr) are left out.
    Raises ValueError for data that is not a .mo catalog.
    """
    if len(data) < 28:
        raise ValueError("not a gettext .mo catalog (too short)")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == _LE_MAGIC:
        order = "<"
    elif magic == _BE_MAGIC:
        order = ">"
    else:
        raise ValueError("not a gettext .mo catalog (bad magic number)")
    _, count, ids_offset, strs_offset = struct.unpack(order + "4I", data[4:20])
    entries = []
    for index in range(count):
        id_length, id_start = struct.unpack(order + "2I", data[ids_offset + 8 * index: ids_offset + 8 * index + 8])
        str_length, str_start = struct.unpack(order + "2I", data[strs_offset + 8 * index: strs_offset + 8 * index + 8])
        msgid = data[id_start:id_start + id_length].decode("utf-8", errors="replace")
        msgstr = data[str_start:str_start + str_length].decode("utf-8", errors="replace")
        context, _, msgid = msgid.rpartition("\x04")
        msgid = msgid.split("\x00")[0]          # singular of a plural entry
        msgstr = msgstr.split("\x00")[0]        # its first form
        if msgid and msgstr:
            entries.append((context, msgid, msgstr))
    return entries


def clean_ui_text(text: str) -> str:
    """`%PRODUCTNAME` spelled out; newlines become spaces."""
    text = text.replace("%PRODUCTNAME", "LibreOffice")
    return " ".join(text.split())


def catalog_files(unpacked_dir: str) -> list[str]:
    """The .mo catalogs inside an unpacked `libreoffice-l10n-XX` package."""
    found = []
    for root, _, files in os.walk(unpacked_dir):
        found.extend(os.path.join(root, name) for name in files if name.endswith(".mo"))
    return sorted(found)


def read_ui_pairs(unpacked_dir: str) -> list[tuple[str, str]]:
    """All (English, translation) pairs of a package's catalogs."""
    pairs = []
    for path in catalog_files(unpacked_dir):
        with open(path, "rb") as f:
            for _, msgid, msgstr in read_mo(f.read()):
                pairs.append((clean_ui_text(msgid), clean_ui_text(msgstr)))
    return pairs
