"""One error type for everything a user can get wrong in an input.

Each error names the input (file name or request name) and the problem, and carries a stable
``code`` that the CLI, the API and clients can switch on (see ``../shared/notes/result-schema.md``).
"""
from __future__ import annotations


class InputError(ValueError):
    """A user's input cannot be used. ``str(err)`` reads "<input>: <problem>"."""

    code = "invalid_input"

    def __init__(self, input_name: str, problem: str):
        self.input_name = str(input_name)
        self.problem = problem
        super().__init__(f"{self.input_name}: {problem}")

    def to_dict(self) -> dict:
        """The error object of the result schema: ``{"error": {"code", "message", "input"}}``."""
        return {"error": {"code": self.code, "message": str(self), "input": self.input_name}}


class StructureError(InputError):
    """A structure file cannot be read, or the structure fails validation."""

    code = "invalid_structure"


class GridError(InputError):
    """A volumetric (ELF grid) file cannot be read or holds unusable values."""

    code = "invalid_grid"


class UnsupportedElementError(InputError):
    """A structure holds elements the model (its descriptor) cannot see. Refused before any prediction:
    no result is ever computed from a structure with atoms left out. ``elements``: the unknown ones;
    ``supported``: what the descriptor sees; ``by``: who refuses (a model, or "the descriptor");
    ``hint``: what would be needed instead."""

    code = "unsupported_element"

    def __init__(self, input_name: str, elements: list[str], supported: tuple[str, ...], by: str = "the descriptor",
                 hint: str | None = None):
        self.elements = list(elements)
        self.supported = tuple(supported)
        problem = (f"element(s) {', '.join(self.elements)} not supported by {by}; supported: {' '.join(self.supported)}"
                   + (f". {hint}" if hint else ""))
        super().__init__(input_name, problem)
