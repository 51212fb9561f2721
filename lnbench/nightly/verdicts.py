"""What the triage is about and what it decides: the alarms of the regression report (one
series, A and B), the verdicts on them, and the verdict store ``R/lnbench-triage.json`` that
keeps them across nights (:mod:`lnbench.nightly.triage`, step 1)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lnbench.nightly.rule import AB

STORE = "lnbench-triage.json"


class UsageError(Exception):
    """Bad usage or unreadable input: one line on stderr, exit 2."""



@dataclass(frozen=True)
class Series:
    benchmark: str
    params: tuple[tuple[str, str], ...]
    machine: str
    env: str
    metric: str

    def label(self) -> str:
        ps = ", ".join(v for _, v in self.params)
        return f"{self.benchmark}({ps})" if ps else self.benchmark


@dataclass
class Alarm:
    series: Series
    commit: str
    prev_commit: str | None
    ratio: float
    before: float | None
    after: float | None
    unit: str
    newest: bool = False
    #: where the alarm came from: "" the regression report (asv's stored values),
    #: ``lnbench.nightly.screen.SOURCE`` the report's method on a low quantile of the samples
    source: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.ratio < 1

    @property
    def quantile(self) -> float | None:
        """The sample quantile its re-runs compare (None: asv's value), as its source did."""
        from lnbench.nightly.screen import QUANTILE, SOURCE

        return QUANTILE if self.source == SOURCE else None

    @property
    def flagged(self) -> float:
        """The flagged ratio in badness orientation (> 1)."""
        return 1 / self.ratio if self.higher_is_better else self.ratio

    def key(self) -> str:
        s = self.series
        return json.dumps([s.machine, s.env, s.benchmark, list(s.params), s.metric,
                           self.prev_commit, self.commit])

    @classmethod
    def from_report(cls, entry: dict[str, Any]) -> Alarm:
        params = tuple((str(k), str(v)) for k, v in (entry.get("params") or {}).items())
        series = Series(str(entry["benchmark"]), params, str(entry["machine"]),
                        str(entry.get("env") or ""), str(entry.get("metric") or ""))
        return cls(series, str(entry["commit"]), entry.get("prev_commit"),
                   float(entry["ratio"]), entry.get("before"), entry.get("after"),
                   str(entry.get("unit") or ""))


@dataclass
class Verdict:
    alarm: Alarm
    status: str  # "confirmed" | "not reproduced" | "unchecked"
    reason: str = ""
    ab: AB | None = None
    first_bad: str | None = None
    first_bad_subject: str = ""
    bisect: list[dict[str, Any]] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)  # an unfinished bisection's range
    earlier: bool = False  # reused from the store

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alarm"]["series"]["params"] = dict(self.alarm.series.params)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        a = dict(d["alarm"])
        s = dict(a.pop("series"))
        s["params"] = tuple((str(k), str(v)) for k, v in (s.get("params") or {}).items())
        alarm = Alarm(Series(**s), **a)
        ab = AB(**d["ab"]) if d.get("ab") else None
        rest = {k: v for k, v in d.items() if k not in ("alarm", "ab", "earlier")}
        return cls(alarm=alarm, ab=ab, **rest)


def load_store(results: Path) -> dict[str, Verdict]:
    path = results / STORE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        verdicts = [Verdict.from_dict(v) for v in doc["verdicts"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: unreadable triage verdicts ({e})") from None
    return {v.alarm.key(): v for v in verdicts}


def save_store(results: Path, store: dict[str, Verdict]) -> None:
    doc = {"version": 1, "verdicts": [v.to_dict() for v in store.values()]}
    tmp = results / (STORE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(results / STORE)
