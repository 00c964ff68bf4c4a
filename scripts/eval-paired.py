#!/usr/bin/env python3
"""Per-method first-token KL(full||method) of an `a3kv eval` JSON with standard errors, and
paired comparisons against a baseline method (default cacheblend): the share of items where the
method's KL is lower, and the mean paired difference with its standard error.

Usage: scripts/eval-paired.py RESULTS.json [MORE.json ...] [--baseline METHOD_PREFIX] [--markdown]
Methods are matched by the `method` label the eval writes (e.g. `cacheblend(recompute_ratio=0.15)`);
--baseline takes a prefix of it. Items where either run failed are left out of a pair.
Several files (gzipped or not) are joined by item: a new method measured in one run is paired with
a baseline stored from another run of the same items. Their `full` runs must give the same first
token on every shared item (the KLs would otherwise be against different references); a method
measured in two files keeps the first file's runs.
"""
import argparse
import gzip
import json
import math
import statistics


def mean_se(xs):
    m = statistics.fmean(xs)
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return m, se


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("--baseline", default="cacheblend")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    by, order, full_first = {}, [], {}
    for path in a.results:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            d = json.load(f)
        seen = set(by)
        for r in d["runs"]:
            if r["method"] == "full" and r.get("error") is None:
                token = (r.get("output_ids") or [None])[0]
                old = full_first.setdefault(r["item_id"], token)
                if old != token:
                    raise SystemExit(f"{path}: full's first token on item {r['item_id']} "
                                     f"differs from an earlier file's ({token!r} vs {old!r})")
            if r["method"] in seen:
                continue
            if r.get("error") is None and r.get("kl_vs_full") is not None:
                by.setdefault(r["method"], {})[r["item_id"]] = r
        order += [s["method"] for s in d["summary"] if s["method"] not in order]
    base = [m for m in by if m.startswith(a.baseline)]
    if not base:
        raise SystemExit(f"no method starting with {a.baseline!r}: {sorted(by)}")
    base = by[base[0]]
    head = ["method", "items", "mean KL ± s.e.", "median KL", "first token = full",
            "answer = full", "answer F1 vs full", f"lower KL than {a.baseline}",
            f"Δ vs {a.baseline} ± s.e."]
    rows = []
    for method in order:
        runs = by.get(method)
        if not runs:
            continue
        kl = [r["kl_vs_full"] for r in runs.values()]
        m, se = mean_se(kl)
        agree = statistics.fmean(1.0 if r["first_token_agrees"] else 0.0 for r in runs.values())
        same = statistics.fmean(1.0 if r["answer_matches_full"] else 0.0 for r in runs.values())
        f1 = statistics.fmean(r["answer_f1_vs_full"] for r in runs.values())
        common = [i for i in runs if i in base]
        diff = [runs[i]["kl_vs_full"] - base[i]["kl_vs_full"] for i in common]
        if runs is base or not diff:
            win, delta = "–", "–"
        else:
            win = f"{100 * statistics.fmean(1.0 if x < 0 else 0.0 for x in diff):.1f}%"
            dm, ds = mean_se(diff)
            delta = f"{dm:+.4f} ± {ds:.4f}"
        rows.append([method, str(len(kl)), f"{m:.3f} ± {se:.3f}", f"{statistics.median(kl):.3f}",
                     f"{100 * agree:.1f}%", f"{100 * same:.1f}%", f"{f1:.3f}", win, delta])
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(x) for x in col) for col in zip(head, *rows)]
        for r in [head] + rows:
            print("  ".join(x.ljust(n) for x, n in zip(r, w)))


if __name__ == "__main__":
    main()
