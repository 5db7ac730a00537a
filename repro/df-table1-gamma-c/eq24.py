"""Davis & Frank's eq. 24 on the pool's runs: the first-step BN gradient factor
γ/√(σ²_B + ε), per channel and layer, of each γ = 0.1 run divided by that of the γ = 1 run of
the same seed and learning rate (same conv weights, same first batch). Eq. 24 says the ratio
is 1 at every normalization layer after the first convolution. Reads the `gradient_factor`
diagnostics of OUT/results/*.json and prints a Markdown table (Python 3 standard library):

    python3 repro/df-table1-gamma-c/eq24.py POOL_OUT > repro/df-table1-gamma-c/eq24.md
"""
import json
import os
import statistics
import sys


def main():
    out = sys.argv[1]
    results = os.path.join(out, "results")
    rows, seeds = {}, {}
    for lr in ["0.1", "0.01"]:
        base, gamma = f"df-base-lr{lr}", f"df-gamma-lr{lr}"
        for name in sorted(os.listdir(results)):
            if not name.startswith(gamma + "-s"):
                continue
            index = name[len(gamma) + 2 : -len(".json")]
            other = os.path.join(results, f"{base}-s{index}.json")
            if not os.path.exists(other):
                continue
            g = json.load(open(os.path.join(results, name)))["diagnostics"]["layers"]
            b = json.load(open(other))["diagnostics"]["layers"]
            seeds.setdefault(lr, []).append(index)
            for lg, lb in zip(g, b):
                assert lg["path"] == lb["path"], (lg["path"], lb["path"])
                assert lg["gamma_init"][0] == 0.1 and lb["gamma_init"][0] == 1.0
                ratios = [x / y for x, y in zip(lg["gradient_factor"], lb["gradient_factor"])]
                rows.setdefault((lg["path"], lr), []).extend(ratios)
    print("| layer | lr | channels × seeds | min ratio | median | max ratio |")
    print("|---|---|---|---|---|---|")
    every = []
    for (path, lr), r in rows.items():
        every.extend(r)
        print(f"| {path} | {lr} | {len(r)} | {min(r):.4f} | {statistics.median(r):.4f} | {max(r):.4f} |")
    if every:
        print(
            f"\nAll layers, {len(every)} channel ratios (seeds {', '.join(f'lr {k}: {len(v)}' for k, v in seeds.items())}): "
            f"min {min(every):.4f}, median {statistics.median(every):.4f}, max {max(every):.4f}."
        )
    else:
        print("\nNo pair of γ = 0.1 and γ = 1 runs has finished yet.")


if __name__ == "__main__":
    main()
