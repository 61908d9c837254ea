"""Command-line values for ``ecgpipe predict`` and ``ecgpipe evaluate``: window counts, where records are predicted
(``--jobs`` or ``--scheduler``), and how each endpoint of a model is called (``--endpoint-smooth``,
``--endpoint-penalty``; default: the model's own config)."""

from __future__ import annotations

import argparse
import math
import sys


def positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def scheduler_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help=help)


def one_place(args) -> bool:
    """``--jobs`` (local processes) or ``--scheduler`` (a cluster's workers), not both; False after saying so."""
    if args.scheduler and args.jobs > 1:
        print("ecgpipe: --jobs and --scheduler: give one (--jobs: processes on this machine; --scheduler: every thread of "
              "the cluster's workers)", file=sys.stderr)
        return False
    return True


def odd_width(text: str) -> int:
    """A centred vote's width in windows: 1 (no smoothing), 3, 5, ... (an even width has no centre)."""
    value = positive_int(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be an odd number of windows (1 = no smoothing), got {text}")
    return value


def endpoint_width(text: str) -> tuple[str | None, int]:
    """``W`` (every endpoint) or ``NAME=W`` (one endpoint) for --endpoint-smooth."""
    name, _, width = text.rpartition("=")
    return (name or None), odd_width(width)


def endpoint_penalty(text: str) -> tuple[str | None, float]:
    """``P`` (every endpoint) or ``NAME=P`` (one endpoint) for --endpoint-penalty: a finite number >= 0."""
    name, _, value = text.rpartition("=")
    try:
        penalty = float(value)
    except ValueError:
        penalty = -1.0
    if not (math.isfinite(penalty) and penalty >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (in detector score units), got {value!r}")
    return (name or None), penalty


def endpoint_options(parser: argparse.ArgumentParser) -> None:
    """predict's and evaluate's options for how each endpoint of the model is called (README 'Clinical endpoints')."""
    parser.add_argument("--endpoint-smooth", type=endpoint_width, action="append", default=[], metavar="[NAME=]W",
                        help="windows over which each endpoint's detector score is averaged (shockable = VT + VF, AF): W "
                             "for every endpoint, NAME=W for one; repeatable (default: the model's [endpoints.<name>] "
                             "decision_windows, 15 = 30 s of 2-s windows unless its config set another)")
    parser.add_argument("--endpoint-penalty", type=endpoint_penalty, action="append", default=[], metavar="[NAME=]P",
                        help="change penalty of each endpoint's calls, in the detector's score units: an episode starts "
                             "or ends only where the averaged scores pay P for it (0 = the average's sign); P or NAME=P, "
                             "repeatable (default: the model's change_penalty, 4 unless its config set another, measured "
                             "on paper4's SVC margins); models without detectors use the pooled vote, no penalty")


def per_endpoint(option: str, given: list[tuple[str | None, float]], endpoints, default: dict):
    """Each endpoint's value of a repeatable ``[NAME=]V`` option: its own, else the last value for all, else its
    default (the model's config); None (and a message) when it names an endpoint the model lacks."""
    named = {name: value for name, value in given if name is not None}
    unknown = sorted(set(named) - set(endpoints))
    if unknown:
        print(f"ecgpipe: {option}: the model has no endpoint {', '.join(unknown)} "
              f"(its endpoints: {', '.join(endpoints) or 'none'})", file=sys.stderr)
        return None
    every = [value for name, value in given if name is None]
    return {name: named.get(name, every[-1] if every else default[name]) for name in endpoints}


def endpoint_decisions(args, model) -> dict | None:
    """How predict and evaluate call each endpoint of the model: --endpoint-smooth and --endpoint-penalty where given,
    else the model's config (``decision_windows``, ``change_penalty``); None when an option names no such endpoint."""
    from ecgpipe.predict import EndpointDecision

    endpoints = model.config.endpoints
    widths = per_endpoint("--endpoint-smooth", args.endpoint_smooth, endpoints,
                          {name: e.decision_windows for name, e in endpoints.items()})
    penalties = per_endpoint("--endpoint-penalty", args.endpoint_penalty, endpoints,
                             {name: e.change_penalty for name, e in endpoints.items()})
    if widths is None or penalties is None:
        return None
    return {name: EndpointDecision(widths[name], penalties[name]) for name in endpoints}
