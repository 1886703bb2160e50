"""`AllTasks`: the whole product, stage 1 through evaluation (`luigi --module pipeline AllTasks`).

Apart from the stage modules so that stage 1 never imports stage 2.
"""
from __future__ import annotations

import luigi

from pipeline.tasks.stage1 import PrepareRaw
from pipeline.tasks.stage2 import EvaluateDIN


class AllTasks(luigi.WrapperTask):
    """The whole product: stage 1, training and evaluation."""

    def requires(self):
        return EvaluateDIN()

    def complete(self) -> bool:
        PrepareRaw().check_integrity()  # as in Preprocess.complete
        return super().complete()
