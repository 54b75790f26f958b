"""The champion/challenger gate: promote only a model that beats the champion.

Both models are scored on the same test set. The decision and every reason behind it
are recorded, so an operator can see why a model was or was not promoted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GateDecision:
    promote: bool
    metric: str
    margin: float
    challenger_score: float
    champion_version: str | None = None
    champion_score: float | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    *,
    metric: str,
    margin: float,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None = None,
    incompatible: str | None = None,
) -> GateDecision:
    """Promote if there is no champion, or the challenger's ``metric`` beats it by ``margin``."""
    score = challenger[metric]
    decision = GateDecision(False, metric, margin, score, champion_version)
    if incompatible:
        decision.reasons.append(f"champion v{champion_version} cannot be compared: {incompatible}")
        return decision
    if champion is None:
        decision.promote = True
        decision.reasons.append("there is no champion yet")
        return decision
    decision.champion_score = champion[metric]
    delta = score - champion[metric]
    decision.promote = delta > margin
    verb = "beats" if decision.promote else "does not beat"
    decision.reasons.append(
        f"challenger {metric} {score:.4f} {verb} champion v{champion_version} "
        f"{champion[metric]:.4f} by more than {margin:g} (difference {delta:+.4f})"
    )
    return decision
