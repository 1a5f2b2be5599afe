"""The one command-line wrapper (seqcls.cli) and every entry point that goes through it: a usage error is one line on
stderr and exit 2, --debug or SEQCLS_DEBUG shows the traceback instead, Ctrl-C is 130. In-process: each case fails
before any model loads."""
from __future__ import annotations

import pytest

from seqcls import cv, export, merge, report, sweep, train
from seqcls.cli import run_cli, split_debug
from seqcls.errors import UsageError


def failing(exc: BaseException):
    def main(argv):
        raise exc
    return main


def test_usage_error_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("SEQCLS_DEBUG", raising=False)
    assert run_cli(failing(UsageError("data.jsonl:3: no label; add one")), []) == 2
    assert capsys.readouterr().err == "error: data.jsonl:3: no label; add one\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, monkeypatch):
    monkeypatch.delenv("SEQCLS_DEBUG", raising=False)
    if how == "env":
        monkeypatch.setenv("SEQCLS_DEBUG", "1")
    seen = []
    with pytest.raises(UsageError):
        run_cli(lambda argv: seen.append(argv) or failing(UsageError("x"))(argv),
                ["--a", "1", "--debug"] if how == "flag" else ["--a", "1"])
    assert seen == [["--a", "1"]]  # the flag is the wrapper's: the command never sees it


def test_debug_after_double_dash_belongs_to_the_inner_command(monkeypatch):
    monkeypatch.delenv("SEQCLS_DEBUG", raising=False)
    assert split_debug(["split", "--", "cfg.yaml", "--debug"]) == (["split", "--", "cfg.yaml", "--debug"], False)
    assert split_debug(["--debug", "split", "--", "x"]) == (["split", "--", "x"], True)


def test_interrupt_stop_and_status(capsys, monkeypatch):
    monkeypatch.delenv("SEQCLS_DEBUG", raising=False)
    assert run_cli(failing(KeyboardInterrupt()), []) == 130
    assert capsys.readouterr().err == "interrupted\n"

    class Stopped(Exception):
        exit_code = 143
    assert run_cli(failing(Stopped("stopped by SIGTERM: saved checkpoint-3")), [], stops=(Stopped,)) == 143
    assert capsys.readouterr().err == "stopped by SIGTERM: saved checkpoint-3\n"
    assert run_cli(lambda argv: None, []) == 0 and run_cli(lambda argv: 1, []) == 1
    assert run_cli(lambda argv: {"eval_loss": 0.5}, []) == 0  # train.main returns its results to a caller
    with pytest.raises(ValueError):  # a bug is not a usage error: its traceback is shown
        run_cli(failing(ValueError("bug")), [])


ENTRY_POINTS = {  # each fails with a UsageError before loading anything
    "train": (train.cli, ["--model_name_or_path", "m", "--no_such_option", "1"]),
    "merge": (merge.cli, ["{tmp}/no_adapter", "{tmp}/out"]),
    "export": (export.cli, ["{tmp}/no_run", "{tmp}/out"]),
    "sweep": (sweep.cli, ["{tmp}/no_sweep"]),
    "cv": (cv.cli, ["collect", "--cv_dir", "{tmp}/no_cv"]),
}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_every_entry_point_uses_the_wrapper(name, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEQCLS_DEBUG", raising=False)
    entry, argv = ENTRY_POINTS[name]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert entry(argv) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
    with pytest.raises(UsageError):
        entry([*argv, "--debug"])


def test_report_debug_flag_is_accepted(tmp_path, capsys):
    # the report prints its own line per directory that holds no run (and carries on with the others)
    assert report.cli([str(tmp_path), "--debug"]) == 2
    assert "holds no finished training run" in capsys.readouterr().err
