"""What the sandbox runs on one submitted structure (:class:`~elfscreen.app.sandbox.Sandbox`): read it,
validate it, key it for the cache. Imports only the parsers (no torch, no web code), so a sandbox
child stays small under its address-space limit."""
from __future__ import annotations

from elfscreen.app.cache import cache_key
from elfscreen.model.limits import StructureLimits
from elfscreen.model.structures import guess_format, parse_structure, structure_to_dict


def read_item(item: dict, options: dict, limits: StructureLimits, model_id: str) -> dict:
    """One submitted structure (``name``, ``format`` or None, ``content``, ``hdos`` or None), read and
    validated: its format, its options (``h_dos`` from the item when given), the structure as JSON and
    its cache key. Raises :class:`~elfscreen.model.errors.InputError` naming the item."""
    name = item["name"]
    fmt = item.get("format") or guess_format(name)
    structure = parse_structure(item["content"], fmt, name, limits)
    job_options = {**options, "h_dos": item.get("hdos") or options.get("h_dos")}
    return {"format": fmt, "options": job_options, "structure": structure_to_dict(structure),
            "cache_key": cache_key(structure, model_id, job_options)}
