"""A classification answer as the user sees it: the best classes of a picture with their evidence, and the
decision the class list's thresholds made ("unknown" when the best class's score is below its own)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dnc.clients.seg_results import UNKNOWN


@dataclass
class Ranked:
    """One of the best classes of an image, with the sub-centroid that gave it its score."""
    rank: int
    class_id: int
    label: str
    score: float  # cosine similarity to the winning sub-centroid
    subcentroid: int
    exemplar_id: int  # id of the real image the sub-centroid is anchored to; -1 when not anchored
    exemplar: str  # that image's path or name; "" when not anchored


@dataclass
class Prediction:
    source: str  # file path, or the row index for arrays
    set_id: str  # the class list (centroid set version) that answered
    margin: float  # best minus second-best class score
    top: list[Ranked]
    known: bool = True  # the best class's score clears its threshold (else the answer is "unknown")
    threshold: float = -1.0  # that class's threshold (-1: its set has none, every score clears it)

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def answer(self) -> str:
        """The best class's label, or "unknown" when its score is below the class's threshold."""
        return self.label if self.known else UNKNOWN

    def to_dict(self) -> dict:
        return {"answer": self.answer, **asdict(self)}
