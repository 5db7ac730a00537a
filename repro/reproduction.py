"""Writes REPRODUCTION.md at the repository root from the claim folders of repro/: one row per
`[[claim]]` of each folder whose report was committed (report.json and runs.csv, written by
`bnlab report POOL --claims repro/FOLDER/small.toml --no-svg --out repro/FOLDER`), and one
"not run" row with the estimated cost (the `## Verdict` line of its README) for the others.

    python3 repro/reproduction.py        (from the repository root; Python 3 standard library)
"""
import csv
import json
import os
import re
import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPRO = os.path.join(ROOT, "repro")
NOT_CLAIMS = {"pools", "crosscheck"}


def title(folder):
    with open(os.path.join(REPRO, folder, "README.md")) as f:
        return f.readline().lstrip("# ").strip()


def verdict_line(folder):
    """The first line of the README's `## Verdict` section."""
    text = open(os.path.join(REPRO, folder, "README.md")).read()
    m = re.search(r"^## Verdict\s*\n+(.+)$", text, re.M)
    return m.group(1).strip() if m else "not run"


def cell_means(folder):
    """(configuration, scheme) → (mean, n) over the finished runs of runs.csv, test split."""
    values = {}
    with open(os.path.join(REPRO, folder, "runs.csv")) as f:
        for row in csv.DictReader(f):
            if row["status"] == "finished" and row.get("split", "test") == "test" and row["accuracy"]:
                key = (row["configuration"], row["scheme"])
                values.setdefault(key, []).append(float(row["accuracy"]))
    return {k: (statistics.mean(v), len(v)) for k, v in values.items()}


def sides(claim):
    c = claim["claim"]
    pick = lambda s: s or c["scheme"]
    out = [(c["a"], pick(c["a_scheme"])), (c["b"], pick(c["b_scheme"]))]
    if c.get("c"):
        out += [(c["c"], pick(c["c_scheme"])), (c["d"], pick(c["d_scheme"]))]
    return out


def figure(claim, means):
    # the report's own side means (over the compared runs) where it has them: they cover
    # per-epoch validation schemes, which runs.csv (test rows) does not
    reported = claim.get("sides") or []
    parts = []
    for i, (conf, scheme) in enumerate(sides(claim)):
        m = (reported[i]["mean"],) if i < len(reported) else means.get((conf, scheme))
        parts.append(f"{conf}:{scheme} {m[0]:.2f}" if m else f"{conf}:{scheme} –")
    return " vs ".join(parts)


def row(folder, claim, means):
    c, d = claim["claim"], claim["difference"]
    link = f"[{folder}](repro/{folder}/report.md) `{c['name']}`"
    paper = (c.get("paper") or "–").replace("|", "/")
    if d is None:
        why = (claim.get("error") or "no difference").replace("|", "/")
        return f"| {link} | {paper} | {figure(claim, means)} | – | – | – | not measured: {why} |"
    ci = f"{d['mean']:+.2f} [{d['t_ci']['low']:+.2f}, {d['t_ci']['high']:+.2f}] (n = {d['n']})"
    if d.get("tost"):
        # an equivalence claim is judged by TOST within ±margin
        p_text = f"TOST {d['tost']['p']:.2g} (±{d['tost']['margin']:g})"
    else:
        p = d["t_p"]["two_sided"]
        adj = claim.get("p_adjusted")
        p_text = f"{p:.2g}" + (f" (adj. {adj:.2g})" if adj is not None and abs(adj - p) > 1e-12 else "")
    verdict = (claim.get("verdict") or "no expectation (a plain comparison)").replace("-", " ")
    return f"| {link} | {paper} | {figure(claim, means)} | {ci} | {p_text} | {d['mde']:.2f} | **{verdict}** |"


def main():
    folders = sorted(
        f for f in os.listdir(REPRO)
        if os.path.isdir(os.path.join(REPRO, f)) and f not in NOT_CLAIMS
    )
    measured, pending = [], []
    for folder in folders:
        report = os.path.join(REPRO, folder, "report.json")
        if os.path.exists(report):
            r = json.load(open(report))
            means = cell_means(folder)
            runs = r["runs"]
            status = f"{runs['present']} of {runs['expected']} runs"
            measured.append((folder, status, [row(folder, c, means) for c in r["claims"]]))
        else:
            pending.append(f"| [{folder}](repro/{folder}/README.md) | {title(folder)} | {verdict_line(folder)} |")
    out = [
        "# Reproduction of the papers' claims",
        "",
        "Written by `python3 repro/reproduction.py` from the claim folders of [repro/](repro/):",
        "each folder holds the paper's setup (`full.toml`), the small version run here",
        "(`small.toml`: 2 CPU cores, real Fashion-MNIST, 8 seeds per arm), a README with the",
        "paper's numbers and what the small version changes, and, once measured, its report.",
        "",
        "Figures are test accuracies in % (mean over seeds); differences are paired by seed, with",
        "Student's t 95 % interval, the two-sided paired t p (adjusted by Holm across a folder's",
        "claims where it has more than 3; for an equivalence claim, the TOST p within ±margin) and",
        "the minimum detectable effect (80 % power). Verdicts:",
        "**reproduced** (significant in the paper's direction), **reversed** (significant the other",
        "way), **not reproduced** (neither, with 80 % power for the paper's effect),",
        "**underpowered** (neither, without that power). The papers' numbers come from ImageNet or",
        "CIFAR at full scale; a small-scale effect of another size is not a contradiction.",
        "",
        "## Measured",
        "",
        "| claim | paper's figure | bnlab small-scale figure (accuracy %) | difference [95 % CI] | p | MDE | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for folder, status, rows in measured:
        out.extend(rows)
    out += ["", "Runs behind each measured folder: " + "; ".join(f"{f}: {s}" for f, s, _ in measured) + ".", ""]
    out += ["## Not run yet", "", "| claim | paper's experiment | status and estimated cost |", "|---|---|---|"]
    out += pending
    out.append("")
    with open(os.path.join(ROOT, "REPRODUCTION.md.tmp"), "w") as f:
        f.write("\n".join(out))
    os.replace(os.path.join(ROOT, "REPRODUCTION.md.tmp"), os.path.join(ROOT, "REPRODUCTION.md"))


if __name__ == "__main__":
    main()
