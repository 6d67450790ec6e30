"""keras_effnet.logs: one handler, quiet by default, -v for keras_effnet INFO, -v 2 for TF/absl INFO."""

import logging

from absl import logging as absl_logging

from keras_effnet import logs


def _ours():
    return [h for h in logging.getLogger().handlers if h.get_name() == "keras_effnet.logs"]


def test_quiet_by_default_and_verbose_levels():
    package = logging.getLogger("keras_effnet.data")
    try:
        logs.configure()
        assert not package.isEnabledFor(logging.INFO)
        assert package.isEnabledFor(logging.WARNING)
        assert not logging.getLogger("tensorflow").isEnabledFor(logging.INFO)
        assert absl_logging.get_verbosity() == absl_logging.WARNING

        logs.configure(1)
        assert package.isEnabledFor(logging.INFO)
        assert not logging.getLogger("tensorflow").isEnabledFor(logging.INFO)

        logs.configure(2)
        assert logging.getLogger("tensorflow").isEnabledFor(logging.INFO)
        assert absl_logging.get_verbosity() == absl_logging.INFO
        assert len(_ours()) == 1, "configure() twice must not stack handlers"
    finally:
        logs.configure(0)


def test_plain_format(capsys):
    logs.configure(1)
    try:
        handler = _ours()[0]
        record = logging.LogRecord("keras_effnet.data", logging.INFO, __file__, 1, "hello %s",
                                   ("world",), None)
        assert handler.format(record) == "INFO keras_effnet.data: hello world"
    finally:
        logs.configure(0)
