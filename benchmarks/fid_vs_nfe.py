"""One FID-vs-NFE plot from several `guidekit sweep steps` folders (e.g. rows sampled on different machines).

Each folder holds <sampler>/results.csv and sweep.json per sampler. Rows are grouped by (sampler, spacing, machine),
rows of the same group from different folders are merged, a row sampled on two machines is drawn from the first
(both are printed), and the one DDPM row is drawn as the reference line with
its ±10 % band. Every folder must have the same n, seed and w, so that every row scores the same labels and seeds.

    python benchmarks/fid_vs_nfe.py --out docs/img/steps/fid_vs_nfe_n2000.png \\
        "H100=runs/gpu4/steps-table" "CPU=runs/cpu-steps/n2000-trailing" "CPU=runs/cpu-steps/n2000-logsnr"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guidekit.errors import GuidekitError, check
from guidekit.experiments.sweep import read_rows

NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp-2m": "DPM-Solver++(2M)", "dpmpp-2m-sde": "SDE-DPM-Solver++(2M)"}
COLOURS = {"ddim": "tab:green", "dpmpp-2m": "tab:orange", "dpmpp-2m-sde": "tab:blue"}


def read_folder(folder: Path) -> list[tuple[dict, list[dict]]]:
    """(sweep.json, rows of results.csv) for every sampler subfolder of one sweep folder."""
    subs = sorted(p.parent for p in folder.glob("*/results.csv"))
    check(bool(subs), f"{folder} has no <sampler>/results.csv: give the --out folder of `guidekit sweep steps`")
    found = []
    for sub in subs:
        check((sub / "sweep.json").is_file(), f"{sub} has results.csv but no sweep.json: is it a steps sweep folder?")
        found.append((json.loads((sub / "sweep.json").read_text()), read_rows(sub / "results.csv")))
    return found


def collect(sources: list[tuple[str, Path]]) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Series for plot_steps (the DDPM row first, labelled as the baseline) and a style per series."""
    groups: dict[tuple[str, str, str], dict[float, dict]] = {}
    seen: dict[tuple[str, str, float], tuple[str, dict]] = {}
    first = None
    for machine, folder in sources:
        for spec, rows in read_folder(folder):
            same = {k: spec.get(k) for k in ("n", "seed", "w")}
            first = first or (same, folder)
            check(same == first[0], f"{folder} was sampled with {same} but {first[1]} with {first[0]}: "
                                    "only rows with the same n, seed and w score the same images")
            key = (spec["sampler"], spec["settings"]["spacing"], machine)
            for r in rows:
                row = (key[0], key[1], r["nfe"])
                if seen.setdefault(row, (machine, r))[0] != machine:  # drawn once, from the first machine
                    m, r0 = seen[row]
                    print(f"{key[0]} {key[1]} NFE {r['nfe']:g}: FID {r0['fid']:.2f} on {m}, {r['fid']:.2f} on "
                          f"{machine} (not drawn)")
                    continue
                groups.setdefault(key, {})[r["nfe"]] = r
    base = [k for k in groups if k[0] == "ddpm"]
    check(len(base) == 1, f"need exactly one DDPM reference row among the folders, found {len(base)}")
    machines = list(dict.fromkeys(m for m, _ in sources))
    series, styles = {}, {}
    b = base[0]
    series[f"DDPM {b[2]} (baseline)"] = list(groups.pop(b).values())
    for (sampler, spacing, machine), by_nfe in sorted(groups.items()):
        label = f"{NAMES.get(sampler, sampler)}, {spacing} ({machine})"
        series[label] = [by_nfe[k] for k in sorted(by_nfe)]
        hollow = machines.index(machine) % 2 == 1
        styles[label] = {"marker": "s" if spacing == "logsnr" else "o", "linestyle": "--" if hollow else "-",
                         "color": COLOURS.get(sampler), "markerfacecolor": "white" if hollow else None}
    return series, styles


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="MACHINE=FOLDER", help="a steps sweep folder and where it ran")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default="Quality vs sampling steps")
    args = p.parse_args(argv)
    from guidekit.experiments.steps import plot_steps

    try:
        sources = []
        for s in args.sources:
            machine, sep, folder = s.partition("=")
            check(bool(sep and machine and folder), f"{s!r} is not MACHINE=FOLDER, e.g. H100=runs/steps")
            sources.append((machine, Path(folder)))
        series, styles = collect(sources)
    except GuidekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for label, rows in series.items():
        print(f"{label}: " + ", ".join(f"NFE {r['nfe']:g} FID {r['fid']:.2f}" for r in rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot_steps(series, Path(args.out), styles=styles, title=args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
