"""Which channels of a record are its leads: ``databases.<db>.lead`` (and ``second_lead`` for two-lead windows) as
names or channel indices, matched against the names a WFDB header or an EDF file gives its signals."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ecgpipe.config import DatabaseSettings


def _loose(name: str) -> str:  # "ML II", "mlii" for MLII
    return "".join(str(name).split()).lower()


def _bare(name: str) -> str:  # EDF+'s standard labels put the signal type first: "ECG V5", "ECG II" for V5, II
    loose = _loose(name)
    return loose[3:] if loose.startswith("ecg") and len(loose) > 3 else loose


def choose_lead(sig_names: list[str], wanted: list[str | int], taken: tuple[int, ...] = ()) -> int:
    """Index of the first lead in ``wanted`` (names or indices) that the record has and that is not ``taken``; a name
    matches exactly, else without regard to case and spaces, else without EDF+'s "ECG " before it, before the next
    choice is tried. Raises ``LookupError`` saying what the record has."""
    for choice in wanted:
        if isinstance(choice, int):
            if 0 <= choice < len(sig_names) and choice not in taken:
                return choice
            continue
        # a name may occur twice (vfdb's two channels are both "ECG")
        free = [i for i, name in enumerate(sig_names) if name == choice and i not in taken]
        free = free or [i for i, name in enumerate(sig_names) if _loose(name) == _loose(choice) and i not in taken]
        free = free or [i for i, name in enumerate(sig_names) if _bare(name) == _bare(choice) and i not in taken]
        if free:
            return free[0]
    raise LookupError(f"no lead matching {wanted} (the record has {sig_names}; a channel index chooses a lead "
                      "whatever its name: databases.<db>.lead = [0], ecgpipe predict --lead 0)")


def choose_leads(sig_names: list[str], settings: DatabaseSettings, n_leads: int) -> list[int]:
    """Channel indices of the leads to read: ``settings.lead``'s choice, then (for two) ``second_lead``'s choice or
    the first other channel."""
    first = choose_lead(sig_names, list(settings.lead))
    if n_leads == 1:
        return [first]
    others = [i for i in range(len(sig_names)) if i != first]
    if not others:
        raise LookupError(f"segments.n_leads = 2, but the record has a single lead {sig_names}")
    try:
        return [first, choose_lead(sig_names, list(settings.second_lead) or others, taken=(first,))]
    except LookupError as exc:
        raise LookupError(f"second lead (second_lead): {exc}, other than the first lead {sig_names[first]!r}") from None


# names a recorder gives channels that are not ECG (respiration, blood pressure, oximetry, EEG...): a lead chosen by
# its channel index among them is read as asked, but said
NOT_ECG = ("resp", "pleth", "ppg", "abp", "art", "pap", "cvp", "icp", "spo2", "sao2", "co2", "eeg", "emg", "eog",
           "temp", "flow", "press", "pulse", "nbp", "bp")


def not_ecg_note(sig_names: list[str], channels: list[int], wanted: list[str | int]) -> str | None:
    """What to say when a lead read (chosen by channel index, or as the first other channel) is named like no ECG
    signal and was not asked for by that name (``wanted``: the lead and second-lead choices)."""
    names = {_loose(w) for w in wanted if isinstance(w, str)}
    for c in channels:
        name = _loose(sig_names[c])
        if name not in names and name.startswith(NOT_ECG):
            return (f"lead {sig_names[c]!r} (channel {c}) is named like no ECG signal and was not asked for by name "
                    f"(the record has {sig_names}): name the lead to read (databases.<db>.lead, predict --lead)")
    return None
