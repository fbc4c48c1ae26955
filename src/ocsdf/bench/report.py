"""Write a benchmark table as Markdown + CSV + JSON under ``docs/results/`` with provenance."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["machine_info", "write_table"]


def machine_info() -> dict[str, str]:
    """Cores, CPU/platform, Python and torch versions, and the UTC date of the run."""
    import torch

    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_table(
    rows: Sequence[dict],
    name: str,
    out_dir: str | os.PathLike = "docs/results",
    title: str | None = None,
    notes: str = "",
    command: str | None = None,
) -> Path:
    """Write ``rows`` (a list of dicts, one per table row) as ``NAME.md``, ``NAME.csv`` and
    ``NAME.json`` in ``out_dir``; the Markdown carries the command, the machine and the date.

    Returns the Markdown path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(list(rows))
    df = df.astype(object).where(df.notna(), None)  # missing values: empty cells, JSON null
    info = machine_info()
    command = command or "ocsdf " + " ".join(sys.argv[1:])
    md = [f"# {title or name}", "", f"Command: `{command}`", "",
          f"Machine: {info['cores']} cores ({info['processor']}, {info['platform']}), "
          f"torch {info['torch']} with {info['torch_threads']} threads, Python {info['python']}. "
          f"Date: {info['date']}.", ""]
    if notes:
        md += [notes.strip(), ""]
    table = df.to_markdown(index=False, floatfmt=".4g", missingval="") if len(df) else "(no rows)"
    md.append(table)
    md.append("")
    (out / f"{name}.md").write_text("\n".join(md))
    df.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.json").write_text(
        json.dumps({"command": command, "machine": info, "rows": df.to_dict("records")}, indent=2)
    )
    return out / f"{name}.md"
