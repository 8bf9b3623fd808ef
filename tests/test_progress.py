"""The progress line: off by default off a terminal, on with verbose=True."""
import io

import pylmem
from pylmem.util.progress import Progress


def test_progress_line_written_when_verbose(capsys):
    d = pylmem.datasets.load("sleepstudy")
    pylmem.lmer("Reaction ~ Days + (Days | Subject)", d, verbose=True)
    err = capsys.readouterr().err
    assert "lmer: evaluation" in err and "objective" in err
    assert err.endswith("\n")


def test_progress_silent_by_default_off_a_terminal(capsys):
    d = pylmem.datasets.load("sleepstudy")
    pylmem.lmer("Reaction ~ Days + (Days | Subject)", d)
    assert capsys.readouterr().err == ""


def test_progress_waits_for_the_delay_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    p = Progress(verbose=None, stream=s, delay=3600)
    p.update(1, 10.0)
    p.close()
    assert s.getvalue() == ""
    p = Progress(verbose=None, stream=s, delay=0)
    p.update(7, 12.5)
    p.close()
    assert "evaluation     7" in s.getvalue()
