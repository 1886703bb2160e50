"""Stage 2's input: `reader`, the tf.data reader of the TFRecord shards a `FeatureSpec` lists."""
