"""One share of a load run: which of its players a process or machine plays."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Share `index` of `count`: the players whose id is `index` modulo `count`, so that each
    share's arrivals spread over the whole ramp as the run's do."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= I < N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'I/N' -> Shard(I, N); ValueError naming what is wrong."""
        i, sep, n = text.partition("/")
        if not sep or not i.strip().isdigit() or not n.strip().isdigit():
            raise ValueError(f"shard {text!r}: expected I/N, e.g. 0/4")
        return cls(int(i), int(n))

    @property
    def whole(self) -> bool:
        """The whole run (0/1)."""
        return self.count == 1

    def ids(self, players: int) -> range:
        """The ids of this share's players among the run's `players`."""
        return range(self.index, players, self.count)

    def split(self, parts: int) -> list[Shard]:
        """This share in `parts` shares whose players together are this share's."""
        return [Shard(self.index + self.count * j, self.count * parts) for j in range(parts)]

    def name(self, label: str) -> str:
        """The results' file name stem: `label` for the whole run, else
        `label`-shard-I-of-N."""
        return label if self.whole else f"{label}-shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard()
