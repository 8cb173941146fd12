"""Progress on stderr: a tqdm bar when tqdm is installed, else one line rewritten in place."""
from __future__ import annotations

import sys
from collections.abc import Callable

from elfscreen.client.outcome import Outcome

Callback = Callable[[Outcome, int, int], None]
"""Called once per finished structure with its outcome, the number finished so far and the total."""


class Bar:
    """A progress bar over ``total`` structures; a :data:`Callback`. Call :meth:`close` at the end."""

    def __init__(self, total: int, desc: str = "screening"):
        self.total, self.desc, self.failed = total, desc, 0
        try:
            from tqdm import tqdm
        except ImportError:
            self._tqdm = None
        else:
            self._tqdm = tqdm(total=total, desc=desc, unit="structure", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, outcome: Outcome, done: int, total: int) -> None:
        self.failed += not outcome.ok
        if self._tqdm is not None:
            self._tqdm.total = total
            self._tqdm.set_postfix(failed=self.failed, refresh=False)
            self._tqdm.update(done - self._tqdm.n)
        else:
            print(f"\r{self.desc}: {done}/{total} ({self.failed} failed) {outcome.name[-50:]:<50}", end="",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            print(file=sys.stderr, flush=True)
