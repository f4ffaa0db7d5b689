"""Class names across corpora: the label map of the cross-corpus track (``eval.cross_corpus``).

The corpora spell the same emotion differently (CREMA-D's "anger", "fear"; AFEW's "surprise"; RAVDESS's
"angry", "fearful", "surprised"). Names are compared after :data:`CANONICAL`; the shared classes are
those both corpora have (RAVDESS and CREMA-D: six; MSP-IMPROV with either: its four). An explicit
map (source class -> target class) replaces the matching by name.
"""

from __future__ import annotations

CANONICAL = {"anger": "angry", "fear": "fearful", "surprise": "surprised", "happiness": "happy",
             "sadness": "sad", "neutrality": "neutral"}


def canonical(name: str) -> str:
    n = name.strip().lower()
    return CANONICAL.get(n, n)


def label_map(source: list[str] | tuple[str, ...], target: list[str] | tuple[str, ...],
              explicit: dict[str, str] | None = None) -> list[tuple[int, int, str]]:
    """The shared classes as (source index, target index, name), in the source's class order.
    ``explicit``: source class name -> target class name (each used once). Raises ValueError naming
    what does not fit (an unknown class, a target class mapped twice, nothing shared)."""
    if explicit:
        bad = [s for s in explicit if s not in source] + [t for t in explicit.values() if t not in target]
        if bad:
            raise ValueError(f"label map: unknown class(es) {', '.join(map(repr, bad))} (source classes: "
                             f"{', '.join(source)}; target classes: {', '.join(target)})")
        if len(set(explicit.values())) != len(explicit):
            raise ValueError("label map: a target class is mapped from two source classes")
        # a renamed pair reads "calm_as_neutral": MLflow's metric names (recall_<class>) allow no ">"
        pairs = [(source.index(s), target.index(t), s if canonical(s) == canonical(t) else f"{s}_as_{t}")
                 for s, t in explicit.items()]
        return sorted(pairs)
    tgt = {canonical(t): j for j, t in enumerate(target)}
    pairs = [(i, tgt[canonical(s)], canonical(s)) for i, s in enumerate(source) if canonical(s) in tgt]
    if not pairs:
        raise ValueError(f"no class shared by name between {', '.join(source)} and {', '.join(target)}: give "
                         "the map (eval.cross_corpus[].labels: {source class: target class})")
    return pairs
