"""What differs on each host: wanted files against live ones, with secret-masked diffs. Pure."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from edgekit.facts import HostFacts, LiveFile
from edgekit.render import RenderedFile

MASK = "********"
# Lines in secret-bearing files whose values must never be shown.
_SECRET_LINE = re.compile(r"^(\s*(?:[A-Z_]*PASSWORD[A-Z_]*=|auth_pass\s+)).*$", re.MULTILINE)


@dataclass(frozen=True)
class FileChange:
    wanted: RenderedFile
    live: LiveFile

    @property
    def action(self) -> str:
        if self.live.content is None:
            return "create"
        if self.live.content != self.wanted.content:
            return "update"
        return "chmod"  # content equal, owner or mode differs

    def diff(self) -> str:
        old = self.live.content or ""
        new = self.wanted.content
        if self.wanted.secret or _SECRET_LINE.search(old):
            old, new = mask_secrets(old, new)
        lines = list(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile=f"{self.wanted.path} (live)"
                if self.live.content is not None
                else "/dev/null",
                tofile=f"{self.wanted.path} (rendered)",
            )
        )
        if self.action == "chmod":
            lines.append(
                f"{self.wanted.path}: mode/owner {self.live.mode:04o} "
                f"{self.live.owner} -> {self.wanted.mode:04o} {self.wanted.owner}\n"
                if self.live.mode is not None
                else ""
            )
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@dataclass
class HostPlan:
    host: str
    changes: list[FileChange] = field(default_factory=list)
    missing_packages: list[str] = field(default_factory=list)
    enable_units: list[str] = field(default_factory=list)
    start_units: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.missing_packages or self.enable_units or self.start_units)

    def services_touched(self) -> set[str]:
        return {c.wanted.service for c in self.changes}

    def paths(self) -> list[str]:
        return [c.wanted.path for c in self.changes]

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)


def mask_secrets(old: str, new: str) -> tuple[str, str]:
    """Replace secret values by a mask; a changed secret still shows as a changed line."""
    old_vals = {m.group(1): m.group(0) for m in _SECRET_LINE.finditer(old)}

    def mask_new(m: re.Match[str]) -> str:
        changed = old_vals.get(m.group(1)) not in (None, m.group(0))
        return m.group(1) + MASK + (" (changed)" if changed else "")

    return (_SECRET_LINE.sub(lambda m: m.group(1) + MASK, old), _SECRET_LINE.sub(mask_new, new))


def plan_host(host: str, wanted: list[RenderedFile], facts: HostFacts) -> HostPlan:
    plan = HostPlan(host)
    for f in wanted:
        live = facts.files.get(f.path, LiveFile(f.path, None))
        if live.content != f.content or live.mode != f.mode or live.owner != f.owner:
            plan.changes.append(FileChange(f, live))
    plan.missing_packages = [p for p, ok in sorted(facts.packages.items()) if not ok]
    for unit, (active, enabled) in sorted(facts.units.items()):
        if enabled != "enabled":
            plan.enable_units.append(unit)
        # A stopped unit whose files do not change is still started; changed ones are
        # started (or reloaded) by the apply step anyway.
        if active != "active" and unit not in plan.services_touched():
            plan.start_units.append(unit)
    return plan
