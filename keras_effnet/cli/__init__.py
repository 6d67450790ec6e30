"""absl command lines: ``keras-effnet-train`` (``cli.train``) and ``keras-effnet-evaluate`` (``cli.evaluate``)."""
