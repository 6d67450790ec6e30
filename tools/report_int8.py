from keras_effnet.cli.report_int8 import run
run()
