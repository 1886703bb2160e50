"""TrainParams validation and run ids."""
import pytest

from din_model.params import TrainParams, run_id
from din_common.errors import InputError


@pytest.mark.parametrize("field, value, named", [
    ("batch_size", 0, "[train] batch_size"), ("epochs", -1, "[train] epochs"),
    ("learning_rate", 0.0, "[train] learning_rate"), ("dropout", 1.0, "[train] dropout"),
    ("activation", "relu", "[train] activation"), ("mlp_hidden", "200,x", "[train] mlp_hidden"),
    ("attention_hidden", "0", "[train] attention_hidden"), ("device", "tpu", "[train] device"),
    ("precision", "half", "[train] precision"), ("l2", -1.0, "[train] l2"),
])
def test_invalid_setting_names_the_setting(field, value, named):
    with pytest.raises(InputError, match=named.replace("[", r"\[").replace("]", r"\]")):
        TrainParams(**{field: value})


def test_hidden_sizes_parse():
    params = TrainParams(attention_hidden="80, 40", mlp_hidden="256,128,64")
    assert params.attention_units == (80, 40)
    assert params.mlp_units == (256, 128, 64)


def test_run_id_changes_with_params_and_fingerprint():
    base = run_id(TrainParams(), "abc")
    assert base == run_id(TrainParams(), "abc")
    assert base != run_id(TrainParams(learning_rate=0.02), "abc")
    assert base != run_id(TrainParams(), "abd")
    assert len(base) == 12


def test_npu_numerics_are_part_of_the_run_id_and_runs_elsewhere_keep_their_ids():
    numerics = {"precision_mode": "allow_mix_precision", "loss_scaling": True, "modify_mixlist": "",
                "fusion_switch_file": "", "devices": 1}
    assert run_id(TrainParams(), "abc", None) == run_id(TrainParams(), "abc") == "d40d6f25b61c"  # the id without numerics
    on_npu = run_id(TrainParams(), "abc", numerics)
    assert on_npu != run_id(TrainParams(), "abc")
    assert on_npu != run_id(TrainParams(), "abc", {**numerics, "precision_mode": "force_fp16"})
    assert on_npu != run_id(TrainParams(), "abc", {**numerics, "devices": 2})
    assert on_npu == run_id(TrainParams(), "abc", dict(reversed(list(numerics.items()))))


def test_a_deterministic_run_has_its_own_id_and_the_others_keep_theirs():
    assert run_id(TrainParams(deterministic=False), "abc") == "d40d6f25b61c"
    assert run_id(TrainParams(deterministic=True), "abc") not in ("d40d6f25b61c", run_id(TrainParams(seed=43), "abc"))


def test_from_dict_rejects_unknown_settings():
    with pytest.raises(InputError, match="unknown"):
        TrainParams.from_dict({"batch_size": 8, "bogus": 1})
