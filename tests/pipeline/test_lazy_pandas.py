"""pandas stays out of the `luigi` command's start-up (docs/performance.md, "Stage 1").

`import pipeline` imports no pandas; RemapIds reaches the sandbox's start without it
(pipeline.raw.pickles, pipeline.untrusted.sandbox); the command's process imports it after
Luigi's first fork of a task process (pipeline.cli.preload). Each check runs in a fresh
interpreter, since this one has imported pandas long ago.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_pipeline_imports_no_pandas():
    result = _run("""
        import json, sys
        import pipeline
        print(json.dumps({"pandas": "pandas" in sys.modules, "tasks": hasattr(pipeline, "Preprocess")}))
    """)
    assert result == {"pandas": False, "tasks": True}


def test_what_remap_ids_imports_before_the_sandbox_starts_imports_no_pandas():
    result = _run("""
        import json, sys
        import pipeline
        from pipeline.raw.pickles import load_raw_pickles
        from pipeline.untrusted import sandbox
        print(json.dumps({"pandas": "pandas" in sys.modules}))
    """)
    assert result == {"pandas": False}


def test_the_sandbox_imports_pandas_after_starting_the_child(tmp_path):
    import pandas as pd

    path = tmp_path / "reviews.pkl"
    pd.DataFrame({"reviewerID": ["A1", "A2"], "asin": ["B1", "B1"], "unixReviewTime": [1, 2]}).to_pickle(path)
    result = _run(f"""
        import json, sys
        from pipeline.raw.pickles import REVIEWS_JOB
        from pipeline.untrusted import sandbox

        seen = {{}}
        real_start, real_start_reader = sandbox._start, sandbox._start_reader

        def start(requests):
            seen["pandas_at_child_start"] = "pandas" in sys.modules
            return real_start(requests)

        def start_reader(requests):
            seen["pandas_at_reader_start"] = "pandas" in sys.modules
            return real_start_reader(requests)

        sandbox._start, sandbox._start_reader = start, start_reader
        frames, info = sandbox.load({str(path)!r}, REVIEWS_JOB)
        seen["rows"] = info["rows"]
        seen["users"] = frames["reviews"]["reviewerID"].tolist()
        print(json.dumps(seen))
    """)
    assert result == {"pandas_at_child_start": False, "pandas_at_reader_start": False, "rows": 2,
                      "users": ["A1", "A2"]}


@pytest.mark.skipif(not hasattr(__import__("os"), "register_at_fork"), reason="no os.register_at_fork")
def test_the_command_imports_pandas_after_luigis_first_task_fork():
    result = _run("""
        import json, multiprocessing, os, sys
        from luigi.worker import fork_lock
        from pipeline.cli import preload

        preload.preload_after_first_task_process()
        seen = {"before": "pandas" in sys.modules}
        context = multiprocessing.get_context("fork")
        child = context.Process(target=os._exit, args=(0,))
        child.start()  # not Luigi's (fork_lock free): no import
        child.join()
        seen["after_other_fork"] = preload._state["thread"] is not None
        with fork_lock:  # as Luigi forks a task process
            child = context.Process(target=os._exit, args=(0,))
            child.start()
            seen["during_fork"] = "pandas" in sys.modules
        child.join()
        preload._state["thread"].join(120)
        seen["after"] = "pandas" in sys.modules
        print(json.dumps(seen))
    """)
    assert result == {"before": False, "after_other_fork": False, "during_fork": False, "after": True}
