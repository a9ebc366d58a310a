"""less_hf's logs and progress bars follow transformers' switches, like any HF library."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from transformers.utils import logging as hf_logging

from less_hf._logging import progress


@pytest.fixture
def restore_verbosity():
    before = hf_logging.get_verbosity()
    yield
    hf_logging.set_verbosity(before)


def test_less_hf_follows_transformers_verbosity(restore_verbosity):
    module_logger = logging.getLogger("less_hf.datastore.build")
    hf_logging.set_verbosity_error()
    assert not module_logger.isEnabledFor(logging.WARNING)
    hf_logging.set_verbosity_info()
    assert module_logger.isEnabledFor(logging.INFO) and not module_logger.isEnabledFor(logging.DEBUG)
    hf_logging.set_verbosity_warning()
    assert module_logger.isEnabledFor(logging.WARNING) and not module_logger.isEnabledFor(logging.INFO)


def test_an_explicit_level_wins(restore_verbosity):
    root = logging.getLogger("less_hf")
    hf_logging.set_verbosity_warning()
    root.setLevel(logging.DEBUG)
    try:
        assert logging.getLogger("less_hf.scoring").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(logging.NOTSET)
    assert not logging.getLogger("less_hf.scoring").isEnabledFor(logging.INFO)


def test_transformers_verbosity_env_and_handler_apply_in_a_fresh_process():
    code = (
        "import logging, less_hf\n"
        "logging.getLogger('less_hf.datastore.build').info('an info line')\n"
        "logging.getLogger('less_hf.datastore.build').warning('a warning line')\n"
    )
    for level, info_shown, warning_shown in (("info", True, True), ("error", False, False)):
        env = {"TRANSFORMERS_VERBOSITY": level, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert ("an info line" in out.stderr) == info_shown, out.stderr
        assert ("a warning line" in out.stderr) == warning_shown, out.stderr
        assert out.stderr.count("a warning line") <= 1  # no duplicate through the root logger


def test_progress_bars_obey_transformers_switch():
    hf_logging.disable_progress_bar()
    try:
        assert progress(range(3), desc="Pool").disable
    finally:
        hf_logging.enable_progress_bar()
    assert not progress(range(3), desc="Pool", file=sys.stdout).disable
