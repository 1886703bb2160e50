"""Point Luigi's config at a temporary data dir and tiny synthetic data for one test."""
import contextlib

import luigi

TINY_SYNTHETIC = {"synthetic_users": "300", "synthetic_items": "400", "synthetic_categories": "12"}


@contextlib.contextmanager
def luigi_settings(**sections):
    """`luigi_settings(paths={"data_dir": ...}, preprocess={"maxlen": "5"})`, restored afterwards."""
    cfg = luigi.configuration.get_config()
    saved = []
    for section, values in sections.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for key, value in values.items():
            saved.append((section, key, cfg.get(section, key, None)))
            cfg.set(section, key, str(value))
    try:
        yield cfg
    finally:
        for section, key, value in reversed(saved):
            if value is None:
                cfg.remove_option(section, key)
            else:
                cfg.set(section, key, value)
