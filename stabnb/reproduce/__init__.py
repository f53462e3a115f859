"""The reproduce command: run every notebook headless, skip what is unchanged, write a report.

- :mod:`~stabnb.reproduce.manifest` — which notebooks, selection, fingerprints, staleness;
- :mod:`~stabnb.reproduce.execute` — papermill in a pool of worker processes;
- :mod:`~stabnb.reproduce.records` — what a run produced;
- :mod:`~stabnb.reproduce.provenance` — commit, device, versions;
- :mod:`~stabnb.reproduce.render` — ``REPORT.md``;
- :mod:`~stabnb.reproduce.run` — :func:`reproduce`, tying them together.
"""

from .manifest import NOTEBOOKS
from .records import NotebookRun, ReproduceResult
from .run import reproduce

__all__ = ["NOTEBOOKS", "NotebookRun", "ReproduceResult", "reproduce"]
