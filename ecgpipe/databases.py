"""Registry of the PhysioNet databases ecgpipe knows: sampling rate, download slug, and which records share a subject.

Other databases work too: give their ``fs`` (and optionally ``physionet`` slug) in the config.
"""

from __future__ import annotations

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


def subject_id(database: str, record: str, same_subject: dict[str, str]) -> str:
    """Subject id ``"<db>:<record>"``, mapping records of one person to one id."""
    return f"{database}:{same_subject.get(record, record)}"
