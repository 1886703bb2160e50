"""A real, small file system for the disk-full tests, without root.

`run_on_small_disk(mountpoint, steps)` mounts a tmpfs on `mountpoint` inside a private user and mount
namespace (`unshare --user --map-root-user --mount`, open to any user where the kernel allows
unprivileged user namespaces), so every writer under it, TensorFlow's C++ file writers included,
meets the kernel's own ENOSPC. Each step runs one command with the disk limited to `budget` bytes
for everything but a ballast file (None: the whole tmpfs, i.e. space was freed), and records the
command's exit code and output and the files left under the mountpoint with the bytes each
occupies. The tmpfs lives as long as the namespace: one call is one disk, steps share it.
Run as a script, this module is the driver inside the namespace.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

TMPFS_SIZE = 256 * 2 ** 20
BALLAST = ".ballast"
REPO = Path(__file__).resolve().parents[2]


def small_disk_available() -> bool:
    """The kernel lets this user make a user and mount namespace and mount a tmpfs in it."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null || mount -t tmpfs -o size=1m tmpfs /tmp"],
                           capture_output=True)
    return probe.returncode == 0


def run_on_small_disk(mountpoint: Path, steps: list[dict], timeout: float = 1200) -> list[dict]:
    """Run `steps` ({"command": [...], "budget": bytes or None}) on a tmpfs at `mountpoint`; return, per step,
    {"returncode", "stdout", "stderr", "files": {relative path: bytes occupied}}."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    plan = mountpoint.parent / f".{mountpoint.name}.small-disk.json"
    plan.write_text(json.dumps({"mountpoint": str(mountpoint), "steps": steps}))
    try:
        subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-m",
                        "tests.helpers.small_disk", str(plan)],
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, timeout=timeout)
        return json.loads(plan.read_text())["results"]
    finally:
        plan.unlink()


def occupied(root: Path) -> dict[str, int]:
    """Bytes each file under `root` occupies (its allocated blocks), the ballast left out."""
    return {str(path.relative_to(root)): path.stat().st_blocks * 512
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != BALLAST}


def _limit_to(root: Path, budget: int | None) -> None:
    """Size the ballast so the files other than it may occupy `budget` bytes in all (None: no ballast)."""
    ballast = root / BALLAST
    if ballast.exists():
        ballast.unlink()
    if budget is None:
        return
    usage = shutil.disk_usage(root)
    with open(ballast, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(0, usage.total - budget))


def _drive(plan_path: Path) -> None:
    plan = json.loads(plan_path.read_text())
    root = Path(plan["mountpoint"])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(root)], check=True)
    results = []
    for step in plan["steps"]:
        _limit_to(root, step.get("budget"))
        finished = subprocess.run(step["command"], cwd=REPO, capture_output=True, text=True)
        results.append({"returncode": finished.returncode, "stdout": finished.stdout, "stderr": finished.stderr,
                        "files": occupied(root)})
    plan_path.write_text(json.dumps({**plan, "results": results}))


if __name__ == "__main__":
    _drive(Path(sys.argv[1]))
