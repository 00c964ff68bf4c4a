#!/usr/bin/env python3
"""KL-vs-recompute curve of fixed recompute ratios against the adaptive budget.

Reads `a3kv eval` results JSON (one file, or the shards of one run) whose methods are
`full`, fixed ratios (`...;r=0.05`, ...) and adaptive budgets (`...;r=auto;mass=M`), and
prints a Markdown table (mean first-token KL(full || method) with its standard error, first
token = full, mean document rows recomputed, mean ratio the adaptive budget chose, k/(T-Q))
and writes a PNG plot of mean KL against mean recompute.

    scripts/plot-auto-budget.py runs/auto/shard0.json runs/auto/shard20.json \
        --out docs/results/auto-budget-kl-vs-recompute.png

Needs matplotlib (`python3 -m pip install matplotlib`) for the plot; the table needs nothing.
"""

import argparse
import json
import math
import sys
from collections import OrderedDict


def load_runs(paths):
    runs, items, model = [], set(), None
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        model = model or d.get("model", {})
        runs.extend(d["runs"])
        items.update(r["item_id"] for r in d["runs"])
    return runs, len(items), model


def summarise(runs):
    by = OrderedDict()
    for r in runs:
        if r.get("error") or r["method_name"] == "full":
            continue
        by.setdefault(r["method"], []).append(r)
    rows = []
    for method, rs in by.items():
        kls = [r["kl_vs_full"] for r in rs if r.get("kl_vs_full") is not None]
        if not kls:
            continue
        n = len(kls)
        mean = sum(kls) / n
        sd = math.sqrt(sum((k - mean) ** 2 for k in kls) / (n - 1)) if n > 1 else 0.0
        params = rs[0].get("method_params") or {}
        ratios = [r["recompute_ratio"] for r in rs if r.get("recompute_ratio") is not None]
        chosen = [r["recompute_ratio_chosen"] for r in rs if r.get("recompute_ratio_chosen") is not None]
        agree = [r["first_token_agrees"] for r in rs if r.get("first_token_agrees") is not None]
        auto = params.get("recompute_ratio") == "auto"
        rows.append({
            "method": method,
            "auto": auto,
            "label": (f"auto, mass {params.get('auto_mass')}" if auto
                      else f"r = {params.get('recompute_ratio')}"),
            "n": n,
            "kl": mean,
            "se": sd / math.sqrt(n) if n > 1 else 0.0,
            "median": sorted(kls)[n // 2] if n % 2 else sum(sorted(kls)[n // 2 - 1:n // 2 + 1]) / 2,
            "agree": sum(agree) / len(agree) if agree else float("nan"),
            "doc_ratio": sum(ratios) / len(ratios) if ratios else float("nan"),
            "chosen": sum(chosen) / len(chosen) if chosen else None,
            "chosen_min": min(chosen) if chosen else None,
            "chosen_max": max(chosen) if chosen else None,
        })
    return rows


def paired(runs, rows):
    """Each adaptive budget against the fixed ratio nearest in mean recompute, item by item."""
    kl = {}
    for r in runs:
        if r.get("kl_vs_full") is not None:
            kl.setdefault(r["method"], {})[r["item_id"]] = r["kl_vs_full"]
    fixed = [r for r in rows if not r["auto"]]
    out = []
    for a in (r for r in rows if r["auto"]):
        if not fixed:
            break
        f = min(fixed, key=lambda x: abs(x["doc_ratio"] - a["doc_ratio"]))
        common = sorted(set(kl[a["method"]]) & set(kl[f["method"]]))
        d = [kl[a["method"]][i] - kl[f["method"]][i] for i in common]
        if len(d) < 2:
            continue
        mean = sum(d) / len(d)
        se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))
        wins = sum(x < 0 for x in d)
        out.append(f"- {a['label']} (recomputes {a['doc_ratio']:.3f}) vs {f['label']} "
                   f"({f['doc_ratio']:.3f}): paired KL difference {mean:+.4f} ± {se:.4f}, "
                   f"lower KL on {wins}/{len(d)} items")
    return "\n".join(out)


def table(rows):
    out = ["| budget | items | mean KL(full‖m) ± s.e. | median KL | first token = full "
           "| document rows recomputed (mean) | ratio chosen k/(T−Q): mean (min–max) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        chosen = (f"{r['chosen']:.3f} ({r['chosen_min']:.3f}–{r['chosen_max']:.3f})"
                  if r["chosen"] is not None else "–")
        out.append(f"| {r['label']} | {r['n']} | {r['kl']:.3f} ± {r['se']:.3f} | {r['median']:.3f} "
                   f"| {100 * r['agree']:.1f}% | {r['doc_ratio']:.3f} | {chosen} |")
    return "\n".join(out)


def plot(rows, out, n_items, model_name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    fixed = sorted((r for r in rows if not r["auto"]), key=lambda r: r["doc_ratio"])
    auto = sorted((r for r in rows if r["auto"]), key=lambda r: r["doc_ratio"])
    for group, style, name, dy in ((fixed, "o-", "fixed ratio", 6), (auto, "s--", "auto (mass target)", -14)):
        if not group:
            continue
        xs = [r["doc_ratio"] for r in group]
        ys = [r["kl"] for r in group]
        es = [r["se"] for r in group]
        ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=name)
        for r in group:
            tag = r["label"].replace("auto, mass ", "m=").replace("r = ", "r=")
            ax.annotate(tag, (r["doc_ratio"], r["kl"]), textcoords="offset points",
                        xytext=(5, dy), fontsize=8)
    ax.set_xlabel("document rows recomputed (mean share)")
    ax.set_ylabel("mean first-token KL(full ‖ method), nats")
    ax.set_title(f"A^3 hybrid (w = 0.5): KL vs recompute, HotpotQA, {n_items} items, {model_name}",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="a3kv eval results JSON (one run or its shards)")
    ap.add_argument("--out", help="PNG to write (table only without it)")
    a = ap.parse_args()
    runs, n_items, model = load_runs(a.results)
    rows = summarise(runs)
    if not rows:
        sys.exit("no method runs with a KL to full in the input")
    print(table(rows))
    print()
    print(paired(runs, rows))
    if a.out:
        name = str(model.get("source", model.get("file", "model"))).split("/")[-1]
        plot(rows, a.out, n_items, name.replace(".gguf", ""))
        print(f"\nplot written to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
