"""`dcgan.serving`: `dcgan explore` as a subprocess for scripts and tests, started, reached and
stopped for real."""

from __future__ import annotations

import json
import urllib.request

import pytest
from clirun import dcgan

from dcgan.errors import DCGANError
from dcgan.explore import serving


def test_serving_yields_a_live_page_and_stops_the_server_on_exit(tmp_path):
    run = tmp_path / "run"
    dcgan("train", "--data", "digits", "--steps", 2, "--ngf", 8, "--ndf", 8, "--nz", 8, "--batch-size", 16,
          "--tensorboard", "false", "--out", run)
    with serving([run]) as url:
        (source,) = json.loads(urllib.request.urlopen(url + "api/sources", timeout=30).read())["sources"]
        assert source["path"] == str(run) and source["step"] == 2
        assert b"<html" in urllib.request.urlopen(url, timeout=30).read().lower()
    with pytest.raises(OSError):  # nothing listens there any more
        urllib.request.urlopen(url + "api/sources", timeout=5)


def test_a_server_that_cannot_start_is_an_error_with_its_message(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(DCGANError, match="did not start") as e, serving([missing]):
        pytest.fail("serving yielded for a run that does not exist")
    assert str(missing) in str(e.value)  # the server's own error line, naming the path
