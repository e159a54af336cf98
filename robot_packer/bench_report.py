"""Reports of ``robot-packer bench``: per solver/N summaries, markdown tables and plots.

The seed paper's reported points (:data:`PAPER_PASSK`) are overlaid on every success plot.
"""
from __future__ import annotations

import io
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from robot_packer.bench import BenchConfig


# Diffusion-CCSP (Yang et al., CoRL 2023), results figure (success rate vs number of objects),
# "3D packing with robot" task, read off the figure as quoted in issue 6: raw-sample pass@1 and
# pass@10 in %, per object count.
PAPER_PASSK = {"pack3d": {"n": (3, 4, 5, 6), "pass@1": (65, 50, 33, 17),
                          "pass@10": (97, 95, 87, 76)},
               "triangles2d": {"n": (2, 3, 4, 5), "pass@1": (57, 38, 27, 3),
                               "pass@10": (93, 89, 83, 25)},
               "qualitative2d": {"n": (2, 3, 4, 5), "pass@1": (65, 45, 19, 8),
                                 "pass@10": (97, 93, 75, 36)},
               "stack2d": {"n": (4, 5, 6, 7), "pass@1": (30, 20, 8, 7),
                           "pass@10": (85, 69, 50, 42)}}


def summarize(runs: list[dict], solvers, counts, passk: list[dict] | None = None) -> list[dict]:
    """Per solver and N: success rate, median/p95 time, most frequent failure reasons; on the
    diffusion rows also ``pass_at_1``/``pass_at_10`` of raw samples where ``passk`` has them."""
    rows = []
    for name in solvers:
        for n in counts:
            sel = [r for r in runs if r["solver"] == name and r["n"] == n]
            if not sel:
                continue
            times = np.array([r["time_s"] for r in sel])
            cpu = [r["cpu_s"] for r in sel if r.get("cpu_s") is not None]
            reasons = Counter(x for r in sel for x in r["reasons"]).most_common(3)
            rows.append({"solver": name, "n": n, "runs": len(sel),
                         "solved": sum(r["success"] for r in sel),
                         "success_rate": round(sum(r["success"] for r in sel) / len(sel), 4),
                         "median_time_s": round(float(np.median(times)), 3),
                         "p95_time_s": round(float(np.percentile(times, 95)), 3),
                         "median_cpu_s": round(float(np.median(cpu)), 3) if cpu else None,
                         "failure_reasons": [[r, c] for r, c in reasons]})
            raw = [p for p in passk or [] if p["n"] == n]
            if name == "diffusion" and raw:
                rows[-1] |= {"pass_at_1": round(float(np.mean([p["pass@1"] for p in raw])), 4),
                             "pass_at_10": round(float(np.mean([p["pass@10"] for p in raw])), 4),
                             "passk_problems": len(raw)}
    return rows


def format_table(summary: list[dict]) -> str:
    """Markdown table: one row per solver and N (pass@k columns when any row has them)."""
    raw = any("pass_at_1" in r for r in summary)
    head = ["solver", "N", "success", "median s", "p95 s", "median CPU s",
            "most frequent failure reasons"] + (["diffusion pass@1", "pass@10"] if raw else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary:
        reasons = ", ".join(f"{name} ({c})" for name, c in r["failure_reasons"]) or "—"
        passk = (f" {_pct(r.get('pass_at_1'))} | {_pct(r.get('pass_at_10'))} |" if raw else "")
        lines.append(f"| {r['solver']} | {r['n']} | {100 * r['success_rate']:.0f}% "
                     f"({r['solved']}/{r['runs']}) | {r['median_time_s']:.2f} | "
                     f"{r['p95_time_s']:.2f} | {_fmt(r.get('median_cpu_s'))} | {reasons} |"
                     + passk)
    return "\n".join(lines)


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def format_markdown(meta: dict, summary: list[dict]) -> str:
    check = "exact checker + PyBullet verification" if meta["verify"] else "exact checker only"
    raw = (" Diffusion pass@1 / pass@10: raw samples (one batch of 10, no refinement or "
           "ranking), exact checker." if any("pass_at_1" in r for r in summary) else "")
    return (f"# Benchmark: {meta['domain']} ({meta['tier']} tier)\n\n"
            f"{meta['problems']} problems per N, budget {meta['budget_s']} s (wall clock) per "
            f"solve, times are wall clock per solve (CPU: this process's CPU time), success = "
            f"{check}.{raw} Device {meta['device']}, {meta['threads']} torch thread(s), "
            f"{meta['cpu_count']} CPUs, commit `{meta['git_commit']}`, {meta['date_utc']}.\n\n"
            f"Reproduce: `{meta['command']}`\n\n"
            f"Re-run one case: `robot-packer solve scenes/<case>.yaml --out plan.json "
            f"--solver <solver> --seed {meta['seed']} --time-budget {meta['budget_s']}`\n\n"
            + format_table(summary) + "\n\n![results](results.png)\n")


def plot(summary: list[dict], runs: list[dict], cfg: "BenchConfig") -> bytes:
    """PNG bytes: success rate vs N per solver, and solve-time box plots per solver and N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in cfg.solvers:
        rows = [r for r in summary if r["solver"] == name]
        ax1.plot([r["n"] for r in rows], [100 * r["success_rate"] for r in rows], "o-", label=name)
    _plot_passk(ax1, summary, cfg.domain)
    ax1.set(xlabel="objects N", ylabel="success rate (%)", ylim=(-2, 102),
            title=f"success ({cfg.tier}, {cfg.budget:g} s budget)")
    ax1.legend(fontsize="small")
    width = 0.8 / max(1, len(cfg.solvers))
    for s, name in enumerate(cfg.solvers):
        data = [[r["time_s"] for r in runs if r["solver"] == name and r["n"] == n] or [np.nan]
                for n in cfg.objects]
        pos = [i + (s - (len(cfg.solvers) - 1) / 2) * width for i in range(len(cfg.objects))]
        bp = ax2.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                         showfliers=False)
        for box in bp["boxes"]:
            box.set_facecolor(f"C{s}")
        ax2.plot([], [], color=f"C{s}", label=name)
    ax2.set_xticks(range(len(cfg.objects)), [str(n) for n in cfg.objects])
    ax2.set(xlabel="objects N", ylabel="solve time (s)", title="solve time")
    ax2.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plot_passk(ax, summary: list[dict], domain: str) -> None:
    """Our raw-sample pass@1/@10 (when measured) and the seed paper's, on the success axes."""
    ours = [r for r in summary if "pass_at_10" in r]
    if ours:
        ax.plot([r["n"] for r in ours], [100 * r["pass_at_10"] for r in ours], "v--",
                color="C9", label="diffusion raw pass@10")
        ax.plot([r["n"] for r in ours], [100 * r["pass_at_1"] for r in ours], "^:",
                color="C9", label="diffusion raw pass@1")
    paper = PAPER_PASSK.get(domain)
    if paper:
        ax.plot(paper["n"], paper["pass@10"], "k*", markersize=9,
                label="Diffusion-CCSP paper (pass@10)")
        ax.plot(paper["n"], paper["pass@1"], "kx", markersize=7,
                label="Diffusion-CCSP paper (pass@1)")
