"""`guidekit zoo list|path`: the shipped Fashion-MNIST models, loadable by name (e.g. --model fmnist-cfg)."""

from __future__ import annotations

from guidekit.cli.common import command
from guidekit.errors import check


ZOO_HELP = """Models trained with guidekit's own commands on full Fashion-MNIST and shipped in the package (fp16
safetensors). Pass a name wherever a model, classifier or ControlNet folder is expected; docs/models.md has their
training commands."""


def register(sub) -> None:
    p = command(sub, "zoo", "list the shipped models (usable by name wherever a model path goes)", ZOO_HELP)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="name, kind, size and description of every shipped model")
    ls.add_argument("--verbose", "-v", action="store_true", help="also print training command, compute and metrics")
    ls.set_defaults(run=run_list)
    pt = verbs.add_parser("path", help="print the folder of a shipped model")
    pt.add_argument("name", help="zoo name, e.g. fmnist-cfg")
    pt.set_defaults(run=run_path)


def run_list(args) -> None:
    from guidekit import zoo

    reg = zoo.registry()
    print(f"{'name':<20} {'kind':<11} {'MB':>5}  description")
    for name in zoo.names():
        e = reg[name]
        print(f"{name:<20} {e['kind']:<11} {zoo.size_mb(name):>5.1f}  {e['description']}")
        if args.verbose:
            for key in ("base", "condition", "command", "compute", "metrics"):
                if key in e:
                    print(f"{'':<20} {key}: {e[key]}")


def run_path(args) -> None:
    from guidekit import zoo

    check(args.name in zoo.registry(), f"no zoo model named {args.name!r}; shipped: {', '.join(zoo.names())}")
    print(zoo.WEIGHTS / args.name)
