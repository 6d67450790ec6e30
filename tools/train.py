from keras_effnet.cli.train import run
run()
