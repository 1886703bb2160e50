"""Small `[train]` settings and fixture shards standing in for Preprocess, for the stage-2 task tests."""
import luigi


TRAIN_SETTINGS = {"batch_size": "64", "epochs": "1", "embed_dim": "4", "attention_hidden": "8",
                  "mlp_hidden": "8", "device": "cpu"}


class FixtureShards(luigi.ExternalTask):
    """Stands in for pipeline.tasks.stage1.Preprocess: same interface (output, expected_fingerprint)."""
    spec = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.spec)

    def expected_fingerprint(self):
        return "fixture"
