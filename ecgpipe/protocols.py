"""The evaluation protocols: the only place a protocol's name, title and short label are spelt.

* ``stratified_10fold`` -- the paper's protocol: stratified k-fold over segments. Segments of one patient land in both
  training and test folds, so this measures recognising *known* patients' rhythms (optimistic).
* ``grouped_by_subject`` -- stratified group k-fold with every subject's segments in exactly one fold: no patient is
  in both training and test data. This is the number to expect on new patients.
* ``leave_one_database_out`` -- train on every database but one, test on that one (shared classes only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str  # a sentence for reports
    short: str  # a column label
    grouped: bool  # keeps subjects apart: the inner CV of a tuned classifier is grouped too


STRATIFIED = Protocol(
    "stratified_10fold",
    "Stratified {k}-fold over segments (the paper's protocol; {subjects} shared across folds)",
    "paper (stratified)",
    grouped=False,
)
GROUPED = Protocol(
    "grouped_by_subject",
    "Stratified group {k}-fold by {subject} (no {subject} in both training and test)",
    "grouped by subject",
    grouped=True,
)
LEAVE_ONE_DATABASE_OUT = Protocol(
    "leave_one_database_out",
    "Leave one database out (train on the others, test on it; shared classes only)",
    "leave one DB out",
    grouped=True,
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (STRATIFIED, GROUPED, LEAVE_ONE_DATABASE_OUT)}
PROTOCOL_NAMES = tuple(PROTOCOLS)


def protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOL_NAMES)}") from None


def title(name: str, n_folds: int | str = "k", subject: str = "patient", level: str = "window") -> str:
    """The protocol's title with its real number of folds; ``subject`` is what keeps segments together ("patient",
    or "record" for a dataset without patient ids); ``level`` 'record' when one scored row is a whole record."""
    if name not in PROTOCOLS:
        return name
    if level == "record" and name == STRATIFIED.name:  # folds over records: no record's windows are split
        return f"Stratified {n_folds}-fold over records (one row per record: no record in both training and test)"
    return PROTOCOLS[name].title.format(k=n_folds, subject=subject, subjects=f"{subject}s")


def short(name: str) -> str:
    return PROTOCOLS[name].short if name in PROTOCOLS else name
