from keras_effnet.cli.evaluate import run
run()
