from keras_effnet.cli.model_table import run
run()
