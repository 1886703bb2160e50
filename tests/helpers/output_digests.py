"""sha256 of every file under a data dir, for tests that compare two runs' outputs byte for byte."""
import hashlib
from pathlib import Path


def digests(data_dir: Path) -> dict:
    """sha256 of every stage-1 output file (raw included), by path under the data dir."""
    return {str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data_dir.rglob("*")) if p.is_file() and ".locks" not in p.parts}
