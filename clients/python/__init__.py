"""Python client of elfscreen: screen hydrogen-rich crystals on an elfscreen server, or in this process.

>>> from elfscreen.client import Client
>>> with Client("http://localhost:8000", api_key=None) as client:     # Client() runs the pipeline here
...     batch = client.submit(["runs/", "best.cif"], {"spacing_a": 0.1})
...     for outcome in batch.wait(progress=True).results():
...         print(outcome.name, outcome.result["phi"] if outcome.ok else outcome.error["message"])

Results are the ScreeningResult JSON of ``elfscreen screen`` and the API (φ, φ* dimensionless; Tc in K;
lengths in Å), identical whether a server or the embedded pipeline computed them, apart from timings.
"""
from elfscreen.client.client import Batch, Client
from elfscreen.client.errors import ClientError, ScreeningFailed, ServerError
from elfscreen.client.inputs import Item, as_items, find_structure_files, read_file
from elfscreen.client.outcome import Outcome

__all__ = ["Batch", "Client", "ClientError", "Item", "Outcome", "ScreeningFailed", "ServerError", "as_items",
           "find_structure_files", "read_file"]
