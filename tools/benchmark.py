from keras_effnet.cli.benchmark import run
run()
