"""Files handed to users: CSV cells a spreadsheet will not run, and download names safe in an HTTP header.

Every CSV elfscreen writes (``submit``/``watch --out x.csv``, ``/v1/results.csv``, ``…/result.csv``)
goes through :func:`csv_cell`, and every download route names its file with
:func:`content_disposition`. Structure names come from uploads, so both treat them as hostile.
"""
from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

# OWASP "CSV injection": a cell starting with one of these is read as a formula by Excel, LibreOffice
# and Google Sheets (tab and carriage return can hide one after leading whitespace).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MAX_NAME = 150  # characters of a download name (file systems take 255 bytes; UTF-8 needs up to 4 per character)


def csv_cell(value):
    """``value`` as a CSV cell that no spreadsheet evaluates: a text starting with ``= + - @``, tab or CR
    gets a leading single quote (shown, never evaluated). Numbers and None are left as they are, so
    negative numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_row(row: dict) -> dict:
    """Every cell of ``row`` through :func:`csv_cell`."""
    return {key: csv_cell(value) for key, value in row.items()}


def csv_value(text: str) -> str:
    """The text of a cell read back from such a CSV (the inverse of :func:`csv_cell` for text)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


def content_disposition(filename: str) -> str:
    """A ``Content-Disposition: attachment`` value for ``filename``, safe whatever the name holds.

    Only the last path component is kept (``../../etc/passwd`` → ``passwd``), control characters,
    quotes, semicolons and backslashes go, and the name is cut to :data:`MAX_NAME` characters. It is
    given twice (RFC 6266): ``filename=`` in plain ASCII (other characters become ``_``) for old clients,
    and ``filename*=UTF-8''…`` percent-encoded (RFC 5987) with the full Unicode name; neither can close
    the quoted string or add a parameter.
    """
    name = re.split(r"[/\\]", filename)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in '";')
    name = name.strip(" .")[:MAX_NAME] or "download"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", ascii_name)
    if not ascii_name.strip("._"):
        ascii_name = "download"
    elif ascii_name.startswith("."):  # nothing of the stem was ASCII: keep the extension
        ascii_name = "download" + ascii_name
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
