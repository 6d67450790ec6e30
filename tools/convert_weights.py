from keras_effnet.cli.convert_weights import run
run()
