"""Copy the Grafana dashboards (grafana/dashboards/*.json) into the Helm chart.

The chart's ``.Files.Get`` reaches only files inside the chart, so it carries copies in
helm/prodloop/dashboards/ (one ConfigMap each, templates/dashboards.yaml).  Run this after
changing a dashboard; tests/integration/test_chart_ops.py fails while the copies differ.

    python scripts/sync_chart_dashboards.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "grafana" / "dashboards"
TARGET = ROOT / "helm" / "prodloop" / "dashboards"


def sync() -> list[str]:
    """Make TARGET's *.json equal SOURCE's; returns the names copied or removed."""
    TARGET.mkdir(exist_ok=True)
    wanted = {p.name: p for p in SOURCE.glob("*.json")}
    changed = []
    for stale in sorted(TARGET.glob("*.json")):
        if stale.name not in wanted:
            stale.unlink()
            changed.append(f"removed {stale.name}")
    for name, src in sorted(wanted.items()):
        dst = TARGET / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
            changed.append(f"copied {name}")
    return changed


if __name__ == "__main__":
    for line in sync() or ["the chart's dashboards are up to date"]:
        print(line)
