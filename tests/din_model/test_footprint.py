"""The weight memory of a run, estimated before anything is built, and the one-line refusal."""
import re

import pytest

from din_common.errors import InputError
from din_model.model.footprint import BYTES_PER_WEIGHT, available_memory, check_fits_in_memory, weight_counts
from din_model.params import TrainParams

GIB = 2 ** 30


def test_weights_are_counted_per_part():
    params = TrainParams(embed_dim=4, attention_hidden="8", mlp_hidden="6,5")
    assert weight_counts(params, n_items=50, n_cats=5, maxlen=10) == {
        "tables": 51 * 4 + 6 * 4,
        "attention": (32 * 8 + 8) + (8 * 1 + 1),
        "mlp": (16 * 6 + 6) + (6 * 5 + 5) + (5 * 1 + 1)}
    no_categories = TrainParams(embed_dim=4, attention_hidden="8", mlp_hidden="6,5", use_category=False)
    assert weight_counts(no_categories, 50, 5, 10)["tables"] == 51 * 4
    ordered = TrainParams(embed_dim=4, model="din_seq", sequence_features="recency,time_gap")
    assert weight_counts(ordered, 50, 5, 10)["tables"] == 57 * 4 + 8 * (10 + 16)


def test_the_weights_of_a_built_model_are_what_is_estimated():
    from din_model.model.network import build_model
    from tests.helpers.din_fixtures import sizes_spec

    for params in (TrainParams(embed_dim=4, attention_hidden="8", mlp_hidden="6,5", activation="dice"),
                   TrainParams(embed_dim=3, model="din_seq", sequence_features="recency,time_gap,last_item"),
                   TrainParams(embed_dim=3, model="din_seq", sequence_features="share")):
        model = build_model(params, sizes_spec(n_items=50, n_cats=5, maxlen=10))
        built = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
        estimated = sum(weight_counts(params, 50, 5, 10).values())
        assert abs(built - estimated) <= 0.1 * built, (params, built, estimated)


def test_the_memory_available_is_positive_and_at_most_the_machines():
    import os

    assert 0 < available_memory() <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("params, setting", [
    (TrainParams(embed_dim=10_000_000), "embed_dim = 10000000"),
    (TrainParams(embed_dim=4, mlp_hidden="60000,60000"), "mlp_hidden = '60000,60000'"),
    (TrainParams(embed_dim=4, attention_hidden="90000,90000"), "attention_hidden = '90000,90000'"),
])
def test_settings_whose_weights_cannot_fit_are_one_line_naming_the_setting(params, setting):
    needed = BYTES_PER_WEIGHT * sum(weight_counts(params, 400, 12, 40).values())
    with pytest.raises(InputError) as error:
        check_fits_in_memory(params, 400, 12, 40, available=24 * GIB)
    message = error.value.message
    assert message.startswith(f"[train] {setting} needs about {needed / GIB:.1f} GiB for the weights of a model of "
                              "400 items and 12 categories with Adam's two slots, ")
    assert re.search(r"more than the 24\.0 GiB of memory available; lower it \(in luigi\.cfg or with --train-", message)
    check_fits_in_memory(params, 400, 12, 40, available=needed)  # exactly enough is enough
