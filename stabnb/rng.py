"""The package's one randomness rule.

Every function of stabnb that draws random numbers takes ``generator`` and ``seed``: it draws
from ``generator`` when one is given, else from a fresh ``torch.Generator`` seeded with ``seed``
(default 0), so one seed gives one output. Nothing in stabnb reads or reseeds torch's global
stream; where a library draws from it (Captum's ``NoiseTunnel``), the call runs inside
``torch.random.fork_rng``, seeded from our generator.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_generator"]


def resolve_generator(generator: torch.Generator | None, seed: int | None = 0, *,
                      device: str | torch.device = "cpu") -> torch.Generator:
    """``generator`` itself, or a fresh generator on ``device`` seeded with ``seed``.

    Examples::

        >>> a = torch.rand(2, generator=resolve_generator(None, 3))
        >>> bool((a == torch.rand(2, generator=resolve_generator(None, 3))).all())
        True

    Raises:
        ValueError: both are None, or ``seed`` is not an integer.
    """
    if generator is not None:
        return generator
    if seed is None or isinstance(seed, bool) or int(seed) != seed:
        raise ValueError(f"seed={seed!r}: pass an integer seed or a torch.Generator "
                         "(torch.Generator().manual_seed(0)).")
    return torch.Generator(device=device).manual_seed(int(seed))
