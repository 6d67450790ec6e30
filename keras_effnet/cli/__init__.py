"""absl command lines, one module per console script (``keras-effnet-train`` runs ``cli.train``).

Imported by a command line (a console script, a ``tools/*.py`` shim or ``python -m
keras_effnet.cli.<name>``), this package first prepares the process's logging, before any main
module imports TensorFlow: ``TF_CPP_MIN_LOG_LEVEL`` and, below ``-v 2``, TensorFlow's C++
start-up lines filtered out of stderr (``keras_effnet.logs.prepare_command_line``). Imported by
anything else (tests, a user's script), it changes nothing.
"""

import sys

from keras_effnet import logs

if logs.started_as_command_line():
    logs.prepare_command_line(sys.argv[1:])
