"""What the Python API returns: the JSON result, plus a data-frame view of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class QueryResult:
    raw: dict[str, Any]

    @property
    def results(self) -> Any:
        return self.raw.get("results")

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def to_pandas(self):
        """A tidy frame: SQL rows as they are; time series as one row per (series, date)."""
        import pandas as pd

        if "columns" in self.raw:
            return pd.DataFrame(self.raw["results"], columns=self.raw["columns"])
        rows = []
        for item in self.raw.get("results") or []:
            if not isinstance(item, dict):
                continue
            label = item.get("label")
            base = {"series": label, "breakdown_value": item.get("breakdown_value"),
                    "compare_label": item.get("compare_label")}
            if item.get("days"):
                for day, value in zip(item["days"], item["data"]):
                    rows.append({**base, "date": day, "value": value})
            elif "aggregated_value" in item:
                rows.append({**base, "value": item["aggregated_value"]})
            else:
                rows.append({**base, **{k: v for k, v in item.items() if not isinstance(v, (list, dict))}})
        return pd.DataFrame(rows)
