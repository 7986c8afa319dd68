"""Show a mapping: a terminal table (per layer, per core) and ``resources.png``.

Both read the ``resources`` section of ``report.json`` (:meth:`dpap_deploy.mapping.Mapping.to_report`),
so ``dpap-report`` can redraw them for any profile without retraining.
"""
from __future__ import annotations

from typing import List, Optional

from dpap_deploy.fileio import atomic_path

RESOURCES = ("neurons", "input_axons", "output_axons", "synaptic_memory_bits")
SHORT = {"neurons": "neurons", "input_axons": "in axons", "output_axons": "out axons",
         "synaptic_memory_bits": "syn memory"}


def _pct(entry: dict) -> str:
    return "-" if entry["percent"] is None else f"{entry['percent']:.1f}%"


def resources_text(res: dict, max_cores: int = 16) -> str:
    """Human tables of a ``resources`` section: summary line, per layer, per core (the
    ``max_cores`` fullest cores when there are more), then every violated limit."""
    avail = "unlimited" if res["cores_available"] is None else res["cores_available"]
    fit = "fits" if res["fits"] else "DOES NOT FIT"
    lines = [f"{res['profile']}: {res['cores_used']} cores used, lower bound {res['cores_lower_bound']} "
             f"({res.get('cores_over_lower_bound', 0)} over), {avail} available: {fit}"]
    lines.append(f"  {'layer':<8}{'cores':>6}{'neurons':>9}{'synapses':>10}{'memory bits':>13}{'max in axons':>14}"
                 f"{'max out axons':>15}  conv tile (rows x cols x channels)")
    for l in res["per_layer"]:
        t = l.get("tile")
        tile = f"  {t['rows']} x {t['cols']} x {t['channels']}, {l['tiles']} tiles" if t else ""
        lines.append(f"  {l['layer']:<8}{l['cores']:>6}{l['neurons']:>9}{l['synapses']:>10}{l['synaptic_memory_bits']:>13}"
                     f"{l['max_input_axons_per_core']:>14}{l['max_output_axons_per_core']:>15}{tile}")
    cores = res["per_core"]
    shown = sorted(cores, key=lambda c: -max((c[r]["percent"] or 0.0) for r in RESOURCES))[:max_cores]
    shown = sorted(shown, key=lambda c: c["core"])
    lines.append(f"  {'core':<6}{'layers':<16}" + "".join(f"{SHORT[r]:>12}" for r in RESOURCES) + "  (% of the core's limit)")
    for c in shown:
        lines.append(f"  {c['core']:<6}{c['layer'][:15]:<16}" + "".join(f"{_pct(c[r]):>12}" for r in RESOURCES))
    if len(cores) > len(shown):
        lines.append(f"  ... {len(cores) - len(shown)} more cores (all in report.json)")
    for v in res["violations"]:
        lines.append(f"  ! {v}")
    for n in res.get("notes", []):
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def plot_resources(res: dict, path: str, max_cores: int = 64) -> Optional[str]:
    """Write ``path`` (PNG): per-core utilisation bars by resource (% of the per-core limit),
    the 100 % limit drawn as a line; at most ``max_cores`` cores (the first ones).

    Returns:
        ``path``, or None when no resource of the profile has a limit (nothing to draw).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cores = res["per_core"][:max_cores]
    limited: List[str] = [r for r in RESOURCES if cores and cores[0][r]["limit"] is not None]
    if not limited:
        return None
    x = np.arange(len(cores))
    width = 0.8 / len(limited)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(cores) + 2), 4.0))
    for i, r in enumerate(limited):
        ax.bar(x + (i - (len(limited) - 1) / 2) * width, [c[r]["percent"] for c in cores], width, label=SHORT[r])
    ax.axhline(100.0, color="red", linestyle="--", linewidth=1, label="per-core limit")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{c['core']}\n{c['layer']}" for c in cores], fontsize=7)
    ax.set_ylabel("% of per-core limit")
    ax.set_xlabel("neuro core (layers)")
    fit = "fits" if res["fits"] else "does not fit"
    ax.set_title(f"{res['profile']}: {res['cores_used']} cores (lower bound {res['cores_lower_bound']}), {fit}")
    ax.legend(fontsize=8, loc="upper center", ncol=5, frameon=False)
    top = max([100.0] + [c[r]["percent"] for c in cores for r in limited])
    ax.set_ylim(0, top * 1.25)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
