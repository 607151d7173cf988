"""The two sample layouts, one vocabulary for every stage.

- `Layout.IMPRESSION`: one sample per impression; request-only (user/context) features are copied
  into every impression of a request.
- `Layout.ROO`: one sample per request; request-only features once, the impressions as a jagged
  list. On disk this is the *request-level* dataset, so the data layer names its directory and
  files `request` (`Layout.ROO.dataset_name`); the word `request` is accepted wherever a layout is.

`--layout both` means (impression, roo) everywhere: in `generate`, `storage`, `bench`, `profile`.
"""

from __future__ import annotations

from enum import StrEnum

from workloads.errors import UserError


class Layout(StrEnum):
    IMPRESSION = "impression"
    ROO = "roo"

    @property
    def dataset_name(self) -> str:
        """The name of this layout's dataset on disk (directory, manifest entry)."""
        return "request" if self is Layout.ROO else "impression"

    @classmethod
    def parse(cls, value: str | Layout) -> Layout:
        """One layout from its name; `request` (the data layer's name) means ROO."""
        if isinstance(value, Layout):
            return value
        v = str(value).strip().lower()
        if v == "request":
            return cls.ROO
        try:
            return cls(v)
        except ValueError:
            raise UserError(f"layout={value!r} is not allowed; choose one of: {', '.join(LAYOUT_CHOICES)}") from None


LAYOUTS: tuple[Layout, ...] = (Layout.IMPRESSION, Layout.ROO)
LAYOUT_CHOICES = ("impression", "roo", "both")


def parse_layouts(value: str) -> tuple[Layout, ...]:
    """`both` -> (impression, roo); otherwise the one layout named (`request` is ROO)."""
    if str(value).strip().lower() == "both":
        return LAYOUTS
    return (Layout.parse(value),)
