"""The end-of-run summary (pipeline.cli.summary): statuses from the tasks' own outputs, the
command's task as the root, and nothing recorded or printed by an in-process luigi.build."""
import atexit
import sys

import luigi
import pytest
from luigi.cmdline_parser import CmdlineParser

from pipeline.cli import summary
from pipeline.cli.summary import RunRecord


class summary_test(luigi.Config):
    finished = luigi.Parameter(default="", description="Steps complete, as the command line says.")


class SummaryStep(luigi.Task):
    """A task whose completeness the test sets: `done` names the steps complete now (or the command line)."""
    name = luigi.Parameter()
    needs = luigi.Parameter(default="")
    done: set = set()

    def requires(self):
        return [SummaryStep(name=needed) for needed in self.needs.split(",") if needed]

    def complete(self):
        if self.name == "broken":  # a check that raises (a damaged input) counts as not complete
            raise OSError("unreadable manifest")
        return self.name in SummaryStep.done or self.name in summary_test().finished.split(",")


@pytest.fixture
def record(monkeypatch):
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(SummaryStep, "done", set())
    summary.RUN_RECORD.stop_listening()  # the record `import pipeline` installed stays out of these runs
    run = RunRecord()
    run.listen()
    run.registered_at_exit = registered
    yield run
    run.stop_listening()
    summary.RUN_RECORD.listen()


def step(name, needs=""):
    return SummaryStep(name=name, needs=needs)


def statuses(run):
    return {status: sorted(task.name for task in tasks) for status, tasks in run.statuses().items()}


def test_each_task_to_run_gets_its_status_from_its_outputs_at_exit(record):
    record.scheduled = [step("top", "mid"), step("mid", "low"), step("low"), step("other", "low"),
                        step("fresh"), step("unstartable"), step("broken")]
    record.up_to_date = {step("fresh")}
    record.could_not_start = {step("unstartable")}
    SummaryStep.done = {"low", "fresh"}
    assert statuses(record) == {"ran": ["low"], "failed": ["broken", "mid", "other"], "not run": ["top"],
                                "already up to date": ["fresh"], "could not start": ["unstartable"]}
    SummaryStep.done = set()  # the events decide for the tasks they named; the others ask their outputs again
    assert statuses(record) == {"failed": ["broken", "low"], "not run": ["mid", "other", "top"],
                                "already up to date": ["fresh"], "could not start": ["unstartable"]}


def test_the_root_is_the_commands_task_and_events_fill_the_record(record):
    root, mid, low = step("top", "mid"), step("mid", "low"), step("low")
    with CmdlineParser.global_instance(["SummaryStep", "--name", "top", "--needs", "mid"]):
        low.trigger_event(luigi.Event.DEPENDENCY_PRESENT, low)  # the first event names another task
        mid.trigger_event(luigi.Event.DEPENDENCY_MISSING, mid)
        root.trigger_event(luigi.Event.DEPENDENCY_DISCOVERED, root, mid)
    assert record.root == root
    assert record.scheduled == [root, low, mid]
    assert record.up_to_date == {low} and record.could_not_start == {mid}


def test_the_block_prints_at_exit_in_the_commands_settings(record, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["luigi", "SummaryStep", "--name", "top", "--summary-test-finished", "top"])
    with CmdlineParser.global_instance(sys.argv[1:]):
        record._seen(step("top"))
    assert not step("top").complete()  # the command's --summary-test-finished is out of force once it is over
    record.print_at_exit()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == ["Summary of SummaryStep(name=top, needs=)", f"{'ran:':<20}SummaryStep"]
    assert lines[0] == lines[-1] == "=" * 72 and len(lines) == 4


def test_a_lone_task_that_sent_no_event_takes_its_root_from_the_command_line(record, capsys, monkeypatch):
    # With --workers 2 a task without dependencies runs in a child: the command's process sees no event.
    monkeypatch.setattr(sys, "argv", ["/venv/bin/luigi", "SummaryStep", "--name", "top", "--summary-test-finished", "top"])
    record.print_at_exit()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == ["Summary of SummaryStep(name=top, needs=)", f"{'ran:':<20}SummaryStep"]


@pytest.mark.parametrize("argv", [["/venv/bin/pytest", "SummaryStep", "--name", "top"],
                                  ["/venv/bin/luigi", "SummaryStep", "--help"],
                                  ["/venv/bin/luigi", "NoSuchTask"]])
def test_no_block_outside_a_luigi_run(record, capsys, monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", argv)
    record.print_at_exit()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("program, registered", [("/venv/bin/luigi", True), ("/usr/lib/python3/luigi/__main__.py", True),
                                                 ("/venv/bin/pytest", False)])
def test_only_the_luigi_commands_process_registers_the_block(record, monkeypatch, program, registered):
    monkeypatch.setattr(sys, "argv", [program, "AllTasks"])
    summary.install_run_summary()
    summary.RUN_RECORD.stop_listening()  # the fixture listens again
    assert record.registered_at_exit == ([summary.RUN_RECORD.print_at_exit] if registered else [])


def test_an_in_process_build_records_and_prints_nothing(record, capsys):
    SummaryStep.done = {"low"}
    luigi.build([step("mid", "low")], local_scheduler=True, log_level="WARNING")
    assert record.scheduled == []
    record.print_at_exit()  # even if its handler ran: a pytest process is not the luigi command
    assert capsys.readouterr().out == ""


def test_importing_pipeline_registers_the_record_and_patches_no_luigi_method():
    import luigi.worker

    import pipeline  # noqa: F401

    assert luigi.worker.Worker.run.__module__ == "luigi.worker"
    luigi.Task.remove_event_handler(luigi.Event.DEPENDENCY_PRESENT, summary.RUN_RECORD._present)  # KeyError if absent
    luigi.Task.event_handler(luigi.Event.DEPENDENCY_PRESENT)(summary.RUN_RECORD._present)
