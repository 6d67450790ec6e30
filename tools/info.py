from keras_effnet.cli.info import run
run()
