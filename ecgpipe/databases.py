"""Registry of the PhysioNet databases ecgpipe knows: sampling rate, download slug, and which records share a subject.

Other databases work too: give their ``fs`` (and optionally ``physionet`` slug) in the config.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KnownDatabase:
    name: str
    title: str
    physionet: str  # slug for wfdb.dl_database, "<db>/<version>"
    fs: float
    # record -> canonical record of the same person; subject ids drive the leakage-free (grouped) protocol.
    same_subject: dict[str, str] = field(default_factory=dict)


KNOWN_DATABASES: dict[str, KnownDatabase] = {
    "mitdb": KnownDatabase(
        name="mitdb",
        title="MIT-BIH Arrhythmia Database",
        physionet="mitdb/1.0.0",
        fs=360.0,
        # PhysioNet's mitdb description: records 201 and 202 came from the same male subject.
        same_subject={"202": "201"},
    ),
    "vfdb": KnownDatabase(
        name="vfdb",
        title="MIT-BIH Malignant Ventricular Ectopy Database",
        physionet="vfdb/1.0.0",
        fs=250.0,
    ),
}


def canonical_record(record: str, same_subject: dict[str, str]) -> str:
    """The end of ``record``'s chain in ``same_subject``: one's own ``201 -> "nstdb:201x"`` beside the registry's
    ``202 -> 201`` takes 202 there too (one step left 202 at ``mitdb:201``, one patient on both sides of a grouped
    fold); records that map to each other in a ring (``201 -> 202`` of one's own beside ``202 -> 201``) are one
    subject, the first name of the ring. Followed per record, as long as its chain: the mapping may hold a corpus."""
    path, node = [], record
    while node in same_subject and node not in path:
        path.append(node)
        node = same_subject[node]
    return min(path[path.index(node):]) if node in path else node


def subject_id(database: str, record: str, same_subject: dict[str, str], rule: str = "record",
               pattern: str | None = None, csv_subject: str | None = None) -> str:
    """Subject id ``"<db>:<subject>"``: the record mapped by ``same_subject`` to its canonical record (or to another
    database's subject written ``"<db>:<subject>"``, taken as it is), then per
    ``rule`` (``databases.<db>.subject``) that record, the folder it lies in, or ``csv_subject`` (the labels CSV's
    ``subject`` cell of that record, which the caller looks up); ``pattern`` (``subject_pattern``): its first group,
    else the whole match, of the first match in the record's path. Raises ``ValueError`` saying why a record has no
    subject (the caller names the record)."""
    canonical = canonical_record(record, same_subject)
    if qualified_subject(canonical):  # the same patient in another database: one subject across both
        return canonical
    if pattern is not None:
        found = re.search(pattern, canonical)
        if found is None:
            raise ValueError(f"no subject: subject_pattern {pattern!r} does not match {canonical!r}")
        part = found.group(1) if found.re.groups else found.group(0)
        if not part:
            raise ValueError(f"no subject: subject_pattern {pattern!r} matches {canonical!r} with an empty "
                             f"{'first group' if found.re.groups else 'match'}")
    elif rule == "folder":
        part = canonical.rsplit("/", 1)[0] if "/" in canonical else ""
        if not part:
            raise ValueError("no subject: the record lies in no folder of its database (subject = 'folder' takes "
                             "the folder RECORDS lists it in, as in patient001/s0010_re)")
    elif rule == "labels_csv":
        if not csv_subject:
            raise ValueError("no subject: the labels CSV has no 'subject' cell for this record (subject = 'labels_csv' "
                             "needs a header 'record,label,subject')")
        part = csv_subject
    else:
        part = canonical
    return f"{database}:{part}"


def qualified_subject(canonical: str) -> str | None:
    """A ``same_subject`` target naming another database's subject, ``"mitdb:118"`` (a record name has no ':')."""
    db, sep, part = canonical.partition(":")
    return canonical if sep and db and part else None


def leaves_its_folder(name: str) -> bool:
    """Whether a record name, given relative to its database folder (a RECORDS line, a labels CSV row, a config's
    ``records``), points outside it: an absolute path, or one that climbs with ``..``. Its windows would be stored
    outside the run's store (``records/<db>/<name>``), or as a record of another database."""
    name = name.strip().replace("\\", "/")
    parts = posixpath.normpath(name).split("/")
    return name.startswith("/") or bool(re.match(r"[A-Za-z]:(/|$)", name)) or ".." in parts or parts == ["."]
