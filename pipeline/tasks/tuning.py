"""TuneDIN: a bounded hyperparameter search (Optuna) over the `[train]` settings that matter.

Each trial is one parameter set trained and evaluated in this process by `stage2.train_and_evaluate`, the code
TrainDIN and EvaluateDIN run, into its own run folder (`runs/<run_id>/`); the trial's value is the validation
AUC of the epoch the run exported, and the best trial is the highest of those. The study lives in
`<data_dir>/tune/study.db` (SQLite), named after the settings it searches around, so a rerun continues it; a
trial left RUNNING by a killed process is marked FAIL when the next run starts (the task's lock says no other
process is running it), and the search goes on until `[tune] trials` trials are COMPLETE. The result,
`<data_dir>/tune/best.json`, holds the best trial's settings, AUCs, run id and the TrainDIN command that
reproduces it; TuneDIN is complete when it exists for the current study and trial count.

The pure parts (`suggest_params`, `best_trial`, `reproduce_command`, `study_name`) need no TensorFlow; Optuna is
imported inside functions (the optional `tune` extra), so the rest of the pipeline runs without it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from pathlib import Path

import luigi

from din_common.atomic import write_json_atomic
from din_common.errors import InputError, RunFailed
from din_common.faults import kill_point
from pipeline import config
from pipeline.tasks import stage2
from pipeline.tasks.base import LockedTask
from pipeline.tasks.stage1 import Preprocess

# The search space: (setting, kind, choices or (low, high)). `epochs` and `patience` stay the `[train]` values
# (the budget of each trial): with `restore_best` the best epoch within that budget is what a trial exports.
SEARCH_SPACE = (
    ("learning_rate", "log_float", (1e-4, 3e-2)),
    ("embed_dim", "choice", (8, 16, 32, 64)),
    ("dropout", "float", (0.0, 0.5)),
    ("l2", "log_float", (1e-6, 1e-2)),
    ("batch_size", "choice", (256, 1024, 4096)),
    ("lr_decay_factor", "choice", (1.0, 0.5)),
    ("model", "choice", ("din", "din_seq")),
)
SEARCHED = tuple(name for name, _, _ in SEARCH_SPACE)
STUDY_FILE = "study.db"
BEST_FILE = "best.json"
MISSING_OPTUNA = ("TuneDIN needs Optuna, the optional `tune` extra: pip install -e '.[tune]' "
                  "(its pinned version: constraints/)")


def current_tune_settings() -> tuple[int, int]:
    """`[tune]` (trials, seed), checked before anything runs."""
    section = config.tune()
    trials = config.require_positive("tune", "trials", section.trials)
    seed = config.require_in_range("tune", "seed", section.seed, *config.SEED_RANGE)
    return trials, seed


def require_optuna() -> None:
    """One clear line naming the extra when Optuna is not installed; found without importing it (the end-of-run
    summary asks TuneDIN for its requirements at exit, too late for Optuna's import to start its threads)."""
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise InputError(MISSING_OPTUNA)


def import_optuna():
    """Optuna, with its per-trial log lines off (TuneDIN prints its own), or one clear line naming the extra."""
    try:
        import optuna
    except ImportError:
        raise InputError(MISSING_OPTUNA) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def suggest_params(trial, base):
    """The TrainParams of one trial: `base` (the `[train]` settings) with the searched ones drawn by `trial`
    (an Optuna trial, or `optuna.trial.FixedTrial` for given values)."""
    drawn = {}
    for name, kind, values in SEARCH_SPACE:
        if kind == "choice":
            drawn[name] = trial.suggest_categorical(name, list(values))
        else:
            drawn[name] = trial.suggest_float(name, values[0], values[1], log=kind == "log_float")
    return dataclasses.replace(base, **drawn)


def best_trial(trials):
    """The COMPLETE trial with the highest value (validation AUC); on a tie the earliest; None without one."""
    complete = [trial for trial in trials if trial.state.name == "COMPLETE" and trial.value is not None]
    return max(complete, key=lambda trial: (trial.value, -trial.number), default=None)


def _flag_value(value) -> str:
    """A value as a Luigi flag takes it back unchanged: repr for floats (exact), true/false for booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def reproduce_command(given_flags: dict, tuned: dict) -> str:
    """`luigi --module pipeline TrainDIN ...`: the flags this command was given outside `[tune]` (`{(section,
    name): text}`), then the tuned settings, which replace any given for them: the same run id as the trial."""
    flags = [(section, name, text) for (section, name), text in sorted(given_flags.items())
             if section != "tune" and not (section == "train" and name in tuned)]
    flags += [("train", name, _flag_value(tuned[name])) for name in SEARCHED if name in tuned]
    words = ["luigi", "--module", "pipeline", "TrainDIN"]
    for section, name, text in flags:
        words += [f"--{section}-{name.replace('_', '-')}", shlex.quote(str(text))]
    return " ".join(words)


def given_flags() -> dict:
    """{(section, name): text} of the settings given on this command line (none when run from Python)."""
    from luigi.cmdline_parser import CmdlineParser

    parser = CmdlineParser.get_instance()
    if parser is None:
        return {}
    given = vars(parser.known_args)
    return {(section.get_task_family(), name): given[f"{section.get_task_family()}_{name}"]
            for section in config.SECTIONS for name, _ in section.get_params()
            if given.get(f"{section.get_task_family()}_{name}") is not None}


def study_name(base, tfrecords_fingerprint: str, seed: int) -> str:
    """The study of one search: the `[train]` settings it does not search, the shards and the sampler's seed.
    A rerun with the same ones continues it; `[tune] trials` only says how far."""
    fixed = {name: value for name, value in base.to_dict().items() if name not in SEARCHED}
    identity = json.dumps({"fixed": fixed, "tfrecords": tfrecords_fingerprint, "seed": seed}, sort_keys=True)
    return "tune-" + hashlib.sha256(identity.encode()).hexdigest()[:12]


def fail_stale_trials(optuna, storage, name: str) -> int:
    """Mark FAIL the trials of study `name` still RUNNING: under the task's lock no live process runs them, so a
    killed run left them. Returns how many."""
    study_id = storage.get_study_id_from_name(name)
    stale = storage.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def complete_count(optuna, study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


class TuneDIN(LockedTask):
    """Search the `[train]` settings that matter by validation AUC; writes tune/best.json."""

    def requires(self):
        current_tune_settings()  # scheduling checks [tune] and [train]: a bad value stops the run before stage 1
        stage2.current_train_params()
        stage2.current_npu_options()
        require_optuna()
        return Preprocess()

    def tune_dir(self) -> Path:
        return Path(config.paths().data_dir) / "tune"

    def output(self):
        return luigi.LocalTarget(str(self.tune_dir() / BEST_FILE))

    def current_study(self) -> str:
        _, seed = current_tune_settings()
        fingerprint = Preprocess().expected_fingerprint() or "inputs-missing"
        return study_name(stage2.current_train_params(), fingerprint, seed)

    def complete(self) -> bool:
        path = Path(self.output().path)
        if not path.exists():
            return False
        written = json.loads(path.read_text())
        trials, _ = current_tune_settings()
        return written.get("study") == self.current_study() and written.get("trials") == trials

    def build(self) -> None:
        optuna = import_optuna()
        trials, seed = current_tune_settings()
        base = stage2.current_train_params()
        name = self.current_study()
        self.tune_dir().mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(f"sqlite:///{self.tune_dir() / STUDY_FILE}")
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=seed))
        failed = fail_stale_trials(optuna, storage, name)
        done = complete_count(optuna, study)
        print(f"[TuneDIN] study {name}: {done} of {trials} trials complete"
              + (f", {failed} left running by a killed run marked failed" if failed else ""), flush=True)

        def objective(trial):
            params = suggest_params(trial, base)
            self.report(f"trial {trial.number}: training", round(100 * complete_count(optuna, study) / trials))
            result = stage2.train_and_evaluate(params, Preprocess())
            kill_point(f"TuneDIN:trial {trial.number} trained")  # the kill-and-resume test: a trial left RUNNING
            for key in ("run_id", "test_auc"):
                trial.set_user_attr(key, result[key])
            print(f"[TuneDIN] trial {trial.number}: val auc {result['val_auc']:.4f}, test auc "
                  f"{result['test_auc']:.4f}, run {result['run_id']} ({_settings_text(params)})", flush=True)
            return result["val_auc"]

        if done < trials:  # a trial that raises stops the search here (Optuna marks it FAIL); a rerun goes on
            study.optimize(objective, n_trials=trials - done)
        if complete_count(optuna, study) < trials:
            raise RunFailed(f"TuneDIN: only {complete_count(optuna, study)} of {trials} trials completed (the others "
                            "failed); rerun to continue the search")
        best = best_trial(study.get_trials(deepcopy=False))
        tuned = {name: best.params[name] for name in SEARCHED}
        summary = {"study": name, "trials": trials, "best_trial": best.number, "params": tuned,
                   "val_auc": best.value, "test_auc": best.user_attrs["test_auc"], "run_id": best.user_attrs["run_id"],
                   "run_dir": str(Path(config.paths().data_dir) / "runs" / best.user_attrs["run_id"]),
                   "command": reproduce_command(given_flags(), tuned)}
        write_json_atomic(self.output().path, summary)
        print(f"[TuneDIN] best of {trials} trials: trial {best.number}, val auc {best.value:.4f}, test auc "
              f"{summary['test_auc']:.4f}, run {summary['run_id']}; reproduce: {summary['command']}", flush=True)

    def wrote(self) -> str:
        return f"-> {self.output().path}"


def _settings_text(params) -> str:
    return ", ".join(f"{name}={_flag_value(getattr(params, name))}" for name in SEARCHED)
