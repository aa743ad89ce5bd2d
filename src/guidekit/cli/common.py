"""Argument types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse

import torch

from guidekit.errors import check


def _number(kind, name: str, lo=None, lo_open=False):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {text!r}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {text}")
        return v
    parse.__name__ = name
    return parse


def positive_int(name: str):
    """argparse type: integer >= 1."""
    return _number(int, name, 1)


def nonneg_int(name: str):
    """argparse type: integer >= 0."""
    return _number(int, name, 0)


def nonneg_float(name: str):
    """argparse type: number >= 0."""
    return _number(float, name, 0.0)


def positive_float(name: str):
    """argparse type: number > 0."""
    return _number(float, name, 0.0, lo_open=True)


def pick_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check(name == "cpu" or torch.cuda.is_available(), f"--device {name}: no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run (default: auto = cuda if available)")
