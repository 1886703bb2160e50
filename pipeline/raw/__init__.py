"""Stage 1's raw input: reviews.pkl and meta.pkl, checked, and every way to make them.

This package owns the "Raw input" contract of docs/design.md:

- `pickles`: the user's pickles, loaded in the sandbox (pipeline.untrusted) and checked;
- `amazon_json`, `remap_pickle`: the converters of the other sources into the pair;
- `synthetic`: the generator with a planted model and its oracle AUCs;
- `manifest`: the integrity record of the pickles the pipeline wrote itself;
- `frames`: what those share; `sandbox_jobs`: the jobs the sandbox child finds by name.
Imports nothing: the sandbox child imports this package on its way to `sandbox_jobs`.
"""
