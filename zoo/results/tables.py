#!/usr/bin/env python3
"""Rewrites the tables of zoo/RESULTS.md's d_model 256 section from zoo/results/d256/*/.

Each table is found by its header line and its rows are replaced; nothing else in the file
changes. Standard library only: `python3 zoo/results/tables.py` from anywhere.
"""
import glob
import json
import os
import statistics

ZOO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ZOO, "RESULTS.md")
BASELINES = ["t", "vtv", "vtp", "vts"]


def runs():
    """(name, spec, eval) of every committed d256 run, in name order."""
    for folder in sorted(glob.glob(os.path.join(ZOO, "results", "d256", "*", ""))):
        name = os.path.basename(folder.rstrip(os.sep))
        with open(os.path.join(folder, "spec.json")) as f:
            spec = json.load(f)
        with open(os.path.join(folder, "eval.json")) as f:
            report = json.load(f)
        yield name, spec, report


def lambda_d(spec):
    """The NVAE's λ_D, None for a baseline."""
    if spec["bottleneck"].get("kind") != "nvib":
        return None
    return spec["prior"]["config"]["lambda_d"]


def configuration(name, spec):
    """(table order, label) of a run's configuration: the NVAE by λ_D, then the baselines."""
    ld = lambda_d(spec)
    if ld is not None:
        return (0, ld), f"NVAE λ_D {ld:g}"
    model = name.split("-")[0]
    return (1, BASELINES.index(model)), model.upper()


def fixed(x, places):
    return "–" if x is None else f"{x:.{places}f}"


def mean_sd(xs, places):
    """Mean ± sample standard deviation (the value alone for one run, – for none)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fixed(xs[0], places)
    return f"{statistics.mean(xs):.{places}f} ± {statistics.stdev(xs):.{places}f}"


def differ(report, tau):
    """The share of interpolations at `tau` that differ from both ends."""
    taus = report.get("interpolation", {}).get("taus", [])
    return next((t["differ"] for t in taus if t["tau"] == tau), None)


def run_rows(all_runs):
    nvae, baselines = [], []
    for name, spec, e in all_runs:
        seed = spec["training"]["seed"]
        link = f"[`{name}`](results/d256/{name}/eval.json)"
        kl, stats = e.get("kl_terms", {}), e.get("stats", {})
        mid = e.get("interpolation", {}).get("f_ppl_mid")
        samples = f"{fixed(e.get('f_ppl'), 1)} | {fixed(e.get('r_ppl'), 0)} | {fixed(mid, 1)}"
        order, _ = configuration(name, spec)
        ld = lambda_d(spec)
        if ld is not None:
            nvae.append(((order, seed), f"| {link} | {ld:g} | {seed} | {e['ppl']:.3f} | {e['bleu']:.2f} "
                         f"| {stats['avg_num_vec']:.1f} | {stats['avg_prop_vec']:.3f} "
                         f"| {kl['kl_d']:.3f} | {kl['kl_g']:.3f} | {samples} |"))
        else:
            vectors = "–"
            if "avg_num_vec" in stats:
                vectors = f"{stats['avg_num_vec']:.1f}, {stats['avg_prop_vec']:.3f}"
            baselines.append(((order, seed), f"| {link} | {seed} | {e['ppl']:.3f} "
                              f"| {e['bleu']:.2f} | {fixed(kl.get('kl_g'), 2)} | {vectors} | {samples} |"))
    return [r for _, r in sorted(nvae)], [r for _, r in sorted(baselines)]


def configurations(all_runs):
    """The reports grouped by configuration, in table order, with their labels."""
    groups = {}
    for name, spec, e in all_runs:
        groups.setdefault(configuration(name, spec), []).append(e)
    return [(label, reports) for (_, label), reports in sorted(groups.items())]


def mean_rows(groups):
    return [f"| {label} | {len(es)} | {mean_sd([e['ppl'] for e in es], 3)} "
            f"| {mean_sd([e['bleu'] for e in es], 2)} "
            f"| {mean_sd([e.get('stats', {}).get('avg_prop_vec') for e in es], 3)} |"
            for label, es in groups]


def sample_rows(groups):
    rows = []
    for label, es in groups:
        mid = [e.get("interpolation", {}).get("f_ppl_mid") for e in es]
        rows.append(f"| {label} | {len(es)} | {mean_sd([e.get('f_ppl') for e in es], 1)} "
                    f"| {mean_sd([e.get('r_ppl') for e in es], 0)} | {mean_sd(mid, 1)} "
                    + " ".join(f"| {mean_sd([differ(e, t) for e in es], 3)}" for t in (0.25, 0.5, 0.75))
                    + " |")
    return rows


def replace(lines, header, rows):
    """Replaces the rows of the table whose header line starts with `header`."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[start:end] = rows


def main():
    all_runs = list(runs())
    nvae, baselines = run_rows(all_runs)
    groups = configurations(all_runs)
    with open(RESULTS) as f:
        lines = f.read().split("\n")
    replace(lines, "| run | λ_D | seed | PPL | BLEU | avg_num_vec", nvae)
    replace(lines, "| run | seed | PPL | BLEU | KL_G | vectors", baselines)
    replace(lines, "| configuration | seeds | PPL | BLEU | vectors kept |", mean_rows(groups))
    replace(lines, "| configuration | seeds | F-PPL | R-PPL | F-PPL τ=½ |", sample_rows(groups))
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines))
    print(f"{len(nvae)} NVAE runs, {len(baselines)} baseline runs, {len(groups)} configurations")


if __name__ == "__main__":
    main()
