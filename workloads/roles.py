"""Column roles of a user's log: which column keys the request, which are request-only (RO), which
are labels, the event time, and the list columns that hold the user's history.

`Roles` is a frozen, validated mapping. `RoleOptions` is what the user said on the command line
(`--roles auto|explicit`, `--ro-columns`, `--label-columns`, `--timestamp`, `--sequence-columns`,
spelled as in `convert`); `infer_roles` fills in what the user left to `auto` from a column
profile (workloads.log_pass.profile_columns):

- RO: a column constant within every request (`--ro-columns` overrides). A column that varies in
  only a few requests (at most NEAR_RO of those with two or more impressions) is named in the
  notes with its count, so the user can keep it RO with `--ro-columns ... --on-conflict first` if
  the variation is noise.
- labels: 0/1 columns (or fixed-width lists of 0/1) that are not RO and have a positive rate.
- timestamp: a column named timestamp/ts/event_time/time, or of an Arrow timestamp type.
- sequences: RO list columns of ids (integers or strings). The history is the one named like a
  history (hist/seq) or else the longest; an ascending sequence of the same lengths is its
  timestamps, one of small integers its action types. Other sequences are multi-valued features.

Every column gets exactly one role; `mapping_lines` says which and why, one line per column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workloads.errors import UserError
from workloads.log_pass import ColumnProfile, Profile

ROLE_MODES = ("auto", "explicit")
TIME_NAMES = ("timestamp", "ts", "event_time", "event_ts", "time")
HISTORY_HINTS = ("hist", "seq")
TIME_HINTS = ("time", "ts", "date")
MAX_ACTION_TYPES = 256
NEAR_RO = 0.05  # a column varying in at most this share of multi-impression requests is named in the notes


@dataclass(frozen=True)
class RoleOptions:
    """The role options of a command line; None (or "auto" for ro_columns): infer it."""

    mode: str = "auto"
    ro_columns: tuple[str, ...] | None = None
    label_columns: tuple[str, ...] | None = None
    timestamp: str | None = None
    sequence_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ROLE_MODES:
            raise UserError(f"--roles {self.mode!r}; allowed: {', '.join(ROLE_MODES)}")
        if self.mode == "explicit" and self.ro_columns is None:
            raise UserError("--roles explicit needs --ro-columns a,b,c (the request-only columns)")

    @classmethod
    def parse(
        cls,
        mode: str = "auto",
        ro_columns: str | None = None,
        label_columns: str | None = None,
        timestamp: str | None = None,
        sequence_columns: str | None = None,
    ) -> RoleOptions:
        """From the command line's strings (comma lists; `auto` or empty: infer)."""

        def names(s: str | None) -> tuple[str, ...] | None:
            if s is None or s.strip() in ("", "auto"):
                return None
            out = tuple(c.strip() for c in s.split(",") if c.strip())
            return out

        ts = None if timestamp is None or timestamp.strip() in ("", "auto") else timestamp.strip()
        return cls(mode, names(ro_columns), names(label_columns), ts, names(sequence_columns))

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "ro_columns": list(self.ro_columns) if self.ro_columns is not None else "auto",
            "label_columns": list(self.label_columns) if self.label_columns is not None else "auto",
            "timestamp": self.timestamp or "auto",
            "sequence_columns": list(self.sequence_columns) if self.sequence_columns is not None else "auto",
        }


@dataclass(frozen=True)
class Roles:
    """One role per column. `history` is (item ids, timestamps or "", actions or "") when the log
    has a history; `sequences` holds every RO list column of ids, the history's first."""

    request_key: str
    ro: tuple[str, ...]
    nro: tuple[str, ...]
    labels: tuple[str, ...] = ()
    timestamp: str | None = None
    sequences: tuple[str, ...] = ()
    history: tuple[str, str, str] | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        both = set(self.ro) & set(self.nro)
        if both:
            raise UserError(f"column(s) {sorted(both)} cannot be both request-only and not")
        if self.request_key in self.ro or self.request_key in self.nro:
            raise UserError(f"the request key {self.request_key!r} is not also an RO/NRO column")
        for name, group, where in (
            ("label", self.labels, self.nro),
            ("sequence", self.sequences, self.ro),
        ):
            bad = [c for c in group if c not in where]
            if bad:
                side = "vary within requests (NRO)" if name == "label" else "be request-only (RO)"
                raise UserError(f"{name} column(s) {bad} must {side}")
        if self.timestamp is not None and self.timestamp not in (*self.ro, *self.nro):
            raise UserError(f"timestamp column {self.timestamp!r} is not a column of the log")
        if self.history is not None and (not self.history[0] or self.history[0] not in self.sequences):
            raise UserError(f"history {self.history} must start with one of the sequence columns")

    def role_of(self, column: str) -> str:
        if column == self.request_key:
            return "request key"
        if self.history is not None and column in self.history:
            return ("history item ids", "history timestamps", "history actions")[self.history.index(column)]
        if column in self.sequences:
            return "sequence (multi-valued RO feature)"
        if column in self.labels:
            return "label"
        if column == self.timestamp:
            return "timestamp (RO)" if column in self.ro else "timestamp (per impression)"
        return "RO" if column in self.ro else "NRO"

    def to_dict(self) -> dict:
        return {
            "request_key": self.request_key,
            "ro": list(self.ro),
            "nro": list(self.nro),
            "labels": list(self.labels),
            "timestamp": self.timestamp,
            "sequences": list(self.sequences),
            "history": dict(zip(("item_ids", "timestamps", "actions"), self.history, strict=True))
            if self.history
            else None,
            "notes": list(self.notes),
        }


def _known(names: tuple[str, ...], prof: Profile, option: str) -> None:
    unknown = [c for c in names if c not in prof.columns]
    if unknown:
        raise UserError(f"{option} names unknown column(s) {unknown}; columns: {', '.join(prof.columns)}")


def infer_roles(prof: Profile, opts: RoleOptions) -> Roles:
    """Roles for the profiled log: the user's explicit choices, the rest inferred (see the module
    docstring); raises a UserError for an explicit choice the data contradicts."""
    cols = prof.columns
    notes: list[str] = []
    auto = opts.mode == "auto"
    ro = _ro_columns(prof, opts, notes)
    nro = tuple(c for c in cols if c not in ro)
    labels = _labels(prof, opts, nro, notes) if auto or opts.label_columns is not None else ()
    ts = _timestamp(prof, opts) if auto or opts.timestamp is not None else None
    seqs, history = _sequences(prof, opts, ro, notes) if auto or opts.sequence_columns is not None else ((), None)
    return Roles(prof.source_key, ro, nro, labels, ts, seqs, history, tuple(notes))


def _ro_columns(prof: Profile, opts: RoleOptions, notes: list[str]) -> tuple[str, ...]:
    cols = prof.columns
    if opts.ro_columns is not None:
        named = tuple(c for c in opts.ro_columns if c != prof.source_key)  # the key is RO by definition
        _known(named, prof, "--ro-columns")
        return tuple(c for c in cols if c in named)
    if prof.multi == 0:
        notes.append(
            "every request has one impression, so the data cannot tell RO columns from the others: all columns "
            "but 0/1 labels are taken as RO; name them with --ro-columns"
        )
        return tuple(c for c, cp in cols.items() if not (cp.binary and cp.family in ("int", "bool", "float")))
    ro = tuple(c for c, cp in cols.items() if cp.varying == 0)
    for c, cp in cols.items():
        if 0 < cp.varying <= max(1, prof.multi * NEAR_RO):
            notes.append(
                f"{c} varies within only {cp.varying} of {prof.multi} multi-impression requests, so it is NRO; "
                f"if that is noise, keep it RO with --ro-columns ...,{c} --on-conflict first"
            )
    return ro


def _labels(prof: Profile, opts: RoleOptions, nro: tuple[str, ...], notes: list[str]) -> tuple[str, ...]:
    cols = prof.columns
    if opts.label_columns is not None:
        _known(opts.label_columns, prof, "--label-columns")
        bad = [c for c in opts.label_columns if not cols[c].binary or cols[c].family not in _LABEL_FAMILIES]
        if bad:
            raise UserError(f"--label-columns {bad}: a label column holds 0/1 values (or fixed lists of them)")
        return tuple(c for c in cols if c in opts.label_columns)
    out = tuple(c for c in nro if _is_label(cols[c]))
    if not out:
        notes.append("no 0/1 label column found; the spec gets one task; name labels with --label-columns")
    return out


_LABEL_FAMILIES = ("int", "bool", "float", "list_float", "list_int", "list_bool")


def _is_label(cp: ColumnProfile) -> bool:
    if not cp.binary or cp.positives <= 0 or cp.family not in _LABEL_FAMILIES:
        return False
    if cp.is_list:  # e.g. a fixed-size list of per-task 0/1 labels
        return cp.list_len_min is not None and cp.list_len_min == cp.list_len_max and cp.list_len_min > 0
    return True


def _timestamp(prof: Profile, opts: RoleOptions) -> str | None:
    if opts.timestamp is not None:
        _known((opts.timestamp,), prof, "--timestamp")
        cp = prof.columns[opts.timestamp]
        if cp.family not in ("int", "temporal", "float"):
            raise UserError(f"--timestamp {opts.timestamp!r} is {cp.type}; a timestamp is a number or a time")
        return opts.timestamp
    for c, cp in prof.columns.items():
        if cp.family in ("int", "temporal") and (c.lower() in TIME_NAMES or cp.family == "temporal"):
            return c
    return None


def _is_id_list(cp: ColumnProfile) -> bool:
    return cp.family in ("list_int", "list_string", "list_temporal")


def _sequences(
    prof: Profile, opts: RoleOptions, ro: tuple[str, ...], notes: list[str]
) -> tuple[tuple[str, ...], tuple[str, str, str] | None]:
    cols = prof.columns
    if opts.sequence_columns is not None:
        _known(opts.sequence_columns, prof, "--sequence-columns")
        for c in opts.sequence_columns:
            if not cols[c].is_list:
                raise UserError(
                    f"--sequence-columns: {c!r} is {cols[c].type}, not a list; a history column holds one list "
                    "per row (e.g. list<int64> of item ids)"
                )
            if c not in ro:
                raise UserError(
                    f"--sequence-columns: {c!r} varies within {cols[c].varying} request(s), so it is not one "
                    "history per request; name it in --ro-columns with --on-conflict first, or drop it"
                )
        cands = list(opts.sequence_columns)
        ids = cands[0]
    else:
        cands = [c for c in ro if _is_id_list(cols[c])]
        if not cands:
            notes.append("no list column of ids is request-only: the spec gets no history")
            return (), None
        named = [c for c in cands if any(h in c.lower() for h in HISTORY_HINTS) and not _timey(cols[c], c)]
        plain = [c for c in cands if not _timey(cols[c], c)] or cands
        ids = named[0] if named else max(plain, key=lambda c: cols[c].list_len_sum)
    history = _history(cols, ids, cands)
    seqs = (ids, *[c for c in cands if c != ids])
    return seqs, history


def _timey(cp: ColumnProfile, name: str) -> bool:
    return cp.family == "list_temporal" or (cp.ascending and any(h in name.lower() for h in TIME_HINTS))


def _history(cols: dict[str, ColumnProfile], ids: str, cands: list[str]) -> tuple[str, str, str]:
    """(ids, timestamps, actions): the sequences aligned with `ids` (same length in every request)."""
    aligned = [c for c in cands if c != ids and cols[c].len_check == cols[ids].len_check]
    ts = next((c for c in aligned if cols[c].ascending and cols[c].family in ("list_int", "list_temporal")), "")
    act = next(
        (
            c
            for c in aligned
            if c != ts
            and cols[c].family == "list_int"
            and cols[c].lo is not None
            and (cols[c].lo or 0) >= 0
            # small non-negative integers: action types
            and (cols[c].hi or 0) < MAX_ACTION_TYPES
        ),
        "",
    )
    return ids, ts, act


def mapping_lines(roles: Roles, prof: Profile) -> list[str]:
    """One line per column: its name, type and role (what `fit`/`analyze` print)."""
    w = max([len(c) for c in prof.columns] + [len(roles.request_key)])
    types = {c: cp.type.replace("element: ", "").replace("not null", "").strip() for c, cp in prof.columns.items()}
    tw = max(len(t) for t in [*types.values(), "(key)"])
    lines = [f"{roles.request_key:<{w}}  {'(key)':<{tw}}  request key"]
    for c, cp in prof.columns.items():
        extra = f"; varies in {cp.varying} requests" if cp.varying and c in roles.nro else ""
        lines.append(f"{c:<{w}}  {types[c]:<{tw}}  {roles.role_of(c)}{extra}")
    return lines
