"""Claims: one checked statement, its verdict and the numbers behind it, and the claims the
experiments make from regulariser effects and the entropy link.

A :class:`Claim` is of one of two kinds: an *identity* is true by construction (autograd equals
the explicit product, a completeness identity) and tests the code; a *claim* could fail on real
networks and is what a reader counts. Every notebook ends with its claims
(:meth:`stabnb.notebook.Notebook.claim`); the reproduce command collects them into the report.
The rules are ours (``docs/reconstruction.md``), stated before the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .effects import DecisionRule, RegularizerEffect
from .entropy_link import EntropyBound
from .io import to_jsonable
from .stats import Interval, seed_interval

__all__ = ["KINDS", "VERDICTS", "Claim", "attribution_claim", "summaries_claim",
           "entropy_bound_claim"]

KINDS = ("claim", "identity")
VERDICTS = {"claim": ("reproduced", "not reproduced", "inconclusive"),
            "identity": ("verified", "violated", "undecided")}


@dataclass(frozen=True)
class Claim:
    """One checked statement: the sentence, whether the numbers bear it out, and the numbers.

    Attributes:
        name: stable identifier, ``"E3_attribution_improves[mlp]"``.
        statement: the sentence checked, in one line.
        passed: True, False, or None when the numbers cannot decide.
        summary: the rounded numbers behind the verdict, one line (what nbval compares).
        numbers: every number, JSON-ready, for the report.
        kind: ``"claim"`` (could fail on real networks) or ``"identity"`` (true by construction;
            it checks the code).
        reconstructed: the statement is our reconstruction, not a quotation of the paper.
    """

    name: str
    statement: str
    passed: bool | None
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    kind: str = "claim"
    reconstructed: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is unknown; choose one of {KINDS}.")
        if self.passed not in (True, False, None):
            raise ValueError(f"passed={self.passed!r} must be True, False or None (undecided).")
        object.__setattr__(self, "passed", None if self.passed is None else bool(self.passed))

    @property
    def verdict(self) -> str:
        """``reproduced``/``not reproduced``/``inconclusive`` (``verified``/``violated``/
        ``undecided`` for an identity)."""
        words = VERDICTS[self.kind]
        return words[2] if self.passed is None else words[0] if self.passed else words[1]

    def line(self) -> str:
        """The verdict line a notebook prints: ``name: summary -> VERDICT``."""
        return f"{self.name}: {self.summary} -> {self.verdict.upper()}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statement": self.statement, "kind": self.kind,
                "verdict": self.verdict, "passed": self.passed, "summary": self.summary,
                "numbers": to_jsonable(self.numbers), "reconstructed": self.reconstructed}


def _percent(interval: Interval | None) -> str:
    return "n/a" if interval is None else interval.format(0, scale=100.0, signed=True) + "%"


def attribution_claim(effects: Sequence[RegularizerEffect], *, model: str,
                      name: str = "attribution_improves") -> Claim:
    """"Modest regularisation substantially improves attribution stability", for ``model``.

    Which regulariser the paper used is unknown, so each is judged by the rule: REPRODUCED
    if at least one passes, NOT REPRODUCED if every one fails, else INCONCLUSIVE. The
    summary lists every regulariser's improvement with its interval.
    """
    mine = [e for e in effects if e.model == model]
    if not mine:
        raise ValueError(f"no effect for model {model!r}; models: {sorted({e.model for e in effects})}.")
    verdicts = [e.passed for e in mine]
    passed = True if True in verdicts else False if all(v is False for v in verdicts) else None
    parts = [f"{e.regularizer} {_percent(e.improvement)}" for e in mine]
    metric = mine[0].metric
    return Claim(
        name=f"{name}[{model}]",
        statement=f"Modest regularisation substantially improves attribution stability ({metric}).",
        passed=passed,
        summary=f"reduction in {metric} at modest λ: " + "; ".join(parts),
        numbers={"effects": [e.to_dict() for e in mine]})


def summaries_claim(effects: Sequence[RegularizerEffect], *, model: str,
                    rule: DecisionRule = DecisionRule(),
                    name: str = "summaries_change_little") -> Claim:
    """"… even when global spectral summaries change little", for ``model``.

    Judged on the regularisers that passed :func:`attribution_claim`'s rule: REPRODUCED if at
    least one of them moved every summary by at most ``rule.max_summary_change`` (mean over
    seeds), NOT REPRODUCED if each moved some summary more, INCONCLUSIVE if none passed.
    """
    mine = [e for e in effects if e.model == model]
    improving = [e for e in mine if e.passed]
    limit = rule.max_summary_change

    def little(e: RegularizerEffect) -> bool:
        return all(abs(v.mean) <= limit for v in e.summary_changes.values())

    shown = improving or [e for e in mine if e.improvement is not None]
    parts = [f"{e.regularizer}: " + ", ".join(f"{s} {_percent(v)}"
                                              for s, v in e.summary_changes.items())
             for e in shown]
    passed = None if not improving else any(little(e) for e in improving)
    prefix = ("" if improving else "no regulariser improved attribution; " if shown
              else "no regulariser has a modest λ")
    return Claim(
        name=f"{name}[{model}]",
        statement="Attribution stability improves while global spectral summaries change little.",
        passed=passed, summary=prefix + "; ".join(parts),
        numbers={"rule": rule.to_dict(), "effects": [e.to_dict() for e in shown]})


def entropy_bound_claim(bounds: Sequence[EntropyBound], *, label: str,
                        min_envelope_rho: float = 0.6, max_rho: float = 0.5,
                        confidence: float = 0.95,
                        name: str = "entropy_envelope") -> Claim:
    """"Entropy bounds instability without rigid sample ordering", over seeds (our rule).

    With one :class:`EntropyBound` per seed, and means and t-intervals over seeds of the
    envelope trend ``|ρ_env|``, the per-sample ``|ρ|`` and their gap ``|ρ_env| − |ρ|``:

    - REPRODUCED: mean ``|ρ_env|`` ≥ ``min_envelope_rho`` (the envelope follows entropy),
      mean ``|ρ|`` < ``max_rho`` (no rigid ordering) and the gap's interval above 0;
    - NOT REPRODUCED: the interval of ``|ρ_env|`` below ``min_envelope_rho``, or that of
      ``|ρ|`` at or above ``max_rho``, or the gap's interval below 0;
    - INCONCLUSIVE: otherwise (always with one seed: no interval).

    The direction of the trend is reported, not judged: the paper's is not known to us.
    """
    if not bounds:
        raise ValueError("no EntropyBound given; compute one per seed with entropy_bound().")
    env = seed_interval([abs(b.envelope_rho) for b in bounds], confidence=confidence)
    rho = seed_interval([abs(b.rho) for b in bounds], confidence=confidence)
    gap = seed_interval([abs(b.envelope_rho) - abs(b.rho) for b in bounds], confidence=confidence)
    signed = seed_interval([b.envelope_rho for b in bounds], confidence=confidence)
    ratio = seed_interval([b.envelope_ratio for b in bounds], confidence=confidence)
    passed: bool | None = None
    if env.mean >= min_envelope_rho and rho.mean < max_rho and gap.lo > 0:
        passed = True
    elif env.hi < min_envelope_rho or rho.lo >= max_rho or gap.hi < 0:
        passed = False
    direction = "rising" if signed.mean > 0 else "falling"
    return Claim(
        name=f"{name}[{label}]",
        statement="Jacobian spectral entropy bounds attribution instability (an envelope) "
                  "without a rigid sample ordering (a weak rank correlation).",
        passed=passed,
        summary=(f"envelope trend |ρ_env| {env.format(2)} ({direction}, top/bottom bin max "
                 f"{ratio.format(2)}), per-sample |ρ| {rho.format(2)}, seeds={env.n}"),
        numbers={"bounds": [b.to_dict() for b in bounds], "min_envelope_rho": min_envelope_rho,
                 "max_rho": max_rho, "envelope_abs_rho": env.to_dict(),
                 "per_sample_abs_rho": rho.to_dict(), "gap": gap.to_dict(),
                 "envelope_ratio": ratio.to_dict()})
