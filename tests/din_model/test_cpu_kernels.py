"""oneDNN on or off (din_model.device.cpu_kernels): the rule on exact cases, and a real train step on oneDNN's AVX2 path."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from din_model.device import cpu_kernels
from din_model.device.cpu_kernels import choose_onednn

REPO = Path(__file__).resolve().parents[2]

AVX512 = frozenset({"sse4_2", "avx2", "fma", "avx512f", "avx512bw"})
AVX2_ONLY = frozenset({"sse4_2", "avx2", "fma"})


@pytest.mark.parametrize("user, machine, flags, version, expected", [
    (None, "x86_64", AVX512, (2, 21), "1"),
    (None, "AMD64", AVX512, (2, 9), "1"),
    (None, "x86_64", AVX2_ONLY, (2, 21), None),   # not measured to help: TensorFlow's default
    (None, "x86_64", AVX512, (2, 6), None),       # TF 2.6.5's oneDNN crashes AVX2-only CPUs: never switched on
    (None, "x86_64", AVX2_ONLY, (2, 6), None),
    (None, "x86_64", AVX512, None, None),         # no TensorFlow version found
    (None, "aarch64", frozenset({"asimd"}), (2, 6), None),
    ("0", "x86_64", AVX512, (2, 21), "0"),        # a user's setting always wins
    ("1", "x86_64", AVX2_ONLY, (2, 6), "1"),
])
def test_onednn_only_where_measured_and_safe(user, machine, flags, version, expected):
    value, reason = choose_onednn(user, machine, flags, version)
    assert value == expected
    assert reason  # said in metrics.json


def test_cpu_flags_come_from_the_kernels_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_kernels.cpu_flags(str(cpuinfo)) == frozenset({"fpu", "sse2", "avx2", "avx512f"})
    assert cpu_kernels.cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_the_installed_tensorflow_version_is_found_without_importing_it():
    import tensorflow as tf

    assert cpu_kernels.tensorflow_version() == tuple(int(part) for part in tf.__version__.split(".")[:2])


def _environment(**settings):
    environment = {name: value for name, value in os.environ.items() if name != cpu_kernels.ONEDNN_VARIABLE}
    environment.update(settings)
    return environment


def test_importing_din_model_applies_the_rule_and_a_user_setting_wins():
    script = "import os, din_model; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS')); print(din_model.device.cpu_kernels.CHOICE)"
    chosen = subprocess.run([sys.executable, "-c", script], env=_environment(), capture_output=True, text=True,
                            check=True).stdout.splitlines()
    expected, reason = choose_onednn(None, __import__("platform").machine(), cpu_kernels.cpu_flags(),
                                     cpu_kernels.tensorflow_version())
    assert chosen == [str(expected), reason]
    user = subprocess.run([sys.executable, "-c", script], env=_environment(TF_ENABLE_ONEDNN_OPTS="0"),
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert user == ["0", "oneDNN 0 (set by the user)"]


TRAIN_ONE_EPOCH = textwrap.dedent("""
    import sys
    from din_model.params import TrainParams
    from din_model.run.loop import train
    from tests.helpers.din_fixtures import write_random_fixture
    spec = write_random_fixture(sys.argv[1], sizes=(("train", 256), ("val", 64), ("test", 64)), n_items=30, n_cats=4)
    result = train(spec, sys.argv[1] + "/run", TrainParams(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4",
                   batch_size=64, epochs=1, device="cpu"))
    print("trained", result["cpu_kernels"])
""")


@pytest.mark.skipif(__import__("platform").machine().lower() not in cpu_kernels.X86_MACHINES,
                    reason="oneDNN's ISA cap is an x86-64 setting")
def test_a_train_step_runs_on_onednns_avx2_path(tmp_path):
    """What a CPU without AVX-512 runs, also on one with it. On TensorFlow >= 2.9, which the rule may switch
    oneDNN on for, oneDNN is forced on; below 2.9 the default choice runs (forced on there is the known SIGFPE)."""
    # oneDNN 2.x reads DNNL_MAX_CPU_ISA, 3.x ONEDNN_MAX_CPU_ISA: set both so every bundled version caps at AVX2.
    settings = dict(DNNL_MAX_CPU_ISA="AVX2", ONEDNN_MAX_CPU_ISA="AVX2")
    version = cpu_kernels.tensorflow_version()
    if version is not None and version >= cpu_kernels.FIRST_SAFE_TENSORFLOW:
        settings[cpu_kernels.ONEDNN_VARIABLE] = "1"
    finished = subprocess.run([sys.executable, "-c", TRAIN_ONE_EPOCH, str(tmp_path)], env=_environment(**settings),
                              capture_output=True, text=True, timeout=300, cwd=REPO)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.splitlines()[-1].startswith("trained")
