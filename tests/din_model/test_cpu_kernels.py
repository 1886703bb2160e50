"""oneDNN and XLA per CPU kind (din_model.device.cpu_kernels): the rules on exact cases, both CPU kinds forced on
both TensorFlow versions, and a real train step on oneDNN's AVX2 path."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from din_model.device import cpu_kernels
from din_model.device.cpu_kernels import choose_onednn, choose_xla

REPO = Path(__file__).resolve().parents[2]

AVX512 = frozenset({"sse4_2", "avx2", "fma", "avx512f", "avx512bw"})
AVX2_ONLY = frozenset({"sse4_2", "avx2", "fma"})


@pytest.fixture
def kept_choices(monkeypatch):
    """`apply` records its choices in module globals: restore them after a test forces a CPU kind."""
    for name in ("CHOICE", "CHOICES", "XLA_ON_CPU"):
        monkeypatch.setattr(cpu_kernels, name, getattr(cpu_kernels, name))


@pytest.mark.parametrize("user, machine, flags, version, expected", [
    (None, "x86_64", AVX512, (2, 21), "1"),
    (None, "AMD64", AVX512, (2, 9), "1"),
    (None, "x86_64", AVX2_ONLY, (2, 21), "1"),    # AMD EPYC without AVX-512: measured faster on
    (None, "x86_64", AVX512, (2, 6), None),       # TF 2.6.5's oneDNN crashes x86-64 CPUs: never switched on
    (None, "x86_64", AVX2_ONLY, (2, 6), None),
    (None, "x86_64", AVX512, None, None),         # no TensorFlow version found
    (None, "aarch64", frozenset({"asimd"}), (2, 6), None),
    ("0", "x86_64", AVX512, (2, 21), "0"),        # a user's setting always wins
    ("1", "x86_64", AVX512, (2, 6), "0"),         # ...except where it is known to crash (SIGFPE): turned off,
    ("1", "x86_64", AVX2_ONLY, (2, 6), "0"),      # with AVX-512 (an AMD EPYC) and without
    ("True", "x86_64", AVX2_ONLY, (2, 6), "0"),   # TensorFlow reads the variable as a boolean
    ("1", "x86_64", AVX2_ONLY, None, "1"),        # no TensorFlow version found: the crash is not known, kept
    ("0", "x86_64", AVX2_ONLY, (2, 6), "0"),
])
def test_onednn_only_where_measured_and_safe(user, machine, flags, version, expected):
    value, reason = choose_onednn(user, machine, flags, version)
    assert value == expected
    assert reason  # said in metrics.json


@pytest.mark.parametrize("machine, flags, version, expected", [
    ("x86_64", AVX512, (2, 21), True),
    ("x86_64", AVX2_ONLY, (2, 21), False),        # AMD EPYC without AVX-512: the XLA step measured slower
    ("x86_64", AVX512, (2, 6), False),            # TF 2.6.5's XLA: the static layout ~130x slower
    ("x86_64", AVX2_ONLY, (2, 6), False),
    ("x86_64", AVX512, (2, 15), False),
    ("x86_64", AVX512, None, False),
    ("aarch64", frozenset({"asimd"}), (2, 21), False),
])
def test_xla_only_where_measured_to_help(machine, flags, version, expected):
    chosen, reason = choose_xla(machine, flags, version)
    assert chosen is expected
    assert reason.startswith("XLA on" if expected else "XLA off")


@pytest.mark.parametrize("flags, version, onednn, xla", [
    (AVX2_ONLY, (2, 6), None, False),   # the Ascend stack without AVX-512: never oneDNN (SIGFPE), no XLA
    (AVX512, (2, 6), None, False),      # the Ascend stack with AVX-512: TensorFlow's default, no XLA
    (AVX2_ONLY, (2, 21), "1", False),   # the modern stack without AVX-512 (AMD EPYC)
    (AVX512, (2, 21), "1", True),       # the modern stack with AVX-512 (Intel Xeon)
])
def test_apply_with_a_forced_cpu_kind_sets_and_records_every_choice(kept_choices, flags, version, onednn, xla):
    environ = {}
    cpu_kernels.apply(environ, machine="x86_64", flags=flags, tf_version=version)
    assert environ.get(cpu_kernels.ONEDNN_VARIABLE) == onednn
    assert cpu_kernels.XLA_ON_CPU is xla
    assert cpu_kernels.CHOICES == {"machine": "x86_64", "avx512": "avx512f" in flags, "avx2": True,
                                   "tensorflow": "%d.%d" % version, "onednn": cpu_kernels.CHOICE,
                                   "xla_auto": choose_xla("x86_64", flags, version)[1]}


@pytest.mark.parametrize("flags, version, child_onednn", [
    (AVX2_ONLY, (2, 6), None),   # a TF 2.6.5 child of a TF 2.21 parent: oneDNN was on there, must not be here
    (AVX512, (2, 6), None),
    (AVX2_ONLY, (2, 21), "1"),
])
def test_a_child_process_decides_for_its_own_tensorflow_not_by_its_parents_choice(kept_choices, flags, version,
                                                                                  child_onednn):
    parent = {}
    cpu_kernels.apply(parent, machine="x86_64", flags=AVX2_ONLY, tf_version=(2, 21))
    assert parent[cpu_kernels.ONEDNN_VARIABLE] == "1"
    child = dict(parent)  # what a subprocess inherits
    cpu_kernels.apply(child, machine="x86_64", flags=flags, tf_version=version)
    assert child.get(cpu_kernels.ONEDNN_VARIABLE) == child_onednn
    assert "set by the user" not in cpu_kernels.CHOICE


def test_a_users_setting_is_kept_for_child_processes(kept_choices):
    environ = {cpu_kernels.ONEDNN_VARIABLE: "0"}
    cpu_kernels.apply(environ, machine="x86_64", flags=AVX2_ONLY, tf_version=(2, 21))
    child = dict(environ)
    cpu_kernels.apply(child, machine="x86_64", flags=AVX2_ONLY, tf_version=(2, 21))
    assert child == {cpu_kernels.ONEDNN_VARIABLE: "0"}
    assert cpu_kernels.CHOICE == "oneDNN 0 (set by the user)"


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
    environment = {name: value for name, value in os.environ.items()
                   if name not in (cpu_kernels.ONEDNN_VARIABLE, cpu_kernels.CHOSEN_MARKER_VARIABLE)}
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
    print("trained", result["cpu_kernels"], "|", result["cpu_choices"]["xla_auto"])
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
    trained = finished.stdout.splitlines()[-1]
    assert trained.startswith("trained") and trained.split(" | ")[1].startswith("XLA "), trained  # metrics.json
