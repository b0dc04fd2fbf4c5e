"""Copy the README walk-through's screenshots from the snapshot tests' SVGs into
docs/screens/. The snapshots are rendered from seeded data at a fixed clock, so the
pictures change only when the screens do. Run after `pytest tests/tui --snapshot-update`
(`make screens` does both)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = ROOT / "tests" / "tui" / "__snapshots__" / "test_rollout_snapshots"
OUT = ROOT / "docs" / "screens"
SIZE = "120x40"
# docs name -> snapshot name (test and state)
SCREENS = {
    "01-wizard-release": "test_rollout_wizard[wizard_release-{size}]",
    "02-wizard-gates": "test_rollout_wizard[wizard_gates-{size}]",
    "03-flight-plan": "test_rollout_wizard[wizard_plan-{size}]",
    "04-type-to-confirm": "test_rollout_wizard[wizard_confirm-{size}]",
    "05-canary-running": "test_rollout_console[monitor_running-{size}]",
    "06-canary-halted": "test_rollout_console[monitor_halted-{size}]",
    "07-rollback-confirm": "test_rollout_console[monitor_rollback_confirm-{size}]",
    "08-rolled-back": "test_rollout_console[monitor_rolled_back-{size}]",
    "09-waiting-approval": "test_rollout_console[monitor_waiting_approval-{size}]",
    "10-two-person-rule": "test_rollout_console[monitor_two_person-{size}]",
    "11-completed": "test_rollout_console[monitor_completed-{size}]",
    "12-jobs": "test_rollout_console[jobs_list-{size}]",
    "13-audit-intact": "test_rollout_console[audit_intact-{size}]",
    "14-audit-broken": "test_rollout_console[audit_broken-{size}]",
    "15-halted-80x24": "test_rollout_console[monitor_halted-80x24]",
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    missing = []
    for name, snapshot in SCREENS.items():
        source = SNAPSHOTS / (snapshot.format(size=SIZE) + ".svg")
        if not source.exists():
            missing.append(source.name)
            continue
        shutil.copyfile(source, OUT / f"{name}.svg")
    if missing:
        print("missing snapshots (run pytest tests/tui --snapshot-update): "
              + ", ".join(missing), file=sys.stderr)
        return 1
    print(f"{len(SCREENS)} screens in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
